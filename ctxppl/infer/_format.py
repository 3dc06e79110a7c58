"""The fit file format (``ctxppl-fit/3``): a JSON header plus arrays, no pickle anywhere.

The header holds the method, options, names, batch shape and the fit's values as a JSON
tree whose arrays are stored as separate ``.npz`` entries (:func:`ctxppl._files.encode_tree`).
``param`` sites holding Equinox modules (encoders) are stored as ``{key path: array}`` and
rebuilt on load from the model's own param structure, so no class is ever named by the file
and resolved by the loader. The model function is never imported from the file: its
``module:qualname`` is recorded for the error message, and ``ctx.load(path, model=...)``
supplies it.

This module knows the fields of a ``Fit`` but not the class (``_result`` imports it to
save; ``_io`` imports both to load), so the dependency runs one way.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ctxppl._files import Unsupported, decode_tree, encode_tree, read_npz, write_npz

__all__ = ["FORMAT", "save_fit", "read_fit", "model_ref", "encode_sites", "decode_sites"]

FORMAT = "ctxppl-fit/3"  # 1-2 (ctxppl <= 0.1) had a pickled header and are refused on load


def model_ref(model: Callable | None) -> str | None:
    """``"module:qualname"`` of an importable model function (``None`` for closures)."""
    module = getattr(model, "__module__", None)
    qualname = getattr(model, "__qualname__", "")
    if model is None or not module or not qualname or "<" in qualname:
        return None
    return f"{module}:{qualname}"


def _encode_site(value: Any, arrays: dict, where: str) -> Any:
    """A param-site value: a plain tree as is, anything else by key path."""
    try:
        return encode_tree(value, arrays, where)
    except Unsupported:
        pass
    paths = jax.tree_util.tree_flatten_with_path(value)[0]
    return {"$paths": [[jax.tree_util.keystr(p), encode_tree(x, arrays, where +
                                                             jax.tree_util.keystr(p))]
                       for p, x in paths]}


def encode_sites(sites: dict[str, Any] | None, arrays: dict, where: str) -> Any:
    if sites is None:
        return None
    return [[name, _encode_site(v, arrays, f"{where}[{name!r}]")] for name, v in sites.items()]


def save_fit(fit: Any, path: str | os.PathLike) -> None:
    """Write the fields of a ``Fit`` to ``path`` (atomically; everything is encoded, and
    anything that cannot be saved is reported, before the file is opened)."""
    from ctxppl import __version__

    arrays: dict[str, np.ndarray] = {}
    try:
        tree = {
            "args": encode_tree(tuple(fit.args), arrays, "the model's positional argument"),
            "kwargs": encode_tree(dict(fit.kwargs), arrays, "model_kwargs"),
            "params": encode_sites(fit.params, arrays, "params"),
            "samples": encode_tree(fit.samples, arrays, "samples"),
            "guide_params": encode_sites(fit.guide_params, arrays, "guide_params"),
            "diagnostics": encode_tree(fit.diagnostics, arrays, "diagnostics"),
            "options": encode_tree(fit.options, arrays, "options"),
        }
    except Unsupported as e:
        raise TypeError(f"cannot save this fit to {os.fspath(path)!r}: {e} Pass such values "
                        "to the model through a closure or functools.partial instead, and "
                        "give the model to ctx.load(path, model=...).") from None
    key = np.asarray(jax.random.key_data(fit.key))
    arrays["key"] = key
    meta = {"format": FORMAT, "ctxppl_version": __version__, "method": fit.method,
            "param_names": list(fit.param_names), "batch_shape": list(fit.batch_shape),
            "model": model_ref(fit.model), "tree": tree}
    write_npz(path, arrays, meta)


def decode_sites(sites: Any, arrays: dict, templates: dict,
                 warn: bool = False) -> dict[str, Any] | None:
    if sites is None:
        return None
    out = {}
    for name, enc in sites:
        if not (isinstance(enc, dict) and set(enc) == {"$paths"}):
            out[name] = decode_tree(enc, arrays)
            continue
        value = {k: decode_tree(v, arrays) for k, v in enc["$paths"]}
        if name not in templates:
            if warn:
                warnings.warn(f"param site {name!r} is kept as a {{key path: array}} dict: pass "
                              "`model=` to ctx.load to rebuild it.", stacklevel=4)
            out[name] = value
            continue
        paths, treedef = jax.tree_util.tree_flatten_with_path(templates[name])
        keys = [jax.tree_util.keystr(p) for p, _ in paths]
        if sorted(keys) != sorted(value):
            raise ValueError(f"saved param site {name!r} has arrays {sorted(value)} but the model "
                             f"now has {sorted(keys)}; was the model changed since saving?")
        out[name] = jax.tree_util.tree_unflatten(treedef, [value[k] for k in keys])
    return out


def read_fit(path: str | os.PathLike, model: Callable | None) -> dict[str, Any]:
    """The keyword arguments of ``Fit(...)`` stored in ``path`` (see :func:`ctxppl.load`),
    plus ``"model_ref"``: the saved model's ``module:qualname``."""
    arrays, meta = read_npz(path, expect="ctxppl-fit", versions=(3,))
    try:
        tree = meta["tree"]
        args = decode_tree(tree["args"], arrays)
        kwargs = decode_tree(tree["kwargs"], arrays)
        fields = {"method": meta["method"], "param_names": tuple(meta["param_names"]),
                  "batch_shape": tuple(meta["batch_shape"]),
                  "samples": decode_tree(tree["samples"], arrays),
                  "diagnostics": decode_tree(tree["diagnostics"], arrays),
                  "options": decode_tree(tree["options"], arrays), "key": arrays["key"]}
        sites = (tree["params"], tree["guide_params"])
    except (KeyError, TypeError, ValueError) as e:
        from ctxppl._files import FileFormatError

        raise FileFormatError(f"{os.fspath(path)!r} is not a ctxppl fit file: its header is "
                              f"damaged ({type(e).__name__}: {e}).") from None
    need = any(isinstance(v, dict) and "$paths" in v for _, v in sites[0])
    templates = {}
    if need and model is not None:
        from ctxppl.infer._sites import param_templates

        templates = param_templates(model, args, kwargs)
    params = decode_sites(sites[0], arrays, templates, warn=True)
    guide_params = decode_sites(sites[1], arrays, {})
    return {**fields, "args": args, "kwargs": kwargs, "params": params,
            "guide_params": guide_params, "key": jax.random.wrap_key_data(fields["key"]),
            "model_ref": meta.get("model")}
