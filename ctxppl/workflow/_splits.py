r"""Sample splitting: k-fold, repeated k-fold, grouped k-fold, bootstrap, holdout, in-sample.

Every splitter returns a :class:`Splits`: ``B`` pairs of integer index arrays ``(train, test)``
over ``n`` rows. ``Splits.weights()`` turns them into the ``(B, n)`` member weights that
``ctx.fit_many`` takes (train rows weight = how often they are drawn, held-out rows 0), so all
splits of one model are fitted in one compiled, vmapped call. scikit-learn's splitters do the
splitting wherever one fits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import model_selection

__all__ = ["Splits", "kfold", "repeated_kfold", "group_kfold", "bootstrap", "holdout",
           "insample", "as_splits"]


def _num_rows(n: Any, name: str = "n") -> int:
    if isinstance(n, bool):
        raise TypeError(f"`{name}` must be a number of rows or an array-like; got a bool.")
    if isinstance(n, int | np.integer):
        if n < 2:
            raise ValueError(f"`{name}` must be at least 2 rows; got {n}.")
        return int(n)
    if hasattr(n, "__len__"):
        return _num_rows(len(n), name)
    raise TypeError(f"`{name}` must be an int (number of rows) or an array-like with len(); "
                    f"got {type(n).__name__}.")


def _index_array(a: Any, n: int, what: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ValueError(f"{what} must be a 1-D integer index array; got shape {arr.shape}, "
                         f"dtype {arr.dtype}.")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"{what} must lie in [0, {n}) (the data has {n} rows); got range "
                         f"[{arr.min()}, {arr.max()}].")
    return arr


@dataclass(frozen=True, eq=False)
class Splits:
    r"""``B`` train/test splits of ``n`` rows, as integer index arrays.

    Iterating yields ``(train, test)`` pairs. ``weights()`` gives the ``(B, n)`` train weights
    used by ``ctx.fit_many`` (a bootstrap row drawn twice weighs 2), ``test_mask()`` the
    ``(B, n)`` held-out indicator.

    Attributes:
        n: Number of rows (members of the model's plate).
        train: ``B`` integer arrays of training rows (may repeat, for the bootstrap).
        test: ``B`` integer arrays of held-out rows (may be empty).
        kind: Name of the scheme (``"kfold"``, ``"bootstrap"``, ...).

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> from ctxppl.workflow import Splits
        >>> s = Splits(4, train=[np.array([0, 1]), np.array([2, 3])],
        ...            test=[np.array([2, 3]), np.array([0, 1])])
        >>> len(s), s.weights().tolist()
        (2, [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
        >>> s + ctx.workflow.insample(4)  # k folds plus one fit on all rows
        Splits(kind='custom+insample', n_splits=3, n=4)
    """

    n: int
    train: tuple[np.ndarray, ...]
    test: tuple[np.ndarray, ...]
    kind: str = "custom"

    def __init__(self, n: int, train: Sequence[Any], test: Sequence[Any], kind: str = "custom"):
        n = _num_rows(n)
        if isinstance(train, np.ndarray) and train.ndim == 1:
            raise ValueError("`train` must be a sequence of index arrays (one per split); got "
                             "one 1-D array. Wrap it in a list for a single split.")
        train = tuple(_index_array(t, n, f"`train[{i}]`") for i, t in enumerate(train))
        test = tuple(_index_array(t, n, f"`test[{i}]`") for i, t in enumerate(test))
        if not train:
            raise ValueError("`train` must hold at least one split; got none.")
        if len(train) != len(test):
            raise ValueError(f"`train` and `test` must hold the same number of splits; got "
                             f"{len(train)} and {len(test)}.")
        for i, t in enumerate(train):
            if t.size == 0:
                raise ValueError(f"`train[{i}]` is empty; every split needs training rows.")
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "train", train)
        object.__setattr__(self, "test", test)
        object.__setattr__(self, "kind", str(kind))

    def __len__(self) -> int:
        return len(self.train)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return iter(zip(self.train, self.test, strict=True))

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.train[i], self.test[i]

    def __repr__(self) -> str:
        return f"Splits(kind={self.kind!r}, n_splits={len(self)}, n={self.n})"

    def __add__(self, other: Splits) -> Splits:
        """Concatenate two split sets over the same rows (e.g. k folds + one in-sample fit)."""
        if not isinstance(other, Splits):
            return NotImplemented
        if other.n != self.n:
            raise ValueError(f"cannot add splits over {self.n} and {other.n} rows.")
        return Splits(self.n, self.train + other.train, self.test + other.test,
                      f"{self.kind}+{other.kind}")

    def weights(self, dtype: Any = np.float32) -> np.ndarray:
        """``(B, n)`` training weights: how often each row is in each split's training set."""
        return np.stack([np.bincount(t, minlength=self.n) for t in self.train]).astype(dtype)

    def test_mask(self) -> np.ndarray:
        """``(B, n)`` boolean: ``True`` where a row is held out in that split."""
        mask = np.zeros((len(self), self.n), dtype=bool)
        for i, t in enumerate(self.test):
            mask[i, t] = True
        return mask

    def fingerprint(self) -> str:
        """A hash of the index arrays (part of the workflow's cache key)."""
        import joblib

        return joblib.hash((self.n, self.train, self.test))


def _from_sklearn(splitter: Any, n: int, kind: str, y: Any = None, groups: Any = None) -> Splits:
    rows = np.zeros((n, 1))
    pairs = list(splitter.split(rows, y, groups))
    return Splits(n, [p[0] for p in pairs], [p[1] for p in pairs], kind)


def _check_k(k: Any, n: int, name: str = "k") -> int:
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 2:
        raise ValueError(f"`{name}` must be an int >= 2; got {k!r}.")
    if k > n:
        raise ValueError(f"`{name}`={k} folds need at least {k} rows; the data has {n}.")
    return int(k)


def kfold(n: Any, k: int = 5, *, shuffle: bool = True, seed: int = 0,
          stratify: Any = None) -> Splits:
    r"""K-fold cross-validation (scikit-learn's ``KFold`` / ``StratifiedKFold``).

    Args:
        n: Number of rows, or an array-like whose ``len`` is the number of rows.
        k: Number of folds.
        shuffle: Shuffle rows before cutting folds.
        seed: Seed of the shuffle.
        stratify: Optional labels (length ``n``); folds then keep label proportions.

    Returns:
        :class:`Splits` with ``k`` splits; every row is held out exactly once.

    Examples:
        >>> import ctxppl as ctx
        >>> s = ctx.workflow.kfold(10, k=5)
        >>> len(s), [len(t) for t in s.test]
        (5, [2, 2, 2, 2, 2])
    """
    n = _num_rows(n)
    k = _check_k(k, n)
    rs = seed if shuffle else None
    if stratify is not None:
        y = np.asarray(stratify)
        if y.shape != (n,):
            raise ValueError(f"`stratify` must have shape ({n},); got {y.shape}.")
        return _from_sklearn(model_selection.StratifiedKFold(k, shuffle=shuffle, random_state=rs),
                             n, "stratified_kfold", y)
    return _from_sklearn(model_selection.KFold(k, shuffle=shuffle, random_state=rs), n, "kfold")


def repeated_kfold(n: Any, k: int = 5, repeats: int = 2, *, seed: int = 0) -> Splits:
    r"""K-fold cross-validation repeated with different shuffles (``RepeatedKFold``).

    Args:
        n: Number of rows or an array-like.
        k: Folds per repeat.
        repeats: Number of repeats.
        seed: Seed of the shuffles.

    Returns:
        :class:`Splits` with ``k * repeats`` splits.

    Examples:
        >>> import ctxppl as ctx
        >>> len(ctx.workflow.repeated_kfold(12, k=3, repeats=2))
        6
    """
    n = _num_rows(n)
    k = _check_k(k, n)
    if not isinstance(repeats, int | np.integer) or repeats < 1:
        raise ValueError(f"`repeats` must be a positive int; got {repeats!r}.")
    return _from_sklearn(model_selection.RepeatedKFold(n_splits=k, n_repeats=int(repeats),
                                                       random_state=seed), n, "repeated_kfold")


def group_kfold(groups: Any, k: int = 5, *, shuffle: bool = False, seed: int = 0) -> Splits:
    r"""K-fold over groups: all rows of a group are held out together (``GroupKFold``).

    Args:
        groups: Group label of every row (length ``n``).
        k: Number of folds (at most the number of groups).
        shuffle: Shuffle groups before assigning folds.
        seed: Seed of the shuffle.

    Returns:
        :class:`Splits` with ``k`` splits.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> s = ctx.workflow.group_kfold(np.array([0, 0, 1, 1, 2, 2]), k=3)
        >>> sorted(sorted(t.tolist()) for t in s.test)
        [[0, 1], [2, 3], [4, 5]]
    """
    g = np.asarray(groups)
    if g.ndim != 1:
        raise ValueError(f"`groups` must be 1-D (one label per row); got shape {g.shape}.")
    n = _num_rows(len(g), "groups")
    n_groups = len(np.unique(g))
    k = _check_k(k, n_groups)
    splitter = model_selection.GroupKFold(k, shuffle=shuffle,
                                          random_state=seed if shuffle else None)
    return _from_sklearn(splitter, n, "group_kfold", groups=g)


def bootstrap(n: Any, num: int = 100, *, seed: int = 0) -> Splits:
    r"""Nonparametric bootstrap: ``num`` resamples of ``n`` rows drawn with replacement.

    The held-out rows of each resample are its out-of-bag rows. In ``Splits.weights()`` a
    row drawn ``m`` times weighs ``m`` (the multinomial bootstrap).

    Args:
        n: Number of rows or an array-like.
        num: Number of resamples.
        seed: Seed of numpy's generator.

    Returns:
        :class:`Splits` with ``num`` splits.

    Examples:
        >>> import ctxppl as ctx
        >>> s = ctx.workflow.bootstrap(50, num=3)
        >>> s.weights().sum(axis=1).tolist()
        [50.0, 50.0, 50.0]
    """
    n = _num_rows(n)
    if not isinstance(num, int | np.integer) or num < 1:
        raise ValueError(f"`num` must be a positive int; got {num!r}.")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(int(num), n))
    train = [np.sort(d) for d in draws]
    test = [np.setdiff1d(np.arange(n), d) for d in draws]
    return Splits(n, train, test, "bootstrap")


def holdout(n: Any, test_size: float = 0.2, *, num: int = 1, seed: int = 0,
            stratify: Any = None) -> Splits:
    r"""Random train/test split(s) (``ShuffleSplit`` / ``StratifiedShuffleSplit``).

    Args:
        n: Number of rows or an array-like.
        test_size: Fraction (0-1) or number of held-out rows.
        num: Number of independent random splits.
        seed: Seed.
        stratify: Optional labels to keep proportions in both parts.

    Returns:
        :class:`Splits` with ``num`` splits.

    Examples:
        >>> import ctxppl as ctx
        >>> s = ctx.workflow.holdout(10, test_size=0.3)
        >>> len(s.train[0]), len(s.test[0])
        (7, 3)
    """
    n = _num_rows(n)
    if isinstance(test_size, float) and not 0 < test_size < 1:
        raise ValueError(f"`test_size` must be in (0, 1) or a row count; got {test_size!r}.")
    if isinstance(test_size, int | np.integer) and not 0 < test_size < n:
        raise ValueError(f"`test_size` must be in [1, {n - 1}] rows; got {test_size!r}.")
    if stratify is not None:
        y = np.asarray(stratify)
        if y.shape != (n,):
            raise ValueError(f"`stratify` must have shape ({n},); got {y.shape}.")
        splitter = model_selection.StratifiedShuffleSplit(num, test_size=test_size,
                                                          random_state=seed)
        return _from_sklearn(splitter, n, "holdout", y)
    return _from_sklearn(model_selection.ShuffleSplit(num, test_size=test_size, random_state=seed),
                         n, "holdout")


def insample(n: Any) -> Splits:
    r"""One split that trains on every row and also "tests" on every row (in-sample scores).

    Use it for in-sample criteria such as BIC, or to fit each config once on all data.

    Args:
        n: Number of rows or an array-like.

    Returns:
        :class:`Splits` with one split.

    Examples:
        >>> import ctxppl as ctx
        >>> ctx.workflow.insample(3).weights().tolist()
        [[1.0, 1.0, 1.0]]
    """
    n = _num_rows(n)
    return Splits(n, [np.arange(n)], [np.arange(n)], "insample")


def as_splits(splits: Any, n: int) -> Splits:
    """Check ``splits`` (a :class:`Splits` or ``(train, test)`` pairs) against ``n`` rows."""
    if splits is None:
        return insample(n)
    if isinstance(splits, Splits):
        if splits.n != n:
            raise ValueError(f"`splits` were made for {splits.n} rows but the data (the model's "
                             f"plate) has {n} rows.")
        return splits
    try:
        pairs = list(splits)
    except TypeError:
        raise TypeError("`splits` must be a ctx.workflow.Splits (e.g. ctx.workflow.kfold(n)) or "
                        f"a list of (train, test) index arrays; got {type(splits).__name__}."
                        ) from None
    if not pairs or not all(isinstance(p, tuple | list) and len(p) == 2 for p in pairs):
        raise TypeError("`splits` must be a non-empty list of (train, test) index-array pairs.")
    return Splits(n, [p[0] for p in pairs], [p[1] for p in pairs], "custom")
