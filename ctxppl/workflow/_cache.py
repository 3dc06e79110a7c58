r"""On-disk cache of fits and scores for :func:`ctxppl.workflow.run` (``joblib.Memory``).

A fit is stored under a key that hashes everything it depends on: the model's code (source of
the model function, of the factory and the values it closes over), the config, a fingerprint of
the data, the split indices, the method and fit options, the seed, and the versions of ctxppl,
JAX and NumPyro. Scores are stored separately under the fit's key plus the scoring functions'
code, so changing a scorer recomputes scores without refitting.

Entries are written by ``joblib.Memory``, which writes to a temporary file and renames it, so
several processes (loky workers, Dask workers sharing the directory) can fill one cache at the
same time; a run that crashed leaves only complete entries, and a rerun recomputes only what is
missing. Only plain data (numpy arrays, strings, numbers) is stored: the model function is
attached again from the factory when results are loaded, so locally defined models work.

What the key does *not* see: changes inside helper functions that the model calls (only the
model function's own source, its defaults and closure values are hashed). Bump ``cache``'s
location or call ``memory.clear()`` after editing such helpers.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

import joblib
import numpy as np

__all__ = ["fingerprint_callable", "fingerprint_data", "versions", "ResultCache"]


def _hash(obj: Any) -> str:
    return joblib.hash(obj)


def _source(fn: Any) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        if code is None:
            return repr(fn)
        return hashlib.sha1(code.co_code + repr(code.co_consts).encode()).hexdigest()


def _fingerprint_value(v: Any, depth: int) -> Any:
    """A stable (across processes) fingerprint of a value that may hold functions."""
    if depth > 8:
        return repr(type(v))
    if isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool):
        # numbers by value: 3000 == 3000.0 (optax's schedules turn their int closure
        # variables into floats on first use)
        return ["number", float(v)]
    if callable(v) and not isinstance(v, type) and not hasattr(v, "__array__"):
        return fingerprint_callable(v, depth + 1)
    if isinstance(v, tuple | list):  # also NamedTuples such as optax transformations
        return [type(v).__qualname__, [_fingerprint_value(x, depth + 1) for x in v]]
    if isinstance(v, Mapping):
        return [type(v).__qualname__, sorted((str(k), _fingerprint_value(x, depth + 1))
                                             for k, x in v.items())]
    try:
        return _hash(v)
    except Exception:  # noqa: BLE001 - unpicklable values: their type and repr without ids
        return [type(v).__qualname__, _strip_ids(repr(v))]


def _strip_ids(text: str) -> str:
    import re

    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


def fingerprint_callable(fn: Any, depth: int = 0) -> str:
    """A hash of a callable's code: its source, defaults, closure values and bound arguments.

    Handles plain functions, ``functools.partial`` (and ctxppl's bound models), methods and
    callable objects. Functions it calls by global name are not followed.
    """
    if depth > 8:
        return repr(type(fn))
    if inspect.isbuiltin(fn) or isinstance(fn, type):
        return _hash([getattr(fn, "__module__", None), getattr(fn, "__qualname__", repr(fn))])
    if isinstance(fn, functools.partial):
        parts = [fingerprint_callable(fn.func, depth + 1),
                 [_fingerprint_value(a, depth) for a in fn.args],
                 {k: _fingerprint_value(v, depth) for k, v in sorted(fn.keywords.items())}]
        return _hash(parts)
    if inspect.ismethod(fn):
        return _hash([fingerprint_callable(fn.__func__, depth + 1),
                      _fingerprint_value(fn.__self__, depth)])
    if inspect.isfunction(fn):
        closure = []
        for cell in fn.__closure__ or ():
            try:
                closure.append(_fingerprint_value(cell.cell_contents, depth))
            except ValueError:  # empty cell
                closure.append(None)
        defaults = [_fingerprint_value(d, depth) for d in (fn.__defaults__ or ())]
        kwdefaults = {k: _fingerprint_value(v, depth)
                      for k, v in sorted((fn.__kwdefaults__ or {}).items())}
        return _hash([fn.__module__, fn.__qualname__, _source(fn), closure, defaults,
                      kwdefaults])
    if callable(fn):  # a callable object: its class's code and its state
        state = getattr(fn, "__dict__", None)
        return _hash([_source(type(fn)), type(fn).__qualname__,
                      _fingerprint_value(state, depth) if state else _strip_ids(repr(fn))])
    return _hash(_strip_ids(repr(fn)))


def fingerprint_data(data: Any) -> str:
    """A hash of a data mapping / DataFrame (values, shapes, dtypes, names)."""
    if hasattr(data, "to_dict") and hasattr(data, "columns"):
        return _hash(("dataframe", list(map(str, data.columns)),
                      [np.asarray(data[c]) for c in data.columns]))
    if isinstance(data, Mapping):
        return _hash(("mapping", sorted((str(k), np.asarray(v) if hasattr(v, "__array__") else v)
                                        for k, v in data.items())))
    return _hash(data)


def versions() -> dict[str, str]:
    """Library versions that are part of every cache key."""
    import jax
    import numpyro

    import ctxppl

    return {"ctxppl": ctxppl.__version__, "jax": jax.__version__, "numpyro": numpyro.__version__}


def _call_fit(key: str, compute: Callable[[], Any]) -> Any:  # cached under `key` only
    return compute()


def _call_score(key: str, compute: Callable[[], Any]) -> Any:  # cached under `key` only
    return compute()


class ResultCache:
    """Fit and score store on top of ``joblib.Memory`` (``None`` disables caching).

    Args:
        cache: ``None`` (no cache), a directory path, or a ``joblib.Memory``.
    """

    def __init__(self, cache: Any):
        if cache is None or cache is False:
            self.memory = None
        elif isinstance(cache, joblib.Memory):
            self.memory = cache if cache.location is not None else None
        elif isinstance(cache, str | os.PathLike):
            self.memory = joblib.Memory(os.fspath(cache), verbose=0)
        else:
            raise TypeError("`cache` must be None, a directory path or a joblib.Memory; got "
                            f"{type(cache).__name__}.")
        if self.memory is not None:
            self._fit = self.memory.cache(_call_fit, ignore=["compute"])
            self._score = self.memory.cache(_call_score, ignore=["compute"])

    @property
    def enabled(self) -> bool:
        return self.memory is not None

    def has_fit(self, key: str) -> bool:
        return self.enabled and self._fit.check_call_in_cache(key, None)

    def has_score(self, key: str) -> bool:
        return self.enabled and self._score.check_call_in_cache(key, None)

    def fit(self, key: str, compute: Callable[[], Any]) -> Any:
        return compute() if not self.enabled else self._fit(key, compute)

    def score(self, key: str, compute: Callable[[], Any]) -> Any:
        return compute() if not self.enabled else self._score(key, compute)

    def __getstate__(self) -> dict[str, Any]:
        return {"location": None if self.memory is None else self.memory.location}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["location"])
