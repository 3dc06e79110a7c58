"""Exploration: Thompson draws use the covariance (spread shrinks with data), UCB, means."""

import jax
import numpy as np
import pytest

import ctxppl as ctx
from ctxppl.online._explore import sample_coefficients

D = 3


def grown_table(rng, covariance="full"):
    """Entities 'a', 'b', 'c' that saw 16, 160 and 1600 records (1, 10, 100 minibatches)."""
    re = ctx.online.RandomEffects(ctx.online.bayes_linear(1.0, covariance=covariance), D)
    for step in range(100):
        ents = ["c"] + (["b"] if step < 10 else []) + (["a"] if step < 1 else [])
        e = np.repeat(ents, 16)
        x = rng.normal(size=(e.size, D))
        re.update(e, x, x @ np.array([1.0, -1.0, 0.5]) + rng.normal(size=e.size), step=step)
    return re


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_thompson_spread_is_the_covariance_and_shrinks(rng, getkey, covariance):
    """Draws have covariance P^-1: each coordinate's sample sd matches sqrt(diag(P^-1))
    within 5 Monte Carlo standard errors (the sd of a sample sd from N draws is
    sd / sqrt(2 (N - 1))), and it shrinks as the entity sees more data (16 -> 160 -> 1600
    records). Sampling with the precision itself would make it grow instead."""
    re = grown_table(rng, covariance)
    mean, prec = re.lookup(["a", "b", "c"])
    n = 4000
    draws = np.asarray(sample_coefficients(getkey(), mean, prec, n))
    sd = draws.std(axis=0, ddof=1)  # (3 entities, D)
    cov = np.linalg.inv(prec) if covariance == "full" else 1 / prec[..., None] * np.eye(D)
    want = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    np.testing.assert_allclose(sd, want, rtol=5 / np.sqrt(2 * (n - 1)))
    np.testing.assert_allclose(draws.mean(0), mean, atol=5 * (want / np.sqrt(n)).max())
    assert np.all(sd[0] > sd[1]) and np.all(sd[1] > sd[2])
    # with 10x more data the sd falls by about sqrt(10) (prior precision 1 is negligible)
    np.testing.assert_allclose(sd[1] / sd[2], np.sqrt(10), rtol=0.25)
    if covariance == "full":  # full draws keep the correlations
        corr = np.corrcoef(draws[:, 2].T)
        want_corr = cov[2] / np.outer(want[2], want[2])
        np.testing.assert_allclose(corr, want_corr, atol=5 / np.sqrt(n))


def test_thompson_scores_one_draw_per_entity(rng, getkey):
    re = grown_table(rng)
    """Records of one entity share its coefficient draw (so argmax over an entity's
    candidates is a Thompson choice); each score's spread is sqrt(x' P^-1 x) (5 MC s.e.)."""
    x = rng.normal(size=(4, D))
    x[1] = 2 * x[0]
    ids = ["a", "a", "c", "new"]
    n = 200
    s = np.stack([re.thompson(ids, x, key=k) for k in jax.random.split(getkey(), n)])
    np.testing.assert_allclose(s[:, 1], 2 * s[:, 0], rtol=1e-5)
    mean, prec = re.lookup(ids)
    var = np.einsum("ni,nij,nj->n", x, np.linalg.inv(prec), x)
    np.testing.assert_allclose(s.mean(0), np.sum(mean * x, -1), atol=5 * np.sqrt(var.max() / n))
    np.testing.assert_allclose(s.std(0, ddof=1), np.sqrt(var), rtol=5 / np.sqrt(2 * (n - 1)))


def test_ucb_and_predictive_means_closed_form(rng):
    rule = ctx.online.bayes_poisson(2.0)
    re = ctx.online.RandomEffects(rule, D, prior_mean=[0.1, 0.0, -0.1])
    e = np.repeat(["p", "q"], 12)
    x = 0.3 * rng.normal(size=(24, D))
    re.update(e, x, rng.poisson(1.0, size=24))
    xt = rng.normal(size=(3, D))
    off = np.array([0.0, 0.5, -0.5])
    ids = ["p", "q", "unseen"]
    mean, prec = re.lookup(ids)
    np.testing.assert_allclose(mean[2], [0.1, 0.0, -0.1], rtol=1e-6)  # prior for the unseen
    np.testing.assert_allclose(prec[2], 2.0 * np.eye(D))
    eta = np.sum(mean * xt, -1) + off
    var = np.einsum("ni,nij,nj->n", xt, np.linalg.inv(prec.astype(float)), xt)
    np.testing.assert_allclose(re.score(ids, xt, off), eta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(re.ucb(ids, xt, off, alpha=1.5), eta + 1.5 * np.sqrt(var),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(re.predict(ids, xt, off), np.exp(eta + var / 2), rtol=1e-5)
    eta_j, var_j = np.asarray(eta, np.float32), np.asarray(var, np.float32)
    probit = 1 / (1 + np.exp(-eta_j / np.sqrt(1 + np.pi * var_j / 8)))
    np.testing.assert_allclose(ctx.online.predictive_mean("bernoulli", eta_j, var_j), probit,
                               rtol=1e-6)
