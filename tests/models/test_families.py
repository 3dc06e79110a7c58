"""Each model family recovers known per-sample parameters when fitted with ``ctx.fit``.

Metric and tolerance of each test, and why:

* regression / classification: mean squared error of the per-sample coefficients on new
  contexts. Two reference points: the population model (error = variance of the true
  coefficients, i.e. no heterogeneity recovered) and an oracle that knows the true
  functional form. We require at least 95% of the heterogeneity recovered (error below 5% of
  the population model's) -- a neural encoder fitted by 1,000 Adam steps lands within ~10x
  of the oracle, far below that bound, so the test fails only when recovery breaks.
* correlation networks: squared error of the context-dependent correlation, same 5% bound.
* Markov networks: sparsity pattern -- AUROC of |precision| for separating true edges from
  non-edges (>= 0.95; chance is 0.5), and the edge present only for c > 0 estimated there.
* Bayesian networks: structural Hamming distance of the thresholded DAG per sample.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from numpyro import handlers

import ctxppl as ctx
from ctxppl.models import (
    BayesianNetwork,
    Classification,
    CorrelationNetwork,
    MarkovNetwork,
    Metamodel,
    Regression,
    UnivariateRegression,
    project_to_dag,
)

from . import sims

F32 = np.float32


def _sites(model, fit, *args, sites):
    """Deterministic sites of a MAP fit at new inputs (full plates)."""
    m = ctx.handlers.minibatch(model, size=None)
    m = handlers.substitute(handlers.seed(m, 0), data=fit.params)
    tr = handlers.trace(m).get_trace(*[None if a is None else jnp.asarray(a, F32)
                                       for a in args])
    return {s: np.asarray(tr[s]["value"]) for s in sites}


def _fit(model, *args, steps=1000, **kw):
    args = [None if a is None else a if np.asarray(a).dtype.kind == "i" else
            np.asarray(a, F32) for a in args]
    return ctx.fit(model, *args, key=0, num_steps=steps, progress=False, **kw)


def test_regression_recovers_coefficients():
    C, X, Y, B, mu = sims.regression(1000, 0)
    Ct, _, _, Bt, mut = sims.regression(500, 1)
    model = Regression(y_dim=1)
    fit = _fit(model, C, X, Y[:, None])
    out = _sites(model, fit, Ct, np.zeros((500, 3)), sites=("beta", "mu"))
    err = np.mean((out["beta"][:, 0] - Bt) ** 2)
    population = np.mean(Bt.var(axis=0))
    oracle = np.mean((sims.oracle_regression(C, X, Y, Ct)[0] - Bt) ** 2)
    assert err < 0.05 * population, (err, population, oracle)
    assert np.mean((out["mu"][:, 0] - mut) ** 2) < 0.05 * np.var(mut)


@pytest.mark.parametrize("kind", [
    pytest.param("naive", marks=pytest.mark.slow), pytest.param("multitask",
                                                                 marks=pytest.mark.slow),
    "tasksplit"])
def test_metamodels_fit_two_outputs(kind):
    """Multi-output regression with every other metamodel (outputs = tasks)."""
    C, X, Y, B, mu = sims.regression(600, 2)
    Y2 = np.stack([Y, -Y], 1)
    model = Regression(y_dim=2, metamodel=Metamodel(kind, width=16, num_archetypes=6))
    fit = _fit(model, C, X, Y2, steps=800)
    out = _sites(model, fit, C[:200], X[:200], sites=("beta",))
    err = np.mean((out["beta"] - np.stack([B[:200], -B[:200]], 1)) ** 2)
    assert err < 0.05 * np.mean(B.var(axis=0)), err


def test_univariate_regression_recovers_marginal_slopes():
    """Independent zero-mean inputs: the simple slope of y on x_j is beta_j(c)."""
    rng = np.random.default_rng(3)
    C = rng.uniform(-1, 1, (1000, 1))
    X = rng.normal(size=(1000, 2))
    B = np.stack([C[:, 0], -C[:, 0]], 1)
    Y = (X * B).sum(1, keepdims=True) + 0.1 * rng.normal(size=(1000, 1))
    model = UnivariateRegression(y_dim=1)
    fit = _fit(model, C, X, Y)
    out = _sites(model, fit, C, X, sites=("beta", "mu"))
    assert out["beta"].shape == (1000, 1, 2)
    assert np.mean((out["beta"][:, 0] - B) ** 2) < 0.05 * np.mean(B.var(axis=0))


def test_binary_classification_recovers_coefficients():
    C, X, y, B, mu = sims.logistic(3000, 4)
    model = Classification(y_dim=1)
    fit = _fit(model, C, X, y[:, None])
    out = _sites(model, fit, C[:500], X[:500], sites=("beta",))
    err = np.mean((out["beta"][:, 0, 0] - B[:500, 0]) ** 2)
    assert err < 0.05 * np.var(B[:, 0]) * 2, err  # Var(2c) = 4/3; bound = 0.13


def test_multiclass_classification_reference_coding():
    rng = np.random.default_rng(5)
    n = 3000
    C = rng.uniform(-1, 1, (n, 1))
    X = rng.normal(size=(n, 2))
    B = np.zeros((n, 3, 2))
    B[:, 1, 0] = 2 * C[:, 0]
    B[:, 2, 1] = 2.0
    logits = np.einsum("nkp,np->nk", B, X)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = (rng.uniform(size=(n, 1)) > np.cumsum(p, 1)).sum(1)
    model = Classification(num_classes=3)
    fit = _fit(model, C, X, y.astype(np.int32))
    out = _sites(model, fit, C[:500], X[:500], sites=("beta",))
    assert np.all(out["beta"][:, 0] == 0)  # reference class
    err = np.mean((out["beta"][:, 1:] - B[:500, 1:]) ** 2)
    assert err < 0.1, err  # population model: mean variance of B[:, 1:] = 0.33


def test_correlation_network_recovers_correlation():
    C, X, R = sims.correlation(2000, 6)
    model = CorrelationNetwork()
    fit = _fit(model, C, X)
    rho = _sites(model, fit, C[:500], X[:500], sites=("correlation",))["correlation"]
    assert rho.shape == (500, 3, 3)
    np.testing.assert_allclose(rho[:, [0, 1, 2], [0, 1, 2]], 1.0)
    err = np.mean((rho[:, 0, 1] - R[:500, 0, 1]) ** 2)
    assert err < 0.05 * np.var(R[:, 0, 1]), err


def test_xy_correlation_network():
    """Network between two feature sets: (n, p, q) cross-correlations only."""
    C, X, R = sims.correlation(2000, 7)
    model = CorrelationNetwork()
    fit = _fit(model, C, X[:, :1], X[:, 1:])
    rho = _sites(model, fit, C[:500], X[:500, :1], X[:500, 1:],
                 sites=("correlation",))["correlation"]
    assert rho.shape == (500, 1, 2)
    assert np.mean((rho[:, 0, 0] - R[:500, 0, 1]) ** 2) < 0.05 * np.var(R[:, 0, 1])
    assert np.mean(rho[:, 0, 1] ** 2) < 0.01  # x0 and x2 are independent


def test_markov_network_recovers_sparsity_pattern():
    from sklearn.metrics import roc_auc_score

    C, X, P = sims.markov(3000, 8)
    model = MarkovNetwork(alpha=1e-3)
    fit = _fit(model, C, X)
    prec = _sites(model, fit, C[:1000], X[:1000], sites=("precision",))["precision"]
    off = ~np.eye(4, dtype=bool)
    truth = P[:1000][:, off] != 0
    assert roc_auc_score(truth.ravel(), np.abs(prec[:, off]).ravel()) > 0.95
    pos = C[:1000, 0] > 0.2  # away from the switch at c = 0
    assert abs(prec[pos, 0, 1].mean() - 0.45) < 0.1
    assert abs(prec[C[:1000, 0] < -0.2, 0, 1].mean()) < 0.1


def test_bayesian_network_recovers_dag():
    C, X, W = sims.dag(2000, 9)
    model = BayesianNetwork()
    fit = _fit(model, C, X)
    Wh = _sites(model, fit, C[:500], X[:500], sites=("W",))["W"]
    Wd = project_to_dag(Wh)
    shd = ((np.abs(Wd) > 0.3) != (W[:500] != 0)).sum(axis=(1, 2))
    assert shd.mean() < 0.5, shd.mean()  # 2 true edges among 12 possible
    assert np.mean((Wd - W[:500]) ** 2) < 0.01


def test_elastic_net_penalty_enters_log_density():
    C = np.ones((3, 1), F32)
    X = np.ones((3, 2), F32)
    Y = np.zeros((3, 1), F32)
    base = Regression(y_dim=1)
    pen = Regression(y_dim=1, alpha=2.0, l1_ratio=0.5, mu_ratio=0.25)
    tr = handlers.trace(handlers.seed(pen, 0)).get_trace(C, X, Y)
    beta, mu = np.asarray(tr["beta"]["value"]), np.asarray(tr["mu"]["value"])
    want = 2.0 * (0.5 * (0.75 * np.abs(beta).sum((1, 2)) + 0.25 * np.abs(mu).sum(1))
                  + 0.5 * (0.75 * (beta**2).sum((1, 2)) + 0.25 * (mu**2).sum(1)))
    params = {k: v["value"] for k, v in tr.items() if v["type"] == "param"}
    lp_pen, _ = numpyro.infer.util.log_density(pen, (C, X, Y), {}, params)
    lp_base, _ = numpyro.infer.util.log_density(base, (C, X, Y), {}, params)
    np.testing.assert_allclose(float(lp_base - lp_pen), want.sum(), rtol=1e-4)  # float32


def test_second_fit_does_not_recompile():
    """Equal model settings hash equal: a refit with new data reuses the compiled fit."""
    import jax

    C, X, Y, _, _ = sims.regression(64, 10)
    model = Regression(y_dim=1, metamodel=Metamodel("naive", "linear"))
    _fit(model, C, X, Y[:, None], steps=20)
    with jax.log_compiles():
        import logging

        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logger = logging.getLogger("jax")
        logger.addHandler(handler)
        try:
            C2, X2, Y2, _, _ = sims.regression(64, 11)
            _fit(Regression(y_dim=1, metamodel=Metamodel("naive", "linear")), C2, X2,
                 Y2[:, None], steps=20)
        finally:
            logger.removeHandler(handler)
    compiled = [r for r in records if "_run_opt_impl" in r.getMessage()
                and r.getMessage().startswith("Compiling")]
    assert compiled == []
