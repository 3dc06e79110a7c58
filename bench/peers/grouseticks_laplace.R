# The exact Laplace approximation of grouseticks' Poisson GLMM, evaluated by hand (mode by
# damped Newton to 1e-13, log|Lambda'Z'WZ Lambda + I| at the mode), next to lme4's own
# deviance function, at lme4's estimates and at ctxppl's.
#   Rscript bench/peers/grouseticks_laplace.R
# Prints (lme4 1.1-31): lme4 devfun -1005.063311 / by hand -1005.057062 (lme4's estimates);
#                       lme4 devfun -1005.063587 / by hand -1005.056795 (ctxppl's estimates).
suppressMessages(library(lme4)); data(grouseticks)
f <- TICKS ~ YEAR + (1 | BROOD) + (1 | LOCATION)
m1 <- glmer(f, grouseticks, family = poisson)
dd <- update(m1, devFunOnly = TRUE)
Zt <- getME(m1, "Zt"); X <- getME(m1, "X"); y <- grouseticks$TICKS
lap <- function(th, beta) {
  Lam <- Diagonal(x = rep(th, c(118, 63)))  # BROOD first then LOCATION in Zt
  ZL <- t(Lam %*% Zt); eta0 <- as.vector(X %*% beta)
  u <- rep(0, ncol(ZL))
  for (i in 1:100) {
    eta <- eta0 + as.vector(ZL %*% u); mu <- exp(eta)
    g <- as.vector(t(ZL) %*% (y - mu)) - u
    H <- as.matrix(t(ZL) %*% Diagonal(x = mu) %*% ZL) + diag(ncol(ZL))
    du <- solve(H, g)
    pen <- function(v) { e <- eta0 + as.vector(ZL %*% v); sum(y * e - exp(e)) - sum(v^2) / 2 }
    t <- 1; while (pen(u + t * du) < pen(u) && t > 1e-8) t <- t / 2
    u <- u + t * du; du <- t * du
    if (max(abs(du)) < 1e-13) break
  }
  eta <- eta0 + as.vector(ZL %*% u); mu <- exp(eta)
  H <- as.matrix(t(ZL) %*% Diagonal(x = mu) %*% ZL) + diag(ncol(ZL))
  ll <- sum(dpois(y, mu, log = TRUE))
  -0.5 * (-2 * ll + sum(u^2) + as.numeric(determinant(H)$modulus))
}
cat(rownames(Zt)[c(1, 119)], "\n")
for (p in list(c(0.7260565898, 1.049287755, 0.332683356, 1.29414016, -0.9397856354),
               c(0.72673267, 1.05087888, 0.32989798, 1.29627744, -0.94170312))) {
  cat(sprintf("lme4 devfun %.10g  by hand %.10g\n", dd(p) / -2, lap(p[1:2], p[3:5])))
}
