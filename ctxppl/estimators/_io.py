"""Save / load fitted estimators without pickle: a JSON header plus arrays by pytree path."""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np
from numpyro import handlers

from ctxppl import infer
from ctxppl._files import FileFormatError, read_npz, write_npz

__all__ = ["save_estimator", "load_estimator"]

_FORMAT = "ctxppl-estimator/1"


def _flat(tree: Any, prefix: str) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {prefix + jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def save_estimator(est: Any, path: str) -> None:
    from ctxppl import __version__

    params = {k: v for k, v in est.get_params(deep=False).items()}
    if params.get("base_predictor") is not None:
        params["base_predictor"] = None
    bad = [k for k, v in params.items() if not _is_json(v)]
    if bad:
        raise TypeError(f"cannot save estimator parameters {bad} as JSON; use plain values.")
    fit = est.fit_
    header = {
        "format": _FORMAT, "ctxppl_version": __version__,
        "class": f"{type(est).__module__}.{type(est).__qualname__}",
        "params": params, "fitted": est._fitted_meta(), "method": fit.method,
        "batch_shape": list(fit.batch_shape), "param_names": list(fit.param_names),
        "draw_names": sorted(est.draws_),
        "had_base_predictor": est.base_predictor is not None if hasattr(
            est, "base_predictor") else False,
        "diagnostics": _convergence(fit.diagnostics),
    }
    arrays = {**_flat(est.params_, "P"), **_flat(est.draws_, "D")}
    write_npz(path, arrays, header, header="__header__")  # checked first, then atomic


# the convergence record a loaded estimator keeps (its predict_params(interval=...) warns
# after loading as before saving)
_KEEP = ("converged", "message", "divergences", "r_hat", "ess", "per_sample_sites",
         "no_uncertainty")


def _convergence(diag: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k in _KEEP:
        v = diag.get(k)
        if isinstance(v, np.ndarray | np.generic | jax.Array):
            v = np.asarray(v).tolist()
        if v is not None and _is_json(v):
            out[k] = v
    return out


def _is_json(v: Any) -> bool:
    try:
        json.dumps(v)
    except TypeError:
        return False
    return True


def _restore(template: Any, data: Any, prefix: str, lead: tuple[int, ...]) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out = []
    for p, leaf in leaves:
        key = prefix + jax.tree_util.keystr(p)
        if key not in data:
            raise ValueError(f"saved file lacks array {key!r}; it was written by an "
                             "incompatible model definition.")
        arr = data[key]
        want = lead + tuple(np.shape(leaf))
        if arr.shape != want:
            raise ValueError(f"saved array {key!r} has shape {arr.shape}; expected {want}.")
        out.append(arr)
    return jax.tree_util.tree_unflatten(treedef, out)


def _estimator_class(name: Any, path: str, root: type) -> type:
    """The estimator class named ``module.qualname`` in a file, among the classes already
    defined (``root``, the estimators' base, and its subclasses): nothing is imported or run
    by name."""
    seen, stack = {}, [root]
    while stack:
        c = stack.pop()
        seen[f"{c.__module__}.{c.__qualname__}"] = c
        stack.extend(c.__subclasses__())
    if not isinstance(name, str) or name not in seen:
        raise FileFormatError(f"{path!r} names the estimator class {name!r}, which is not a "
                              "ctxppl estimator defined in this session (import the module "
                              "that defines it first).")
    return seen[name]


def load_estimator(path: str, root: type, cls: type | None = None,
                   base_predictor: Any = None) -> Any:
    data, header = read_npz(path, expect="ctxppl-estimator")
    try:
        saved_cls = _estimator_class(header.get("class"), path, root)
        if cls is not None and not issubclass(saved_cls, cls):
            raise TypeError(f"{path!r} holds a {saved_cls.__name__}, not a {cls.__name__}; "
                            f"load it with {saved_cls.__name__}.load.")
        params = dict(header["params"])
        if "base_predictor" in params:
            if header.get("had_base_predictor") and base_predictor is None:
                raise ValueError("this estimator was fitted with a `base_predictor`; pass the "
                                 "same (fitted) base predictor to load().")
            params["base_predictor"] = base_predictor
        est = saved_cls(**params)
        est._restore_meta(header["fitted"])
        model = est._build_model()
        # parameter structure from one abstract run of the model on a dummy sample
        tr = handlers.trace(handlers.seed(model, jax.random.key(0))).get_trace(
            *est._template_args())
        names = header["param_names"]
        B = header["batch_shape"][0] if header["batch_shape"] else 1
        p_template = {k: tr[k]["value"] for k in names}
        d_template = {k: tr[k]["value"] for k in header["draw_names"]}
        params_ = _restore(p_template, data, "P", (B,))
        n_draws = {v.shape[1] for k, v in data.items() if k.startswith("D") and v.ndim > 1}
        if len(n_draws) > 1:
            raise ValueError(f"saved draws have different numbers of draws {sorted(n_draws)}.")
        S = n_draws.pop() if n_draws else 1
        draws_ = _restore(d_template, data, "D", (B, S))
    except KeyError as e:
        raise FileFormatError(f"{path!r} does not match this ctxppl's estimators (missing "
                              f"{e}): it is damaged or was written by an incompatible "
                              "version.") from None
    est.model_ = model
    est.params_, est.draws_ = params_, draws_
    method = header["method"]
    batched = bool(header["batch_shape"])
    tm = jax.tree_util.tree_map
    P = params_ if batched else tm(lambda a: a[0], params_)
    D = draws_ if batched else tm(lambda a: a[0], draws_)
    ax = 1 if batched else 0  # the draws axis of D
    point = {**P, **tm(lambda a: a.mean(axis=ax), D)}
    samples = None if method == "map" else tm(lambda a: np.expand_dims(a, ax), D)
    est.fit_ = infer.Fit(model=model, args=(), kwargs={}, method=method, params=point,
                         samples=samples,
                         diagnostics={**header.get("diagnostics", {}), "loaded_from": path},
                         options={},
                         key=jax.random.key(0), param_names=tuple(names),
                         batch_shape=tuple(header["batch_shape"]))
    return est
