"""One config of a ``ctx.workflow.run`` grid: fit all its splits, score them, cache both.

A unit is what a worker process receives. Everything here runs in that worker (or in the
calling process for the serial backend); the results are plain NumPy trees so that they
pickle across processes and into the on-disk cache.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from ctxppl.workflow._cache import ResultCache, _fingerprint_value
from ctxppl.workflow._evaluation import Batch, Evaluation
from ctxppl.workflow._spec import ModelSpec
from ctxppl.workflow._splits import Splits

__all__ = ["Unit", "run_task", "rebuild", "fit_errors", "error_text", "shapes",
           "options_fingerprint", "fold_key"]


@dataclass
class Unit:
    """One config: its fit/score cache keys and how to rebuild its inputs."""

    config_id: int
    config: dict
    fit_key: str = ""
    score_key: str = ""
    signature: str = ""
    key_data: Any = None
    error: str | None = None  # set when the factory / model tracing failed


def shapes(tree: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda x: (tuple(np.shape(x)), str(np.asarray(x).dtype)) if hasattr(x, "__array__")
        else x, tree)


def options_fingerprint(opts: Mapping[str, Any]) -> Any:
    return {k: _fingerprint_value(v, 0) for k, v in sorted(opts.items())}


def fold_key(base: jax.Array, config: dict) -> np.ndarray:
    import joblib

    h = int(joblib.hash(sorted(config.items(), key=lambda kv: kv[0]))[:7], 16)
    return np.asarray(jax.random.key_data(jax.random.fold_in(base, h)))


def error_text(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:300]


def _plain(tree: Any) -> Any:
    return None if tree is None else jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


def _concat(parts: list[dict], valid: list[int], size: int) -> dict:
    """Concatenate per-chunk ``fit_many`` results along the fit axis, dropping padded fits."""
    def cat(*xs: Any) -> Any:
        return np.concatenate([x[:v] for x, v in zip(xs, valid, strict=True)])

    out: dict[str, Any] = {}
    for k in ("params", "samples", "guide_params"):
        trees = [p[k] for p in parts]
        out[k] = None if trees[0] is None else jax.tree_util.tree_map(cat, *trees)
    diag = {}
    for k, v in parts[0]["diagnostics"].items():
        vs = [p["diagnostics"][k] for p in parts]
        if isinstance(v, list):
            diag[k] = [x for xs, n in zip(vs, valid, strict=True) for x in xs[:n]]
        elif isinstance(v, np.ndarray) and v.ndim and v.shape[0] == size:
            diag[k] = cat(*vs)
        else:
            diag[k] = v
    out["diagnostics"] = diag
    return out


def _fit_config(spec: ModelSpec, args: tuple, kwargs: dict, method: str, key_data: np.ndarray,
                W: np.ndarray, options: dict, max_batch: int | None = None) -> dict:
    """Fit all splits of one config in one ``fit_many`` call (or calls of ``max_batch``
    fits, the last one padded so that every call has the same shapes); return plain data."""
    import ctxppl as ctx

    t0 = time.perf_counter()
    key = jax.random.wrap_key_data(np.asarray(key_data))
    B = W.shape[0]
    size = B if max_batch is None or max_batch >= B else int(max_batch)
    n_chunks = -(-B // size)
    keys = [key] if n_chunks == 1 else list(jax.random.split(key, n_chunks))
    parts, valid = [], []
    for c in range(n_chunks):
        Wc = W[c * size:(c + 1) * size]
        valid.append(len(Wc))
        if len(Wc) < size:  # pad with copies of the last split: same shapes, same program
            Wc = np.concatenate([Wc, np.repeat(Wc[-1:], size - len(Wc), axis=0)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # failures are reported per split
            many = ctx.fit_many(spec.bound_model(), *args, method=method, key=keys[c],
                                weights=Wc, plate=spec.plate, model_kwargs=kwargs,
                                progress=False, **options)
        diag = {}
        for k, v in many.diagnostics.items():
            diag[k] = list(v) if isinstance(v, list) else (np.asarray(v) if hasattr(
                v, "__array__") else v)
        parts.append({"params": _plain(many.params), "samples": _plain(many.samples),
                      "guide_params": _plain(many.guide_params), "diagnostics": diag})
        meta = {"options": many.options, "param_names": tuple(many.param_names)}
    seconds = time.perf_counter() - t0
    out = parts[0] if n_chunks == 1 else _concat(parts, valid, size)
    out["diagnostics"]["seconds"] = seconds
    return {**out, **meta, "key": np.asarray(jax.random.key_data(key)), "method": method,
            "batch_shape": (B,), "seconds": seconds}


def rebuild(res: dict, model: Callable, args: tuple, kwargs: dict) -> Any:
    from ctxppl.infer import Fit

    return Fit(model=model, args=args, kwargs=kwargs, method=res["method"],
               params=res["params"], samples=res["samples"], diagnostics=res["diagnostics"],
               options=res["options"], key=jax.random.wrap_key_data(res["key"]),
               param_names=res["param_names"], guide_params=res["guide_params"],
               batch_shape=res["batch_shape"])


def fit_errors(res: dict) -> list[str | None]:
    diag = res["diagnostics"]
    conv = np.asarray(diag["converged"]).reshape(-1)
    msgs = diag.get("message") or [""] * len(conv)
    return [None if ok else f"FitError: {m}" for ok, m in zip(conv, msgs, strict=True)]


def _score_config(many: Any, spec: ModelSpec, config: dict, splits: Splits, data: Any,
                  scorers: dict[str, Any], failed: list[str | None]) -> dict:
    """Run every scorer on every split of one config (one batched evaluation pass)."""
    keep_draws = any(getattr(s, "needs_draws", False) for s in scorers.values())
    batch = Batch(many, spec.plate, keep_draws)
    W = splits.weights()
    values: list[dict[str, float]] = []
    errors: list[str | None] = []
    for i, (train, test) in enumerate(splits):
        row: dict[str, float] = {}
        err = None
        if failed[i] is None:
            ev = Evaluation(batch, i, many[i], config, train, test, W[i], data, spec.plate)
            for name, scorer in scorers.items():
                try:
                    out = scorer(ev)
                    if isinstance(out, Mapping):
                        row.update({f"{name}_{k}": float(v) for k, v in out.items()})
                    else:
                        row[name] = float(out)
                except Exception as e:  # noqa: BLE001 - a failing score becomes an error cell
                    err = err or f"score {name!r}: {error_text(e)}"
                    row[name] = float("nan")
        values.append(row)
        errors.append(err)
    return {"values": values, "errors": errors}


def run_task(factory: Callable, units: list[Unit], data: Any, splits: Splits, method: str,
              options: dict, scorers: dict, cache: ResultCache, errors: str,
              max_batch: int | None = None) -> list[dict]:
    """Fit and score a list of configs (runs in a worker process, or in-process)."""
    W = splits.weights()
    out = []
    for u in units:
        out.append(_run_unit(factory, u, data, splits, W, method, options, scorers, cache,
                             errors, max_batch))
    return out


def _run_unit(factory, u, data, splits, W, method, options, scorers, cache, errors,  # noqa: ANN001, ANN202
              max_batch):  # noqa: ANN001
    record: dict[str, Any] = {"config_id": u.config_id, "cached": True}
    try:
        spec = factory(**u.config)
        args, kwargs = spec.resolve(data)
        opts = {**options, **dict(spec.options)}

        def compute_fit() -> dict:
            record["cached"] = False
            return _fit_config(spec, args, kwargs, method, u.key_data, W, opts, max_batch)

        def templates() -> dict:
            from ctxppl.infer._sites import param_templates

            return param_templates(spec.bound_model(), args, kwargs)

        res = cache.fit(u.fit_key, compute_fit, templates)
        record["fit"] = res
        failed = fit_errors(res)
        if scorers:
            def compute_scores() -> dict:
                record["cached"] = False
                many = rebuild(res, spec.bound_model(), args, kwargs)
                return _score_config(many, spec, u.config, splits, data, scorers, failed)

            record["scores"] = cache.score(u.score_key, compute_scores)
    except Exception as e:
        if errors == "raise":
            raise
        record["error"] = error_text(e)
        record["cached"] = False
    return record
