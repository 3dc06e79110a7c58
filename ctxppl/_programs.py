r"""Compiled programs that a fresh process loads instead of compiling them again.

:class:`stored_jit` is ``eqx.filter_jit`` (array leaves traced, everything else static) plus
a store of compiled XLA executables on disk. Every fresh process still traces the function
-- the trace is the only complete description of what the user's model computes -- but
nothing after it is repeated when the store holds the program:

1. trace (``jax.jit(...).trace``) and hash the jaxpr's text (every equation parameter),
   its constants and those of every jaxpr nested in it (an inner ``jit`` keeps its own),
   the JAX and jaxlib versions, the backend, JAX's configuration, ``XLA_FLAGS``, the
   program's XLA options and the host CPU's model and instruction-set flags;
2. a hit loads the executable stored under that hash (a JSON header line, then XLA's
   serialized executable, zlib-compressed; never pickle) and calls it with the program's
   hoisted constants (arrays the function closes over, which JAX >= 0.11 passes as hidden
   arguments) and the flat arguments;
3. a miss lowers and compiles the program here, writes the executable atomically (a
   temporary file in the same folder, renamed into place) and calls it the same way.

Loading overlaps the trace. Each call is also described by a *guess* -- the function's name,
the argument shapes and a digest of the static arguments' code -- and a small file records
which program that description needed last time and how long it ran. A fresh process reads
it before tracing and loads that executable; when it ran for at most ``SPECULATE_SECONDS``
last time, it also starts it on the arguments, and XLA runs it while the trace goes on (on
the hoisted constants stored beside it: up to ``MAX_CONSTANTS`` bytes of them; a program
closing over more waits for its trace). The outputs are used only if the trace then hashes
to that very program -- constants' values included; otherwise they are
dropped and the right program is loaded or compiled. A wrong guess costs a load and at most
a short run, never a wrong answer. A caller that checks its inputs before the call can start
the load earlier still with :meth:`stored_jit.prefetch` (``ctx.fit`` does, before it traces
the model's structure).

The key is the program itself, not the Python code that produced it: a changed model, data
shape, option or library changes the jaxpr, and so the key. A program with side effects (a
progress-bar callback) or a call back into Python (``jax.pure_callback``) is never stored:
it is compiled in-process as by ``jax.jit`` (and JAX's persistent cache serves it). A stored
file that cannot be read is reported (a ``RuntimeWarning`` naming the file), deleted and
rebuilt. Within a process, compiled programs are remembered per static arguments and array
shapes, like ``eqx.filter_jit``. Each build records a ``jax.monitoring`` event:
``/ctxppl/programs/hit`` (loaded from the store), ``/ctxppl/programs/miss`` (compiled and
stored) or ``/ctxppl/programs/unstored`` (compiled in-process only); and
``/ctxppl/programs/ahead`` or ``/ctxppl/programs/ahead_discarded`` when a guessed program
was started before the check (its outputs used, or dropped); and
``/ctxppl/programs/prefetched`` when the program used was loaded by a prefetch.

The store is ``<JAX's compilation cache folder>/ctxppl-programs``; it is on exactly when
JAX's persistent compilation cache is (see :mod:`ctxppl._cache`; ``CTXPPL_NO_CACHE=1`` turns
both off), for single-process programs whose arrays are on the default device, and holds at
most ``MAX_FILES`` programs and as many guesses (least recently used deleted first).

Loading and calling an executable without lowering uses JAX internals (``jax._src``: the
client's (de)serialization, hoisted constants, ``ArrayImpl``), checked by the test suite on
JAX 0.10 and 0.12; a JAX without them turns the store off (``eqx.filter_jit`` as before).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import equinox as eqx
import jax
import numpy as np

try:  # JAX internals (checked on JAX 0.10 and 0.12); without them the store is off
    from jax._src.array import ArrayImpl  # an output with the traced type, as jax.jit gives
    from jax._src.core import ShapedArray, jaxpr_const_args  # constants passed as arguments
    from jax._src.lib import xla_client  # DeviceList: the devices an executable is loaded on
except ImportError:  # pragma: no cover - a JAX that moved them
    ArrayImpl = ShapedArray = jaxpr_const_args = xla_client = None

from ctxppl._files import atomic_write
from ctxppl._lru import LRU

__all__ = ["stored_jit", "program_folder", "MAX_FILES", "SUFFIX", "GUESS"]

MAX_FILES = 512          # programs kept in the store (each ~10-500 KB)
SUFFIX = ".xlaexec"      # a compiled program: JSON header line, then XLA's serialized executable
GUESS = ".guess"         # which program a call with these static arguments needed last time
FORMAT = "ctxppl-program/3"
SPECULATE_SECONDS = 2.0  # a guessed program that ran at most this long starts before the check
MAX_CONSTANTS = 4 << 20  # bytes of closed-over arrays stored beside a program (to run it early)
LONG_RUN = 0.05          # ... and one that ran at least this long is loaded before the trace
_OLD = (".jaxexport",)   # files of earlier formats, deleted when the store is next written
_MEMO_SIZE = 64          # compiled programs remembered per process and function
_PENDING_SIZE = 4        # prefetched executables held per function until their call


def program_folder() -> str | None:
    """The folder of stored programs, or ``None`` when the store is off (JAX's persistent
    compilation cache off, ``CTXPPL_NO_CACHE`` set, or several processes).

    Examples:
        >>> folder = program_folder()
        >>> folder is None or folder.endswith("ctxppl-programs")
        True
    """
    from ctxppl._cache import ENV_OFF, _off

    if _off(os.environ.get(ENV_OFF)) or not jax.config.jax_enable_compilation_cache or \
            xla_client is None:
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


@functools.lru_cache(maxsize=1)  # a constant of the machine
def _host_cpu() -> str:
    """The host CPU's model and instruction-set flags: an executable compiled for one CPU is
    never loaded on another (a cache folder shared between the nodes of a cluster)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        keep = ("vendor_id", "model name", "flags", "CPU implementer", "CPU part", "Features")
        seen: dict[str, str] = {}
        for line in lines:
            k, _, v = line.partition(":")
            if k.strip() in keep:
                seen.setdefault(k.strip(), v.strip())
        if seen:
            return repr(sorted(seen.items()))
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()} {platform.platform()}"


def _environment(compiler_options: dict) -> bytes:
    """Everything besides the jaxpr that decides how it lowers and compiles: versions, the
    backend, JAX's configuration, ``XLA_FLAGS``, the program's XLA options and the CPU."""
    import jaxlib

    dev = jax.devices()[0]
    config = sorted((k, v) for k, v in jax.config.values.items()
                    if isinstance(v, (bool, int, float, str, type(None))))
    version = getattr(getattr(dev, "client", None), "platform_version", "")
    return repr((FORMAT, jax.__version__, jaxlib.__version__, dev.platform,
                 dev.device_kind, version, config, os.environ.get("XLA_FLAGS", ""),
                 sorted((str(k), repr(v)) for k, v in compiler_options.items()),
                 _host_cpu())).encode()


def _jaxprs(jaxpr: Any, seen: set | None = None) -> Iterator[Any]:
    """``jaxpr`` and every jaxpr nested in its equations (closed and open), each once."""
    seen = set() if seen is None else seen
    if id(jaxpr) in seen:
        return
    seen.add(id(jaxpr))
    yield jaxpr
    inner = getattr(jaxpr, "jaxpr", None)  # a ClosedJaxpr's Jaxpr
    if inner is not None and inner is not jaxpr:
        yield from _jaxprs(inner, seen)
    for eqn in getattr(jaxpr, "eqns", ()):
        for value in eqn.params.values():
            for p in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(p, "eqns") or hasattr(p, "consts"):
                    yield from _jaxprs(p, seen)


def _constants(jaxpr: Any) -> list:
    """Every constant of ``jaxpr`` and of the jaxprs nested in it (an inner ``jit``'s
    closed-over array is printed as a variable, not by value)."""
    return [c for j in _jaxprs(jaxpr) for c in getattr(j, "consts", None) or ()]


def _calls_python(jaxpr: Any) -> bool:
    """Whether the program calls back into Python (``jax.pure_callback`` and the like have
    no effect to show it): such a call is registered in this process only."""
    return any(eqn.primitive.name.endswith("callback")
               for j in _jaxprs(jaxpr) for eqn in getattr(j, "eqns", ()))


def _program_hash(closed: Any, compiler_options: dict) -> str:
    h = hashlib.sha256(_environment(compiler_options))
    # every equation parameter printed (not only those JAX's compact form shows, which omits
    # e.g. an inner jit's shardings and options); stable across processes
    h.update(closed.pretty_print(custom_pp_eqn_rules=False).encode())
    for c in _constants(closed):
        if _is_key(c):
            c = jax.random.key_data(c)
        a = np.asarray(c)
        h.update(repr((a.shape, str(a.dtype))).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _evict(folder: str) -> None:
    """Keep the ``MAX_FILES`` most recently used programs (and guesses); delete files of
    earlier formats."""
    try:
        entries = list(os.scandir(folder))
        for e in entries:
            if e.name.endswith(_OLD):
                os.unlink(e.path)
        for suffix in (SUFFIX, GUESS):
            mine = [e for e in entries if e.name.endswith(suffix)]
            if len(mine) > MAX_FILES:
                mine.sort(key=lambda e: e.stat().st_mtime)
                for e in mine[: len(mine) - MAX_FILES]:
                    os.unlink(e.path)
    except OSError:  # another process evicting at the same time
        pass


class _Program:
    """One compiled program of a :class:`stored_jit` function, with how to call it."""

    def __init__(self, call: Callable, out: tuple, impls: tuple):
        self.call, self.out, self.impls = call, out, impls

    def __call__(self, leaves: list) -> Any:
        return self.finish(self.call(*_raw_keys(leaves, self.impls)))

    def finish(self, out: list) -> Any:
        """The function's output from the program's flat outputs."""
        treedef, static = self.out
        return eqx.combine(jax.tree_util.tree_unflatten(treedef, out), static)


class _Loaded:
    """A stored executable called directly: its closed-over constants first (JAX >= 0.11
    passes them as arguments), then the flat arguments; outputs rebuilt with the traced
    program's types (weak types and commitment as ``jax.jit`` gives them)."""

    def __init__(self, executable: Any, consts: list, out_avals: tuple, device: Any):
        self.executable, self.out_avals, self.device = executable, out_avals, device
        self.consts = [jax.device_put(c, device) for c in consts]

    def __call__(self, *xs: Any) -> list:
        return self.wrap(_execute(self.executable, [*self.consts, *xs], self.device), xs)

    def wrap(self, raw: list, xs: tuple) -> list:
        committed = any(getattr(x, "committed", False) for x in xs)
        return [ArrayImpl(aval, o.sharding, [o], committed=committed)
                for aval, o in zip(self.out_avals, raw, strict=True)]


def _on_device(xs: list, device: Any) -> list:
    """Host arrays put on ``device``; JAX arrays as they are."""
    return [x if isinstance(x, jax.Array) else jax.device_put(x, device) for x in xs]


def _execute(executable: Any, xs: list, device: Any) -> list:
    """Dispatch ``executable`` on ``xs`` (asynchronously, as jax.jit): its raw outputs."""
    return [o[0] for o in executable.execute_sharded(_on_device(xs, device))
            .disassemble_into_single_device_arrays()]


class stored_jit:
    """``eqx.filter_jit`` whose programs a fresh process loads from disk instead of compiling.

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
        self._jit_options = {"compiler_options": self.compiler_options} if compiler_options \
            else {}
        self._fallback = eqx.filter_jit(fun, **self._jit_options)
        self._memo: LRU[_Program] = LRU(_MEMO_SIZE)
        self._pending: LRU[_Early] = LRU(_PENDING_SIZE)  # prefetched, not yet called

    def _cache_size(self) -> int:
        """Programs compiled in this process (stored and fallback): tests count them."""
        return len(self._memo) + self._fallback._cached._cache_size()

    def _call_of(self, args: tuple) -> tuple | None:
        """What a call on ``args`` is: (leaves, treedef, static, static leaves, folder,
        device, memo key); ``None`` when it goes to ``eqx.filter_jit`` (store off, several
        devices, an unhashable static argument)."""
        dynamic, static = eqx.partition(args, eqx.is_array)
        leaves, treedef = jax.tree_util.tree_flatten(dynamic)
        folder = program_folder()
        device = _device(leaves) if folder is not None else None
        if device is None:
            return None
        s_leaves, s_def = jax.tree_util.tree_flatten(static)
        try:
            memo_key = (treedef, s_def, tuple(s_leaves), tuple(map(_signature, leaves)))
            hash(memo_key)
        except TypeError:  # an unhashable static argument: as eqx.filter_jit would fail
            return None
        return leaves, treedef, static, s_leaves, folder, device, memo_key

    def __call__(self, *args: Any) -> Any:
        call = self._call_of(args)
        if call is None:
            return self._fallback(*args)
        leaves, treedef, static, s_leaves, folder, device, memo_key = call
        program = self._memo.get(memo_key)
        if program is not None:
            return program(leaves)
        program, out = self._build(leaves, treedef, static, s_leaves, folder, device)
        self._memo.put(memo_key, program)
        return out

    def prefetch(self, *args: Any) -> None:
        """Start loading, on a thread, the stored program that a call on ``args`` needed last
        time, so that a caller's own checks before the call overlap the load.

        Nothing is traced, run or checked here: the call itself checks, as always, that its
        trace is the loaded program (a prefetch on other arguments than the call's is a
        wasted load, never a wrong answer). A no-op when the store is off, the program is
        already compiled in this process or no guess is recorded.

        Examples:
            >>> import jax.numpy as jnp
            >>> f = stored_jit(lambda x: 2 * x)
            >>> f.prefetch(jnp.ones(3))
            >>> f(jnp.ones(3))
            Array([2., 2., 2.], dtype=float32)
        """
        call = self._call_of(args)
        if call is None:
            return
        leaves, treedef, _, s_leaves, folder, device, memo_key = call
        if self._memo.get(memo_key) is not None:
            return
        guess = self._guess_path(folder, treedef, s_leaves, leaves)
        if self._pending.get(guess) is None:
            early = _Early(guess, folder, self.name, self.compiler_options, device,
                           prefetched=True)
            if early.key is not None:
                early.prefetch()
                self._pending.put(guess, early)

    def _guess_path(self, folder: str, treedef: Any, s_leaves: list, leaves: list) -> str:
        return os.path.join(folder, f"{self.name}-{_guess(treedef, s_leaves, leaves)}{GUESS}")

    # ---------------------------------------------------------------- building
    def _flat(self, treedef: Any, static: Any, impls: tuple, captured: dict) -> Callable:
        """The function on flat array leaves (keys as raw data) that is traced and stored."""
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

    def _build(self, leaves: list, treedef: Any, static: Any, s_leaves: list, folder: str,
               device: Any) -> tuple[_Program, Any]:
        """The program for these arguments, and its output on them."""
        impls = tuple(str(jax.random.key_impl(x)) if _is_key(x) else None for x in leaves)
        flat_args = _raw_keys(leaves, impls)
        # the executable this call most likely needs is loaded (and, if short, started) now,
        # alongside the trace; its result is used only if the trace hashes to that program
        guess = self._guess_path(folder, treedef, s_leaves, leaves)
        early = self._pending.pop(guess) or _Early(guess, folder, self.name,
                                                   self.compiler_options, device)
        early.start(flat_args)
        captured: dict = {}
        flat = self._flat(treedef, static, impls, captured)
        traced = jax.jit(flat, keep_unused=True).trace(*flat_args)
        if traced.jaxpr.effects or not _plain(traced.jaxpr.out_avals) or \
                _calls_python(traced.jaxpr):
            early.result(None, None)  # callbacks (progress bars) live in this process only:
            # a guess that ran ahead is dropped
            return self._unstored(traced, captured, impls, leaves)
        key = _program_hash(traced.jaxpr, self.compiler_options)
        path = os.path.join(folder, f"{self.name}-{key}{SUFFIX}")
        hoisted = jaxpr_const_args(traced.jaxpr.jaxpr)
        consts = [c for c, _ in hoisted]
        want = _header(traced, [a for _, a in hoisted])
        executable, raw, t0 = early.result(key, want)
        if executable is None:
            executable = _read(path, want, self.compiler_options, device)
        event = "hit"
        if executable is None:  # compile it here, from the lowered program, and store it
            try:
                executable = _compile(traced.lower().compiler_ir("stablehlo"),
                                      self.compiler_options, device)
                if len(executable.get_parameter_layouts()) != len(want["in"]):
                    raise ValueError("the executable takes other (hidden) arguments")
                data = _pack(want, executable.serialize(), consts)
            except Exception:  # noqa: BLE001 - internals moved (or XLA failed): as jax.jit
                return self._unstored(traced, captured, impls, leaves)
            _write(path, data)
            event = "miss"
        jax.monitoring.record_event(f"/ctxppl/programs/{event}")
        call = _Loaded(executable, consts, tuple(traced.jaxpr.out_avals), device)
        program = _Program(call, captured["out"], impls)
        if raw is None:
            t0 = time.perf_counter()
            raw = _execute(executable, [*call.consts, *flat_args], device)
        if early.key != key or early.seconds is None:
            _time_first_run(guess, key, raw, t0)
        return program, program.finish(call.wrap(raw, tuple(flat_args)))

    def _unstored(self, traced: Any, captured: dict, impls: tuple,
                  leaves: list) -> tuple[_Program, Any]:
        """Compile in this process only, as ``jax.jit`` does."""
        jax.monitoring.record_event("/ctxppl/programs/unstored")
        compiled = traced.lower().compile(self.compiler_options or None)
        program = _Program(compiled, captured["out"], impls)
        return program, program(leaves)


def _plain(avals: Any) -> bool:
    """Outputs a stored executable can hand back as they are (no PRNG keys, no float0)."""
    return all(type(a) is ShapedArray and not jax.dtypes.issubdtype(a.dtype, jax.dtypes.extended)
               and a.dtype != jax.dtypes.float0 for a in avals)


def _device(leaves: list) -> Any:
    """The one device every array argument is on (the default device when none is
    committed elsewhere); ``None`` when they span several (then nothing is stored)."""
    default = jax.config.jax_default_device or jax.local_devices()[0]
    if isinstance(default, str):
        return None  # a platform name: leave placement to jax.jit
    for x in leaves:
        if isinstance(x, jax.Array) and (len(x.sharding.device_set) != 1
                                         or next(iter(x.sharding.device_set)) != default):
            return None
    return default


def _code(code: Any) -> str:
    """A digest of a code object that is the same in every process (nested code objects by
    digest, sets sorted: their order and addresses change between processes)."""
    def const(c: Any) -> str:
        if hasattr(c, "co_code"):
            return _code(c)
        if isinstance(c, frozenset):
            return repr(sorted(map(const, c)))
        if isinstance(c, tuple):
            return repr(tuple(map(const, c)))
        return repr(c)

    text = code.co_code + repr([const(c) for c in code.co_consts]).encode() + \
        repr(code.co_names).encode()
    return hashlib.sha256(text).hexdigest()[:16]


def _stable(x: Any) -> str:
    """A description of a static argument that is the same in every process (for the guess
    of which program a call needs; a wrong guess costs a load, never a wrong answer)."""
    code = getattr(x, "__code__", None)
    if code is not None:
        return f"{getattr(x, '__module__', '')}.{getattr(x, '__qualname__', '')}:{_code(code)}"
    if isinstance(x, (str, int, float, bool, type(None))):
        return repr(x)
    return f"{type(x).__module__}.{type(x).__qualname__}"


def _guess(treedef: Any, s_leaves: list, leaves: list) -> str:
    sig = [(tuple(np.shape(x)), str(x.dtype)) for x in leaves]
    text = repr((re.sub(r" at 0x[0-9a-f]+", "", str(treedef)),
                 [_stable(s) for s in s_leaves], sig))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _time_first_run(guess: str, key: str, outputs: list, t0: float) -> None:
    """Record, once the outputs are ready, that the call described by ``guess`` needed
    program ``key`` and how long it ran (a thread that ends with the run)."""
    def wait() -> None:
        try:
            for o in outputs:
                o.block_until_ready()
        except Exception:  # noqa: BLE001 - the failure is the caller's to see
            return
        _write(guess, json.dumps({"key": key, "seconds": time.perf_counter() - t0}).encode())

    threading.Thread(target=wait, name="ctxppl-time", daemon=False).start()


class _Early:
    """The executable a guess file names, loaded before the trace is checked; and, when that
    program ran for at most ``SPECULATE_SECONDS`` last time, started on the arguments.

    A program that ran long (``LONG_RUN`` or more) is loaded and started first, on the
    calling thread, so that the trace overlaps its run; a short one is loaded (and started)
    on a thread beside the trace. :meth:`prefetch` starts the load on a thread earlier still,
    before the caller's own checks; :meth:`start` then leaves the run to that thread, which
    starts it as soon as the executable is loaded.
    """

    def __init__(self, guess: str, folder: str, name: str, options: dict, device: Any,
                 prefetched: bool = False):
        self.key = self.seconds = self._args = self._thread = None
        self.prefetched = prefetched  # made by stored_jit.prefetch (reported when used)
        self._options, self._device, self._out = options, device, {}
        self._lock = threading.Lock()
        try:  # read here: Python work on a thread waits for the GIL the trace holds
            with open(guess) as f:
                record = json.load(f)
            key, self.seconds = str(record["key"]), record.get("seconds")
            self.path = os.path.join(folder, f"{name}-{key}{SUFFIX}")
            with open(self.path, "rb") as f:
                self._header, payload = _unpack(f.read())
            self._consts, self._payload = _split(self._header, payload)
        except Exception:  # noqa: BLE001 - no guess; or a bad file, reported by _read
            return
        self.key = key

    def _load(self) -> None:
        """Load the executable (XLA releases the GIL for most of it); run it on the
        arguments :meth:`start` left."""
        try:
            executable = _deserialize(self._payload, self._options, self._device)
        except Exception:  # noqa: BLE001 - _read reports a bad file
            return
        with self._lock:
            self._out.update(header=self._header, executable=executable)
            if self._args is not None:
                self._run(self._args)

    def _run(self, args: list) -> None:
        """Start the loaded program on its stored constants and ``args`` if they are exactly
        what it takes (with the lock held). A program whose constants were too large to store
        waits for the check. (The key covers the constants' values: outputs computed with
        other values than the trace's are dropped with the guess.)"""
        args = [*self._consts, *args]
        if [[list(x.shape), str(x.dtype)] for x in args] != self._out["header"]["in"]:
            return
        try:
            self._out["t0"] = time.perf_counter()
            self._out["raw"] = _execute(self._out["executable"], args, self._device)
        except Exception:  # noqa: BLE001 - the checked path runs it again, and reports
            self._out.pop("raw", None)

    def prefetch(self) -> None:
        """Start loading on a thread (once)."""
        if self.key is not None and self._thread is None:
            self._thread = threading.Thread(target=self._load, name="ctxppl-load", daemon=True)
            self._thread.start()

    def start(self, args: list) -> None:
        """Load (unless prefetched) and, when the program ran for at most
        ``SPECULATE_SECONDS`` last time, run it on ``args`` (flat, keys as raw data)."""
        if self.key is None:
            return
        if isinstance(self.seconds, float) and self.seconds <= SPECULATE_SECONDS:
            args = _on_device(args, self._device)
            with self._lock:
                if "executable" in self._out:
                    self._run(args)
                else:
                    self._args = args  # run by whoever finishes the load
            if self._thread is None and self.seconds >= LONG_RUN:
                self._load()
                return
        self.prefetch()

    def result(self, key: str | None, want: dict | None) -> tuple[Any, Any, Any]:
        """(executable, raw outputs or None, their start) if the guess was program ``key``
        with header ``want``; else Nones."""
        if self._thread is not None:
            self._thread.join()
        out = self._out
        if key != self.key or out.get("header") != want or "executable" not in out:
            if "raw" in out:
                jax.monitoring.record_event("/ctxppl/programs/ahead_discarded")
            return None, None, None
        if "raw" in out:
            jax.monitoring.record_event("/ctxppl/programs/ahead")
        if self.prefetched:
            jax.monitoring.record_event("/ctxppl/programs/prefetched")
        try:
            os.utime(self.path)  # recently used: evicted last
        except OSError:
            pass
        return out["executable"], out.get("raw"), out.get("t0")


def _header(traced: Any, const_avals: list) -> dict:
    """What a stored executable must take and give: argument types (its hoisted constants
    first: ``consts`` of them, stored in the file when ``stored_consts``) and output types."""
    ins = [*const_avals, *(v.aval for v in traced.jaxpr.jaxpr.invars)]
    storable = all(type(a) is ShapedArray and not jax.dtypes.issubdtype(
        a.dtype, jax.dtypes.extended) for a in const_avals) and \
        sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in const_avals) <= MAX_CONSTANTS
    return {"format": FORMAT,
            "in": [[list(a.shape), str(a.dtype)] for a in ins],
            "out": [[list(a.shape), str(a.dtype), bool(a.weak_type)]
                    for a in traced.jaxpr.out_avals],
            "consts": len(const_avals), "stored_consts": bool(const_avals) and storable}


def _pack(header: dict, executable: bytes, consts: list) -> bytes:
    """One stored file: a JSON header line, then the hoisted constants' bytes (when the
    header says they are stored) and the executable, compressed by zlib (a fifth of their
    size; zlib's checksum finds a torn or altered file before XLA sees it). No pickle."""
    blob = b"".join(np.ascontiguousarray(np.asarray(c)).tobytes() for c in consts) \
        if header["stored_consts"] else b""
    payload = zlib.compress(blob + executable)
    return json.dumps({**header, "size": len(payload)}, sort_keys=True).encode() + b"\n" + \
        payload


def _np_dtype(name: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError:  # bfloat16 and friends: ml_dtypes (a JAX dependency) defines them
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))


def _split(header: dict, payload: bytes) -> tuple[list, bytes]:
    """The stored constants (host arrays, read-only views) and the executable's bytes."""
    consts, at = [], 0
    if header["stored_consts"]:
        for shape, dtype in header["in"][: header["consts"]]:
            dt = _np_dtype(dtype)
            count = int(np.prod(shape))
            consts.append(np.frombuffer(payload, dt, count, at).reshape(shape))
            at += count * dt.itemsize
    return consts, payload[at:]


def _unpack(data: bytes) -> tuple[dict, bytes]:
    head, sep, payload = data.partition(b"\n")
    if not sep:
        raise ValueError("no header line")
    header = json.loads(head)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"not a ctxppl program file of format {FORMAT!r}")
    if header.pop("size", None) != len(payload):
        raise ValueError(f"its payload has {len(payload)} bytes, not the size in its header")
    return header, zlib.decompress(payload)


def _compile_options(options: dict, device: Any) -> Any:
    from jax._src import compiler

    return compiler.get_compile_options(
        num_replicas=1, num_partitions=1, device_assignment=np.array([[device.id]]),
        env_options_overrides=options or None)


def _compile(module: Any, options: dict, device: Any) -> Any:
    """XLA's executable of a lowered single-device program, compiled here (not fetched from
    JAX's persistent cache: an executable loaded from there does not serialize whole)."""
    from jax._src import compiler

    return compiler.backend_compile_and_load(
        device.client, module, xla_client.DeviceList((device,)),
        _compile_options(options, device), [])


def _deserialize(payload: bytes, options: dict, device: Any) -> Any:
    if device.platform == "cpu":
        # LAPACK's kernels (Cholesky, eigh, ...) are set up when JAX lowers a linear-algebra
        # op; a loaded executable skips lowering, so set them up here (jax.export does too),
        # else the first solve in it calls a null function
        from jax._src.lax import linalg

        linalg.initialize_lapack()
    return device.client.deserialize_executable(
        payload, xla_client.DeviceList((device,)), _compile_options(options, device))


def _read(path: str, want: dict, options: dict, device: Any) -> Any:
    """The executable stored at ``path``; ``None`` when absent, or unreadable or not the
    program with header ``want`` (reported and deleted, so that it is rebuilt)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        header, payload = _unpack(data)
        if header != want:
            raise ValueError(f"its signature {header} is not the program's {want}")
        executable = _deserialize(_split(header, payload)[1], options, device)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file
        warnings.warn(f"ctxppl: the stored program {path!r} cannot be read "
                      f"({type(e).__name__}: {e}); it is deleted and compiled anew.",
                      RuntimeWarning, stacklevel=5)
        try:
            os.unlink(path)
        except OSError:
            pass
        return None
    try:
        os.utime(path)  # recently used: evicted last
    except OSError:
        pass
    return executable


def _write(path: str, data: bytes) -> None:
    """Store ``data`` atomically; a folder that cannot be written only costs the speed-up."""
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        atomic_write(path, lambda f: f.write(data))
    except OSError:
        return
    _evict(folder)
