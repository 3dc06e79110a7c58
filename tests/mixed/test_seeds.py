r"""The dynestyx plate tutorial's hierarchical models (``../shared/seeds``), written with
``ctx.plate`` and fitted with ``ctx.fit(method="nuts")``.

Each trajectory is an Ornstein-Uhlenbeck process :math:`dx = -0.5(x - \mu_i)dt + 0.1\,d\beta`,
:math:`x_0 \sim N(0, 0.5)`, observed at 100 times on [0, 10] with noise 0.1. The tutorial
integrates it with an ensemble Kalman filter; a linear SDE has an exact discretisation, so
here the likelihood is the exact Kalman filter (``lax.scan`` over time, vectorised over the
plates' members).

Recovery criterion: the truth lies within mean +- (4 sd + 4 sd/sqrt(ESS)) for every
parameter -- 4 posterior SDs for a near-normal posterior around the truth, plus the Monte
Carlo error of the mean (ESS from numpyro).
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.diagnostics import effective_sample_size

import ctxppl as ctx

T = jnp.linspace(0.0, 10.0, 100)
DT = float(T[1] - T[0])
THETA, SIGMA, R = 0.5, 0.1, 0.1 ** 2


def ou_loglik(mu, ys):
    """Exact log p(y_0..y_K | mu) of the observed OU process (Kalman filter), any batch."""
    a = jnp.exp(-THETA * DT)
    q = SIGMA ** 2 * (1 - a ** 2) / (2 * THETA)

    def step(carry, y):
        m, P, ll = carry
        S = P + R
        ll = ll + dist.Normal(m, jnp.sqrt(S)).log_prob(y)
        K = P / S
        m, P = m + K * (y - m), (1 - K) * P
        return (mu + a * (m - mu), a * a * P + q, ll), None

    init = (jnp.zeros_like(mu), jnp.full_like(mu, 0.5), jnp.zeros_like(mu))
    (_, _, ll), _ = jax.lax.scan(step, init, jnp.moveaxis(ys, -1, 0))
    return ll


def simulate(rng, mu):
    """OU paths at the observation times (exact transition), plus observation noise."""
    a = np.exp(-THETA * DT)
    q = SIGMA ** 2 * (1 - a ** 2) / (2 * THETA)
    x = rng.normal(0.0, np.sqrt(0.5), mu.shape)
    out = []
    for _ in range(len(T)):
        out.append(x + rng.normal(0.0, np.sqrt(R), mu.shape))
        x = mu + a * (x - mu) + rng.normal(0.0, np.sqrt(q), mu.shape)
    return np.stack(out, -1)


def one_level(ys):
    mu_global = numpyro.sample("mu_global", dist.Normal(0.0, 0.5))
    with ctx.plate("N", ys.shape[0]):
        mu_i = numpyro.sample("mu_i", dist.Normal(mu_global, 1.0))
        numpyro.factor("f", ou_loglik(mu_i, ys))


def two_level(ys):
    mu_global = numpyro.sample("mu_global", dist.Normal(0.0, 0.5))
    with ctx.plate("N_groups", ys.shape[0], dim=-2):
        mu_group = numpyro.sample("mu_group", dist.Normal(mu_global, 2.0))
        with ctx.plate("N_per_group", ys.shape[1], dim=-1):
            mu_i = numpyro.sample("mu_i", dist.Normal(mu_group, 0.2))
            numpyro.factor("f", ou_loglik(mu_i, ys))


def _check(fit, name, truth):
    draws = np.asarray(fit.samples[name])  # (chains, draws, ...)
    flat = draws.reshape(draws.shape[:2] + (-1,))
    ess = effective_sample_size(flat)
    m, s = flat.mean((0, 1)), flat.std((0, 1))
    bound = 4 * s + 4 * s / np.sqrt(ess)
    assert np.all(np.abs(m - np.ravel(truth)) < bound), (name, m, np.ravel(truth), bound)
    return s


def test_one_level_recovers_mu_i(rng):
    mu_global = 0.3
    mu_i = rng.normal(mu_global, 1.0, 10)
    ys = jnp.asarray(simulate(rng, mu_i), jnp.float32)
    fit = ctx.fit(one_level, ys, method="nuts", key=0, progress=False, num_warmup=250,
                  num_samples=300)
    sd = _check(fit, "mu_i", mu_i)
    assert np.all(sd < 0.2)  # 100 observations per path pin each mean down
    _check(fit, "mu_global", mu_global)
    assert np.asarray(fit.samples["mu_i"]).shape[2:] == (10,)


def test_two_level_recovers_mu_i_and_mu_group(rng):
    mu_global = -0.2
    mu_group = rng.normal(mu_global, 2.0, 3)
    mu_i = rng.normal(mu_group[:, None], 0.2, (3, 3))
    ys = jnp.asarray(simulate(rng, mu_i), jnp.float32)
    fit = ctx.fit(two_level, ys, method="nuts", key=1, progress=False, num_warmup=250,
                  num_samples=300)
    assert np.asarray(fit.samples["mu_i"]).shape[2:] == (3, 3)
    _check(fit, "mu_i", mu_i)
    sd_group = _check(fit, "mu_group", mu_group[:, None])
    assert np.all(sd_group < 0.3)  # three members with spread 0.2 locate each group mean
