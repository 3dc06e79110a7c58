"""Posterior p-values agree with the analytic answer on a conjugate model.

Model: beta_i = w c_i + b (a linear encoder with a Normal(0, TAU) prior on w and b),
y_i ~ Normal(x_i beta_i, 1). The posterior of (w, b) is Gaussian with
Sigma = (Phi^T Phi + I / TAU^2)^-1, m = Sigma Phi^T y, Phi = [x * c, x]. Hence

* heterogeneity of beta along c: beta(c_max) - beta(c_min) = w (c_max - c_min), whose
  posterior two-sided tail probability is 2 Phi(-|m_w| / sd_w);
* homogeneous effect (beta averaged over the contexts): a^T (w, b) with a = (mean c, 1).

Laplace is exact here (the log posterior is quadratic) and gives iid draws; NUTS draws are
autocorrelated, so Monte Carlo tolerances use the effective sample size.
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.diagnostics import effective_sample_size
from scipy import stats

import ctxppl as ctx
from ctxppl import analysis as A
from ctxppl.analysis._source import draw_source

TAU = 2.0
N = 40


def model(C, X, Y=None):
    enc = ctx.encoder("enc", ctx.nn.Linear(1, 1), prior=dist.Normal(0.0, TAU))
    with ctx.plate("n", C.shape[0], context=C):
        beta = ctx.contextual("beta", enc)  # (n, 1): one predictor
        numpyro.sample("y", dist.Normal(jnp.sum(X * beta, -1), 1.0), obs=Y)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    C = rng.uniform(-1, 1, (N, 1))
    X = rng.normal(size=(N, 1))
    Y = X[:, 0] * (0.5 + 0.6 * C[:, 0]) + rng.normal(size=N)
    Phi = np.column_stack([X[:, 0] * C[:, 0], X[:, 0]])
    Sigma = np.linalg.inv(Phi.T @ Phi + np.eye(2) / TAU**2)
    m = Sigma @ Phi.T @ Y
    return C, X, Y, m, Sigma


def _analytic(m, Sigma, a):
    mean, sd = a @ m, np.sqrt(a @ Sigma @ a)
    return 2 * stats.norm.sf(abs(mean) / sd), abs(mean) / sd


def _check(p_hat, p, z, ess, method):
    if method == "count":
        # p_hat = 2 * (share of draws across zero): binomial MC error with ESS draws
        q = p / 2
        tol = 4 * 2 * np.sqrt(q * (1 - q) / ess)
    else:
        # z_hat = mean / sd of the draws: Var(z_hat) ~ (1 + z^2 / 2) / ESS (delta method)
        tol = 4 * 2 * stats.norm.pdf(z) * np.sqrt((1 + z**2 / 2) / ess)
    assert abs(p_hat - p) < tol, (method, p_hat, p, tol)


@pytest.mark.parametrize("method", ["laplace", "nuts"])
def test_posterior_pvalues_match_conjugate_answer(data, method):
    C, X, Y, m, Sigma = data
    opts = ({"num_samples": 4000} if method == "laplace"
            else {"num_samples": 800, "num_warmup": 400, "num_chains": 1})
    fit = ctx.fit(model, C, X, Y, method=method, key=3, progress=False, **opts)
    params = A.FitParams(fit, lambda C: (C, np.ones((len(C), 1))), beta="beta")
    assert draw_source(params) == "posterior"
    w = np.asarray(fit.samples["enc.weight"]).reshape(1, -1)
    ess = float(effective_sample_size(w)) if method == "nuts" else w.size

    p_het, z_het = _analytic(m, Sigma, np.array([1.0, 0.0]))
    p_hom, z_hom = _analytic(m, Sigma, np.array([C[:, 0].mean(), 1.0]))
    assert 0.01 < p_het < 0.5  # the design gives a p-value that is neither 0 nor 1
    for rule in ("count", "normal"):
        kw = {"method": rule, "laplace_smoothing": 0.0}
        het = A.calc_heterogeneous_predictor_effects_pvals(params, C, **kw)
        hom = A.calc_homogeneous_predictor_effects_pvals(params, C, **kw)
        assert het.shape == (1, 1) and hom.shape == (1,)
        _check(float(het[0, 0]), p_het, z_het, ess, rule)
        _check(float(hom[0]), p_hom, z_hom, ess, rule)

    # intervals from the same draws: the 95% interval of w (c_max - c_min) vs the exact one
    t = A.effects_table(params, C, "heterogeneous", interval=0.95)
    span = C[:, 0].max() - C[:, 0].min()
    sd = np.sqrt(Sigma[0, 0]) * span
    exact_lo = m[0] * span - stats.norm.ppf(0.975) * sd
    assert set(t.source) == {"posterior"}
    # quantile MC error ~ sqrt(q (1 - q) / ESS) / density, density at the 2.5% quantile
    q_tol = 4 * np.sqrt(0.025 * 0.975 / ess) / (stats.norm.pdf(stats.norm.ppf(0.975)) / sd)
    assert abs(t.lower[0] - exact_lo) < q_tol, (t.lower[0], exact_lo, q_tol)

    with pytest.raises(ValueError, match="intercepts"):
        A.calc_homogeneous_context_effects_pvals(params, C)
