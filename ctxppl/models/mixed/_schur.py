r"""Crossed and nested grouping factors by a blocked Cholesky factor (as MixedModels.jl).

The random-effect columns are ordered with the grouping factor of most levels first
(:math:`G_1` groups of :math:`q_1` coefficients, all its terms together) and the remaining
terms after it (:math:`R = \sum_{k\ge 2} G_k q_k` columns). The relative precision

.. math::

    A = \Lambda^T Z^T W Z \Lambda + I =
    \begin{pmatrix} A_{11} & A_{21}^T \\ A_{21} & A_{22} \end{pmatrix}

then has a block-diagonal :math:`A_{11}` (one :math:`q_1 \times q_1` block per group of the
first factor: every observation is in exactly one of its groups), so

.. math::

    \log|A| = \sum_g \log|A_{11,g}| + \log|S|,\qquad
    S = A_{22} - A_{21} A_{11}^{-1} A_{21}^T
      = \Lambda_2^T\big(C - W \Lambda_1 A_{11}^{-1} \Lambda_1^T W^T\big)\Lambda_2 + I,

with :math:`C = Z_2^T W Z_2` and the sparse cross-product :math:`W = Z_2^T W Z_1`. Only the
:math:`R \times R` Schur complement :math:`S` is dense (InstEval: :math:`R` = 1,128 lecturers
next to 2,972 students). :math:`W K W^T` (:math:`K_g = \Lambda_1 A_{11,g}^{-1}\Lambda_1^T`)
is accumulated over the pairs of nonzeros of :math:`W` that share a group of the first
factor -- its pattern is fixed, so the pairs are found once on the host.

The right-hand sides :math:`L^{-1}\Lambda^T Z^T W [X, y]` follow by block forward
substitution, which gives the same ``(log|L|^2, R_ZX^T R_ZX, R_ZX^T c_u, |c_u|^2)`` as the
dense layout; the profiled (RE)ML deviance is then shared with it. Runs in float64: one
fit sums over ~10^5 observations and :math:`10^3`-dimensional log-determinants.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ctxppl.models.mixed._linalg import (
    block_diag,
    chol,
    lam_blocks,
    lam_t_blocks,
    logdet_chol,
    make_lambda,
    solve_lower,
    solve_lower_t,
)

__all__ = ["SchurStats", "schur_stats", "schur_parts", "schur_effects", "schur_order",
           "PAIR_LIMIT"]

PAIR_LIMIT = 60_000_000  # pairs of nonzeros of W sharing a first-factor group (memory guard)


class SchurStats(NamedTuple):
    """Sufficient statistics of the blocked layout (working scale).

    ``Xy`` below is ``[X, y]`` (``p + 1`` columns). ``XtX``, ``Xty``, ``yty``, ``n`` as in
    :class:`~ctxppl.models.mixed._reml.Stats` (the profiled deviance reads them).
    """

    ZtZ1: Any  # (G1, q1, q1) diagonal blocks of Z1' W Z1
    ZtXy1: Any  # (G1, q1, p+1)
    C: Any  # (R, R) Z2' W Z2
    ZtXy2: Any  # (R, p+1)
    ent_r: Any  # (E,) row (column of Z2) of each nonzero of W = Z2' W Z1
    ent_g: Any  # (E,) its group of the first factor
    ent_v: Any  # (E, q1) its values
    pair_flat: Any  # (P,) r_i * R + r_j of each pair i >= j of nonzeros in one group, sorted
    pair_i: Any  # (P,) entry i
    pair_j: Any  # (P,) entry j
    XtX: Any
    Xty: Any
    yty: Any
    n: Any


def schur_order(sizes: list[tuple[str, int, int]]) -> tuple[int, ...]:
    """Block indices of the first factor: the grouping factor with most columns ``G*q``.

    ``sizes``: ``(factor name, G, q)`` per block in design order.
    """
    cols: dict[str, int] = {}
    for name, G, q in sizes:
        cols[name] = cols.get(name, 0) + G * q
    first = max(cols, key=lambda k: cols[k])
    return tuple(i for i, (name, _, _) in enumerate(sizes) if name == first)


def schur_stats(blocks: list[tuple[np.ndarray, np.ndarray, int]], first: tuple[int, ...],
                X: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> SchurStats:
    """Host (float64) statistics. ``blocks``: ``(Z (n, q), codes (n,), G)`` per block."""
    n = y.shape[0]
    ww = np.ones(n) if w is None else w
    Xy = np.column_stack([X, y])
    Xyw = Xy * ww[:, None]
    XytXy = Xy.T @ Xyw
    p = X.shape[1]
    # first factor: its terms side by side
    Z1 = np.concatenate([blocks[i][0] for i in first], 1)
    g1, G1 = blocks[first[0]][1], blocks[first[0]][2]
    q1 = Z1.shape[1]
    Z1w = Z1 * ww[:, None]
    ZtZ1 = np.empty((G1, q1, q1))
    for a in range(q1):
        for b in range(a, q1):
            ZtZ1[:, a, b] = ZtZ1[:, b, a] = np.bincount(g1, Z1w[:, a] * Z1[:, b], G1)
    ZtXy1 = np.stack([np.stack([np.bincount(g1, Z1w[:, a] * Xy[:, c], G1)
                                for c in range(p + 1)], -1) for a in range(q1)], 1)
    # the other terms: one column index per (term, group, coefficient)
    cols, vals, off = [], [], 0
    for i, (Z, codes, G) in enumerate(blocks):
        if i in first:
            continue
        q = Z.shape[1]
        cols.append(off + codes[:, None] * q + np.arange(q)[None, :])
        vals.append(Z)
        off += G * q
    R = off
    cols2 = np.concatenate(cols, 1)  # (n, m)
    Z2 = np.concatenate(vals, 1)
    Z2w = Z2 * ww[:, None]
    m = cols2.shape[1]
    flat = (cols2[:, :, None] * R + cols2[:, None, :]).reshape(-1)
    C = np.bincount(flat, (Z2w[:, :, None] * Z2[:, None, :]).reshape(-1), R * R).reshape(R, R)
    ZtXy2 = np.stack([np.bincount(cols2.reshape(-1), (Z2w * Xy[:, c:c + 1]).reshape(-1), R)
                      for c in range(p + 1)], -1)
    # nonzeros of W = Z2' W Z1, unique by (group of the first factor, row), sorted that way
    key = (np.repeat(g1, m).astype(np.int64) * R + cols2.reshape(-1))
    uniq, inv = np.unique(key, return_inverse=True)
    vz = (Z2w[:, :, None] * Z1[:, None, :]).reshape(-1, q1)
    ent_v = np.stack([np.bincount(inv, vz[:, a], len(uniq)) for a in range(q1)], -1)
    ent_g, ent_r = uniq // R, uniq % R
    # pairs (i >= j) of nonzeros in the same group: rows r_i >= r_j (sorted within a group)
    E = len(uniq)
    start = np.searchsorted(ent_g, ent_g, side="left")
    count = np.arange(E) - start + 1
    total = int(count.sum())
    if total > PAIR_LIMIT:
        raise NotImplementedError(
            f"the blocked Cholesky needs {total:,} products of random-effect columns (more than "
            f"{PAIR_LIMIT:,}): the first grouping factor's groups each meet very many levels "
            "of the others. Fit this model with method='laplace', 'svi' or 'nuts'.")
    pi = np.repeat(np.arange(E), count)
    pj = start[pi] + (np.arange(total) - np.repeat(np.cumsum(count) - count, count))
    pflat = ent_r[pi] * R + ent_r[pj]
    order = np.argsort(pflat, kind="stable")
    return SchurStats(ZtZ1, ZtXy1, C, ZtXy2, ent_r.astype(np.int32), ent_g.astype(np.int32),
                      ent_v, pflat[order].astype(np.int32), pi[order].astype(np.int32),
                      pj[order].astype(np.int32), XytXy[:p, :p], XytXy[:p, p],
                      float(XytXy[p, p]), float(n))


def _split_lams(theta, structure):  # noqa: ANN001, ANN202
    lams = make_lambda(theta, structure.layout)
    first = structure.first
    rest = [i for i in range(len(lams)) if i not in first]
    lam1 = block_diag([lams[i] for i in first])
    return lam1, [lams[i] for i in rest], [structure.sizes[i] for i in rest]


def _first_factor(lam1, st: SchurStats):  # noqa: ANN001, ANN202
    """``L1`` (chol of each ``A11_g``), ``X1 = L1^{-1} Lambda1^T`` and ``K = X1^T X1``."""
    q1 = lam1.shape[0]
    A = jnp.einsum("ba,gbc,cd->gad", lam1, st.ZtZ1, lam1) + jnp.eye(q1, dtype=lam1.dtype)
    L1 = chol(A)
    X1 = solve_lower(L1, jnp.broadcast_to(lam1.T, A.shape))
    return L1, X1, jnp.einsum("gka,gkb->gab", X1, X1)


def _wkw(K, st: SchurStats, R: int):  # noqa: ANN001, ANN202
    r"""``W K W^T`` (``R x R``) from the pairs of nonzeros of ``W`` in one group."""
    g = st.ent_g[st.pair_i]
    vals = jnp.einsum("pa,pab,pb->p", st.ent_v[st.pair_i], K[g], st.ent_v[st.pair_j])
    low = jax.ops.segment_sum(vals, st.pair_flat, R * R, indices_are_sorted=True).reshape(R, R)
    return low + low.T - jnp.diag(jnp.diagonal(low))


def schur_parts(theta, st: SchurStats, structure):  # noqa: ANN001, ANN201
    """``(log|L|^2, R_ZX^T R_ZX, R_ZX^T c_u, |c_u|^2, aux)`` of the blocked layout."""
    lam1, lams2, sizes2 = _split_lams(theta, structure)
    R = st.C.shape[0]
    p = st.XtX.shape[0]
    L1, _, K = _first_factor(lam1, st)
    B = st.C - _wkw(K, st, R)
    S = lam_t_blocks(lams2, sizes2, lam_t_blocks(lams2, sizes2, B).T)
    S = 0.5 * (S + S.T) + jnp.eye(R, dtype=S.dtype)
    L2 = jnp.linalg.cholesky(S)
    c1 = solve_lower(L1, jnp.einsum("ba,gbc->gac", lam1, st.ZtXy1))  # (G1, q1, p+1)
    KZ = jnp.einsum("gab,gbc->gac", K, st.ZtXy1)
    t = st.ZtXy2 - jax.ops.segment_sum(jnp.einsum("ea,eac->ec", st.ent_v, KZ[st.ent_g]),
                                       st.ent_r, R)
    c2 = jax.scipy.linalg.solve_triangular(L2, lam_t_blocks(lams2, sizes2, t), lower=True)
    P = jnp.einsum("gac,gad->cd", c1, c1) + c2.T @ c2
    ld = logdet_chol(L1) + logdet_chol(L2)
    return ld, P[:p, :p], P[:p, p], P[p, p], {"L1": L1, "c1": c1, "L2": L2, "c2": c2}


def schur_effects(theta, beta, sigma2, aux, st: SchurStats, structure):  # noqa: ANN001, ANN201
    """Conditional modes and covariances per block (design order): ``(b, condvar)`` lists."""
    lam1, lams2, sizes2 = _split_lams(theta, structure)
    L1, c1, L2, c2 = aux["L1"], aux["c1"], aux["L2"], aux["c2"]
    G1, q1 = c1.shape[:2]
    R, p = c2.shape[0], beta.shape[0]
    # u2 = L2^{-T}(c2 - R2 beta); u1 = L1^{-T}(c1 - R1 beta - L21^T u2)
    u2 = jax.scipy.linalg.solve_triangular(L2, c2[:, p] - c2[:, :p] @ beta, lower=True,
                                           trans=1)
    b2 = lam_blocks(lams2, sizes2, u2)
    wv = jax.ops.segment_sum(st.ent_v * b2[st.ent_r][:, None], st.ent_g, G1)  # W^T Lam2 u2
    cross = solve_lower(L1, jnp.einsum("ba,gb->ga", lam1, wv)[..., None])[..., 0]
    u1 = solve_lower_t(L1, (c1[:, :, p] - c1[:, :, :p] @ beta - cross)[..., None])[..., 0]
    b1 = u1 @ lam1.T
    # condvar: sigma^2 Lambda A^{-1} Lambda^T, diagonal blocks
    L2inv = jax.scipy.linalg.solve_triangular(L2, jnp.eye(R, dtype=L2.dtype), lower=True)
    T = lam_blocks(lams2, sizes2, L2inv.T)  # Lam2 L2^{-T}: rows of Lam2 S^{-1} Lam2^T factors
    s = (T @ T.T)[st.ent_r[st.pair_i], st.ent_r[st.pair_j]]  # (Lam2 S^{-1} Lam2^T)_{r_i r_j}
    outer = st.ent_v[st.pair_i][:, :, None] * st.ent_v[st.pair_j][:, None, :] * s[:, None, None]
    g = st.ent_g[st.pair_i]
    low = jax.ops.segment_sum(outer, g, G1)
    diag = jax.ops.segment_sum(jnp.where((st.pair_i == st.pair_j)[:, None, None], outer, 0.0),
                               g, G1)
    mid = low + jnp.swapaxes(low - diag, -1, -2)  # sum over all ordered pairs in the group
    eye = jnp.broadcast_to(jnp.eye(q1, dtype=L1.dtype), (G1, q1, q1))
    Linv1 = solve_lower(L1, eye)
    Ainv = jnp.einsum("gka,gkb->gab", Linv1, Linv1)
    mid = jnp.einsum("ba,gbc,cd->gad", lam1, mid, lam1)
    C1 = Ainv + Ainv @ mid @ Ainv
    cv1 = sigma2 * jnp.einsum("ab,gbc,dc->gad", lam1, C1, lam1)
    out_b: dict[int, Any] = {}
    out_cv: dict[int, Any] = {}
    j = 0
    for i in structure.first:
        q = structure.sizes[i][1]
        out_b[i] = b1[:, j:j + q]
        out_cv[i] = cv1[:, j:j + q, j:j + q]
        j += q
    rest = [i for i in range(len(structure.sizes)) if i not in structure.first]
    r = 0
    for i, (G, q) in zip(rest, sizes2, strict=True):
        out_b[i] = b2[r:r + G * q].reshape(G, q)
        Ti = T[r:r + G * q].reshape(G, q, R)
        out_cv[i] = sigma2 * jnp.einsum("gar,gbr->gab", Ti, Ti)
        r += G * q
    n_blocks = len(structure.sizes)
    return [out_b[i] for i in range(n_blocks)], [out_cv[i] for i in range(n_blocks)]
