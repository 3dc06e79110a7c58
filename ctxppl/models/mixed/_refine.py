r"""Float64 refinement of a GLMM's Laplace fit: the deviance and final Newton steps in NumPy.

The jitted optimiser (:mod:`~ctxppl.models.mixed._laplace`) runs in the working dtype
(float32 by default). This module re-evaluates the same Laplace deviance

.. math::

    d(\psi) = -2\sum_i w_i\,\ell(y_i \mid \eta_i(\hat u)) + \lVert\hat u\rVert^2
        + \log\left|\Lambda^T Z^T H Z \Lambda + I\right|

in float64 -- the conditional mode :math:`\hat u` by damped Newton (penalised IRLS) to
:math:`10^{-12}` -- and takes Newton steps on :math:`\psi = (\beta, \theta[, \log\phi])`
with central-difference gradients and the optimiser's Hessian, so the reported optimum and
log-likelihood carry float64 precision (JAX only for the family's elementwise
log-likelihood, score and information, in a scoped x64 context). Nothing is compiled.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import numpy as np
from threadpoolctl import threadpool_limits

from ctxppl.models.mixed._families import Family

__all__ = ["refine_laplace"]


@partial(jax.jit, static_argnums=0)
def _elementwise(family: Family, y, eta, disp, trials):  # noqa: ANN001, ANN202
    """Log-likelihood, score and information per observation (one small compiled program)."""
    return (family.loglik(y, eta, disp, trials),) + tuple(
        family.score_info(y, eta, disp, trials))


def _lams(theta: np.ndarray, layout: Any) -> list[np.ndarray]:
    out, i = [], 0
    for q, corr in layout.terms:
        lam = np.zeros((q, q))
        if corr:
            rows, cols = np.tril_indices(q)
            order = np.lexsort((rows, cols))
            lam[rows[order], cols[order]] = theta[i:i + len(rows)]
            i += len(rows)
        else:
            lam[np.arange(q), np.arange(q)] = theta[i:i + q]
            i += q
        out.append(lam)
    return out


class _Laplace:
    """The float64 Laplace deviance of one data set (block or dense layout)."""

    def __init__(self, family: Family, y, X, Z, cols, w, off, trials, structure: Any,  # noqa: ANN001
                 Q: int) -> None:
        self.f, self.y, self.X, self.Z, self.cols = family, y, X, Z, cols
        self.w, self.off, self.trials, self.s, self.Q = w, off, trials, structure, Q
        self.p = X.shape[1]
        self.nb = family.name == "negative_binomial"
        self.n_theta = sum(q * (q + 1) // 2 if c else q for q, c in structure.layout.terms)

    def _elem(self, eta: np.ndarray, disp: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ll, s, h = (np.asarray(a, float) for a in _elementwise(self.f, self.y, eta, disp,
                                                                self.trials))
        return self.w * ll, self.w * s, self.w * np.maximum(h, 0.0)

    def _zl(self, theta: np.ndarray) -> np.ndarray:
        lams = _lams(theta, self.s.layout)
        out, i = [], 0
        for lam, (_, q) in zip(lams, self.s.sizes, strict=True):
            out.append(self.Z[:, i:i + q] @ lam)
            i += q
        return np.concatenate(out, 1)

    def deviance(self, psi: np.ndarray, u0: np.ndarray | None = None,
                 ) -> tuple[float, np.ndarray, np.ndarray]:
        """``(deviance, u_hat, L)`` at ``psi`` (``inf`` where the mode cannot be found)."""
        p, nt = self.p, self.n_theta
        beta, theta = psi[:p], psi[p:p + nt]
        disp = float(np.exp(psi[-1])) if self.nb else None
        ZL = self._zl(theta)
        eta0 = self.X @ beta + self.off
        block = self.s.mode == "block"
        Q, m = self.Q, ZL.shape[1]
        u = (np.zeros((Q, m)) if block else np.zeros(Q)) if u0 is None else u0.copy()

        def eta_of(v: np.ndarray) -> np.ndarray:  # v[cols]: (n, m) in both layouts
            return eta0 + np.sum(ZL * v[self.cols], 1)

        def system(v: np.ndarray):  # noqa: ANN202
            ll, sc, info = self._elem(eta_of(v), disp)
            if block:
                g = np.stack([np.bincount(self.cols, ZL[:, a] * sc, Q) for a in range(m)], 1)
                H = np.empty((Q, m, m))
                for a in range(m):
                    for b in range(a, m):
                        H[:, a, b] = H[:, b, a] = np.bincount(
                            self.cols, info * ZL[:, a] * ZL[:, b], Q)
                H += np.eye(m)
            else:
                g = np.bincount(self.cols.ravel(), (ZL * sc[:, None]).ravel(), Q)
                flat = (self.cols[:, :, None] * Q + self.cols[:, None, :]).ravel()
                vals = (info[:, None, None] * ZL[:, :, None] * ZL[:, None, :]).ravel()
                H = np.bincount(flat, vals, Q * Q).reshape(Q, Q) + np.eye(Q)
            return float(np.sum(ll)), g - v, H

        def penalised(v: np.ndarray) -> float:
            ll, _, _ = self._elem(eta_of(v), disp)
            val = float(np.sum(ll)) - 0.5 * float(np.sum(v * v))
            return val if np.isfinite(val) else -np.inf

        ll, g, H = system(u)
        for _ in range(100):
            try:
                L = np.linalg.cholesky(H)
            except np.linalg.LinAlgError:
                return np.inf, u, H
            if block:
                delta = np.linalg.solve(H, g[..., None])[..., 0]
            else:
                delta = np.linalg.solve(H, g)
            cur, t = penalised(u), 1.0
            while penalised(u + t * delta) < cur and t > 1e-10:
                t *= 0.5
            u = u + t * delta
            ll, g, H = system(u)
            if np.max(np.abs(t * delta)) < 1e-12:
                break
        L = np.linalg.cholesky(H)
        logdet = 2.0 * float(np.sum(np.log(np.diagonal(L, axis1=-2, axis2=-1))))
        return -2.0 * ll + float(np.sum(u * u)) + logdet, u, L


def refine_laplace(family: Family, y, X, Z, cols, w, off, trials, structure: Any, Q: int,  # noqa: ANN001
                   psi: np.ndarray, hess: np.ndarray, u: np.ndarray,
                   max_steps: int = 6) -> dict[str, Any]:
    """Newton steps in float64 from the working-precision optimum ``psi``.

    ``hess``: the optimiser's Hessian of the deviance (used as the Newton matrix; the
    gradient is recomputed in float64 by central differences). Returns ``psi``,
    ``deviance``, ``u``, ``L`` and ``grad`` (float64) -- never a worse deviance than at the
    start.
    """
    # one BLAS thread: LAPACK's threads spin on small matrices on a busy machine
    with jax.enable_x64(True), threadpool_limits(1, user_api="blas"):
        lap = _Laplace(family, *(np.asarray(a, float) if a is not None and k != 3 else a
                                 for k, a in enumerate((y, X, Z, cols, w, off, trials))),
                       structure=structure, Q=Q)
        psi = np.asarray(psi, float)
        dev, u, L = lap.deviance(psi, np.asarray(u, float))
        H = 0.5 * (hess + hess.T)
        lam, V = np.linalg.eigh(H)
        lam = np.maximum(np.abs(lam), max(1e-8 * float(np.max(np.abs(lam))), 1e-12))
        grad = np.zeros_like(psi)
        for _ in range(max_steps):
            h = 1e-5 * np.maximum(1.0, np.abs(psi))
            for i in range(psi.size):
                e = np.zeros_like(psi)
                e[i] = h[i]
                grad[i] = (lap.deviance(psi + e, u)[0] - lap.deviance(psi - e, u)[0]) / (2 * h[i])
            step = -(V @ ((V.T @ grad) / lam))
            t, moved = 1.0, False
            while t > 1e-4:
                d2, u2, L2 = lap.deviance(psi + t * step, u)
                if d2 < dev:
                    psi, dev, u, L, moved = psi + t * step, d2, u2, L2, True
                    break
                t *= 0.5
            if not moved or np.max(np.abs(t * step)) < 1e-9 * (1 + np.max(np.abs(psi))):
                break
    return {"psi": psi, "deviance": dev, "u": u, "L": L, "grad": grad}
