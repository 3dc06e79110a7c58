r"""``method="marginal"`` against closed forms, and the coverage of its intervals.

* Bayesian linear regression (weights ~ N(0, s0^2), noise sigma): with sigma known the
  weights' posterior is Gaussian with precision I/s0^2 + A^T A/sigma^2 -- the route must give
  it exactly (draws checked within Monte Carlo error); with sigma latent its type-II MAP (in
  log space, Jacobian included) must maximise the closed-form evidence.
* Coverage: G independent groups, theta_g ~ N(0, 1) drawn from the prior, y ~ N(theta_g,
  sigma^2). The posterior factorises over groups, so the G 90% intervals are independent and
  each covers its theta_g with probability exactly 0.9: the count is Binomial(G, 0.9) and the
  test allows 4.5 standard deviations (false-failure rate below 1e-5).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy.optimize import minimize_scalar

import ctxppl as ctx

S0, SIGMA = 2.0, 0.5


def blr_data(n=30, d=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(0, S0, d + 1)
    y = X @ w[:d] + w[d] + rng.normal(0, SIGMA, n)
    return jnp.asarray(X), jnp.asarray(y, dtype=jnp.float32)


def blr(X, y=None, sigma=SIGMA):
    enc = ctx.encoder("enc", ctx.nn.Linear(X.shape[1], 1), prior=dist.Normal(0.0, S0))
    if sigma is None:
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with ctx.plate("n", X.shape[0], context=X):
        f = ctx.contextual("f", enc)[:, 0]
        numpyro.sample("y", dist.Normal(f, sigma), obs=y)


def blr_latent_sigma(X, y=None):
    blr(X, y, sigma=None)


def design(X):
    X = np.asarray(X, np.float64)
    return np.hstack([X, np.ones((X.shape[0], 1))])


def posterior(X, y, sigma):
    A = design(X)
    P = np.eye(A.shape[1]) / S0**2 + A.T @ A / sigma**2
    cov = np.linalg.inv(P)
    return cov @ A.T @ np.asarray(y, np.float64) / sigma**2, cov


def test_weights_posterior_is_the_closed_form():
    X, y = blr_data()
    fit = ctx.fit(blr, X, y, method="marginal", key=0, progress=False, num_samples=4000)
    assert fit.method == "marginal" and fit.converged
    post = fit.posterior()
    draws = np.concatenate([np.asarray(post["enc.weight"]).reshape(4000, -1),
                            np.asarray(post["enc.bias"]).reshape(4000, -1)], axis=1)
    mean, cov = posterior(X, y, SIGMA)
    sd = np.sqrt(np.diag(cov))
    # independent draws: |mean error| < 4.5 sd / sqrt(S), |sd ratio - 1| < 4.5 / sqrt(2 S)
    assert np.all(np.abs(draws.mean(0) - mean) < 4.5 * sd / math.sqrt(4000))
    assert np.all(np.abs(draws.std(0) / sd - 1) < 4.5 / math.sqrt(2 * 4000))
    # the per-member site is the linear map of the weights: its draws come along
    f = np.asarray(fit.predict(X[:3], return_sites=["f"])["f"])
    assert f.shape == (4000, 3, 1)


def test_noise_scale_maximises_the_closed_form_evidence():
    X, y = blr_data(n=40)
    A, yy = design(X), np.asarray(y, np.float64)

    def neg_log_post(u):  # -[log N(y; 0, s0^2 AA^T + sigma^2 I) + log HalfNormal(sigma) + u]
        s = math.exp(u)
        K = S0**2 * A @ A.T + s**2 * np.eye(len(yy))
        _, logdet = np.linalg.slogdet(K)
        quad = yy @ np.linalg.solve(K, yy)
        log_prior = math.log(2 / math.sqrt(2 * math.pi)) - s**2 / 2
        return 0.5 * (logdet + quad) - log_prior - u

    ref = math.exp(minimize_scalar(neg_log_post, bounds=(-6, 3), method="bounded",
                                   options={"xatol": 1e-8}).x)
    fit = ctx.fit(blr_latent_sigma, X, y, method="marginal", key=0, progress=False,
                  hyper="map", num_samples=10)
    sigma_hat = float(np.asarray(fit.posterior()["sigma"])[0])
    assert sigma_hat == pytest.approx(ref, rel=2e-3)


class PerGroup(ctx.nn.Encoder):
    """One weight per group: ``theta(c) = c @ weight`` for a one-hot ``c``."""

    weight: jax.Array
    linear_fields = ("weight",)

    def __init__(self, groups: int):
        self.weight = jnp.zeros((groups,))

    def __call__(self, c):
        return c @ self.weight


def test_coverage_of_independent_intervals_is_binomial():
    G, n_per, level = 200, 2, 0.9
    rng = np.random.default_rng(1)
    theta = rng.normal(0, 1, G)
    g = np.repeat(np.arange(G), n_per)
    C = jnp.asarray(np.eye(G, dtype=np.float32)[g])
    y = jnp.asarray(theta[g] + rng.normal(0, SIGMA, g.size), dtype=jnp.float32)

    def model(C, y=None):
        enc = ctx.encoder("enc", PerGroup(G), prior=dist.Normal(0.0, 1.0))
        with ctx.plate("obs", C.shape[0], context=C):
            numpyro.sample("y", dist.Normal(ctx.contextual("theta", enc), SIGMA), obs=y)

    fit = ctx.fit(model, C, y, method="marginal", key=2, progress=False, num_samples=2000)
    draws = np.asarray(fit.posterior()["enc.weight"])  # (S, G)
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
    covered = int(np.sum((theta >= lo) & (theta <= hi)))
    sd = math.sqrt(G * level * (1 - level))
    assert abs(covered - G * level) < 4.5 * sd, (covered, G * level, sd)


def test_needs_gaussian_weights():
    X, y = blr_data()

    def model(X, y=None):
        enc = ctx.encoder("enc", ctx.nn.Linear(X.shape[1], 1))  # point-estimated
        with ctx.plate("n", X.shape[0], context=X):
            numpyro.sample("y", dist.Normal(ctx.contextual("f", enc)[:, 0], 1.0), obs=y)

    with pytest.raises(ValueError, match="integrates out Gaussian weights"):
        ctx.fit(model, X, y, method="marginal", key=0, progress=False)


def test_bad_options():
    X, y = blr_data()
    with pytest.raises(ValueError, match="`hyper` must be"):
        ctx.fit(blr, X, y, method="marginal", key=0, hyper="nuts")
    with pytest.raises(TypeError, match="unknown option"):
        ctx.fit(blr, X, y, method="marginal", key=0, batch_size=10)


def test_bernoulli_mode_matches_newton_reference():
    """Logistic regression: the weights' mode (the Laplace centre) equals the penalised
    maximum-likelihood solution computed by an independent float64 Newton iteration."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(80, 2)).astype(np.float32)
    w = np.array([1.5, -2.0, 0.5])
    p = 1 / (1 + np.exp(-(X @ w[:2] + w[2])))
    y = (rng.uniform(size=80) < p).astype(np.float32)

    def model(X, y=None):
        enc = ctx.encoder("enc", ctx.nn.Linear(2, 1), prior=dist.Normal(0.0, S0))
        with ctx.plate("n", X.shape[0], context=X):
            numpyro.sample("y", dist.Bernoulli(logits=ctx.contextual("f", enc)[:, 0]), obs=y)

    A, b = design(X), np.zeros(3)
    for _ in range(50):
        q = 1 / (1 + np.exp(-A @ b))
        g = A.T @ (q - y) + b / S0**2
        H = A.T @ (A * (q * (1 - q))[:, None]) + np.eye(3) / S0**2
        b = b - np.linalg.solve(H, g)
    fit = ctx.fit(model, jnp.asarray(X), jnp.asarray(y), method="marginal", key=0,
                  progress=False, num_samples=4000)
    post = fit.posterior()
    draws = np.concatenate([np.asarray(post["enc.weight"]).reshape(4000, -1),
                            np.asarray(post["enc.bias"]).reshape(4000, -1)], axis=1)
    sd = np.sqrt(np.diag(np.linalg.inv(H)))
    assert np.all(np.abs(draws.mean(0) - b) < 4.5 * sd / math.sqrt(4000) + 1e-3)
    assert np.all(np.abs(draws.std(0) / sd - 1) < 4.5 / math.sqrt(2 * 4000) + 1e-3)


def test_second_fit_reuses_compiled_stages(monkeypatch):
    from ctxppl.infer import _marginal

    X, y = blr_data()
    ctx.fit(blr, X, y, method="marginal", key=0, progress=False, num_samples=50)
    traces = []
    original = _marginal._setup
    monkeypatch.setattr(_marginal, "_setup", lambda *a: traces.append(1) or original(*a))
    fit = ctx.fit(blr, X, y + 1.0, method="marginal", key=1, progress=False, num_samples=50)
    assert fit.converged
    # only the shape-only trace that reads the site names runs again; no stage recompiles
    assert len(traces) == 1
