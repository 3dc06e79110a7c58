# Sparse Cholesky (CHOLMOD, through R's Matrix package, the factorisation lme4 itself uses)
# of the random-effect system A = Lambda' Z' Z Lambda + I of a scalar-terms lme4 formula at
# given relative SDs theta; prints one JSON line: symbolic (analyse + first factor) and
# numeric (update, the cost of one deviance evaluation) seconds, nnz of the factor, the
# widest supernode (a dense block of that many columns) and the Q = ncol(A).
#   Rscript bench/peers/cholmod_factor.R data.csv "formula" "factors" "theta1,theta2,..."
suppressMessages({library(lme4); library(Matrix)})
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
for (f in strsplit(args[3], ",")[[1]]) d[[f]] <- factor(d[[f]])
theta <- as.numeric(strsplit(args[4], ",")[[1]])
lf <- lFormula(as.formula(args[2]), d)
re <- lf$reTrms
Lt <- re$Lambdat
Lt@x <- theta[re$Lind]
LZ <- Lt %*% re$Zt
t_sym <- system.time(L <- Cholesky(tcrossprod(LZ), LDL = FALSE, Imult = 1, super = TRUE))[["elapsed"]]
reps <- 3
t_num <- system.time(for (i in seq_len(reps)) L <- update(L, LZ, mult = 1))[["elapsed"]] / reps
Ls <- as(L, "CsparseMatrix")
widest <- if (.hasSlot(L, "super")) max(diff(L@super)) else NA
cat(sprintf('{"symbolic_seconds": %.4f, "numeric_seconds": %.4f, "nnz_L": %d, "widest_supernode": %d, "Q": %d, "logdet": %.10g, "matrix": "%s"}\n',
            t_sym, t_num, length(Ls@x), as.integer(widest), ncol(Ls),
            as.numeric(determinant(L, sqrt = FALSE)$modulus) * 1,
            as.character(packageVersion("Matrix"))))
