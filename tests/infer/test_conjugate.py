r"""A normal random-intercept model against its closed-form posterior, with every method.

Model (sigma, tau known):  mu ~ N(0, s0^2);  b_j ~ N(0, tau^2);  y_ij ~ N(mu + b_j, sigma^2).
theta = (mu, b_1..b_J) is jointly Gaussian a posteriori with precision
P = diag(1/s0^2, 1/tau^2, ...) + A^T A / sigma^2 and mean P^{-1} A^T y / sigma^2, where A maps
theta to the observation means. MAP and Laplace are exact for a Gaussian posterior (up to
float32 optimisation error); NUTS is checked within Monte Carlo error
(|mean - truth| < 4 sd / sqrt(ESS), |sd_hat/sd - 1| < 4 / sqrt(2 ESS) per coordinate; with
~10 coordinates the false-failure rate is below 1e-3); SVI with a full-rank Gaussian guide
(an exact family here) is checked against a stated optimisation tolerance.
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.diagnostics import effective_sample_size

import ctxppl as ctx

S0, TAU, SIGMA = 3.0, 0.8, 1.0
J = 6
SIZES = np.array([1, 2, 3, 5, 8, 13])  # ragged groups


def data():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(J), SIZES)
    b = rng.normal(0, TAU, J)
    y = 1.5 + b[g] + rng.normal(0, SIGMA, g.size)
    return jnp.asarray(g), jnp.asarray(y, dtype=jnp.float32)


def model(g, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, S0))
    with ctx.plate("groups", J):
        b = numpyro.sample("b", dist.Normal(0.0, TAU))
    with ctx.plate("obs", g.shape[0]):
        g = numpyro.subsample(g, event_dim=0)
        y = None if y is None else numpyro.subsample(y, event_dim=0)
        numpyro.sample("y", dist.Normal(mu + b[g], SIGMA), obs=y)


def closed_form(g, y):
    g, y = np.asarray(g), np.asarray(y, dtype=np.float64)
    A = np.zeros((g.size, J + 1))
    A[:, 0] = 1.0
    A[np.arange(g.size), g + 1] = 1.0
    prior_prec = np.diag([1 / S0**2] + [1 / TAU**2] * J)
    P = prior_prec + A.T @ A / SIGMA**2
    cov = np.linalg.inv(P)
    mean = cov @ A.T @ y / SIGMA**2
    return mean, np.sqrt(np.diag(cov))


def flat(d):
    return np.concatenate([np.atleast_1d(np.asarray(d["mu"])), np.asarray(d["b"])], axis=-1)


def test_map_is_the_posterior_mode():
    g, y = data()
    mean, sd = closed_form(g, y)
    fit = ctx.fit(model, g, y, method="map", key=0, progress=False, num_steps=3000,
                  learning_rate=0.05, tol=0.0)
    np.testing.assert_allclose(flat(fit.params), mean, atol=2e-3 * sd.max())
    assert fit.converged and fit.samples is None


def test_laplace_is_exact_for_gaussian_posterior():
    g, y = data()
    mean, sd = closed_form(g, y)
    fit = ctx.fit(model, g, y, method="laplace", key=0, progress=False, num_steps=3000,
                  learning_rate=0.05, tol=0.0, num_samples=4000)
    draws = np.concatenate([fit.samples["mu"][0][:, None], fit.samples["b"][0]], axis=-1)
    n = draws.shape[0]
    # Monte Carlo error of the mean of n iid draws is sd/sqrt(n); of the sd about sd/sqrt(2n)
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * sd / np.sqrt(n) + 2e-3 * sd.max())
    assert np.all(np.abs(draws.std(0) / sd - 1) < 4 / np.sqrt(2 * n))


def test_nuts_within_monte_carlo_error():
    g, y = data()
    mean, sd = closed_form(g, y)
    fit = ctx.fit(model, g, y, method="nuts", key=1, progress=False, num_warmup=500,
                  num_samples=1000, num_chains=2)
    grouped = np.concatenate([fit.samples["mu"][..., None], fit.samples["b"]], axis=-1)
    ess = np.asarray(effective_sample_size(grouped))
    draws = grouped.reshape(-1, J + 1)
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * sd / np.sqrt(ess))
    assert np.all(np.abs(draws.std(0) / sd - 1) < 4 / np.sqrt(2 * ess))
    assert fit.diagnostics["divergences"] == 0


def test_svi_full_rank_guide():
    """The guide family contains the posterior, so SVI's optimum is exact. With 1-particle
    stochastic gradients and a decaying learning rate the remaining error is optimisation
    noise; we require 15% of a posterior sd for the mean and 15% relative error for the sd
    (plus the Monte Carlo error of the 4000 guide draws)."""
    import optax

    g, y = data()
    mean, sd = closed_form(g, y)
    tx = optax.adam(optax.exponential_decay(0.02, 4000, 0.05))
    fit = ctx.fit(model, g, y, method="svi", guide="mvn", key=2, progress=False,
                  num_steps=8000, optimizer=tx, num_particles=4, num_samples=4000)
    draws = np.concatenate([fit.samples["mu"][0][:, None], fit.samples["b"][0]], axis=-1)
    n = draws.shape[0]
    assert np.all(np.abs(draws.mean(0) - mean) < 0.15 * sd + 4 * sd / np.sqrt(n))
    assert np.all(np.abs(draws.std(0) / sd - 1) < 0.15 + 4 / np.sqrt(2 * n))


@pytest.mark.parametrize("method", ["map", "laplace"])
def test_subsampled_obs_give_same_map(method):
    """MAP with minibatches of observations reaches the same mode (scaled log-likelihood
    is unbiased; with a decaying step size the iterates converge)."""
    import optax

    g, y = data()
    mean, sd = closed_form(g, y)
    tx = optax.adam(optax.exponential_decay(0.05, 6000, 0.01))
    fit = ctx.fit(model, g, y, method=method, key=3, progress=False, num_steps=6000,
                  optimizer=tx, tol=0.0, batch_size=16, plate="obs")
    np.testing.assert_allclose(flat(fit.params), mean, atol=0.1 * sd.min())
