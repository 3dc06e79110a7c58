"""Fits shared by the analysis and plot tests (cached: fitted once per test process)."""

import functools

import numpy as np

from ctxppl.estimators import ContextualizedRegressor

N, Q_NULL, B = 200, 30, 40


@functools.lru_cache(maxsize=1)
def null_fit():
    """A varying-coefficient regression (linear in the context: beta(c) = A c + b,
    mu(c) = a c + m) with 1 + Q_NULL outputs and B row-resampling bootstraps.

    Output 0 has strong effects: predictor 0's coefficient changes along context 0
    (heterogeneous), both predictors have non-zero average coefficients (homogeneous) and
    context 1 shifts the intercept (homogeneous context effect). Outputs 1..Q_NULL are pure
    noise, independent of C and X: every effect of theirs is null.
    """
    rng = np.random.default_rng(20240611)
    C = rng.normal(size=(N, 2))
    X = rng.normal(size=(N, 2))
    Y = rng.normal(size=(N, 1 + Q_NULL))
    Y[:, 0] = X[:, 0] * (1 + C[:, 0]) + X[:, 1] + C[:, 1] + 0.5 * rng.normal(size=N)
    # 300 Adam steps at learning rate 0.05 reach the least-squares solution to 1e-5 here
    # (checked against lstsq with n_bootstraps=1), far below the standard errors (~0.07).
    est = ContextualizedRegressor(encoder_type="linear", metamodel_type="naive",
                                  n_bootstraps=B, max_epochs=300, learning_rate=0.05,
                                  random_state=0).fit(C, X, Y)
    return est, C, X, Y
