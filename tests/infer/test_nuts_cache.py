"""NUTS reuses its compiled sampler across ctx.fit calls: data, MAP values and weights are
arguments of the compiled program, so a new data set of the same shapes gives the right
posterior without recompiling, and a repeated call reproduces its draws exactly."""

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import ctxppl as ctx

N, PRIOR_SD = 20, 10.0
OPTS = dict(method="nuts", num_warmup=200, num_samples=300, num_chains=2)


def normal_mean(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
    with ctx.plate("obs", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def posterior(y, w):
    """Closed form: mu | y ~ Normal(sum(w y) / (sum(w) + 1/s^2), 1 / (sum(w) + 1/s^2))."""
    prec = np.sum(w) + PRIOR_SD ** -2
    return np.sum(w * y) / prec, prec ** -0.5


class Compiles(logging.Handler):
    def __init__(self):
        super().__init__()
        self.names = []

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("Compiling "):
            self.names.append(msg.split(" with ")[0])


def _bar_shown():
    """numpyro turns its progress bar off under CI and pytest-xdist."""
    return not ("CI" in os.environ or "PYTEST_XDIST_WORKER" in os.environ)


def check(fit, y, w):
    mean, sd = posterior(y, w)
    draws = np.asarray(fit.samples["mu"]).ravel()
    ess = fit.diagnostics["ess"]["mu"]
    # Monte Carlo error of the posterior mean is sd / sqrt(ESS); 5 of those
    assert abs(draws.mean() - mean) < 5 * sd / np.sqrt(ess), (draws.mean(), mean, ess)
    assert abs(draws.std() - sd) < 5 * sd / np.sqrt(2 * ess)  # SE of an SD ~ sd/sqrt(2 ESS)


@pytest.mark.parametrize("progress", [False, True])
def test_second_nuts_fit_reuses_the_compiled_sampler_and_gets_its_own_posterior(progress,
                                                                                 short_chains):
    opts = {**OPTS, "progress": progress}
    rng = np.random.default_rng(0)
    y1 = rng.normal(1.0, 1.0, N).astype(np.float32)
    y2 = rng.normal(-2.0, 1.0, N).astype(np.float32)
    ones = np.ones(N, np.float32)
    with short_chains():  # 600 draws: R-hat may sit just above 1.01, and ctx says so
        first = ctx.fit(normal_mean, jnp.asarray(y1), key=0, **opts)
    check(first, y1, ones)
    counter = Compiles()
    logger = logging.getLogger("jax")
    logger.addHandler(counter)
    try:
        with jax.log_compiles(), short_chains():
            second = ctx.fit(normal_mean, jnp.asarray(y2), key=1, **opts)
    finally:
        logger.removeHandler(counter)
    # without a progress bar the whole run is one compiled program: nothing recompiles; with
    # numpyro's progress bar its initialisation is re-traced (a closure per call, a small
    # scan), the warm-up/sampling step -- most of the compile time -- is reused
    allowed = [] if not second.options["progress"] or not _bar_shown() else ["jit(scan)"]
    assert [n for n in counter.names if n.split()[-1] not in allowed] == [], counter.names
    check(second, y2, ones)
    with short_chains():
        again = ctx.fit(normal_mean, jnp.asarray(y1), key=0, **opts)
    np.testing.assert_array_equal(np.asarray(again.samples["mu"]),
                                  np.asarray(first.samples["mu"]))


def test_nuts_weights_are_arguments_too(short_chains):
    rng = np.random.default_rng(1)
    y = rng.normal(0.5, 1.0, N).astype(np.float32)
    w_a = np.r_[np.ones(N // 2), np.zeros(N - N // 2)].astype(np.float32)  # first half only
    w_b = rng.multinomial(N, np.full(N, 1.0 / N)).astype(np.float32)  # a bootstrap resample
    y = y + 3.0 * (np.arange(N) >= N // 2)  # halves differ: the weights matter
    for key, w in enumerate((w_a, w_b)):
        with short_chains():
            fit = ctx.fit(normal_mean, jnp.asarray(y), key=key, weights=w, plate="obs",
                          progress=False, **OPTS)
        check(fit, y, w)


@pytest.mark.parametrize("chain_method", ["auto", "parallel"])
def test_one_chain_reuses_the_compiled_sampler(chain_method, short_chains):
    """num_chains=1 with the default chain_method='auto' used to pick 'parallel' (pmap) on
    one device and recompile on every call; every chain count and method now reuses it."""
    opts = {**OPTS, "num_chains": 1, "chain_method": chain_method, "progress": False}
    rng = np.random.default_rng(2)
    y1, y2 = (rng.normal(m, 1.0, N).astype(np.float32) for m in (1.0, -1.0))
    with short_chains():  # one chain of 300 draws: ESS may be below 100, and ctx says so
        ctx.fit(normal_mean, jnp.asarray(y1), key=0, **opts)
    counter = Compiles()
    logger = logging.getLogger("jax")
    logger.addHandler(counter)
    try:
        with jax.log_compiles(), short_chains():
            second = ctx.fit(normal_mean, jnp.asarray(y2), key=1, **opts)
    finally:
        logger.removeHandler(counter)
    assert counter.names == []
    assert second.samples["mu"].shape == (1, OPTS["num_samples"])
    draws = np.asarray(second.samples["mu"]).ravel()
    mean, sd = posterior(y2, np.ones(N))
    ess = float(numpyro.diagnostics.effective_sample_size(draws[None]))
    assert abs(draws.mean() - mean) < 5 * sd / np.sqrt(ess)
