"""Save / load a :class:`Fit` exactly: arrays in an ``.npz``, structure pickled beside them.

The model function is stored by reference (pickle of a module-level function); a lambda
or closure cannot be, so ``ctx.load(path, model=model)`` supplies it. Loading unpickles
data: only load files you trust.
"""

from __future__ import annotations

import io
import pickle
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

__all__ = ["save_fit", "load"]

_FORMAT = 1


def _is_array(x: Any) -> bool:
    return isinstance(x, np.ndarray | jax.Array | np.generic)


def save_fit(fit: Any, path: str) -> None:
    from ctxppl import __version__

    payload = {"params": fit.params, "samples": fit.samples, "diagnostics": fit.diagnostics,
               "args": fit.args, "kwargs": fit.kwargs, "guide_params": fit.guide_params,
               "key": jax.random.key_data(fit.key)}
    leaves, treedef = jax.tree_util.tree_flatten(payload)
    arrays = {f"a{i}": np.asarray(x) for i, x in enumerate(leaves) if _is_array(x)}
    others = {i: x for i, x in enumerate(leaves) if not _is_array(x)}
    try:
        model_blob = pickle.dumps(fit.model)
        pickle.loads(model_blob)
    except Exception:  # noqa: BLE001 - closures/lambdas are not importable by reference
        model_blob = None
    meta = {"format": _FORMAT, "version": __version__, "treedef": treedef, "others": others,
            "n_leaves": len(leaves), "method": fit.method, "options": fit.options,
            "param_names": fit.param_names, "batch_shape": fit.batch_shape, "model": model_blob}
    with open(path, "wb") as f:
        np.savez(f, __meta__=np.frombuffer(pickle.dumps(meta), dtype=np.uint8), **arrays)


def load(path: str, model: Callable | None = None) -> Any:
    """Load a fit saved with :meth:`Fit.save`.

    Args:
        path: The ``.npz`` file.
        model: The model function; needed when it was a lambda/closure (not importable).

    Returns:
        The :class:`Fit`, with identical arrays.

    Examples:
        >>> import os, tempfile, jax.numpy as jnp, numpyro, numpyro.distributions as dist
        >>> import ctxppl as ctx
        >>> def model(y=None):
        ...     numpyro.sample("y", dist.Normal(numpyro.sample("m", dist.Normal()), 1), obs=y)
        >>> fit = ctx.fit(model, jnp.array(1.0), key=0, progress=False)
        >>> p = os.path.join(tempfile.mkdtemp(), "fit.npz"); fit.save(p)
        >>> ctx.load(p, model=model).method
        'map'
    """
    from ctxppl.infer._result import Fit

    with open(path, "rb") as f:
        data = np.load(io.BytesIO(f.read()), allow_pickle=False)
        meta = pickle.loads(data["__meta__"].tobytes())
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{path!r} is not a ctxppl fit file of format {_FORMAT}; got "
                             f"format {meta.get('format')!r}.")
        leaves = [meta["others"][i] if i in meta["others"] else data[f"a{i}"]
                  for i in range(meta["n_leaves"])]
    payload = jax.tree_util.tree_unflatten(meta["treedef"], leaves)
    if model is None and meta["model"] is not None:
        try:
            model = pickle.loads(meta["model"])
        except Exception as e:  # noqa: BLE001
            warnings.warn(f"could not import the saved model ({e}); pass `model=` to "
                          "ctx.load to predict.", stacklevel=2)
    return Fit(model=model, args=payload["args"], kwargs=payload["kwargs"],
               method=meta["method"], params=payload["params"], samples=payload["samples"],
               diagnostics=payload["diagnostics"], options=meta["options"],
               key=jax.random.wrap_key_data(payload["key"]), param_names=meta["param_names"],
               guide_params=payload["guide_params"], batch_shape=meta["batch_shape"])
