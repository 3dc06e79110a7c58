"""Save / load a :class:`Fit` exactly, in a format that survives library upgrades.

Arrays go into an ``.npz``; structure is plain Python (dicts, tuples, key-path strings).
``param`` sites that hold Equinox modules (encoders) are stored as ``{key path: array}`` and
rebuilt on load from the model's own param structure, so no class internals are pickled.
The model function is stored by reference (module + name); a lambda or closure cannot be,
so ``ctx.load(path, model=model)`` supplies it. Loading unpickles the small metadata
record: only load files you trust.
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

_FORMAT = 2


def _is_array(x: Any) -> bool:
    return isinstance(x, np.ndarray | jax.Array | np.generic)


def _builtin_tree(tree: Any) -> bool:
    """True when the pytree uses only containers that pickle by value (no modules)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    try:
        back = pickle.loads(pickle.dumps(treedef))
        jax.tree_util.tree_unflatten(back, leaves)
        return back == treedef
    except Exception:  # noqa: BLE001
        return False


def _flat_params(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in params.items():
        if _builtin_tree(value):
            out[name] = ("tree", value)
        else:
            paths = jax.tree_util.tree_flatten_with_path(value)[0]
            out[name] = ("paths", {jax.tree_util.keystr(p): x for p, x in paths})
    return out


def _rebuild_params(flat: dict[str, Any], model: Callable | None, args: tuple, kwargs: dict,
                    batch_ndim: int) -> dict[str, Any]:
    need = [n for n, (kind, _) in flat.items() if kind == "paths"]
    templates = {}
    if need and model is not None:
        from ctxppl.infer._sites import param_templates

        templates = param_templates(model, args, kwargs)
    out = {}
    for name, (kind, value) in flat.items():
        if kind == "tree":
            out[name] = value
            continue
        if name not in templates:
            warnings.warn(f"param site {name!r} is kept as a {{key path: array}} dict: pass "
                          "`model=` to ctx.load to rebuild it.", stacklevel=3)
            out[name] = value
            continue
        paths, treedef = jax.tree_util.tree_flatten_with_path(templates[name])
        keys = [jax.tree_util.keystr(p) for p, _ in paths]
        if sorted(keys) != sorted(value):
            raise ValueError(f"saved param site {name!r} has arrays {sorted(value)} but the model "
                             f"now has {sorted(keys)}; was the model changed since saving?")
        out[name] = jax.tree_util.tree_unflatten(treedef, [value[k] for k in keys])
    return out


def save_fit(fit: Any, path: str) -> None:
    from ctxppl import __version__

    payload = {"params": _flat_params(fit.params), "samples": fit.samples,
               "diagnostics": fit.diagnostics, "args": fit.args, "kwargs": fit.kwargs,
               "guide_params": fit.guide_params, "key": jax.random.key_data(fit.key)}
    leaves, treedef = jax.tree_util.tree_flatten(payload)
    arrays = {f"a{i}": np.asarray(x) for i, x in enumerate(leaves) if _is_array(x)}
    others = {i: x for i, x in enumerate(leaves) if not _is_array(x)}
    model_ref = None
    if fit.model is not None:
        module = getattr(fit.model, "__module__", None)
        qualname = getattr(fit.model, "__qualname__", "")
        if module and qualname and "<" not in qualname:
            model_ref = (module, qualname)
    meta = {"format": _FORMAT, "version": __version__, "treedef": treedef, "others": others,
            "n_leaves": len(leaves), "method": fit.method, "options": fit.options,
            "param_names": fit.param_names, "batch_shape": fit.batch_shape, "model": model_ref}
    with open(path, "wb") as f:
        np.savez(f, __meta__=np.frombuffer(pickle.dumps(meta), dtype=np.uint8), **arrays)


def _import(ref: tuple[str, str]) -> Callable:
    import importlib

    obj = importlib.import_module(ref[0])
    for part in ref[1].split("."):
        obj = getattr(obj, part)
    return obj


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
            model = _import(meta["model"])
        except (ImportError, AttributeError) as e:
            warnings.warn(f"could not import the saved model {'.'.join(meta['model'])} ({e}); "
                          "pass `model=` to ctx.load to predict.", stacklevel=2)
    params = _rebuild_params(payload["params"], model, payload["args"], payload["kwargs"],
                             len(meta["batch_shape"]))
    return Fit(model=model, args=payload["args"], kwargs=payload["kwargs"],
               method=meta["method"], params=params, samples=payload["samples"],
               diagnostics=payload["diagnostics"], options=meta["options"],
               key=jax.random.wrap_key_data(payload["key"]), param_names=meta["param_names"],
               guide_params=payload["guide_params"], batch_shape=meta["batch_shape"])
