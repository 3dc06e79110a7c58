"""Per-entity state: one pytree of arrays and an entity-key index (saved through
:mod:`ctxppl._files`: atomic writes, no pickle)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pandas as pd

__all__ = ["UpdateReport", "Proposal", "EntityState", "EntityIndex"]


class EntityState(NamedTuple):
    """Everything an entity type knows, one row per entity (a pytree of arrays).

    Attributes:
        mean: Posterior means ``(E, d)``.
        precision: Posterior precisions ``(E, d, d)`` (full) or ``(E, d)`` (diagonal).
        prior_mean: Base prior means ``(E, d)`` (from ``prior_mean=``, e.g. a context
            encoder); the forgetting factor pulls towards it.
        count: Records absorbed ``(E,)``.
        step: Update step that last changed the entity ``(E,)`` (-1: never); an update with
            a step not above it skips the entity, so replaying a stream is idempotent.

    Examples:
        >>> import numpy as np
        >>> from ctxppl.online import EntityState
        >>> st = EntityState.empty(2, "full", np.float32, capacity=3)
        >>> st.precision.shape, st.step.tolist()
        ((3, 2, 2), [-1, -1, -1])
    """

    mean: np.ndarray
    precision: np.ndarray
    prior_mean: np.ndarray
    count: np.ndarray
    step: np.ndarray

    @classmethod
    def empty(cls, num_features: int, covariance: str, dtype: Any,
              capacity: int = 0) -> EntityState:
        """An empty state with room for ``capacity`` entities (see the class example)."""
        d = num_features
        prec = (capacity, d, d) if covariance == "full" else (capacity, d)
        return cls(np.zeros((capacity, d), dtype), np.zeros(prec, dtype),
                   np.zeros((capacity, d), dtype), np.zeros(capacity, np.int64),
                   np.full(capacity, -1, np.int64))

    def take(self, rows: np.ndarray) -> EntityState:
        """The rows ``rows`` (a copy).

        Examples:
            >>> import numpy as np
            >>> from ctxppl.online import EntityState
            >>> EntityState.empty(2, "diag", np.float32, 4).take(np.array([0, 2])).mean.shape
            (2, 2)
        """
        return EntityState(*(a[rows] for a in self))

    def grow(self, capacity: int) -> EntityState:
        """A copy with room for ``capacity`` entities (new rows zero, step -1).

        Examples:
            >>> import numpy as np
            >>> from ctxppl.online import EntityState
            >>> EntityState.empty(2, "diag", np.float32, 1).grow(3).step.tolist()
            [-1, -1, -1]
        """
        n = self.mean.shape[0]
        if capacity <= n:
            return self
        out = []
        for name, a in zip(self._fields, self, strict=True):
            b = np.full((capacity,) + a.shape[1:], -1 if name == "step" else 0, a.dtype)
            b[:n] = a
            out.append(b)
        return EntityState(*out)


def _key_kind(keys: np.ndarray) -> str:
    if keys.dtype.kind in "iu":
        return "int"
    if keys.dtype.kind == "U":
        return "str"
    if keys.dtype.kind == "O" and all(isinstance(k, str) for k in keys.tolist()):
        return "str"
    if keys.dtype.kind == "b":
        raise TypeError("entity keys must be integers or strings; got booleans.")
    raise TypeError(f"entity keys must be integers or strings (all of one kind); got dtype "
                    f"{keys.dtype} with values like {keys[:3].tolist()!r}.")


def as_keys(ids: Any, name: str = "ids") -> np.ndarray:
    """Entity keys as a 1-d int64 or object-of-str array (with a clear error otherwise)."""
    if isinstance(ids, list | tuple) and ids:  # numpy would turn [1, "1"] into ["1", "1"]
        kinds = {"str" if isinstance(k, str) else "int" if isinstance(k, int | np.integer)
                 and not isinstance(k, bool | np.bool_) else type(k).__name__ for k in ids}
        if len(kinds) > 1:
            raise TypeError(f"`{name}` mixes entity keys of kinds {sorted(kinds)}; keys must be "
                            "all integers or all strings (1 and '1' would be one entity).")
    keys = np.asarray(ids)
    if keys.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-d array of entity keys; got shape {keys.shape}.")
    if keys.size == 0:
        return keys.astype(np.int64)
    kind = _key_kind(keys)
    return keys.astype(np.int64) if kind == "int" else keys.astype(object)


class EntityIndex:
    """Entity keys (ints or strings) <-> state rows, looked up with a pandas hash index.

    Examples:
        >>> from ctxppl.online._state import EntityIndex
        >>> idx = EntityIndex(["u1", "u2"])
        >>> idx.rows(["u2", "u9"]).tolist()
        [1, -1]
    """

    def __init__(self, keys: Any = ()):
        keys = as_keys(np.asarray(keys, dtype=object if len(keys) == 0 else None), "keys")
        self._keys = keys
        self._index = pd.Index(keys)
        if not self._index.is_unique:
            raise ValueError("entity keys must be unique.")
        self.kind = _key_kind(keys) if keys.size else None

    @property
    def keys(self) -> np.ndarray:
        """Key of each row.

        Examples:
            >>> from ctxppl.online._state import EntityIndex
            >>> EntityIndex([3, 1]).keys.tolist()
            [3, 1]
        """
        return self._keys

    def __len__(self) -> int:
        return self._keys.size

    def check_kind(self, keys: np.ndarray) -> None:
        """Raise if ``keys`` are not of the kind (int/str) already stored.

        Examples:
            >>> import numpy as np
            >>> from ctxppl.online._state import EntityIndex
            >>> EntityIndex([1]).check_kind(np.array(["a"]))
            Traceback (most recent call last):
            ...
            TypeError: entity keys of this table are ints; got strs (e.g. 'a').
        """
        if self.kind is not None and keys.size and _key_kind(keys) != self.kind:
            raise TypeError(f"entity keys of this table are {self.kind}s; got "
                            f"{_key_kind(keys)}s (e.g. {keys[:1].tolist()[0]!r}).")

    def rows(self, keys: Any) -> np.ndarray:
        """Row of each key (-1 when unknown); see the class example."""
        keys = as_keys(keys, "keys")
        if not len(self) or not keys.size:
            return np.full(keys.size, -1, np.int64)
        self.check_kind(keys)
        return self._index.get_indexer(keys).astype(np.int64)

    def extended(self, new_keys: np.ndarray) -> EntityIndex:
        """A new index with ``new_keys`` (unknown, distinct) appended.

        Examples:
            >>> import numpy as np
            >>> from ctxppl.online._state import EntityIndex
            >>> EntityIndex([1]).extended(np.array([5])).rows([5]).tolist()
            [1]
        """
        if not new_keys.size:
            return self
        self.check_kind(new_keys)
        out = EntityIndex.__new__(EntityIndex)
        out._keys = np.concatenate([self._keys, new_keys]) if len(self) else new_keys
        out._index = pd.Index(out._keys)
        out.kind = _key_kind(out._keys)
        return out

    def to_array(self) -> np.ndarray:
        """Keys as a savable array (int64, or unicode strings).

        Examples:
            >>> from ctxppl.online._state import EntityIndex
            >>> EntityIndex(["u1"]).to_array().dtype.kind
            'U'
        """
        if self.kind == "str":
            return self._keys.astype(str)
        return self._keys.astype(np.int64)


class UpdateReport(NamedTuple):
    """What one update did (returned by :meth:`RandomEffects.update`).

    Attributes:
        step: The update step applied.
        num_entities: Entities updated.
        num_new: Of which seen for the first time.
        num_records: Records absorbed.
        skipped: Keys of entities skipped because they already carry this step (a replay).
        max_iter: Most Newton iterations any entity needed.
        seconds: Wall time.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> re = ctx.online.RandomEffects(ctx.online.ridge(1.0), 1)
        >>> rep = re.update(["a", "a", "b", "b"], np.ones((4, 1)), np.array([1.0, 3.0, 0, 0]))
        >>> rep.step, rep.num_entities, rep.num_new, rep.num_records, rep.skipped
        (0, 2, 2, 4, [])
    """

    step: int
    num_entities: int
    num_new: int
    num_records: int
    skipped: list
    max_iter: int
    seconds: float


class Proposal(NamedTuple):
    """An update computed but not yet committed (:meth:`RandomEffects.propose` has the
    example): new rows for the updated entities, new keys, and the report."""

    step: int
    index: EntityIndex
    keys: np.ndarray
    rows: np.ndarray
    mean: np.ndarray
    precision: np.ndarray
    prior_mean: np.ndarray
    count_add: np.ndarray
    report: UpdateReport
