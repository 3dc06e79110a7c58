r"""Spread the fits of ``fit_many`` over devices: the fit axis is sharded, the data replicated.

On a machine with several devices (GPUs, TPU cores, or CPU cores exposed as host devices with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` set before JAX starts) each device runs
its share of the ``B`` independent fits; the fits never communicate except for the shared
stopping test of the optimisation loop. With one device nothing changes. In a
multi-process run (``ctx.distributed.initialize``) the default is every device of every
process: each process passes the same arguments, runs its share of the fits, and the results
are gathered so that every process holds all of them.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ctxppl.infer._distributed import place_replicated

__all__ = ["fit_devices", "FitSharding"]


def fit_devices(devices: Any) -> list:
    """The device list for ``fit_many(devices=...)``: None = all devices (of every process
    in a multi-process run), an int = the first that many local ones, or a sequence of
    ``jax.Device``."""
    local = jax.local_devices()
    if devices is None:
        return list(jax.devices())
    if isinstance(devices, int | np.integer) and not isinstance(devices, bool):
        if not 1 <= devices <= len(local):
            raise ValueError(f"`devices` must be between 1 and the {len(local)} local "
                             f"device(s); got {devices}.")
        return list(local[:devices])
    try:
        devs = list(devices)
    except TypeError:
        raise TypeError(f"`devices` must be None, an int or a sequence of jax devices; got "
                        f"{type(devices).__name__}.") from None
    if not devs or not all(isinstance(d, jax.Device) for d in devs):
        raise TypeError(f"`devices` must be a non-empty sequence of jax devices; got {devs!r}.")
    return devs


class FitSharding:
    """Pads the fit axis to a multiple of the device count and places the arrays.

    Per-fit arrays (leading axis ``B``) are padded by repeating their last fit and split
    over the devices; everything else is replicated. ``unpad`` cuts the copies off again.
    """

    def __init__(self, devices: list, num_fits: int):
        self.num_fits = num_fits
        self.active = len(devices) > 1
        self.pad = (-num_fits) % len(devices) if self.active else 0
        if self.active:
            mesh = Mesh(np.asarray(devices), ("fits",))
            self._fits = NamedSharding(mesh, PartitionSpec("fits"))
            self._rep = NamedSharding(mesh, PartitionSpec())

    def per_fit(self, x: Any) -> Any:
        if not self.active or x is None:
            return x
        if self.pad:
            x = jax.numpy.concatenate([x, jax.numpy.repeat(x[-1:], self.pad, axis=0)], axis=0)
        is_key = jax.numpy.issubdtype(x.dtype, jax.dtypes.prng_key)
        host = np.asarray(jax.random.key_data(x) if is_key else x)
        # the same value on every process; each places its own shards
        out = jax.make_array_from_callback(host.shape, self._fits, lambda i: host[i])
        return jax.random.wrap_key_data(out, impl=jax.random.key_impl(x)) if is_key else out

    def shared(self, tree: Any) -> Any:
        if not self.active:
            return tree
        return place_replicated(tree, self._fits.mesh)

    def unpad(self, tree: Any) -> Any:
        if not self.pad:
            return tree
        return jax.tree_util.tree_map(lambda x: x[: self.num_fits] if np.ndim(x) else x, tree)
