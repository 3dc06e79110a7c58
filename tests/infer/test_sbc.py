"""Simulation-based calibration (Talts et al. 2018) of ctx's posterior routes.

Fast: the rank test accepts uniform ranks and rejects a posterior without spread; the SBC
loop rejects an inference that is wrong (SVI with a point-mass guide). Slow (make
test-slow): >= 200 replications of the seed's normal-normal hierarchical model under NUTS
and Laplace, and of a small contextualized problem under the calibrated route (a ctx.nn.HSGP
encoder, method="marginal"), every rank histogram uniform. Tolerance: each histogram is a
chi-square test with 9 degrees of freedom; the family-wise p-value (smallest p times the
number of histograms, Bonferroni) must exceed 0.01, so a correct posterior fails a test with
probability <= 1%."""

import logging

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import ctxppl as ctx
from ctxppl.infer import rank_pvalues

ALPHA = 0.01  # family-wise false-failure rate per SBC run


def hierarchical(ys=None, N=None):
    """The seed's normal-normal model (dynestyx plate tutorial)."""
    N = ys.shape[0] if ys is not None else N
    mu_global = numpyro.sample("mu_global", dist.Normal(0.0, 0.5))
    with ctx.plate("N", N):
        mu_i = numpyro.sample("mu_i", dist.Normal(mu_global, 0.5))
        numpyro.sample("y_i", dist.Normal(mu_i, 0.1), obs=ys)


def test_rank_test_accepts_uniform_and_rejects_biased_ranks():
    rng = np.random.default_rng(0)
    uniform = rng.integers(0, 100, size=(2000, 50))
    p = rank_pvalues(uniform, 99, 10)
    # 50 independent uniform p-values: the smallest is below 0.001 with probability 5%
    assert p.shape == (50,) and p.min() > ALPHA / 50
    shifted = np.clip(uniform + 20, 0, 99)  # truth above most draws: posterior too low
    assert rank_pvalues(shifted, 99, 10).max() < 1e-10
    with pytest.raises(ValueError, match="`bins` must divide"):
        rank_pvalues(uniform, 99, 7)


def test_sbc_rejects_an_inference_without_posterior_spread():
    """SVI with a point-mass guide puts every draw at the mode: the truth falls below or
    above all of them, and SBC says so."""
    res = ctx.infer.sbc(hierarchical, None, model_kwargs={"N": 3}, observed=["y_i"],
                        method="svi", guide="delta", key=0, num_replications=50,
                        num_draws=19, bins=4, num_steps=300, progress=False)
    assert set(res.ranks) == {"mu_global", "mu_i"} and res.ranks["mu_i"].shape == (50, 3)
    assert set(np.unique(res.ranks["mu_global"])) <= {0, 19}
    assert res.pvalue < 1e-6


def test_a_second_sbc_run_does_not_compile_again():
    """The fits are one compiled program keyed on the model, the options and the shapes: a
    new key reuses it (as a new data set reuses ctx.fit's)."""
    opts = dict(model_kwargs={"N": 3}, observed=["y_i"], method="laplace", num_replications=20,
                num_draws=9, bins=5, num_steps=100, progress=False)
    ctx.infer.sbc(hierarchical, None, key=0, **opts)
    compiled = []

    class Log(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("Compiling "):
                compiled.append(record.getMessage().split(" with ")[0])

    logger, handler = logging.getLogger("jax"), Log()
    logger.addHandler(handler)
    try:
        with jax.log_compiles():
            again = ctx.infer.sbc(hierarchical, None, key=1, **opts)
    finally:
        logger.removeHandler(handler)
    assert compiled == [] and again.ranks["mu_i"].shape == (20, 3)


def _check(res, name):
    assert res.failures == 0, f"{name}: {res.failures} replications failed"
    assert res.pvalue > ALPHA, (name, {k: np.round(v, 4) for k, v in res.pvalues.items()})


@pytest.mark.slow
def test_sbc_nuts_normal_normal():
    res = ctx.infer.sbc(hierarchical, None, model_kwargs={"N": 10}, observed=["y_i"],
                        method="nuts", key=1, num_replications=200, num_draws=99, bins=10)
    assert res.ranks["mu_i"].shape == (200, 10) and res.num_tests == 11
    _check(res, "nuts")


@pytest.mark.slow
def test_sbc_laplace_normal_normal():
    """The posterior is Gaussian, so Laplace is exact up to the optimiser's tolerance."""
    res = ctx.infer.sbc(hierarchical, None, model_kwargs={"N": 10}, observed=["y_i"],
                        method="laplace", key=2, num_replications=200, num_draws=99,
                        bins=10, progress=False)
    _check(res, "laplace")


N_GP = 30
C_GP = np.linspace(-1, 1, N_GP)[:, None].astype(np.float32)
X_GP = np.random.default_rng(5).normal(size=(N_GP, 1)).astype(np.float32)


def gp_regression(C, X, Y=None):
    """A varying coefficient w(c) with a Gaussian-process prior (HSGP, its own priors on the
    lengthscale and amplitude), y = x w(c) + N(0, 0.3^2)."""
    gp = ctx.nn.HSGP(1, 1, num_basis=12, domain=C_GP)
    enc = ctx.encoder("enc", gp, prior=gp.prior)
    with ctx.plate("n", C.shape[0], context=C):
        w = ctx.contextual("w", enc)
        numpyro.sample("y", dist.Normal(X[:, 0] * w[:, 0], 0.3), obs=Y)


@pytest.mark.slow
def test_sbc_calibrated_contextualized_route():
    """The per-sample coefficients w(c_i) of all 30 members: the marginal route (weights
    integrated out exactly, hyperparameters by type-II MAP + Laplace) ranks them uniformly."""
    res = ctx.infer.sbc(gp_regression, C_GP, X_GP, observed=["y"], method="marginal", key=3,
                        num_replications=200, num_draws=99, bins=10, progress=False)
    assert list(res.ranks) == ["w"] and res.ranks["w"].shape == (200, N_GP, 1)
    _check(res, "marginal")
