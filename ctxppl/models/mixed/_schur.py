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

The solves with :math:`A` follow by block elimination. This module finds the layout and
its statistics (once, on the host); :mod:`~ctxppl.models.mixed._schur_host` evaluates the
deviance and its exact gradient in float64 (one fit sums over ~10^5 observations and
:math:`10^3`-dimensional log-determinants).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["SchurStats", "schur_stats", "schur_order", "profiled_deviance",
           "profile_gradient_weights", "PAIR_LIMIT"]

PAIR_LIMIT = 25_000_000  # pairs of nonzeros of W sharing a first-factor group (~40 bytes each)


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
    pair_flat: Any  # (P,) r_i * R + r_j (int64, by r_i) per pair i >= j of nonzeros in a group
    pair_i: Any  # (P,) entry i
    pair_j: Any  # (P,) entry j
    XtX: Any
    Xty: Any
    yty: Any
    n: Any


def profiled_deviance(P: np.ndarray, p: int, n: float, logdet: float,
                      reml: bool) -> dict[str, Any]:
    r"""The deviance profiled over the fixed effects and the residual scale, from the
    symmetric :math:`P = [X, y]^T V^{-1} [X, y]` (up to scale; ``(p+1, p+1)``) and
    :math:`\log|A|` (``logdet``).

    Returns ``{"dev", "beta", "r2", "Pxx"}``, or ``{"dev": inf}`` where ``P`` is not positive
    definite (off the domain). Shared by every host engine of the blocked layout.

    Examples:
        >>> import numpy as np
        >>> P = np.array([[4.0, 2.0], [2.0, 5.0]])  # X'X = 4, X'y = 2, y'y = 5
        >>> out = profiled_deviance(P, 1, 4.0, 0.0, reml=False)
        >>> float(out["beta"][0]), out["r2"]
        (0.5, 4.0)
    """
    Pxx = P[:p, :p]
    try:
        Lx = np.linalg.cholesky(Pxx)
    except np.linalg.LinAlgError:
        return {"dev": np.inf}
    beta = np.linalg.solve(Pxx, P[:p, p])
    r2 = float(P[p, p] - P[p, :p] @ beta)
    if not r2 > 0:
        return {"dev": np.inf}
    if reml:
        ldx = 2.0 * float(np.sum(np.log(np.diag(Lx))))
        dev = logdet + ldx + (n - p) * (1.0 + np.log(2 * np.pi * r2 / (n - p)))
    else:
        dev = logdet + n * (1.0 + np.log(2 * np.pi * r2 / n))
    return {"dev": dev, "beta": beta, "r2": r2, "Pxx": Pxx}


def profile_gradient_weights(P: np.ndarray, p: int, n: float, r2: float,
                             reml: bool) -> np.ndarray:
    r"""The weights :math:`\bar F = P^{-1} + (n-p-1)\,r^2 m m^T` (REML) or
    :math:`n\,r^2 m m^T` (ML), :math:`m = P^{-1} e_y`, with which every host engine contracts
    its residual cross-products into the gradient of the profiled deviance.

    Examples:
        >>> import numpy as np
        >>> P = np.array([[4.0, 2.0], [2.0, 5.0]])
        >>> profile_gradient_weights(P, 1, 4.0, 4.0, reml=False).shape
        (2, 2)
    """
    Pinv = np.linalg.inv(P)
    m = Pinv[:, p]
    if reml:
        return Pinv + (n - p - 1) * r2 * np.outer(m, m)
    return n * r2 * np.outer(m, m)


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
    ent_g, ent_r = uniq // R, uniq % R  # int64
    # pairs (i >= j) of nonzeros in the same group: rows r_i >= r_j (sorted within a group)
    E = len(uniq)
    start = np.searchsorted(ent_g, ent_g, side="left")
    count = np.arange(E) - start + 1
    total = int(count.sum())
    if total > PAIR_LIMIT:
        raise NotImplementedError(
            f"the blocked Cholesky needs {total:,} products of random-effect columns (more than "
            f"{PAIR_LIMIT:,}): the first grouping factor's groups each meet very many levels "
            "of the others. With scalar terms (such as (1 | g)) solver='iterative' fits it "
            "(a stochastic log-likelihood); otherwise use method='laplace', 'svi' or 'nuts'.")
    # generated in the order of the row r_i (entries taken by row, a stable sort of E keys),
    # so the scatter (bincount) and gather of every evaluation stay within one row of the
    # R x R block at a time (3-4x faster than in group order for InstEval)
    by_row = np.argsort(ent_r, kind="stable")
    cnt = count[by_row]
    pi = np.repeat(by_row, cnt)
    run = np.repeat(np.cumsum(cnt) - cnt - start[by_row], cnt)  # pj = start[pi] + offset
    pj = np.arange(total, dtype=np.int64)
    pj -= run
    pflat = ent_r[pi] * R
    pflat += ent_r[pj]
    return SchurStats(ZtZ1, ZtXy1, C, ZtXy2, ent_r.astype(np.int32), ent_g.astype(np.int32),
                      ent_v, pflat, pi.astype(np.int32), pj.astype(np.int32), XytXy[:p, :p],
                      XytXy[:p, p], float(XytXy[p, p]), float(n))
