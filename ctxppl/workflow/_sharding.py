r"""Data-parallel MAP / Laplace / SVI of one large data set, sharded over devices.

The plate's members (the rows of every per-member array) are split across the devices of a
1-D ``jax.sharding.Mesh``; everything else is replicated. ``ctx.fit`` then runs unchanged:
``jax.jit`` partitions the loss and its gradient over the row shards (GSPMD) and all-reduces
the sums, so each step is the same computation as on one device, only distributed.

Multi-host (several machines, each with its devices): start every process with

.. code-block:: python

    import jax
    jax.distributed.initialize(coordinator_address="host0:1234", num_processes=P,
                               process_id=i)            # before any other JAX call
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))   # global devices
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    C = jax.make_array_from_process_local_data(sharding, C_local)     # this host's rows
    ...                                                                # same for X, Y
    fit = ctx.workflow.shard_fit(model, C, X, Y, plate="patients", mesh=mesh, key=0)

and run the same script on every host (``jax.distributed`` forms one global device list; each
process feeds only its own rows). Arrays that are already sharded on ``mesh`` are used as they
are. The row count must then be divisible by the number of devices (padding needs the global
array on one host).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["shard_fit"]


def _is_array(x: Any) -> bool:
    return isinstance(x, np.ndarray | jax.Array)


def _place(x: Any, n: int, pad: int, rows: NamedSharding, rep: NamedSharding) -> Any:
    if not _is_array(x):
        return x
    if x.ndim >= 1 and x.shape[0] == n:
        if isinstance(x, jax.Array) and x.sharding == rows:
            return x
        if pad:
            xn = np.asarray(x)
            x = np.concatenate([xn, np.repeat(xn[-1:], pad, axis=0)], axis=0)
        return jax.device_put(x, rows)
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return x
    return jax.device_put(x, rep)


def _strip(tree: dict | None, structure: Any, plate: str, n: int, lead: int) -> dict | None:
    """Cut the padded members off every per-member site in ``tree``."""
    if tree is None:
        return None
    out = {}
    for name, v in tree.items():
        info = structure.sites.get(name)
        dims = dict(info.plates) if info is not None else {}
        if plate in dims and _is_array(v):
            axis = lead + len(info.shape) - info.event_ndim + dims[plate]
            v = jnp.take(v, jnp.arange(n), axis=axis)
        out[name] = v
    return out


def shard_fit(model: Callable, *args: Any, plate: str, method: str = "map", key: Any = None,
              devices: Any = None, mesh: Mesh | None = None, axis_name: str = "data",
              model_kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
    r"""``ctx.fit`` with the plate's rows sharded across devices (data parallelism).

    Every array argument whose leading axis equals the size of ``plate`` is split by rows
    across the mesh; other arrays are replicated. When the rows do not divide evenly, the
    last row is repeated to fill the shards and the copies get weight 0 (so the objective is
    unchanged) and are cut off per-member sites of the result. With full-batch MAP/Laplace/SVI
    the result equals the one-device fit up to floating-point summation order. With SVI
    minibatches (``batch_size``) padding changes which rows a minibatch draws.

    Args:
        model: A NumPyro model.
        *args: Model arguments (numpy or JAX arrays).
        plate: The ``ctx.plate`` whose members are the rows to shard.
        method: ``"map"``, ``"laplace"`` or ``"svi"``.
        key: PRNG key or int seed.
        devices: Devices to use (default: all, ``jax.devices()``); ignored with ``mesh``.
        mesh: A 1-D ``jax.sharding.Mesh`` (for multi-host runs, over the global devices).
        axis_name: Name of the mesh axis.
        model_kwargs: Model keyword arguments.
        **options: Options of :func:`ctxppl.fit` (``weights`` + ``plate`` are supported).

    Returns:
        A :class:`ctxppl.Fit` whose arguments are the (unpadded) inputs.

    Examples:
        >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, ctxppl as ctx
        >>> def model(x, y=None):
        ...     b = numpyro.sample("b", dist.Normal(0.0, 10.0))
        ...     with ctx.plate("rows", x.shape[0]):
        ...         numpyro.sample("y", dist.Normal(b * x, 1.0), obs=y)
        >>> x = jnp.linspace(-1, 1, 101)
        >>> fit = ctx.workflow.shard_fit(model, x, 2 * x, plate="rows", key=0, progress=False)
        >>> round(float(fit.params["b"]), 1)
        2.0
    """
    import ctxppl as ctx
    from ctxppl.infer import Fit
    from ctxppl.infer._sites import model_structure

    kwargs = dict(model_kwargs or {})
    if method not in ("map", "laplace", "svi"):
        raise ValueError(f"`method` must be 'map', 'laplace' or 'svi' for sharded fits; got "
                         f"{method!r}.")
    if "plate" in options:
        raise TypeError("pass the plate once, as `plate=` of shard_fit (it is also the plate "
                        "of `weights`).")
    structure = model_structure(model, args, kwargs)
    if plate not in structure.plates:
        raise ValueError(f"`plate` {plate!r} is not a plate of the model; its plates are "
                         f"{sorted(structure.plates)}.")
    n = structure.plates[plate]
    if mesh is None:
        devs = list(jax.devices() if devices is None else devices)
        if not devs:
            raise ValueError("`devices` is empty.")
        mesh = Mesh(np.asarray(devs), (axis_name,))
    if axis_name not in mesh.shape or len(mesh.shape) != 1:
        raise ValueError(f"`mesh` must be 1-D with axis {axis_name!r}; got axes "
                         f"{dict(mesh.shape)}.")
    num = mesh.shape[axis_name]
    pad = (-n) % num
    rows = NamedSharding(mesh, PartitionSpec(axis_name))
    rep = NamedSharding(mesh, PartitionSpec())
    leaves_global = [x for x in jax.tree_util.tree_leaves((args, kwargs))
                     if isinstance(x, jax.Array) and not x.is_fully_addressable]
    if pad and leaves_global:
        raise ValueError(f"the plate has {n} rows, not divisible by the {num} devices; with "
                         "multi-host (non-addressable) arrays pad the rows yourself.")
    place = lambda t: jax.tree_util.tree_map(lambda x: _place(x, n, pad, rows, rep), t)
    s_args, s_kwargs = place(args), place(kwargs)
    weights = options.pop("weights", None)
    if pad:
        w = np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32)
        if w.shape != (n,):
            raise ValueError(f"`weights` must have shape ({n},); got {w.shape}.")
        weights = np.concatenate([w, np.zeros(pad, np.float32)])
    if weights is not None:
        options["weights"] = jax.device_put(jnp.asarray(weights), rows)
        options["plate"] = plate
    fit = ctx.fit(model, *s_args, method=method, key=key, model_kwargs=s_kwargs, **options)
    if not pad:
        return fit
    padded = model_structure(model, s_args, s_kwargs)
    return Fit(model=model, args=tuple(args), kwargs=kwargs, method=fit.method,
               params=_strip(fit.params, padded, plate, n, 0),
               samples=_strip(fit.samples, padded, plate, n, 2),
               diagnostics=fit.diagnostics, options=fit.options, key=fit.key,
               param_names=fit.param_names, guide_params=fit.guide_params)

