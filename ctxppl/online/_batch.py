"""Ragged minibatches: checks before any work, and padding into per-size buckets."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ctxppl.online._features import UpdateError
from ctxppl.online._state import as_keys

__all__ = ["factorize", "as_float", "Bucket", "pad_records", "check_batch", "padded_sizes"]


def padded_sizes(counts: np.ndarray, quantum: int = 8, exact_up_to: int = 64) -> np.ndarray:
    """Round record counts up: to a multiple of ``quantum`` up to ``exact_up_to``, then to
    ``quantum * k`` with ``k`` in {2^j, 3 * 2^(j-1)} (at most a third of padding).

    Examples:
        >>> import numpy as np
        >>> from ctxppl.online._batch import padded_sizes
        >>> padded_sizes(np.array([1, 8, 9, 50, 65, 100, 200])).tolist()
        [8, 8, 16, 56, 96, 128, 256]
    """
    c = np.maximum(np.asarray(counts, dtype=np.int64), 1)
    k = -(-c // quantum)
    p2 = 2 ** np.ceil(np.log2(k)).astype(np.int64)
    alt = p2 // 4 * 3
    grid = np.where((alt >= k) & (p2 >= 4), alt, p2)
    return quantum * np.where(c <= exact_up_to, k, grid)


class Bucket(NamedTuple):
    """Entities whose records were padded to the same length.

    Attributes:
        entities: Position of each entity in the batch's list of distinct entities ``(U,)``.
        counts: Records per entity ``(U,)``.
        x: ``(U, R, d)``; y, offset, weight: ``(U, R)``. Padding rows repeat one of the
            entity's records (so every value is finite) with weight 0.

    Examples:
        See :func:`pad_records`.
    """

    entities: np.ndarray
    counts: np.ndarray
    x: np.ndarray
    y: np.ndarray
    offset: np.ndarray
    weight: np.ndarray


def pad_records(inverse: np.ndarray, num_entities: int, x: np.ndarray, y: np.ndarray,
                offset: np.ndarray, weight: np.ndarray, *, quantum: int = 8) -> list[Bucket]:
    """Group records by entity and pad them into buckets of equal length (no Python loop
    over entities or records: a sort, then one gather per bucket size). Records already
    grouped by entity with equal counts are passed through as views (one bucket of exactly
    that length).

    Args:
        inverse: Entity position (``0..num_entities-1``) of each record ``(n,)``.
        num_entities: Number of distinct entities.
        x, y, offset, weight: Record arrays (``(n, d)`` and ``(n,)``).
        quantum: Padded lengths are multiples of this.

    Returns:
        A list of :class:`Bucket` (one per padded length).

    Examples:
        >>> import numpy as np
        >>> from ctxppl.online._batch import pad_records
        >>> inv = np.array([1, 0, 1, 1])
        >>> b = pad_records(inv, 2, np.arange(4.0)[:, None], np.zeros(4), np.zeros(4),
        ...                 np.ones(4), quantum=4)
        >>> b[0].entities.tolist(), b[0].x[..., 0].tolist()
        ([0, 1], [[1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 3.0, 0.0]])
        >>> b[0].weight.tolist()
        [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]]
    """
    inverse = np.asarray(inverse, dtype=np.int64)
    n = inverse.shape[0]
    if n and np.all(inverse[1:] >= inverse[:-1]):
        order = None  # already grouped by entity: no sort, no reordering
    else:
        order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse, minlength=num_entities)
    starts = np.cumsum(counts) - counts
    sizes = padded_sizes(counts, quantum)
    present = counts > 0
    if order is None and n and present.all() and np.all(counts == counts[0]):
        # the common streaming case -- records grouped by entity, equal counts: no padding
        # and no copy (views), at the price of one compilation per distinct count
        c, u = int(counts[0]), num_entities
        return [Bucket(np.arange(u), counts, x.reshape(u, c, -1), y.reshape(u, c),
                       offset.reshape(u, c), weight.reshape(u, c))]
    out = []
    for size in np.unique(sizes[present]):
        ents = np.flatnonzero((sizes == size) & present)
        r = int(size)
        pos = np.arange(r)
        valid = pos[None, :] < counts[ents, None]
        # one gather per array: row j of entity e is record starts[e] + j of the sorted
        # order; padding rows repeat the entity's first record with weight 0
        src = starts[ents, None] + np.where(valid, pos[None, :], 0)
        if order is not None:
            src = order[src]
        wb = np.where(valid, np.take(weight, src), 0).astype(x.dtype, copy=False)
        out.append(Bucket(ents, counts[ents], np.take(x, src, axis=0), np.take(y, src),
                          np.take(offset, src), wb))
    return out


def _describe(keys: np.ndarray, bad: np.ndarray, reason: str, extra: str = "") -> UpdateError:
    idx = np.flatnonzero(bad)
    ents = list(dict.fromkeys(keys[idx].tolist()))
    first = int(idx[0])
    more = f" ({idx.size} bad record(s) across {len(ents)} entit(ies))" if idx.size > 1 else ""
    return UpdateError(f"entity {keys[first:first + 1].tolist()[0]!r} (record {first}): "
                       f"{reason}{extra}{more}. "
                       "Nothing was updated.", ents[:20], reason)


def check_batch(family: str, keys: np.ndarray, x: np.ndarray, y: np.ndarray,
                offset: np.ndarray, weight: np.ndarray) -> None:
    """Raise :class:`UpdateError` (naming the entity) for non-finite values, negative
    weights or labels outside the family's support; do nothing otherwise.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> from ctxppl.online._batch import check_batch
        >>> try:
        ...     check_batch("bernoulli", np.array(["a", "b"]), np.ones((2, 1)),
        ...                 np.array([1.0, 2.0]), np.zeros(2), np.ones(2))
        ... except ctx.online.UpdateError as err:
        ...     print(err.entities, str(err)[:60])
        ['b'] entity 'b' (record 1): label outside the support of the bern
    """
    # fast path: one pass (a sum) per array; the per-record masks only when a sum is not
    # finite (a bad value, or an overflowing sum of finite ones)
    with np.errstate(over="ignore", invalid="ignore"):
        sums_finite = all(np.isfinite(np.sum(a)) for a in (x, y, offset, weight))
    if not sums_finite:
        masks = [("features", ~np.all(np.isfinite(x), axis=-1)), ("label", ~np.isfinite(y)),
                 ("offset", ~np.isfinite(offset)), ("weight", ~np.isfinite(weight))]
        nonfinite = masks[0][1] | masks[1][1] | masks[2][1] | masks[3][1]
        if nonfinite.any():
            first = int(np.argmax(nonfinite))
            which = " and ".join(name for name, m in masks if m[first])
            raise _describe(keys, nonfinite, f"non-finite {which} (NaN or inf)")
    if np.any(weight < 0):
        raise _describe(keys, weight < 0, "negative record weight")
    bad: Any = None
    if family == "bernoulli":
        bad, want = (y != 0) & (y != 1), "0 or 1"
    elif family == "poisson":
        bad, want = (y < 0) | (y != np.round(y)), "a non-negative integer count"
    if bad is not None and bad.any():
        got = y[np.flatnonzero(bad)[0]]
        raise _describe(keys, bad, f"label outside the support of the {family} family",
                        f" (expected {want}; got {got})")


def factorize(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes (in order of first appearance) and distinct keys; O(n) without hashing when
    integer keys arrive grouped in non-decreasing order (the usual streaming layout)."""
    if keys.dtype.kind in "iu" and keys.size and np.all(keys[1:] >= keys[:-1]):
        new = np.empty(keys.size, bool)
        new[0] = True
        np.not_equal(keys[1:], keys[:-1], out=new[1:])
        return np.cumsum(new) - 1, keys[new]
    codes, uniq = pd.factorize(keys)
    return codes, as_keys(np.asarray(uniq, dtype=keys.dtype))


def as_float(a: Any, dtype: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must be numeric; got dtype {arr.dtype}.")
    arr = arr.astype(dtype, copy=False)
    if arr.shape != shape:
        raise ValueError(f"`{name}` must have shape {shape}; got {arr.shape}.")
    return arr
