"""Float64 NumPy references for the online tests (independent of the jitted code)."""

import numpy as np


def nll_grad_hess(family, x, y, eta, w):
    """Negative log likelihood, its gradient and Hessian in the coefficients (data part)."""
    if family == "bernoulli":
        p = 1.0 / (1.0 + np.exp(-eta))
        nll = np.sum(w * (np.logaddexp(0.0, eta) - y * eta))
        s, v = p - y, p * (1 - p)
    elif family == "poisson":
        mu = np.exp(eta)
        nll = np.sum(w * (mu - y * eta))
        s, v = mu - y, mu
    else:
        nll = np.sum(w * 0.5 * (y - eta) ** 2)
        s, v = eta - y, np.ones_like(eta)
    return nll, x.T @ (w * s), (x * (w * v)[:, None]).T @ x


def laplace_step(family, m, P, m0, p0, delta, x, y, o, w, iters=100):
    """Exact sequential Laplace step by float64 Newton to convergence (the maths of the
    module docstring of ctxppl.online._updates)."""
    Q = delta * P + (1 - delta) * np.diag(p0)
    b = delta * P @ m + (1 - delta) * p0 * m0
    th = m.astype(np.float64).copy()
    for _ in range(iters):
        _, g, h = nll_grad_hess(family, x, y, x @ th + o, w)
        step = np.linalg.solve(h + Q, g + Q @ th - b)
        th = th - step
        if np.max(np.abs(step)) < 1e-13:
            break
    _, _, h = nll_grad_hess(family, x, y, x @ th + o, w)
    return th, h + Q
