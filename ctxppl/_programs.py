r"""Compiled programs that a fresh process loads instead of lowering them again.

:class:`stored_jit` is ``eqx.filter_jit`` (array leaves traced, everything else static) plus
a store of *exported* programs on disk. Every fresh process still traces the function -- the
trace is the only complete description of what the user's model computes -- but the
expensive step after it, lowering the jaxpr to StableHLO (a third to a half of a warm fresh
process's time), is skipped when the store already holds the program:

1. trace (``jax.jit(...).trace``) and hash the jaxpr's text (every equation parameter),
   its constants and those of every jaxpr nested in it (an inner ``jit`` keeps its own),
   the JAX and jaxlib versions, the backend and JAX's configuration;
2. a hit deserializes the ``jax.export`` artifact of that hash (flatbuffers, never pickle)
   and calls it; its compiled executable comes from JAX's persistent compilation cache;
3. a miss exports the program, writes it atomically (a temporary file in the same folder,
   renamed into place) and calls it the same way, so the next process hits.

The key is the program itself, not the Python code that produced it: a changed model, data
shape, option or library changes the jaxpr, and so the key. A program with side effects (a
progress-bar callback) is never stored: it is compiled in-process as by ``jax.jit``. A stored
file that cannot be read is reported (a ``RuntimeWarning`` naming the file), deleted and
rebuilt. Within a process, compiled programs are remembered per static arguments and array
shapes, like ``eqx.filter_jit``. Each build records a ``jax.monitoring`` event:
``/ctxppl/programs/hit`` (loaded from the store), ``/ctxppl/programs/miss`` (exported and
stored) or ``/ctxppl/programs/unstored`` (compiled in-process only).

The store is ``<JAX's compilation cache folder>/ctxppl-programs``; it is on exactly when
JAX's persistent compilation cache is (see :mod:`ctxppl._cache`; ``CTXPPL_NO_CACHE=1`` turns
both off), for single-process programs on one device, and holds at most
``MAX_FILES`` programs (least recently used deleted first).
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import numpy as np

from ctxppl._files import atomic_write

__all__ = ["stored_jit", "program_folder", "MAX_FILES", "SUFFIX"]

MAX_FILES = 512          # programs kept in the store (each ~10-500 KB)
SUFFIX = ".jaxexport"
_MEMO_SIZE = 64          # compiled programs remembered per process and function


def program_folder() -> str | None:
    """The folder of stored programs, or ``None`` when the store is off (JAX's persistent
    compilation cache off, ``CTXPPL_NO_CACHE`` set, or several processes).

    Examples:
        >>> folder = program_folder()
        >>> folder is None or folder.endswith("ctxppl-programs")
        True
    """
    from ctxppl._cache import ENV_OFF, _off

    if _off(os.environ.get(ENV_OFF)) or not jax.config.jax_enable_compilation_cache:
        return None
    root = jax.config.jax_compilation_cache_dir
    if not root or jax.process_count() > 1:
        return None
    return os.path.join(root, "ctxppl-programs")


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _raw_keys(leaves: list, impls: tuple) -> list:
    """The arguments as the stored program takes them: PRNG keys as their raw data."""
    return [jax.random.key_data(x) if impl else x for x, impl in zip(leaves, impls, strict=True)]


def _signature(x: Any) -> tuple:
    """What a compiled program depends on of one array argument."""
    if isinstance(x, jax.Array):
        return (x.shape, str(x.dtype), bool(getattr(x, "weak_type", False)), x.sharding)
    x = np.asarray(x)
    return (x.shape, str(x.dtype))


def _local(leaves: list) -> bool:
    """Every array on one device of this process (the store's programs are single-device)."""
    return all(not isinstance(x, jax.Array) or len(x.sharding.device_set) == 1 for x in leaves)


def _environment() -> bytes:
    """Everything besides the jaxpr that decides how it lowers and compiles."""
    import jaxlib

    dev = jax.devices()[0]
    config = sorted((k, v) for k, v in jax.config.values.items()
                    if isinstance(v, (bool, int, float, str, type(None))))
    version = getattr(getattr(dev, "client", None), "platform_version", "")
    return repr(("ctxppl-program/1", jax.__version__, jaxlib.__version__, dev.platform,
                 dev.device_kind, version, config)).encode()


def _constants(jaxpr: Any, out: list, seen: set) -> list:
    """Every constant of ``jaxpr`` and of the jaxprs nested in its equations (an inner
    ``jit``'s closed-over array is printed as a variable, not by value)."""
    if id(jaxpr) in seen:
        return out
    seen.add(id(jaxpr))
    out.extend(getattr(jaxpr, "consts", None) or ())
    inner = getattr(jaxpr, "jaxpr", None)  # a ClosedJaxpr's Jaxpr (jax < 0.11)
    if inner is not None and inner is not jaxpr:
        _constants(inner, out, seen)
    for eqn in getattr(jaxpr, "eqns", ()):
        for value in eqn.params.values():
            for p in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(p, "eqns") or hasattr(p, "consts"):
                    _constants(p, out, seen)
    return out


def _program_hash(closed: Any) -> str:
    h = hashlib.sha256(_environment())
    # every equation parameter printed (not only those JAX's compact form shows, which omits
    # e.g. an inner jit's shardings and options); stable across processes
    h.update(closed.pretty_print(custom_pp_eqn_rules=False).encode())
    for c in _constants(closed, [], set()):
        if _is_key(c):
            c = jax.random.key_data(c)
        a = np.asarray(c)
        h.update(repr((a.shape, str(a.dtype))).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _evict(folder: str) -> None:
    try:
        entries = [e for e in os.scandir(folder) if e.name.endswith(SUFFIX)]
        if len(entries) <= MAX_FILES:
            return
        entries.sort(key=lambda e: e.stat().st_mtime)
        for e in entries[: len(entries) - MAX_FILES]:
            os.unlink(e.path)
    except OSError:  # another process evicting at the same time
        pass


class _Program:
    """One compiled program of a :class:`stored_jit` function, with how to call it."""

    def __init__(self, call: Callable, out: tuple, impls: tuple, stored: str | None):
        self.call, self.out, self.impls, self.stored = call, out, impls, stored

    def __call__(self, leaves: list) -> Any:
        treedef, static = self.out
        out = self.call(*_raw_keys(leaves, self.impls))
        return eqx.combine(jax.tree_util.tree_unflatten(treedef, out), static)


class stored_jit:
    """``eqx.filter_jit`` whose programs a fresh process loads from disk instead of lowering.

    Array leaves of the arguments are traced; everything else is static (hashed, compared
    by equality). ``compiler_options`` go to XLA (as in ``jax.jit``). See the module
    docstring for what is stored and when.

    Examples:
        >>> import jax.numpy as jnp
        >>> f = stored_jit(lambda x, n: {"y": x * n, "n": n})
        >>> f(jnp.arange(3.0), 2)["y"]
        Array([0., 2., 4.], dtype=float32)
    """

    def __init__(self, fun: Callable, name: str | None = None,
                 compiler_options: dict[str, Any] | None = None):
        self.fun = fun
        self.name = name or getattr(fun, "__name__", "program")
        self.compiler_options = dict(compiler_options or {})
        # the options apply to XLA's compilation, not to the exported (lowered) program
        self._jit_options = {"compiler_options": self.compiler_options} if compiler_options \
            else {}
        self._fallback = eqx.filter_jit(fun, **self._jit_options)
        self._memo: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def _cache_size(self) -> int:
        """Programs compiled in this process (stored and fallback): tests count them."""
        return len(self._memo) + self._fallback._cached._cache_size()

    def __call__(self, *args: Any) -> Any:
        dynamic, static = eqx.partition(args, eqx.is_array)
        leaves, treedef = jax.tree_util.tree_flatten(dynamic)
        folder = program_folder()
        if folder is None or not _local(leaves):
            return self._fallback(*args)
        s_leaves, s_def = jax.tree_util.tree_flatten(static)
        try:
            memo_key = (treedef, s_def, tuple(s_leaves), tuple(map(_signature, leaves)))
            hash(memo_key)
        except TypeError:  # an unhashable static argument: as eqx.filter_jit would fail
            return self._fallback(*args)
        with self._lock:
            program = self._memo.get(memo_key)
            if program is not None:
                self._memo.move_to_end(memo_key)
        if program is None:
            program = self._build(leaves, treedef, static, folder)
            with self._lock:
                self._memo[memo_key] = program
                while len(self._memo) > _MEMO_SIZE:
                    self._memo.popitem(last=False)
        return program(leaves)

    # ---------------------------------------------------------------- building
    def _flat(self, treedef: Any, static: Any, impls: tuple, captured: dict) -> Callable:
        """The function on flat array leaves (keys as raw data) that is traced and exported."""
        fun = self.fun

        def flat(*xs):  # noqa: ANN002, ANN202
            xs = [jax.random.wrap_key_data(x, impl=impl) if impl else x
                  for x, impl in zip(xs, impls, strict=True)]
            out = fun(*eqx.combine(jax.tree_util.tree_unflatten(treedef, xs), static))
            dyn, out_static = eqx.partition(out, eqx.is_array)
            out_leaves, out_def = jax.tree_util.tree_flatten(dyn)
            captured["out"] = (out_def, out_static)
            return out_leaves

        flat.__name__ = self.name
        return flat

    def _build(self, leaves: list, treedef: Any, static: Any, folder: str) -> _Program:
        impls = tuple(str(jax.random.key_impl(x)) if _is_key(x) else None for x in leaves)
        flat_args = _raw_keys(leaves, impls)
        captured: dict = {}
        flat = self._flat(treedef, static, impls, captured)
        traced = jax.jit(flat).trace(*flat_args)
        if traced.jaxpr.effects:  # callbacks (progress bars) live in this process only
            return self._unstored(traced, captured, impls)
        path = os.path.join(folder, f"{self.name}-{_program_hash(traced.jaxpr)}{SUFFIX}")
        exported = _read(path, traced)
        if exported is None:
            try:
                exported = jax.export.export(jax.jit(flat))(*flat_args)
                data = exported.serialize()
            except Exception:  # noqa: BLE001 - not exportable: compile it here, store nothing
                return self._unstored(traced, captured, impls)
            _write(path, data)
            jax.monitoring.record_event("/ctxppl/programs/miss")
        else:
            jax.monitoring.record_event("/ctxppl/programs/hit")
        def call(*xs):  # noqa: ANN002, ANN202 - named, for JAX's logs and cache entries
            return exported.call(*xs)

        call.__name__ = self.name
        return _Program(jax.jit(call, **self._jit_options), captured["out"], impls, path)

    def _unstored(self, traced: Any, captured: dict, impls: tuple) -> _Program:
        jax.monitoring.record_event("/ctxppl/programs/unstored")
        compiled = traced.lower().compile(self.compiler_options or None)
        return _Program(compiled, captured["out"], impls, None)


def _read(path: str, traced: Any) -> Any:
    """The exported program at ``path``; ``None`` when absent, or unreadable or not the
    program ``traced`` (reported and deleted, so that it is rebuilt)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        exported = jax.export.deserialize(bytearray(data))
        want = tuple(v.aval for v in traced.jaxpr.jaxpr.invars)
        if (tuple((a.shape, a.dtype) for a in exported.in_avals)
                != tuple((a.shape, a.dtype) for a in want)
                or len(exported.out_avals) != len(traced.jaxpr.jaxpr.outvars)):
            raise ValueError(f"its signature {exported.in_avals} -> {len(exported.out_avals)} "
                             f"outputs is not the program's {want}")
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file
        warnings.warn(f"ctxppl: the stored program {path!r} cannot be read "
                      f"({type(e).__name__}: {e}); it is deleted and compiled anew.",
                      RuntimeWarning, stacklevel=4)
        try:
            os.unlink(path)
        except OSError:
            pass
        return None
    try:
        os.utime(path)  # recently used: evicted last
    except OSError:
        pass
    return exported


def _write(path: str, data: bytes) -> None:
    """Store ``data`` atomically; a folder that cannot be written only costs the speed-up."""
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        atomic_write(path, lambda f: f.write(data))
    except OSError:
        return
    _evict(folder)
