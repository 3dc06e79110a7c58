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

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ctxppl._programs import stored_jit
from ctxppl.models.mixed._linalg import (
    ThetaLayout,
    block_diag,
    lam_blocks,
    lam_t_blocks,
    logdet_chol,
    make_lambda,
    soa_chol,
    soa_solve_lower,
    soa_solve_lower_t,
    soa_stack,
    soa_unstack,
)
from ctxppl.models.mixed._optim import minimize_newton

__all__ = ["Stats", "Structure", "sufficient_stats", "fit_gaussian", "DENSE_LIMIT"]

DENSE_LIMIT = 4000  # largest Q = sum_k G_k q_k for the dense layout


class Structure(NamedTuple):
    """Static description of the random-effect design (hashable)."""

    mode: str  # "block", "dense" or "schur" (the latter fitted by _schur_host)
    layout: ThetaLayout
    sizes: tuple[tuple[int, int], ...]  # (G_k, q_k) per term, in Q order (dense)
    first: tuple[int, ...] = ()  # schur: the terms of the first (largest) grouping factor


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

    ``block``: ``Z (n, q)``, ``cols (n,)`` group codes, ``num_blocks`` groups of size ``q``;
    returned with groups last: ``ZtZ (q, q, G)``, ``ZtX (q, p, G)``, ``Zty (q, G)``.
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

        # structure-of-arrays layout: groups on the last (contiguous) axis
        ZtZ = np.empty((q, q, G))
        Zw = Z * ww[:, None]
        for a in range(q):
            for b in range(a, q):
                ZtZ[a, b] = ZtZ[b, a] = seg(Zw[:, a] * Z[:, b])
        ZtX = np.stack([np.stack([seg(Zw[:, a] * X[:, c]) for c in range(X.shape[1])])
                        for a in range(q)])
        Zty = np.stack([seg(Zw[:, a] * y) for a in range(q)])
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
def _nonzero(structure: Structure) -> np.ndarray:
    """Static mask of the entries of the (block-diagonal) Lambda that may be nonzero."""
    q = sum(qk for qk, _ in structure.layout.terms)
    nz = np.zeros((q, q), bool)
    i = 0
    for qk, corr in structure.layout.terms:
        block = np.tril(np.ones((qk, qk), bool)) if corr else np.eye(qk, dtype=bool)
        nz[i:i + qk, i:i + qk] = block
        i += qk
    return nz


def _lam_t_soa(lam, nz, M):  # noqa: ANN001, ANN202
    """``(Lambda^T M)[a][c] = sum_b lam[b, a] M[b][c]`` on nested lists, skipping zeros."""
    q = lam.shape[0]
    out = []
    for a in range(q):
        row = []
        for c in range(len(M[0])):
            terms = [lam[b, a] * M[b][c] for b in range(q) if nz[b, a]]
            row.append(sum(terms[1:], terms[0]))
        out.append(row)
    return out


def _block_parts(theta, st: Stats, structure: Structure):  # noqa: ANN001, ANN202
    """Per-group factorisation in structure-of-arrays form (groups on the array axis)."""
    lam = block_diag(make_lambda(theta, structure.layout))
    nz = _nonzero(structure)
    q = lam.shape[0]
    p = st.XtX.shape[0]
    T = _lam_t_soa(lam, nz, soa_unstack(st.ZtZ))  # Lambda^T ZtZ
    Tt = [[T[a][c] for a in range(q)] for c in range(q)]  # (Lambda^T ZtZ)^T = ZtZ Lambda
    A = _lam_t_soa(lam, nz, Tt)  # Lambda^T ZtZ Lambda (symmetric)
    A = [[A[a][d] + (1.0 if a == d else 0.0) for d in range(q)] for a in range(q)]
    L = soa_chol(A)
    ZX = _lam_t_soa(lam, nz, soa_unstack(st.ZtX))
    Zy = _lam_t_soa(lam, nz, [[st.Zty[a]] for a in range(q)])
    R = [soa_solve_lower(L, [ZX[a][c] for a in range(q)]) for c in range(p)]  # R[c][a]
    cu = soa_solve_lower(L, [Zy[a][0] for a in range(q)])
    ld = 2.0 * sum(jnp.sum(jnp.log(L[a][a])) for a in range(q))
    RtR = jnp.stack([jnp.stack([sum(jnp.sum(R[c][a] * R[e][a]) for a in range(q))
                                for e in range(p)]) for c in range(p)])
    Rtc = jnp.stack([sum(jnp.sum(R[c][a] * cu[a]) for a in range(q)) for c in range(p)])
    cu2 = sum(jnp.sum(cu[a] ** 2) for a in range(q))
    aux = {"L": soa_stack(L), "R": jnp.stack([jnp.stack(R[c]) for c in range(p)]),
           "cu": jnp.stack(cu)}
    return ld, RtR, Rtc, cu2, aux


def _dense_parts(theta, st: Stats, structure: Structure):  # noqa: ANN001, ANN202
    lams = make_lambda(theta, structure.layout)
    sizes = structure.sizes
    M = lam_t_blocks(lams, sizes, st.ZtZ)
    A = lam_t_blocks(lams, sizes, M.T).T
    A = 0.5 * (A + A.T) + jnp.eye(A.shape[0], dtype=theta.dtype)
    L = jnp.linalg.cholesky(A)
    RZX = jax.scipy.linalg.solve_triangular(L, lam_t_blocks(lams, sizes, st.ZtX), lower=True)
    cu = jax.scipy.linalg.solve_triangular(L, lam_t_blocks(lams, sizes, st.Zty), lower=True)
    return (logdet_chol(L), RZX.T @ RZX, RZX.T @ cu, jnp.sum(cu ** 2),
            {"L": L, "R": RZX, "cu": cu})


def _parts(theta, st: Stats, structure: Structure):  # noqa: ANN001, ANN202
    if structure.mode == "block":
        return _block_parts(theta, st, structure)
    return _dense_parts(theta, st, structure)


def deviance(theta: jax.Array, st: Stats, structure: Structure, reml: bool,
             with_aux: bool = False) -> Any:
    """Profiled (RE)ML deviance on the working scale (no constant for weights/scaling)."""
    ld, RtR, Rtc, cu2, aux = _parts(theta, st, structure)
    XtXa = st.XtX - RtR
    RX = jnp.linalg.cholesky(0.5 * (XtXa + XtXa.T))
    cb = jax.scipy.linalg.solve_triangular(RX, st.Xty - Rtc, lower=True)
    r2 = st.yty - cu2 - jnp.sum(cb ** 2)
    n, p = st.n, st.XtX.shape[0]
    if reml:
        ldx = 2.0 * jnp.sum(jnp.log(jnp.diagonal(RX)))
        dev = ld + ldx + (n - p) * (1.0 + jnp.log(2 * jnp.pi * r2 / (n - p)))
    else:
        dev = ld + n * (1.0 + jnp.log(2 * jnp.pi * r2 / n))
    if with_aux:
        return dev, {**aux, "RX": RX, "cb": cb, "r2": r2}
    return dev


def _fit_gaussian(st: Stats, theta0: jax.Array, structure: Structure, reml: bool,
                  max_iter: int = 100) -> dict[str, jax.Array]:
    """Minimise the profiled deviance and return every estimate (working scale)."""
    scale = 1.0 / st.n

    def objective(t):  # noqa: ANN001, ANN202
        dev, aux = deviance(t, st, structure, reml, with_aux=True)
        return scale * dev, aux

    res = minimize_newton(objective, theta0, has_aux=True, max_iter=max_iter, gtol=1e-6)
    theta = res.x
    lams = make_lambda(theta, structure.layout)
    RX, cb, r2 = (res.aux[k] for k in ("RX", "cb", "r2"))
    p = st.XtX.shape[0]
    beta = jax.scipy.linalg.solve_triangular(RX, cb, lower=True, trans=1)
    sigma2 = r2 / (st.n - p) if reml else r2 / st.n
    RXinv = jax.scipy.linalg.solve_triangular(RX, jnp.eye(p, dtype=RX.dtype), lower=True)
    vcov = sigma2 * RXinv.T @ RXinv
    if structure.mode == "block":
        L, R, cu = res.aux["L"], res.aux["R"], res.aux["cu"]
        lam = block_diag(lams)
        q = lam.shape[0]
        Ls = soa_unstack(L)
        v = [cu[a] - sum(R[c, a] * beta[c] for c in range(p)) for a in range(q)]
        u = jnp.stack(soa_solve_lower_t(Ls, v))  # (q, G)
        b = (lam @ u).T  # (G, q)
        ones, zeros = jnp.ones_like(cu[0]), jnp.zeros_like(cu[0])
        Linv = [soa_solve_lower(Ls, [ones if i == j else zeros for i in range(q)])
                for j in range(q)]  # Linv[j][i] = (L^{-1})[i, j]
        C = jnp.stack([jnp.stack([sum(Linv[a][k] * Linv[c][k] for k in range(q))
                                  for c in range(q)]) for a in range(q)])  # (q, q, G)
        cv = jnp.einsum("ab,bcg,dc->gad", lam, C, lam)
        condvar = sigma2 * cv
    else:
        L, R, cu = res.aux["L"], res.aux["R"], res.aux["cu"]
        u = jax.scipy.linalg.solve_triangular(L, cu - R @ beta, lower=True, trans=1)
        bq = lam_blocks(lams, structure.sizes, u)
        Linv = jax.scipy.linalg.solve_triangular(L, jnp.eye(L.shape[0], dtype=L.dtype),
                                                 lower=True)
        # per term: (G, q) modes and the diagonal q x q blocks of
        # sigma^2 Lambda (L L^T)^{-1} Lambda^T, one per group
        b, condvar, i = [], [], 0
        for lam, (G, q) in zip(lams, structure.sizes, strict=True):
            b.append(bq[i:i + G * q].reshape(G, q))
            Li = Linv[:, i:i + G * q].reshape(-1, G, q)
            condvar.append(sigma2 * jnp.einsum("ab,cgb,cgd,ed->gae", lam, Li, Li, lam))
            i += G * q
    return {"theta": theta, "beta": beta, "sigma2": sigma2, "vcov": vcov, "b": b,
            "condvar": condvar, "deviance": res.fun / scale, "grad": res.grad,
            "num_iter": res.num_iter, "status": res.status, "hess": res.hess / scale}


# XLA's CPU backend spends most of a fit compiling; its optimisation level 0 halves the
# compile time and costs ~2-3x run time, which only pays off for very many groups (at
# 125,000 groups x 2 coefficients level 0 is still faster end to end).
FAST_COMPILE = {"xla_backend_optimization_level": 0}
SMALL = 500_000  # number of random effects below which compile time dominates
# structure, reml and max_iter are static (not arrays); a fresh process loads the lowered
# program from ctxppl's store (ctxppl/_programs.py)
fit_gaussian_small = stored_jit(_fit_gaussian, "mixed_gaussian", compiler_options=FAST_COMPILE)
fit_gaussian_large = stored_jit(_fit_gaussian, "mixed_gaussian")


def fit_gaussian(st: Stats, theta0: jax.Array, structure: Structure, reml: bool,
                 max_iter: int = 100) -> dict[str, jax.Array]:
    """Jitted :func:`_fit_gaussian`, compiled for fast compilation on small problems."""
    size = sum(G * q for G, q in structure.sizes)
    fn = fit_gaussian_small if size < SMALL else fit_gaussian_large
    return fn(st, theta0, structure, reml, max_iter)
