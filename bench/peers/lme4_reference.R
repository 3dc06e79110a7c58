# Reference numbers for tests/mixed/test_reference.py, printed by lme4 itself.
#   Rscript bench/peers/lme4_reference.R [name ...]      (default: every model below)
# One line per model: name, then every estimate to 10 significant digits.
suppressMessages(library(lme4))
data(InstEval, grouseticks, sleepstudy, Penicillin, Pastes, Dyestuff, cbpp,
     package = "lme4")
models <- list(
  sleepstudy_reml = quote(lmer(Reaction ~ Days + (Days | Subject), sleepstudy)),
  sleepstudy_ml = quote(lmer(Reaction ~ Days + (Days | Subject), sleepstudy, REML = FALSE)),
  sleepstudy_uncorr = quote(lmer(Reaction ~ Days + (Days || Subject), sleepstudy)),
  penicillin = quote(lmer(diameter ~ 1 + (1 | plate) + (1 | sample), Penicillin)),
  pastes = quote(lmer(strength ~ 1 + (1 | batch/cask), Pastes)),
  dyestuff = quote(lmer(Yield ~ 1 + (1 | Batch), Dyestuff)),
  cbpp = quote(glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp,
                     family = binomial)),
  grouseticks = quote(glmer(TICKS ~ YEAR + (1 | BROOD) + (1 | LOCATION), grouseticks,
                            family = poisson)),
  insteval = quote(lmer(y ~ service + (1 | s) + (1 | d), InstEval)),
  insteval_dept = quote(lmer(y ~ service + (1 | s) + (1 | d) + (1 | dept:service), InstEval))
)
args <- commandArgs(trailingOnly = TRUE)
if (length(args)) models <- models[args]
f10 <- function(x) paste(sprintf("%.10g", x), collapse = " ")
for (name in names(models)) {
  secs <- system.time(fm <- eval(models[[name]]))[["elapsed"]]
  vc <- as.data.frame(VarCorr(fm))
  cat(sprintf("%s: call %s\n", name, deparse1(models[[name]])))
  cat(sprintf("%s: fixef %s\n", name, f10(fixef(fm))))
  cat(sprintf("%s: fixef_names %s\n", name, paste(names(fixef(fm)), collapse = " ")))
  cat(sprintf("%s: se %s\n", name, f10(sqrt(diag(as.matrix(vcov(fm)))))))
  cat(sprintf("%s: vc_sdcor %s\n", name, f10(vc$sdcor)))
  cat(sprintf("%s: vc_names %s\n", name,
              paste(vc$grp, vc$var1, ifelse(is.na(vc$var2), "", vc$var2), sep = "/", collapse = " ")))
  cat(sprintf("%s: logLik %s  deviance_or_REMLcrit %s  REML %s\n", name, f10(logLik(fm)),
              f10(if (isREML(fm)) REMLcrit(fm) else deviance(fm)), isREML(fm)))
  cat(sprintf("%s: seconds %.2f  lme4 %s\n", name, secs, packageVersion("lme4")))
}
