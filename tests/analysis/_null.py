"""Independent replications of the heterogeneity test (shared by tests/analysis/test_pvals.py
and bench/null_pvalues.py): the size of the test under a null without heterogeneity and its
power under an alternative."""

import time

import numpy as np

from ctxppl import analysis as A
from ctxppl.estimators import ContextualizedRegressor

BETA = np.array([1.0, -0.5])


def simulate(n, gamma, rng):
    """``y = x . beta(c) + N(0, 1)`` with two context features ``c ~ U(-1, 1)`` and two
    predictors ``x ~ N(0, 1)``; ``beta_0(c) = 1 + gamma c_0`` (``gamma = 0``: no
    heterogeneity), ``beta_1 = -0.5``."""
    C = rng.uniform(-1, 1, (n, 2))
    X = rng.normal(size=(n, 2))
    beta = BETA + np.stack([gamma * C[:, 0], np.zeros(n)], 1)
    return C, X, np.sum(X * beta, 1) + rng.normal(size=n)


LINEAR = {"encoder_type": "linear", "metamodel_type": "naive"}  # test_each_context's default


def replicate(R, *, n=200, bootstraps=100, gamma=0.0, seed=0, methods=("count", "normal"),
              model=None):
    """Heterogeneity p-values of ``R`` independent data sets, each fitted as
    ``test_each_context`` fits by default (``model``: a varying-coefficient model linear in
    the context; ``{}`` gives the estimators' default MLP archetypes), with ``bootstraps``
    bootstrap refits in one compiled call.

    Returns ``({method: (R, 2 contexts, 2 predictors) p-values}, seconds per replication)``.
    """
    model = LINEAR if model is None else model
    out = {m: [] for m in methods}
    t = time.perf_counter()
    for r in range(R):  # one compiled program, reused: the data change, not the shapes
        C, X, Y = simulate(n, gamma, np.random.default_rng([seed, r]))
        est = ContextualizedRegressor(**model, n_bootstraps=bootstraps,
                                      random_state=r).fit(C, X, Y)
        for m in methods:
            out[m].append(A.calc_heterogeneous_predictor_effects_pvals(est, C, method=m)[..., 0])
    return {m: np.asarray(v) for m, v in out.items()}, (time.perf_counter() - t) / R


def count_level(bootstraps, alpha=0.05):
    """P(p < alpha) of the two-sided count rule under the null: its p-values take the values
    2 (1 + k) / (B + 1) and P(p <= 2 j / (B + 1)) = 2 j / (B + 1) (tests/analysis/
    test_pvals.py), so the level is the largest attainable value below ``alpha``."""
    j = int(np.ceil(alpha * (bootstraps + 1) / 2)) - 1
    return 2 * j / (bootstraps + 1)
