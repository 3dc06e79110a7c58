# Fit one mixed model with lme4 and print its estimates and fit time as one JSON line.
#   Rscript bench/peers/lme4_runner.R data.csv "formula" [gaussian|binomial|poisson] [factors]
# `factors`: comma-separated columns read as factors (grouping factors, categorical
# predictors). The time is system.time around lmer()/glmer() only (lme4's defaults:
# REML for lmer, Laplace with bobyqa + Nelder_Mead for glmer).
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
form <- as.formula(args[2])
family <- if (length(args) >= 3) args[3] else "gaussian"
if (length(args) >= 4 && nzchar(args[4])) {
  for (f in strsplit(args[4], ",")[[1]]) d[[f]] <- factor(d[[f]])
}
secs <- system.time(
  fm <- if (family == "gaussian") lmer(form, d) else glmer(form, d, family = family)
)[["elapsed"]]
vc <- as.data.frame(VarCorr(fm))
num <- function(x) paste(sprintf("%.10g", x), collapse = ",")
cat(sprintf('{"fit_seconds": %.4f, "fe": [%s], "sdcor": [%s], "loglik": %.10g, "version": "%s"}\n',
            secs, num(fixef(fm)), num(vc$sdcor), as.numeric(logLik(fm)),
            as.character(packageVersion("lme4"))))
