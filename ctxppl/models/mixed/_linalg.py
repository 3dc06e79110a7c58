r"""Batched small-matrix linear algebra and the relative covariance factor :math:`\Lambda`.

Mixed models factor one small :math:`q \times q` matrix per group (``q`` = coefficients per
group, usually 1-3) for tens of thousands of groups. LAPACK calls per tiny matrix would
dominate, so for ``q <= 8`` the Cholesky factor and triangular solves are written out as
elementwise array expressions over the batch (unrolled at trace time); XLA fuses them.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["chol", "solve_lower", "solve_lower_t", "logdet_chol", "ThetaLayout",
           "make_lambda", "theta_init", "theta_size"]

_UNROLL = 8


def chol(A: jax.Array) -> jax.Array:
    """Lower Cholesky factor of a batch ``(..., q, q)`` of SPD matrices."""
    q = A.shape[-1]
    if q > _UNROLL:
        return jnp.linalg.cholesky(A)
    L: list[list[jax.Array | None]] = [[None] * q for _ in range(q)]
    for j in range(q):
        s = A[..., j, j]
        for k in range(j):
            s = s - L[j][k] ** 2
        d = jnp.sqrt(s)
        L[j][j] = d
        for i in range(j + 1, q):
            s = A[..., i, j]
            for k in range(j):
                s = s - L[i][k] * L[j][k]
            L[i][j] = s / d
    zero = jnp.zeros_like(A[..., 0, 0])
    rows = [jnp.stack([L[i][j] if j <= i else zero for j in range(q)], -1) for i in range(q)]
    return jnp.stack(rows, -2)


def solve_lower(L: jax.Array, B: jax.Array) -> jax.Array:
    """``L^{-1} B`` for lower-triangular ``L (..., q, q)`` and ``B (..., q, k)``."""
    q = L.shape[-1]
    if q > _UNROLL:
        return jax.scipy.linalg.solve_triangular(L, B, lower=True)
    x: list[jax.Array] = []
    for i in range(q):
        s = B[..., i, :]
        for k in range(i):
            s = s - L[..., i, k, None] * x[k]
        x.append(s / L[..., i, i, None])
    return jnp.stack(x, -2)


def solve_lower_t(L: jax.Array, B: jax.Array) -> jax.Array:
    """``L^{-T} B`` for lower-triangular ``L (..., q, q)`` and ``B (..., q, k)``."""
    q = L.shape[-1]
    if q > _UNROLL:
        return jax.scipy.linalg.solve_triangular(L, B, lower=True, trans=1)
    x: list[jax.Array | None] = [None] * q
    for i in reversed(range(q)):
        s = B[..., i, :]
        for k in range(i + 1, q):
            s = s - L[..., k, i, None] * x[k]
        x[i] = s / L[..., i, i, None]
    return jnp.stack(x, -2)


def logdet_chol(L: jax.Array) -> jax.Array:
    """``log det(L L^T)`` summed over every batch member."""
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)))


class ThetaLayout(NamedTuple):
    """Static layout of the covariance parameters: one ``(q_k, correlated)`` per term."""

    terms: tuple[tuple[int, bool], ...]


def theta_size(layout: ThetaLayout) -> int:
    return sum(q * (q + 1) // 2 if c else q for q, c in layout.terms)


def theta_init(layout: ThetaLayout) -> np.ndarray:
    """lme4's start: identity relative covariance (diagonal 1, off-diagonal 0)."""
    out = []
    for q, c in layout.terms:
        if c:
            rows, cols = np.tril_indices(q)
            # lme4 orders the lower triangle column by column
            order = np.lexsort((rows, cols))
            out.extend(float(rows[i] == cols[i]) for i in order)
        else:
            out.extend([1.0] * q)
    return np.asarray(out)


def make_lambda(theta: jax.Array, layout: ThetaLayout) -> list[jax.Array]:
    r"""One lower-triangular :math:`\Lambda_k` per term from the flat ``theta``.

    The diagonal is unconstrained (its sign is irrelevant: only :math:`\Lambda\Lambda^T`
    enters the likelihood), so a variance at zero is an interior point, not a bound.
    """
    xp = np if isinstance(theta, np.ndarray) else jnp  # NumPy on the host: nothing compiled
    out, i = [], 0
    for q, c in layout.terms:
        m = q * (q + 1) // 2 if c else q
        # gather from [theta block, 0]: entry (r, k) of Lambda is theta[i + idx[r, k]], or 0
        idx = np.full((q, q), m)
        if c:
            rows, cols = np.tril_indices(q)
            order = np.lexsort((rows, cols))
            idx[rows[order], cols[order]] = np.arange(m)
        else:
            idx[np.arange(q), np.arange(q)] = np.arange(q)
        padded = xp.concatenate([theta[i:i + m], xp.zeros((1,), theta.dtype)])
        out.append(padded[idx])
        i += m
    return out


def lam_t_blocks(lams: list[jax.Array], sizes, M: jax.Array) -> jax.Array:  # noqa: ANN001
    """``Lambda^T M`` for the block-diagonal ``Lambda`` (term ``k``'s ``lams[k]`` repeated for
    each of its ``G_k`` groups, terms stacked in ``sizes`` order) and ``M (Q, ...)``."""
    out, i = [], 0
    for lam, (G, q) in zip(lams, sizes, strict=True):
        blk = M[i:i + G * q].reshape((G, q) + M.shape[1:])
        out.append(jnp.einsum("ba,gb...->ga...", lam, blk).reshape((G * q,) + M.shape[1:]))
        i += G * q
    return jnp.concatenate(out, 0) if len(out) > 1 else out[0]


def lam_blocks(lams: list[jax.Array], sizes, M: jax.Array) -> jax.Array:  # noqa: ANN001
    """``Lambda M`` for the same block-diagonal ``Lambda`` and ``M (Q, ...)``."""
    return lam_t_blocks([lam.T for lam in lams], sizes, M)


def block_diag(mats: list[jax.Array]) -> jax.Array:
    if len(mats) == 1:
        return mats[0]
    return jax.scipy.linalg.block_diag(*mats)


# ---------------------------------------------------------------- structure-of-arrays forms
# A batch of q x q matrices as nested lists ``A[i][j]`` of arrays with the batch (groups) as
# the array axis: every operation is elementwise over groups, so XLA fuses the whole
# factorisation into a few loops instead of one small kernel per matrix entry.
def soa_chol(A: list[list[jax.Array]]) -> list[list[jax.Array]]:
    """Cholesky factor (lower, entries above the diagonal are ``None``)."""
    q = len(A)
    L: list[list[jax.Array | None]] = [[None] * q for _ in range(q)]
    for j in range(q):
        s = A[j][j]
        for k in range(j):
            s = s - L[j][k] ** 2
        L[j][j] = jnp.sqrt(s)
        for i in range(j + 1, q):
            s = A[i][j]
            for k in range(j):
                s = s - L[i][k] * L[j][k]
            L[i][j] = s / L[j][j]
    return L


def soa_solve_lower(L: list[list[jax.Array]], b: list[jax.Array]) -> list[jax.Array]:
    """``L^{-1} b`` for one right-hand side ``b[i]``."""
    x: list[jax.Array] = []
    for i in range(len(L)):
        s = b[i]
        for k in range(i):
            s = s - L[i][k] * x[k]
        x.append(s / L[i][i])
    return x


def soa_solve_lower_t(L: list[list[jax.Array]], b: list[jax.Array]) -> list[jax.Array]:
    """``L^{-T} b`` for one right-hand side ``b[i]``."""
    q = len(L)
    x: list[jax.Array | None] = [None] * q
    for i in reversed(range(q)):
        s = b[i]
        for k in range(i + 1, q):
            s = s - L[k][i] * x[k]
        x[i] = s / L[i][i]
    return x


def soa_stack(A: list[list[jax.Array | None]]) -> jax.Array:
    """Nested lists (``None`` = 0) -> array ``(q, k, G)``."""
    ref = next(a for row in A for a in row if a is not None)
    zero = jnp.zeros_like(ref)
    return jnp.stack([jnp.stack([zero if a is None else a for a in row]) for row in A])


def soa_unstack(A: jax.Array) -> list[list[jax.Array]]:
    return [[A[i, j] for j in range(A.shape[1])] for i in range(A.shape[0])]
