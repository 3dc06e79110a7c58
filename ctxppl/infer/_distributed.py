r"""One fit over several processes: ``jax.distributed`` set-up, global arrays, gathering.

JAX runs a multi-process program as one SPMD program: every process runs the same Python
script, owns some devices, and passes *global* arrays whose rows live on all processes'
devices; jitted code then computes on the shards and all-reduces the sums. ctxppl adds three
things on top and nothing else:

* :func:`initialize` starts ``jax.distributed`` from explicit arguments, from the
  environment ``ctxppl launch`` sets, or from the cluster (SLURM, Open MPI, Kubernetes, ...
  through JAX's own detection), with CPU collectives over gloo and bounded heartbeats; in a
  plain ``python script.py`` it does nothing, so the same script runs on one process.
* :func:`global_arrays` turns each process's local rows into global arrays (padding uneven
  shards with zero-weight rows).
* ``ctx.fit`` / ``ctx.fit_many`` / ``Fit.save`` accept such arrays: inputs are checked with
  a collective reduction, replicated arguments are placed on the same mesh, minibatches
  are drawn per shard, and results are gathered so every process holds the same ``Fit``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["initialize", "global_arrays", "GlobalArrays", "DistributedError", "ENV",
           "is_global", "has_global", "row_shards", "place_replicated", "to_host",
           "check_global_finite", "is_writer"]

#: Environment variables read by :func:`initialize` (``ctxppl launch`` sets them).
ENV = {"coordinator": "CTXPPL_COORDINATOR", "num_processes": "CTXPPL_NUM_PROCESSES",
       "process_id": "CTXPPL_PROCESS_ID", "heartbeat": "CTXPPL_HEARTBEAT_TIMEOUT",
       "collective": "CTXPPL_COLLECTIVE_TIMEOUT"}

_MSG_HASH_SEED = (
    "the processes run Python with different string-hash seeds (PYTHONHASHSEED): code that "
    "iterates over a set of names -- numpyro's Trace_ELBO sums its terms over a set of site "
    "names -- then traces a different program on each process, and their collectives "
    "deadlock. Start every process with the same PYTHONHASHSEED, e.g. `export "
    "PYTHONHASHSEED=0` in the job script (`ctxppl launch` does this for you).")

_NO_CLUSTER = "coordinator_address should be defined"


class DistributedError(RuntimeError):
    """A multi-process run broke: a peer died, or the processes disagree."""


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer; got {value!r}.") \
            from None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_ids: Sequence[int] | None = None,
               heartbeat_timeout: int | None = None, collective_timeout: int | None = None,
               initialization_timeout: int = 300, shutdown_timeout: int = 30) -> tuple[int, int]:
    r"""Join this process to a multi-process JAX run (or run alone), before any JAX work.

    Where the settings come from, first match wins:

    1. the arguments;
    2. the environment ``CTXPPL_COORDINATOR`` (``host:port``), ``CTXPPL_NUM_PROCESSES``,
       ``CTXPPL_PROCESS_ID`` (and ``CTXPPL_HEARTBEAT_TIMEOUT``) -- what ``ctxppl launch``
       sets, and what a Kubernetes manifest or any scheduler can set;
    3. JAX's cluster detection (SLURM under ``srun``, Open MPI, Kubernetes, TPU pods);
    4. none of these: a single process; nothing is initialized, so the same script runs
       with ``python script.py``.

    CPU collectives use gloo (set before the backend starts). A coordinator on a loopback
    address binds to that address only. ``heartbeat_timeout`` bounds how long the others
    wait for a process that died outside a collective; inside a collective the broken
    connection fails them at once. Either way the survivors stop with an error, never hang.
    ``collective_timeout`` also bounds a collective whose peer is alive but never arrives
    (a stuck process), on CPU. Finally every process must hash strings alike (the same
    ``PYTHONHASHSEED``): it is checked here, since programs traced by code that iterates
    over sets would otherwise differ between processes and deadlock. JAX's persistent
    compilation cache (which ``import ctxppl`` turns on) is turned off for a multi-process
    run: on CPU, programs loaded from it hung in their first cross-process collective.

    Args:
        coordinator_address: ``host:port`` of process 0's coordination service.
        num_processes: Number of processes.
        process_id: This process's index, ``0 <= process_id < num_processes``.
        local_device_ids: Devices of this host this process uses (default: all).
        heartbeat_timeout: Seconds without a heartbeat before a process counts as dead
            (default: ``CTXPPL_HEARTBEAT_TIMEOUT`` or JAX's 100).
        collective_timeout: Seconds a CPU collective waits for its peers before failing
            (default: ``CTXPPL_COLLECTIVE_TIMEOUT`` or XLA's). Sets
            ``--xla_cpu_collective_timeout_seconds`` in ``XLA_FLAGS``.
        initialization_timeout: Seconds to wait for all processes to join.
        shutdown_timeout: Seconds to wait for the others at exit.

    Returns:
        ``(process_id, num_processes)``; ``(0, 1)`` when running alone.

    Raises:
        ValueError: inconsistent settings (e.g. ``process_id`` out of range), or processes
            with different ``PYTHONHASHSEED``.
        RuntimeError: JAX already ran computations (initialize first), or already joined
            another run.

    Examples:
        >>> import ctxppl as ctx
        >>> ctx.distributed.initialize()  # no launcher, no cluster: one process
        (0, 1)
    """
    coordinator_address = coordinator_address or os.environ.get(ENV["coordinator"]) or None
    if num_processes is None:
        num_processes = _env_int(ENV["num_processes"])
    if process_id is None:
        process_id = _env_int(ENV["process_id"])
    if heartbeat_timeout is None:
        heartbeat_timeout = _env_int(ENV["heartbeat"])
    if collective_timeout is None:
        collective_timeout = _env_int(ENV["collective"])
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"`num_processes` must be a positive int; got {num_processes}.")
    if process_id is not None and num_processes is not None and \
            not 0 <= process_id < num_processes:
        raise ValueError(f"`process_id` must be in [0, {num_processes}); got {process_id}.")
    if jax.distributed.is_initialized():
        if num_processes not in (None, jax.process_count()):
            raise RuntimeError(f"jax.distributed is already initialized with "
                               f"{jax.process_count()} processes; asked for {num_processes}.")
        return jax.process_index(), jax.process_count()
    if num_processes == 1:
        return 0, 1
    kwargs: dict[str, Any] = {"initialization_timeout": int(initialization_timeout),
                              "shutdown_timeout_seconds": int(shutdown_timeout)}
    if heartbeat_timeout is not None:
        kwargs["heartbeat_timeout_seconds"] = int(heartbeat_timeout)
    if coordinator_address and coordinator_address.rsplit(":", 1)[0] in (
            "127.0.0.1", "localhost", "[::1]"):
        kwargs["coordinator_bind_address"] = coordinator_address.replace("localhost",
                                                                         "127.0.0.1")
    # no persistent compilation cache in a multi-process run: on CPU (gloo, jax 0.12) a
    # program loaded from it hung in its first collective (4 of 4 runs of a repro, 0 of 2
    # without)
    cache_was = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)

    def alone() -> tuple[int, int]:  # this process runs by itself (or failed): cache back on
        jax.config.update("jax_enable_compilation_cache", cache_was)
        return 0, 1

    try:  # before the CPU backend exists; later it is too late and harmless to skip
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # noqa: BLE001 - an old jax without the option has gloo by default
        pass
    if collective_timeout is not None:  # read when the CPU backend starts (below)
        flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_cpu_collective_timeout_seconds")]
        os.environ["XLA_FLAGS"] = " ".join(
            flags + [f"--xla_cpu_collective_timeout_seconds={int(collective_timeout)}"])
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   local_device_ids=local_device_ids, **kwargs)
    except ValueError as e:
        if _NO_CLUSTER in str(e) and coordinator_address is None:
            return alone()  # no launcher, no arguments, no cluster
        alone()
        raise
    except RuntimeError as e:  # JAX already started its backend in this process
        hint = _cluster_hint()
        alone()
        if coordinator_address is None and num_processes is None and hint is None:
            return 0, 1  # nothing asks for several processes
        raise RuntimeError(f"ctx.distributed.initialize() must run before any JAX "
                           f"computation (or jax.devices()) in the process"
                           f"{'' if hint is None else ' (' + hint + ')'}: call it first "
                           "in the script.") from e
    if jax.process_count() == 1:
        return alone()
    _check_same_hashing()
    return jax.process_index(), jax.process_count()


def _cluster_hint() -> str | None:
    """Why the environment looks like one process of several (None: it does not)."""
    for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"):
        if (_env_int(name) or 1) > 1:
            return f"{name}={os.environ[name]}"
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS is set"
    return None


def _check_same_hashing() -> None:
    from jax.experimental import multihost_utils

    mine = np.array([hash("ctxppl.distributed") % (2**31 - 1)], np.int32)
    every = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1)
    if np.any(every != every[0]):
        raise ValueError(_MSG_HASH_SEED)


def is_writer() -> bool:
    """True on the process that writes files (process 0; the only one when running alone)."""
    return jax.process_index() == 0


# ---------------------------------------------------------------------- global arrays
class GlobalArrays(tuple):
    """The global arrays made by :func:`global_arrays` (unpack it like a tuple).

    Attributes:
        weights: ``None`` when every device got the same number of real rows; otherwise a
            ``(rows,)`` numpy array, 1 for real rows and 0 for padding rows -- pass it as
            ``ctx.fit(..., weights=data.weights, plate=...)``.
        num_rows: Real rows over all processes.
        mesh: The device mesh the rows are split over.
    """

    weights: np.ndarray | None
    num_rows: int
    mesh: Mesh

    def __new__(cls, arrays: Sequence[Any], weights: np.ndarray | None, num_rows: int,
                mesh: Mesh) -> GlobalArrays:
        out = super().__new__(cls, arrays)
        out.weights, out.num_rows, out.mesh = weights, num_rows, mesh
        return out


def _counts(n_local: int, mesh: Mesh) -> np.ndarray:
    """Rows of every process of ``mesh`` (an all-gather unless the mesh is this process's)."""
    procs = {d.process_index for d in mesh.devices.flat}
    if procs == {jax.process_index()}:
        return np.array([n_local])
    if procs != set(range(jax.process_count())):
        raise ValueError(f"the mesh must hold devices of every process (or of this one "
                         f"only); it holds devices of processes {sorted(procs)} of "
                         f"{jax.process_count()}.")
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.array([n_local], np.int64)),
                      np.int64).reshape(-1)


def global_arrays(*local: Any, mesh: Mesh | None = None,
                  axis_name: str | None = None) -> GlobalArrays:
    r"""Global arrays from each process's own rows (call it on every process).

    Process ``p`` passes only its rows; the result's leading axis holds every process's rows
    in process order, split over the devices of ``mesh`` (default: all devices of all
    processes). When the processes (or their devices) hold different numbers of rows, each
    device's share is padded with copies of a real row, and ``result.weights`` marks them
    with weight 0, so a weighted fit ignores them. With one process this shards the rows over
    the local devices.

    Args:
        *local: Arrays (or pytrees of arrays) with the same number of local rows.
        mesh: A ``jax.sharding.Mesh``; default a 1-D mesh of ``jax.devices()`` named
            ``"data"``.
        axis_name: The mesh axis the rows are split over (default: the first).

    Returns:
        A :class:`GlobalArrays` (a tuple of the arrays, plus ``weights`` and ``num_rows``).

    Raises:
        ValueError: no arrays, arrays with different row counts, non-finite values, or a
            process without rows.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> x, y = ctx.distributed.global_arrays(np.ones((5, 2)), np.zeros(5))
        >>> x.shape, y.shape
        ((5, 2), (5,))
    """
    if not local:
        raise ValueError("global_arrays needs at least one array.")
    leaves, treedef = jax.tree_util.tree_flatten(list(local))
    if not leaves:
        raise ValueError("global_arrays got only empty pytrees; give arrays.")
    arrays = [np.asarray(x) for x in leaves]
    n = {a.shape[0] if a.ndim else None for a in arrays}
    if len(n) != 1 or None in n:
        raise ValueError(f"every local array must have the same number of rows (leading "
                         f"axis); got shapes {[a.shape for a in arrays]}.")
    n_local = n.pop()
    for i, a in enumerate(arrays):
        if a.dtype == object or not (np.issubdtype(a.dtype, np.number)
                                     or np.issubdtype(a.dtype, np.bool_)):
            raise TypeError(f"array {i} of global_arrays must be numeric; got dtype {a.dtype}.")
        if np.issubdtype(a.dtype, np.inexact) and not np.all(np.isfinite(a)):
            raise ValueError(f"array {i} of global_arrays holds "
                             f"{int(np.sum(~np.isfinite(a)))} NaN/inf value(s) on process "
                             f"{jax.process_index()}; drop or impute them first.")
    if mesh is None:
        mesh = Mesh(np.asarray(jax.devices()), ("data",))
    axis = axis_name or mesh.axis_names[0]
    if axis not in mesh.axis_names:
        raise ValueError(f"`axis_name` {axis!r} is not an axis of the mesh "
                         f"{tuple(mesh.axis_names)}.")
    counts = _counts(n_local, mesh)
    if np.any(counts == 0):
        raise ValueError(f"process(es) {np.flatnonzero(counts == 0).tolist()} passed no rows; "
                         "every process needs at least one row.")
    me = jax.process_index()
    # this process's shards along the row axis
    mine = {i for i, d in np.ndenumerate(mesh.devices) if d.process_index == me}
    ax = mesh.axis_names.index(axis)
    local_blocks = len({i[ax] for i in mine})
    per_device = -(-int(counts.max()) // local_blocks)
    padded = per_device * local_blocks
    total = per_device * mesh.shape[axis]
    sharding = [NamedSharding(mesh, PartitionSpec(axis, *([None] * (a.ndim - 1))))
                for a in arrays]
    # the local rows go to this process's blocks in order, each padded to `per_device`
    blocks = np.array_split(np.arange(n_local), local_blocks)
    take = np.concatenate([np.concatenate([b, np.repeat(b[-1:] if b.size else [0],
                                                        per_device - b.size)])
                           for b in blocks]).astype(np.int64)
    out = [jax.make_array_from_process_local_data(s, a[take], (total,) + a.shape[1:])
           for a, s in zip(arrays, sharding, strict=True)]
    weights = None
    if int(counts.sum()) != total:  # 0 marks padding rows, in the global layout
        w_local = np.zeros(padded, np.result_type(float))
        for j, b in enumerate(blocks):
            w_local[j * per_device: j * per_device + b.size] = 1.0
        w_sh = NamedSharding(mesh, PartitionSpec(axis))
        weights = np.asarray(to_host(jax.make_array_from_process_local_data(
            w_sh, w_local, (total,))))
    return GlobalArrays(jax.tree_util.tree_unflatten(treedef, out), weights,
                        int(counts.sum()), mesh)


# ---------------------------------------------------------------------- used by ctx.fit
def is_global(x: Any) -> bool:
    """A jax.Array whose shards live on devices of other processes too."""
    return isinstance(x, jax.Array) and not x.is_fully_addressable


def has_global(tree: Any) -> bool:
    return any(is_global(x) for x in jax.tree_util.tree_leaves(tree))


def _row_axis_sharding(x: Any) -> tuple[Mesh, str] | None:
    """(mesh, axis) when ``x``'s leading axis is split over a mesh axis with >1 devices."""
    sh = getattr(x, "sharding", None)
    if not isinstance(sh, NamedSharding) or x.ndim == 0 or not len(sh.spec):
        return None
    first = sh.spec[0]
    if first is None or isinstance(first, tuple):
        return None
    if sh.mesh.shape[first] < 2:
        return None
    return sh.mesh, first


def row_shards(tree: Any, plates: dict[str, int]) -> dict[str, tuple[int, Any]]:
    """Plates whose rows are split over devices: ``{plate: (num_shards, row sharding)}``.

    A plate counts as sharded when an array argument with leading axis equal to the plate
    size is row-sharded over a mesh axis (by :func:`global_arrays`, ``shard_fit`` or the
    user).
    """
    found: dict[int, tuple[Mesh, str]] = {}
    for x in jax.tree_util.tree_leaves(tree):
        if isinstance(x, jax.Array) and x.ndim:
            hit = _row_axis_sharding(x)
            if hit is not None:
                found.setdefault(x.shape[0], hit)
    out = {}
    for name, size in plates.items():
        if size in found:
            mesh, axis = found[size]
            out[name] = (int(mesh.shape[axis]), NamedSharding(mesh, PartitionSpec(axis)))
    return out


def mesh_of(tree: Any) -> Mesh | None:
    """The mesh of the first global array in ``tree``."""
    for x in jax.tree_util.tree_leaves(tree):
        if is_global(x) and isinstance(x.sharding, NamedSharding):
            return x.sharding.mesh
    return None


def place_replicated(tree: Any, mesh: Mesh) -> Any:
    """Every host-local array leaf of ``tree`` replicated over ``mesh`` (global arrays
    and non-arrays unchanged). The value must be the same on every process."""
    rep = NamedSharding(mesh, PartitionSpec())

    def put(x: Any) -> Any:
        if is_global(x) or not isinstance(x, np.ndarray | jax.Array | np.generic):
            return x
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = np.asarray(jax.random.key_data(x))
            impl = jax.random.key_impl(x)
            raw = jax.make_array_from_callback(data.shape, rep, lambda i: data[i])
            return jax.random.wrap_key_data(raw, impl=impl)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, rep, lambda i: host[i])

    return jax.tree_util.tree_map(put, tree)


def to_host(tree: Any) -> Any:
    """numpy copies of every array leaf; global arrays are gathered (collective: call it
    on every process), so each process holds the same full values."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    glob = [i for i, x in enumerate(leaves) if is_global(x) and not x.is_fully_replicated]
    if glob:
        from jax.experimental import multihost_utils

        got = multihost_utils.process_allgather([leaves[i] for i in glob], tiled=True)
        for i, g in zip(glob, got, strict=True):
            leaves[i] = np.asarray(g)
    return jax.device_get(jax.tree_util.tree_unflatten(treedef, leaves))


@jax.jit
def _count_nonfinite(x: jax.Array) -> jax.Array:
    return jnp.sum(~jnp.isfinite(x))


def check_global_finite(x: jax.Array, where: str) -> None:
    """Raise if a global array holds NaN/inf (one all-reduce; every process raises)."""
    if jnp.issubdtype(x.dtype, jnp.inexact):
        bad = int(_count_nonfinite(x))
        if bad:
            raise ValueError(f"{where} contains {bad} NaN/inf value(s) (global shape "
                             f"{x.shape}); drop or impute them before fitting.")


def collective_failure(err: Exception, what: str) -> DistributedError:
    """A clear error for a collective that failed because a peer went away (or hung)."""
    return DistributedError(
        f"{what}: a collective operation across the {jax.process_count()} processes failed "
        f"on process {jax.process_index()} -- another process of this jax.distributed run "
        f"most likely died (see its log), or stopped taking part and the collective timed "
        f"out; this one stops too. Cause: {str(err)[:500]}")
