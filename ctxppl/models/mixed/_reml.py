r"""Exact (RE)ML for linear mixed models: random effects integrated out analytically.

The model is :math:`y = X\beta + Zb + \varepsilon`, :math:`b \sim N(0, \sigma^2 \Lambda
\Lambda^T)`, :math:`\varepsilon \sim N(0, \sigma^2 W^{-1})`. Following lme4 (Bates et al.,
2015, *J. Stat. Softw.* 67(1), section 3), :math:`\beta` and :math:`\sigma` are profiled out,
leaving a deviance in the relative covariance factor :math:`\theta` only:

.. math::

    L L^T = \Lambda^T Z^T W Z \Lambda + I,\quad
    R_{ZX} = L^{-1}\Lambda^T Z^T W X,\quad c_u = L^{-1}\Lambda^T Z^T W y,

    R_X R_X^T = X^T W X - R_{ZX}^T R_{ZX},\quad
    c_\beta = R_X^{-1}(X^T W y - R_{ZX}^T c_u),\quad
    r^2 = y^T W y - \lVert c_u\rVert^2 - \lVert c_\beta\rVert^2,

    d_{ML}(\theta) = \log|L|^2 + n\,[1 + \log(2\pi r^2/n)],\qquad
    d_{REML}(\theta) = \log|L|^2 + \log|R_X|^2 + (n-p)\,[1 + \log(2\pi r^2/(n-p))].

Everything is expressed through the sufficient statistics :math:`Z^TWZ`, :math:`Z^TWX`,
:math:`Z^TWy`, :math:`X^TWX`, :math:`X^TWy`, :math:`y^TWy`, computed once (float64, on
the host). Two layouts:

* ``"block"`` -- every term shares one grouping factor: :math:`Z^TWZ` is block diagonal,
  one :math:`q\times q` block per group, and the whole deviance is batched over groups
  (cost :math:`O(G q^3)` per evaluation, independent of the number of observations);
* ``"dense"`` -- several grouping factors (crossed or nested): one dense
  :math:`Q \times Q` system, :math:`Q = \sum_k G_k q_k` (for moderate :math:`Q`).

:math:`\theta` is found by damped Newton with exact Hessians inside one ``jit``; the
conditional modes (BLUPs) :math:`b = \Lambda L^{-T}(c_u - R_{ZX}\hat\beta)` follow in closed
form.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ctxppl.models.mixed._linalg import (
    ThetaLayout,
    block_diag,
    chol,
    logdet_chol,
    make_lambda,
    solve_lower,
    solve_lower_t,
)
from ctxppl.models.mixed._optim import minimize_newton

__all__ = ["Stats", "Structure", "sufficient_stats", "fit_gaussian", "DENSE_LIMIT"]

DENSE_LIMIT = 4000  # largest Q = sum_k G_k q_k for the dense layout


class Structure(NamedTuple):
    """Static description of the random-effect design (hashable)."""

    mode: str  # "block" or "dense"
    layout: ThetaLayout
    sizes: tuple[tuple[int, int], ...]  # (G_k, q_k) per term, in Q order (dense)


class Stats(NamedTuple):
    """Sufficient statistics on the working (standardized) scale."""

    ZtZ: Any
    ZtX: Any
    Zty: Any
    XtX: Any
    Xty: Any
    yty: Any
    n: Any


def sufficient_stats(mode: str, Z: np.ndarray, cols: np.ndarray, X: np.ndarray, y: np.ndarray,
                     w: np.ndarray | None, num_blocks: int, q: int) -> Stats:
    """Float64 host computation of the sufficient statistics.

    ``block``: ``Z (n, q)``, ``cols (n,)`` group codes, ``num_blocks`` groups of size ``q``.
    ``dense``: ``Z (n, m)`` nonzero values, ``cols (n, m)`` their column in ``0..Q-1``,
    ``num_blocks = Q`` and ``q = 1``.
    """
    n = y.shape[0]
    ww = np.ones(n) if w is None else w
    Xw = X * ww[:, None]
    XtX, Xty, yty = X.T @ Xw, Xw.T @ y, float(np.sum(ww * y * y))
    if mode == "block":
        G = num_blocks

        def seg(v):  # noqa: ANN001, ANN202
            return np.bincount(cols, weights=v, minlength=G)

        ZtZ = np.empty((G, q, q))
        for a in range(q):
            for b in range(a, q):
                ZtZ[:, a, b] = ZtZ[:, b, a] = seg(ww * Z[:, a] * Z[:, b])
        ZtX = np.stack([np.stack([seg(ww * Z[:, a] * X[:, c]) for c in range(X.shape[1])], -1)
                        for a in range(q)], 1)
        Zty = np.stack([seg(ww * Z[:, a] * y) for a in range(q)], -1)
    else:
        Q = num_blocks
        m = Z.shape[1]
        Zw = Z * ww[:, None]
        flat = (cols[:, :, None] * Q + cols[:, None, :]).reshape(-1)
        vals = (Zw[:, :, None] * Z[:, None, :]).reshape(-1)
        ZtZ = np.bincount(flat, weights=vals, minlength=Q * Q).reshape(Q, Q)
        ZtX = np.stack([np.bincount(cols.reshape(-1), weights=(Zw * X[:, c:c + 1]).reshape(-1),
                                    minlength=Q) for c in range(X.shape[1])], -1)
        Zty = np.bincount(cols.reshape(-1), weights=(Zw * y[:, None]).reshape(-1), minlength=Q)
        del m
    return Stats(ZtZ, ZtX, Zty, XtX, Xty, yty, float(n))


# ----------------------------------------------------------------------------- deviance
def _lam_t_dense(lams: list[jax.Array], sizes, M: jax.Array) -> jax.Array:
    """``Lambda^T M`` for the block-diagonal (per term, repeated per group) ``Lambda``."""
    out, i = [], 0
    for lam, (G, q) in zip(lams, sizes, strict=True):
        blk = M[i:i + G * q].reshape((G, q) + M.shape[1:])
        out.append(jnp.einsum("ba,gb...->ga...", lam, blk).reshape((G * q,) + M.shape[1:]))
        i += G * q
    return jnp.concatenate(out, 0) if len(out) > 1 else out[0]


def _lam_dense(lams, sizes, v: jax.Array) -> jax.Array:
    """``Lambda v`` (``v`` of shape ``(Q,)``)."""
    out, i = [], 0
    for lam, (G, q) in zip(lams, sizes, strict=True):
        out.append((v[i:i + G * q].reshape(G, q) @ lam.T).reshape(-1))
        i += G * q
    return jnp.concatenate(out) if len(out) > 1 else out[0]


def _parts(theta: jax.Array, st: Stats, structure: Structure):
    """``(L, RZX, cu, logdet L^2)`` with leading group axis (block) or none (dense)."""
    lams = make_lambda(theta, structure.layout)
    if structure.mode == "block":
        lam = block_diag(lams)
        q = lam.shape[0]
        A = jnp.einsum("ba,gbc,cd->gad", lam, st.ZtZ, lam) + jnp.eye(q, dtype=theta.dtype)
        L = chol(A)
        RZX = solve_lower(L, jnp.einsum("ba,gbp->gap", lam, st.ZtX))
        cu = solve_lower(L, jnp.einsum("ba,gb->ga", lam, st.Zty)[..., None])[..., 0]
    else:
        sizes = structure.sizes
        M = _lam_t_dense(lams, sizes, st.ZtZ)
        A = _lam_t_dense(lams, sizes, M.T).T
        A = 0.5 * (A + A.T) + jnp.eye(A.shape[0], dtype=theta.dtype)
        L = jnp.linalg.cholesky(A)
        RZX = jax.scipy.linalg.solve_triangular(L, _lam_t_dense(lams, sizes, st.ZtX),
                                                lower=True)
        cu = jax.scipy.linalg.solve_triangular(L, _lam_t_dense(lams, sizes, st.Zty),
                                               lower=True)
    return lams, L, RZX, cu, logdet_chol(L)


def _rx(RZX, cu, st: Stats):
    p = st.XtX.shape[0]
    RZX2 = RZX.reshape(-1, p)
    XtXa = st.XtX - RZX2.T @ RZX2
    Xtya = st.Xty - RZX2.T @ cu.reshape(-1)
    RX = jnp.linalg.cholesky(0.5 * (XtXa + XtXa.T))
    cb = jax.scipy.linalg.solve_triangular(RX, Xtya, lower=True)
    return RX, cb


def deviance(theta: jax.Array, st: Stats, structure: Structure, reml: bool,
             with_aux: bool = False) -> Any:
    """Profiled (RE)ML deviance on the working scale (no constant for weights/scaling)."""
    lams, L, RZX, cu, ld = _parts(theta, st, structure)
    RX, cb = _rx(RZX, cu, st)
    r2 = st.yty - jnp.sum(cu ** 2) - jnp.sum(cb ** 2)
    n, p = st.n, st.XtX.shape[0]
    if reml:
        ldx = 2.0 * jnp.sum(jnp.log(jnp.diagonal(RX)))
        dev = ld + ldx + (n - p) * (1.0 + jnp.log(2 * jnp.pi * r2 / (n - p)))
    else:
        dev = ld + n * (1.0 + jnp.log(2 * jnp.pi * r2 / n))
    if with_aux:
        return dev, {"L": L, "RZX": RZX, "cu": cu, "RX": RX, "cb": cb, "r2": r2}
    return dev


@partial(jax.jit, static_argnames=("structure", "reml", "max_iter"))
def fit_gaussian(st: Stats, theta0: jax.Array, structure: Structure, reml: bool,
                 max_iter: int = 100) -> dict[str, jax.Array]:
    """Minimise the profiled deviance and return every estimate (working scale)."""
    scale = 1.0 / st.n

    def objective(t):  # noqa: ANN001, ANN202
        dev, aux = deviance(t, st, structure, reml, with_aux=True)
        return scale * dev, aux

    res = minimize_newton(objective, theta0, has_aux=True, max_iter=max_iter, gtol=1e-6)
    theta = res.x
    lams = make_lambda(theta, structure.layout)
    L, RZX, cu, RX, cb, r2 = (res.aux[k] for k in ("L", "RZX", "cu", "RX", "cb", "r2"))
    p = st.XtX.shape[0]
    beta = jax.scipy.linalg.solve_triangular(RX, cb, lower=True, trans=1)
    sigma2 = r2 / (st.n - p) if reml else r2 / st.n
    RXinv = jax.scipy.linalg.solve_triangular(RX, jnp.eye(p, dtype=RX.dtype), lower=True)
    vcov = sigma2 * RXinv.T @ RXinv
    if structure.mode == "block":
        lam = block_diag(lams)
        u = solve_lower_t(L, (cu - RZX @ beta)[..., None])[..., 0]
        b = u @ lam.T
        Linv = solve_lower(L, jnp.broadcast_to(jnp.eye(L.shape[-1], dtype=L.dtype), L.shape))
        cv = jnp.einsum("ab,gcb,gcd,ed->gae", lam, Linv, Linv, lam)
        condvar = sigma2 * cv
    else:
        u = jax.scipy.linalg.solve_triangular(L, cu - RZX @ beta, lower=True, trans=1)
        b = _lam_dense(lams, structure.sizes, u)
        Linv = jax.scipy.linalg.solve_triangular(L, jnp.eye(L.shape[0], dtype=L.dtype),
                                                 lower=True)
        # diagonal q x q blocks of sigma^2 Lambda (L L^T)^{-1} Lambda^T, per term and group
        blocks, i = [], 0
        for lam, (G, q) in zip(lams, structure.sizes, strict=True):
            Li = Linv[:, i:i + G * q].reshape(-1, G, q)
            cv = jnp.einsum("ab,cgb,cgd,ed->gae", lam, Li, Li, lam)
            blocks.append((sigma2 * cv).reshape(G * q, q))
            i += G * q
        condvar = jnp.concatenate(blocks, 0) if len(blocks) > 1 else blocks[0]
    return {"theta": theta, "beta": beta, "sigma2": sigma2, "vcov": vcov, "b": b,
            "condvar": condvar, "deviance": res.fun / scale, "grad": res.grad,
            "num_iter": res.num_iter, "status": res.status,
            "hess": res.hess}
