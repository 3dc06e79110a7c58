"""Simulated data with known per-sample parameters, and oracle estimators for reference.

Shared by tests/models and tests/estimators. Each simulator returns the data and the true
per-sample parameters; tests judge a fit against two reference points: the population model
(one parameter vector for everyone, error = variance of the true parameters) and an oracle
that knows the true functional form (least squares on the true basis)."""

from __future__ import annotations

import numpy as np


def regression(n: int, seed: int, noise: float = 0.1):
    """y = x . beta(c) + mu(c) + noise, c in [-1, 1]^2, x ~ N(0, I_3)."""
    rng = np.random.default_rng(seed)
    C = rng.uniform(-1, 1, (n, 2))
    X = rng.normal(size=(n, 3))
    B = np.stack([C[:, 0], C[:, 1] ** 2, 1 + 0.5 * C[:, 0] * C[:, 1]], 1)
    mu = 0.5 * C[:, 1]
    Y = (X * B).sum(1) + mu + noise * rng.normal(size=n)
    return C, X, Y, B, mu


def _basis(C: np.ndarray) -> np.ndarray:
    return np.stack([np.ones(len(C)), C[:, 0], C[:, 1], C[:, 0] ** 2, C[:, 1] ** 2,
                     C[:, 0] * C[:, 1]], 1)


def oracle_regression(C, X, Y, C_test):
    """Least squares on the true basis (quadratics of c) -- the best a fit can do."""
    F = _basis(C)
    Z = np.hstack([X[:, j:j + 1] * F for j in range(X.shape[1])] + [F])
    coef = np.linalg.lstsq(Z, Y, rcond=None)[0]
    Ft = _basis(C_test)
    k = F.shape[1]
    B = np.stack([Ft @ coef[j * k:(j + 1) * k] for j in range(X.shape[1])], 1)
    return B, Ft @ coef[X.shape[1] * k:]


def logistic(n: int, seed: int):
    """Binary y with logit = x . beta(c) + mu(c)."""
    rng = np.random.default_rng(seed)
    C = rng.uniform(-1, 1, (n, 1))
    X = rng.normal(size=(n, 2))
    B = np.stack([2.0 * C[:, 0], np.ones(n)], 1)
    mu = -0.5 + 0.0 * C[:, 0]
    p = 1 / (1 + np.exp(-((X * B).sum(1) + mu)))
    return C, X, (rng.uniform(size=n) < p).astype(int), B, mu


def correlation(n: int, seed: int):
    """3 features; corr(x0, x1) = 0.8 c, x2 independent."""
    rng = np.random.default_rng(seed)
    C = rng.uniform(-1, 1, (n, 1))
    rho = 0.8 * C[:, 0]
    z = rng.normal(size=(n, 3))
    X = np.stack([z[:, 0], rho * z[:, 0] + np.sqrt(1 - rho**2) * z[:, 1], z[:, 2]], 1)
    R = np.tile(np.eye(3), (n, 1, 1))
    R[:, 0, 1] = R[:, 1, 0] = rho
    return C, X, R


def markov(n: int, seed: int, p: int = 4):
    """Unit-diagonal precision; edge (0, 1) only where c > 0, edge (2, 3) everywhere."""
    rng = np.random.default_rng(seed)
    C = rng.uniform(-1, 1, (n, 1))
    P = np.tile(np.eye(p), (n, 1, 1))
    P[:, 0, 1] = P[:, 1, 0] = np.where(C[:, 0] > 0, 0.45, 0.0)
    P[:, 2, 3] = P[:, 3, 2] = -0.4
    L = np.linalg.cholesky(np.linalg.inv(P))
    X = np.einsum("nij,nj->ni", L, rng.normal(size=(n, p)))
    return C, X, P


def dag(n: int, seed: int, p: int = 4):
    """Linear SEM, equal noise sd 0.5: x0 -> x1 (1 + c/2), x1 -> x2 (-1 + c^2/2), x3 alone."""
    rng = np.random.default_rng(seed)
    C = rng.uniform(-1, 1, (n, 1))
    W = np.zeros((n, p, p))
    W[:, 0, 1] = 1.0 + 0.5 * C[:, 0]
    W[:, 1, 2] = -1.0 + 0.5 * C[:, 0] ** 2
    E = 0.5 * rng.normal(size=(n, p))
    X = E.copy()
    X[:, 1] += X[:, 0] * W[:, 0, 1]
    X[:, 2] += X[:, 1] * W[:, 1, 2]
    return C, X, W
