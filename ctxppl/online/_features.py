r"""Name-term-value features: an index map ``(name, term) <-> column`` and conversions.

Lambda Learner (and GLMix before it) describe a record's features and a model's
coefficients as name-term-value triples: ``("season", "winter", 1.0)``. :class:`IndexMap`
turns such records, or a long pandas DataFrame of them, into dense arrays, and turns
coefficient arrays back into name-term-value tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["IndexMap", "UpdateError", "records_to_arrays"]


class UpdateError(ValueError):
    """A minibatch could not be applied; the state was left unchanged.

    Attributes:
        entities: The offending entity keys (the first ones, when many).
        reason: What is wrong with them.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> re = ctx.online.RandomEffects(ctx.online.bayes_logistic(), 1)
        >>> try:
        ...     re.update(["u7"], np.ones((1, 1)), np.array([np.nan]))
        ... except ctx.online.UpdateError as err:
        ...     print(err.entities, err.reason, len(re))
        ['u7'] non-finite label (NaN or inf) 0
    """

    def __init__(self, message: str, entities: Sequence[Any] = (), reason: str = ""):
        super().__init__(message)
        self.entities = list(entities)
        self.reason = reason


def _triple(f: Any) -> tuple[str, str, float]:
    if hasattr(f, "name") and hasattr(f, "term"):
        return str(f.name), str(f.term), float(f.value)
    name, term, value = f
    return str(name), str(term), float(value)


def _features_of(record: Any, key: str) -> Sequence[Any]:
    if isinstance(record, Mapping):
        return record.get(key, ())
    return getattr(record, key, ())


class IndexMap:
    r"""A bijection between feature name-terms ``(name, term)`` and columns ``0..d-1``.

    With ``intercept=True`` (the default, as in Lambda Learner) column 0 is
    ``("intercept", "intercept")`` and every converted record gets the value 1 there.

    Args:
        name_terms: ``(name, term)`` pairs in column order (duplicates are dropped).
        intercept: Put an intercept column first.
        intercept_name: Name (and term) of the intercept column.

    Examples:
        >>> from ctxppl.online import IndexMap
        >>> recs = [{"features": [("season", "winter", 1.0)]},
        ...         {"features": [("season", "summer", 1.0), ("age", "", 0.5)]}]
        >>> imap = IndexMap.from_records(recs)
        >>> imap.name_terms
        (('intercept', 'intercept'), ('season', 'winter'), ('season', 'summer'), ('age', ''))
        >>> imap.transform(recs).tolist()
        [[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.5]]
    """

    def __init__(self, name_terms: Iterable[tuple[str, str]] = (), *, intercept: bool = True,
                 intercept_name: str = "intercept"):
        pairs: list[tuple[str, str]] = []
        if intercept:
            pairs.append((intercept_name, intercept_name))
        pairs.extend((str(n), str(t)) for n, t in name_terms)
        index = pd.MultiIndex.from_tuples(pairs, names=["name", "term"]) if pairs else \
            pd.MultiIndex.from_arrays([[], []], names=["name", "term"])
        keep = ~index.duplicated()
        self._index = index[keep]
        self.intercept = bool(intercept)
        self.intercept_name = intercept_name

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_records(cls, records: Iterable[Any], *, features: str = "features",
                     intercept: bool = True, intercept_name: str = "intercept") -> IndexMap:
        """Index every name-term that occurs in ``records`` (in order of first appearance).

        A record is a mapping (or object) whose ``features`` entry is a list of
        ``(name, term, value)`` triples or of objects with ``name``, ``term``, ``value``.

        Examples:
            >>> from ctxppl.online import IndexMap
            >>> len(IndexMap.from_records([{"features": [("a", "x", 1.0)]}]))
            2
        """
        pairs = [_triple(f)[:2] for r in records for f in _features_of(r, features)]
        return cls(pairs, intercept=intercept, intercept_name=intercept_name)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, *, name: str = "name", term: str = "term",
                   intercept: bool = True, intercept_name: str = "intercept") -> IndexMap:
        """Index the name-terms of a long DataFrame (one row per record and feature).

        Examples:
            >>> import pandas as pd
            >>> from ctxppl.online import IndexMap
            >>> df = pd.DataFrame({"record": [0, 0, 1], "name": ["a", "b", "a"],
            ...                    "term": ["", "", ""], "value": [1.0, 2.0, 3.0]})
            >>> IndexMap.from_frame(df, intercept=False).name_terms
            (('a', ''), ('b', ''))
        """
        for col in (name, term):
            if col not in frame.columns:
                raise ValueError(f"`frame` has no column {col!r}; columns: {list(frame.columns)}.")
        pairs = zip(frame[name].astype(str), frame[term].astype(str), strict=True)
        return cls(pairs, intercept=intercept, intercept_name=intercept_name)

    def extend(self, name_terms: Iterable[tuple[str, str]]) -> IndexMap:
        """A new map with ``name_terms`` appended (existing columns keep their index).

        Examples:
            >>> from ctxppl.online import IndexMap
            >>> IndexMap([("a", "")], intercept=False).extend([("b", ""), ("a", "")]).name_terms
            (('a', ''), ('b', ''))
        """
        out = IndexMap(list(self.name_terms) + [(str(n), str(t)) for n, t in name_terms],
                       intercept=False)
        out.intercept, out.intercept_name = self.intercept, self.intercept_name
        return out

    # ------------------------------------------------------------------ lookups
    @property
    def name_terms(self) -> tuple[tuple[str, str], ...]:
        """The ``(name, term)`` of each column.

        Examples:
            >>> from ctxppl.online import IndexMap
            >>> IndexMap([("a", "x")], intercept=False).name_terms
            (('a', 'x'),)
        """
        return tuple(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, IndexMap) and self.name_terms == other.name_terms
                and self.intercept == other.intercept)

    def __hash__(self) -> int:
        return hash(self.name_terms)

    def __repr__(self) -> str:
        return f"IndexMap({len(self)} columns, intercept={self.intercept})"

    def index(self, name: str, term: str = "") -> int:
        """Column of ``(name, term)``; ``KeyError`` if it is not indexed.

        Examples:
            >>> from ctxppl.online import IndexMap
            >>> IndexMap([("a", "x")]).index("a", "x")
            1
        """
        loc = self._index.get_indexer([(str(name), str(term))])[0]
        if loc < 0:
            raise KeyError(f"feature ({name!r}, {term!r}) is not in the index map.")
        return int(loc)

    def columns(self, names: Sequence[str], terms: Sequence[str]) -> np.ndarray:
        """Vectorised lookup: the column of each ``(names[i], terms[i])``, -1 if unknown.

        Examples:
            >>> from ctxppl.online import IndexMap
            >>> IndexMap([("a", "x"), ("b", "")]).columns(["b", "a", "c"], ["", "x", ""]).tolist()
            [2, 1, -1]
        """
        keys = pd.MultiIndex.from_arrays([np.asarray(names, dtype=str),
                                          np.asarray(terms, dtype=str)])
        return self._index.get_indexer(keys)

    # ------------------------------------------------------------------ conversions
    def transform(self, records: Sequence[Any], *, features: str = "features",
                  entities: Sequence[Any] | None = None, dtype: Any = np.float32) -> np.ndarray:
        """Dense ``(len(records), len(self))`` features of name-term-value records.

        Args:
            records: Records as in :meth:`from_records`.
            features: Key of the feature list in each record.
            entities: Entity key of each record (named in the error for unknown features).
            dtype: Output dtype.

        Raises:
            UpdateError: A record holds a name-term the map does not know (naming the
                record's entity and the feature).

        Examples:
            >>> from ctxppl.online import IndexMap
            >>> IndexMap([("a", "")]).transform([{"features": [("a", "", 2.0)]}]).tolist()
            [[1.0, 2.0]]
        """
        trip = [[_triple(f) for f in _features_of(r, features)] for r in records]
        row = np.repeat(np.arange(len(trip)), [len(t) for t in trip])
        flat = [f for t in trip for f in t]
        names = [f[0] for f in flat]
        terms = [f[1] for f in flat]
        values = np.asarray([f[2] for f in flat], dtype=np.float64)
        return self._dense(row, names, terms, values, len(trip), entities, dtype)

    def transform_frame(self, frame: pd.DataFrame, *, record: str = "record",
                        name: str = "name", term: str = "term", value: str = "value",
                        num_records: int | None = None, entities: Sequence[Any] | None = None,
                        dtype: Any = np.float32) -> np.ndarray:
        """Dense features of a long DataFrame with integer record ids ``0..num_records-1``.

        Examples:
            >>> import pandas as pd
            >>> from ctxppl.online import IndexMap
            >>> df = pd.DataFrame({"record": [0, 0, 1], "name": ["a", "b", "a"],
            ...                    "term": ["", "", ""], "value": [1.0, 2.0, 3.0]})
            >>> IndexMap.from_frame(df).transform_frame(df).tolist()
            [[1.0, 1.0, 2.0], [1.0, 3.0, 0.0]]
        """
        for col in (record, name, term, value):
            if col not in frame.columns:
                raise ValueError(f"`frame` has no column {col!r}; columns: {list(frame.columns)}.")
        row = frame[record].to_numpy()
        if row.size and (not np.issubdtype(row.dtype, np.integer) or row.min() < 0):
            raise ValueError(f"column {record!r} must hold record numbers 0, 1, ...; got "
                             f"dtype {row.dtype}.")
        n = int(num_records if num_records is not None else (row.max() + 1 if row.size else 0))
        return self._dense(row, frame[name].astype(str).to_numpy(),
                           frame[term].astype(str).to_numpy(),
                           frame[value].to_numpy(np.float64), n, entities, dtype)

    def _dense(self, row: np.ndarray, names: Sequence[str], terms: Sequence[str],
               values: np.ndarray, n: int, entities: Sequence[Any] | None,
               dtype: Any) -> np.ndarray:
        cols = self.columns(names, terms) if len(values) else np.zeros(0, np.int64)
        if np.any(cols < 0):
            bad = np.flatnonzero(cols < 0)
            first = int(bad[0])
            rec = int(row[first])
            who = [entities[int(row[i])] for i in bad[:5]] if entities is not None else []
            where = (f"entity {entities[rec]!r} (record {rec})" if entities is not None
                     else f"record {rec}")
            raise UpdateError(
                f"{where} has feature ({names[first]!r}, {terms[first]!r}), which the index "
                f"map does not know ({len(bad)} unknown feature value(s) in all). Rebuild the "
                "map with `IndexMap.extend(...)` (and the model with more features) or drop "
                "the feature.", who, "unknown feature")
        out = np.zeros((n, len(self)), dtype=np.float64)
        np.add.at(out, (row, cols), values)
        if self.intercept:
            out[:, 0] = 1.0
        return out.astype(dtype)

    def table(self, coefficients: Any, variances: Any = None,
              entities: Sequence[Any] | None = None) -> pd.DataFrame:
        """Coefficients back to a name-term-value table.

        Args:
            coefficients: ``(d,)`` or ``(k, d)`` coefficient means.
            variances: Optional matching variances (added as a ``variance`` column).
            entities: Entity keys of the ``k`` rows (an ``entity`` column).

        Returns:
            A DataFrame with columns ``[entity,] name, term, value[, variance]``.

        Examples:
            >>> import numpy as np
            >>> from ctxppl.online import IndexMap
            >>> IndexMap([("a", "x")]).table(np.array([0.5, 2.0])).values.tolist()
            [['intercept', 'intercept', 0.5], ['a', 'x', 2.0]]
        """
        coef = np.asarray(coefficients)
        one = coef.ndim == 1
        coef = np.atleast_2d(coef)
        if coef.shape[-1] != len(self):
            raise ValueError(f"`coefficients` must have {len(self)} columns (one per "
                             f"name-term); got shape {np.shape(coefficients)}.")
        k, d = coef.shape
        names = np.array([nt[0] for nt in self.name_terms], dtype=object)
        terms = np.array([nt[1] for nt in self.name_terms], dtype=object)
        data: dict[str, Any] = {}
        if entities is not None:
            ent = np.asarray(entities)
            if ent.shape != (k,):
                raise ValueError(f"`entities` must hold {k} keys; got shape {ent.shape}.")
            data["entity"] = np.repeat(ent, d)
        elif not one:
            data["entity"] = np.repeat(np.arange(k), d)
        data["name"] = np.tile(names, k)
        data["term"] = np.tile(terms, k)
        data["value"] = coef.reshape(-1).astype(np.float64)
        if variances is not None:
            data["variance"] = np.atleast_2d(np.asarray(variances)).reshape(-1).astype(
                np.float64)
        return pd.DataFrame(data)

    def from_table(self, table: pd.DataFrame, *, value: str = "value",
                   default: float = 0.0) -> np.ndarray:
        """A name-term-value table (one model) back to a ``(d,)`` coefficient vector.

        Name-terms missing from the table get ``default``; unknown ones raise ``KeyError``.

        Examples:
            >>> import pandas as pd
            >>> from ctxppl.online import IndexMap
            >>> t = pd.DataFrame({"name": ["a"], "term": ["x"], "value": [3.0]})
            >>> IndexMap([("a", "x")]).from_table(t).tolist()
            [0.0, 3.0]
        """
        cols = self.columns(table["name"].astype(str), table["term"].astype(str))
        if np.any(cols < 0):
            i = int(np.flatnonzero(cols < 0)[0])
            raise KeyError(f"table row {i} names ({table['name'].iloc[i]!r}, "
                           f"{table['term'].iloc[i]!r}), which the index map does not know.")
        out = np.full(len(self), default, dtype=np.float64)
        out[cols] = table[value].to_numpy(np.float64)
        return out

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (round-trips through :meth:`from_dict`).

        Examples:
            >>> from ctxppl.online import IndexMap
            >>> IndexMap([("a", "x")], intercept=False).to_dict()["name_terms"]
            [['a', 'x']]
        """
        return {"name_terms": [list(nt) for nt in self.name_terms],
                "intercept": self.intercept, "intercept_name": self.intercept_name}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IndexMap:
        """Inverse of :meth:`to_dict`.

        Examples:
            >>> from ctxppl.online import IndexMap
            >>> m = IndexMap([("a", "x")])
            >>> IndexMap.from_dict(m.to_dict()) == m
            True
        """
        out = cls([tuple(nt) for nt in d["name_terms"]], intercept=False)
        out.intercept, out.intercept_name = bool(d["intercept"]), d["intercept_name"]
        return out


def records_to_arrays(records: Sequence[Any], index_map: IndexMap, *, entity: str = "entity",
                      label: str = "label", features: str = "features",
                      dtype: Any = np.float32) -> dict[str, np.ndarray]:
    """Name-term-value training records to arrays for :meth:`RandomEffects.update`.

    Each record is a mapping (or object) with the entity key under ``entity``, the label
    under ``label`` and optional ``weight`` (default 1) and ``offset`` (default 0).

    Returns:
        ``{"ids", "X", "y", "offset", "weight"}``.

    Examples:
        >>> from ctxppl.online import IndexMap
        >>> from ctxppl.online._features import records_to_arrays
        >>> recs = [{"entity": "u1", "label": 1, "features": [("a", "", 2.0)]}]
        >>> arr = records_to_arrays(recs, IndexMap.from_records(recs))
        >>> arr["ids"].tolist(), arr["X"].tolist(), arr["y"].tolist()
        (['u1'], [[1.0, 2.0]], [1.0])
    """

    def get(r: Any, k: str, default: Any = None) -> Any:
        if isinstance(r, Mapping):
            return r.get(k, default)
        return getattr(r, k, default)

    ids = [get(r, entity) for r in records]
    if any(i is None for i in ids):
        i = next(i for i, v in enumerate(ids) if v is None)
        raise ValueError(f"record {i} has no entity key {entity!r}.")
    x = index_map.transform(records, features=features, entities=ids, dtype=dtype)
    y = np.asarray([get(r, label, np.nan) for r in records], dtype=np.float64).astype(dtype)
    off = np.asarray([get(r, "offset", 0.0) for r in records], dtype=np.float64).astype(dtype)
    w = np.asarray([get(r, "weight", 1.0) for r in records], dtype=np.float64).astype(dtype)
    return {"ids": np.asarray(ids), "X": x, "y": y, "offset": off, "weight": w}
