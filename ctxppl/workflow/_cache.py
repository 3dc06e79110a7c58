r"""On-disk cache of fits and scores for :func:`ctxppl.workflow.run`.

A fit is stored under a key that hashes everything it depends on: the model's code (source of
the model function, of the factory and the values it closes over), the config, a fingerprint of
the data, the split indices, the method and fit options, the seed, and the versions of ctxppl,
JAX and NumPyro. Scores are stored separately under the fit's key plus the scoring functions'
code, so changing a scorer recomputes scores without refitting.

Each entry is one ``.npz`` (a JSON header plus arrays; nothing is pickled, so a cache folder
someone else filled cannot run code when read) written atomically by
:func:`ctxppl._files.write_npz` (temporary file in the same folder, fsync, rename), so several
processes (loky workers, Dask workers sharing the directory) can fill one cache at the same
time; a run that crashed leaves only complete entries, and a rerun recomputes only what is
missing (a damaged entry is recomputed with a warning). Only plain data (numpy arrays,
strings, numbers) is stored: encoder parameters by key path, rebuilt from the model, and the
model function is attached again from the factory when results are loaded, so locally
defined models work.

What the key does *not* see: changes inside helper functions that the model calls (only the
model function's own source, its defaults and closure values are hashed). Bump ``cache``'s
location or call ``memory.clear()`` after editing such helpers.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import joblib
import numpy as np

from ctxppl._files import FileFormatError, decode_tree, encode_tree, read_npz, write_npz

__all__ = ["fingerprint_callable", "fingerprint_data", "versions", "ResultCache"]


_FORMAT = "ctxppl-cache/1"


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


class ResultCache:
    """Fit and score store: one ``.npz`` per entry (JSON header + arrays, no pickle), written
    atomically through :mod:`ctxppl._files`, under ``<folder>/fits`` and ``<folder>/scores``.

    Args:
        cache: ``None`` (no cache), a directory path, or a ``joblib.Memory`` (its location
            is used as the directory).

    Examples:
        >>> import tempfile, numpy as np
        >>> store = ResultCache(tempfile.mkdtemp())
        >>> store.score("k1", lambda: {"values": [{"mse": 1.5}], "errors": [None]})
        {'values': [{'mse': 1.5}], 'errors': [None]}
        >>> store.has_score("k1"), store.score("k1", lambda: 1 / 0)["values"]
        (True, [{'mse': 1.5}])
    """

    def __init__(self, cache: Any):
        if cache is None or cache is False:
            self.location = None
        elif isinstance(cache, joblib.Memory):
            self.location = None if cache.location is None else os.fspath(cache.location)
        elif isinstance(cache, str | os.PathLike):
            self.location = os.fspath(cache)
        else:
            raise TypeError("`cache` must be None, a directory path or a joblib.Memory; got "
                            f"{type(cache).__name__}.")
        if self.location is not None:
            if os.path.exists(self.location) and not os.path.isdir(self.location):
                raise ValueError(f"`cache`: {self.location!r} exists and is not a folder.")
            for kind in ("fits", "scores"):
                os.makedirs(os.path.join(self.location, kind), exist_ok=True)

    @property
    def enabled(self) -> bool:
        return self.location is not None

    def _path(self, kind: str, key: str) -> str:
        return os.path.join(self.location, kind, f"{key}.npz")

    def has_fit(self, key: str) -> bool:
        return self.enabled and os.path.exists(self._path("fits", key))

    def has_score(self, key: str) -> bool:
        return self.enabled and os.path.exists(self._path("scores", key))

    def _read(self, path: str) -> tuple[dict, dict] | None:
        try:
            return read_npz(path, expect="ctxppl-cache")
        except FileNotFoundError:
            return None
        except FileFormatError as e:  # a damaged entry is recomputed (and rewritten)
            warnings.warn(f"ctx.workflow cache: {e} It is recomputed.", RuntimeWarning,
                          stacklevel=4)
            return None

    def fit(self, key: str, compute: Callable[[], dict],
            templates: Callable[[], dict] | None = None) -> dict:
        """The fit result under ``key``: read from disk, or computed and stored.

        ``templates()`` gives the model's param structures (to rebuild encoder sites that
        are stored by key path); it is only called when the entry is read back.
        """
        from ctxppl.infer._format import decode_sites, encode_sites

        if not self.enabled:
            return compute()
        path = self._path("fits", key)
        got = self._read(path)
        if got is not None:
            arrays, meta = got
            res = decode_tree(meta["tree"], arrays)
            need = any(isinstance(v, dict) and "$paths" in v for _, v in meta["params"])
            tmpl = templates() if need and templates is not None else {}
            res["params"] = decode_sites(meta["params"], arrays, tmpl)
            res["guide_params"] = decode_sites(meta["guide_params"], arrays, {})
            return res
        res = compute()
        arrays: dict[str, Any] = {}
        rest = {k: v for k, v in res.items() if k not in ("params", "guide_params")}
        meta = {"format": _FORMAT, "params": encode_sites(res["params"], arrays, "params"),
                "guide_params": encode_sites(res["guide_params"], arrays, "guide_params"),
                "tree": encode_tree(rest, arrays, "fit result")}
        write_npz(path, arrays, meta)
        return res

    def score(self, key: str, compute: Callable[[], Any]) -> Any:
        """The scores under ``key``: read from disk, or computed and stored."""
        if not self.enabled:
            return compute()
        path = self._path("scores", key)
        got = self._read(path)
        if got is not None:
            return decode_tree(got[1]["tree"], got[0])
        res = compute()
        arrays: dict[str, Any] = {}
        write_npz(path, arrays, {"format": _FORMAT, "tree": encode_tree(res, arrays, "scores")})
        return res
