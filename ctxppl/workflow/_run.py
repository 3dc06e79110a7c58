r"""``ctx.workflow.run``: a grid of model configs x data splits -> one DataFrame of fits and scores.

How the work is organised:

* The factory is called once per config, in the calling process, before any fit: bad factories,
  unknown data names, splits that do not match the data and badly-formed scorers fail here.
* All splits of one config are fitted together in **one** jit-compiled, vmapped
  ``ctx.fit_many`` call: splits become per-member weights on the plate (train rows weigh the
  number of times they are drawn, held-out rows 0), so every split has the same array shapes.
* Configs are grouped by their compiled signature (model, constants, array shapes, options);
  groups are the units of parallel work, so a worker compiles each signature once.
* Every config's fit and scores are cached on disk (see ``_cache.py``) as soon as they exist;
  a rerun loads what is there and computes only what is missing.
* A fit that raises, or whose loss becomes NaN/inf, turns into rows with ``error`` set and NaN
  scores; the grid goes on, and a warning summarises how many failed and why.
"""

from __future__ import annotations

import collections
import functools
import inspect
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from ctxppl.workflow._cache import (
    ResultCache,
    _fingerprint_value,
    fingerprint_callable,
    fingerprint_data,
    versions,
)
from ctxppl.workflow._grid import as_configs
from ctxppl.workflow._scores import Evaluation, _Batch, as_scorers
from ctxppl.workflow._splits import Splits, as_splits

__all__ = ["ModelSpec", "run", "failures"]

BACKENDS = ("serial", "loky", "dask")
METHODS = ("map", "laplace", "svi")
_RESERVED_OPTIONS = ("weights", "plate", "val_weights", "progress", "num_fits", "indices",
                     "bootstrap", "model_kwargs", "key", "method")

_MSG_FACTORY = """`model_factory` must return a ctx.workflow.ModelSpec; for config {config} it
returned {got}. Write it as, e.g.:

    def factory(width, depth):
        return ctx.workflow.ModelSpec(model, plate="patients", args=("C", "X", "Y"),
                                      constants={{"width": width, "depth": depth}})

where `model(C, X, Y=None, *, width, depth)` is a NumPyro model and "C", "X", "Y" name
entries (or columns) of `data`."""


# --------------------------------------------------------------------------- model spec
class _Bound(functools.partial):
    """``functools.partial`` that compares and hashes by value, so jit caches are shared by
    configs that bind the same constants to the same model function."""

    def _ident(self) -> tuple:
        return (self.func, self.args, tuple(sorted(self.keywords.items())))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._ident() == other._ident()

    def __hash__(self) -> int:
        return hash(self._ident())


def _is_ref(ref: Any) -> bool:
    if isinstance(ref, str):
        return True
    return isinstance(ref, list | tuple) and bool(ref) and all(isinstance(r, str) for r in ref)


@dataclass(frozen=True)
class ModelSpec:
    r"""What a model factory returns: a NumPyro model and how the data feed it.

    Args:
        model: A NumPyro model function (``ctx.plate`` / ``ctx.encoder`` / ``ctx.contextual``
            or plain NumPyro). Prefer a module-level function with the config in ``constants``:
            configs that share constants and shapes then share one compiled program.
        plate: Name of the plate whose members are the data rows; splits weight its members.
        args: Positional model arguments, each the name of a ``data`` entry / column, or a
            list of column names (stacked into an ``(n, k)`` array), or an array.
        kwargs: Keyword model arguments, same forms as ``args``.
        constants: Keyword arguments bound to the model as Python values (ints, strings,
            floats, tuples): shape-changing settings such as ``K`` or ``width``. Must be
            hashable.
        options: Fit options for this config (``num_steps``, ``learning_rate``,
            ``init_strategy``, ...), overriding the options given to ``run``.

    Examples:
        >>> import numpyro, numpyro.distributions as dist, ctxppl as ctx
        >>> def model(y=None, *, scale):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, scale))
        ...     with ctx.plate("rows", 3):
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> spec = ctx.workflow.ModelSpec(model, plate="rows", kwargs={"y": "y"},
        ...                               constants={"scale": 10.0})
        >>> spec.plate, spec.bound_model().keywords
        ('rows', {'scale': 10.0})
    """

    model: Callable
    plate: str
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    constants: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not callable(self.model):
            raise TypeError(f"`model` of ModelSpec must be a NumPyro model function; got "
                            f"{type(self.model).__name__}.")
        if not isinstance(self.plate, str) or not self.plate:
            raise TypeError(f"`plate` of ModelSpec must be a plate name (str); got "
                            f"{self.plate!r}.")
        if isinstance(self.args, str) or not isinstance(self.args, Sequence):
            raise TypeError(f"`args` of ModelSpec must be a tuple of data names; got "
                            f"{self.args!r}. For one argument write args=({self.args!r},).")
        object.__setattr__(self, "args", tuple(self.args))
        for name in ("kwargs", "constants", "options"):
            if not isinstance(getattr(self, name), Mapping):
                raise TypeError(f"`{name}` of ModelSpec must be a dict; got "
                                f"{type(getattr(self, name)).__name__}.")
        for k, v in self.constants.items():
            try:
                hash(v)
            except TypeError:
                raise TypeError(f"constant `{k}` of ModelSpec must be hashable (int, float, "
                                f"str, tuple); got {type(v).__name__}. Pass arrays through "
                                "`kwargs` instead (they are then traced, not baked in)."
                                ) from None
        clash = sorted(set(self.constants) & set(self.kwargs))
        if clash:
            raise ValueError(f"{clash} appear in both `kwargs` and `constants` of ModelSpec.")

    def bound_model(self) -> Callable:
        """The model with ``constants`` bound (hashable by value)."""
        if not self.constants:
            return self.model
        return _Bound(self.model, **dict(self.constants))

    def resolve(self, data: Any) -> tuple[tuple, dict]:
        """Model ``(args, kwargs)`` read from ``data``."""
        args = tuple(_resolve(data, r, f"args[{i}]") for i, r in enumerate(self.args))
        kwargs = {k: _resolve(data, r, f"kwargs[{k!r}]") for k, r in self.kwargs.items()}
        return args, kwargs


def _entries(data: Any) -> list[str]:
    cols = getattr(data, "columns", None)
    return [str(c) for c in (cols if cols is not None else data.keys())]


def _resolve(data: Any, ref: Any, where: str) -> Any:
    if ref is None:
        return None
    if not _is_ref(ref):
        if hasattr(ref, "__array__") or isinstance(ref, int | float):
            return ref
        raise TypeError(f"ModelSpec {where} must be a data name, a list of column names or an "
                        f"array; got {type(ref).__name__}.")
    names = [ref] if isinstance(ref, str) else list(ref)
    missing = [r for r in names if r not in _entries(data)]
    if missing:
        raise KeyError(f"ModelSpec {where} refers to {missing}, which is not in `data`; its "
                       f"entries are {_entries(data)}.")
    if isinstance(ref, str):
        value = data[ref]
        return value.to_numpy() if hasattr(value, "to_numpy") else np.asarray(value)
    cols = [np.asarray(data[r].to_numpy() if hasattr(data[r], "to_numpy") else data[r],
                       dtype=np.float32) for r in names]
    return np.stack(cols, axis=-1)


# --------------------------------------------------------------------------- units of work
@dataclass
class _Unit:
    """One config: its fit/score cache keys and how to rebuild its inputs."""

    config_id: int
    config: dict
    fit_key: str = ""
    score_key: str = ""
    signature: str = ""
    key_data: Any = None
    error: str | None = None  # set when the factory / model tracing failed


def _shapes(tree: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda x: (tuple(np.shape(x)), str(np.asarray(x).dtype)) if hasattr(x, "__array__")
        else x, tree)


def _options_fingerprint(opts: Mapping[str, Any]) -> Any:
    return {k: _fingerprint_value(v, 0) for k, v in sorted(opts.items())}


def _fold_key(base: jax.Array, config: dict) -> np.ndarray:
    import joblib

    h = int(joblib.hash(sorted(config.items(), key=lambda kv: kv[0]))[:7], 16)
    return np.asarray(jax.random.key_data(jax.random.fold_in(base, h)))


def _error_text(e: BaseException) -> str:
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


def _rebuild(res: dict, model: Callable, args: tuple, kwargs: dict) -> Any:
    from ctxppl.infer import Fit

    return Fit(model=model, args=args, kwargs=kwargs, method=res["method"],
               params=res["params"], samples=res["samples"], diagnostics=res["diagnostics"],
               options=res["options"], key=jax.random.wrap_key_data(res["key"]),
               param_names=res["param_names"], guide_params=res["guide_params"],
               batch_shape=res["batch_shape"])


def _fit_errors(res: dict) -> list[str | None]:
    diag = res["diagnostics"]
    conv = np.asarray(diag["converged"]).reshape(-1)
    msgs = diag.get("message") or [""] * len(conv)
    return [None if ok else f"FitError: {m}" for ok, m in zip(conv, msgs, strict=True)]


def _score_config(many: Any, spec: ModelSpec, config: dict, splits: Splits, data: Any,
                  scorers: dict[str, Any], fit_errors: list[str | None]) -> dict:
    """Run every scorer on every split of one config (one batched evaluation pass)."""
    keep_draws = any(getattr(s, "needs_draws", False) for s in scorers.values())
    batch = _Batch(many, spec.plate, keep_draws)
    W = splits.weights()
    values: list[dict[str, float]] = []
    errors: list[str | None] = []
    for i, (train, test) in enumerate(splits):
        row: dict[str, float] = {}
        err = None
        if fit_errors[i] is None:
            ev = Evaluation(batch, i, many[i], config, train, test, W[i], data, spec.plate)
            for name, scorer in scorers.items():
                try:
                    out = scorer(ev)
                    if isinstance(out, Mapping):
                        row.update({f"{name}_{k}": float(v) for k, v in out.items()})
                    else:
                        row[name] = float(out)
                except Exception as e:  # noqa: BLE001 - a failing score becomes an error cell
                    err = err or f"score {name!r}: {_error_text(e)}"
                    row[name] = float("nan")
        values.append(row)
        errors.append(err)
    return {"values": values, "errors": errors}


def _run_task(factory: Callable, units: list[_Unit], data: Any, splits: Splits, method: str,
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

        res = cache.fit(u.fit_key, compute_fit)
        record["fit"] = res
        fit_errors = _fit_errors(res)
        if scorers:
            def compute_scores() -> dict:
                record["cached"] = False
                many = _rebuild(res, spec.bound_model(), args, kwargs)
                return _score_config(many, spec, u.config, splits, data, scorers, fit_errors)

            record["scores"] = cache.score(u.score_key, compute_scores)
    except Exception as e:
        if errors == "raise":
            raise
        record["error"] = _error_text(e)
        record["cached"] = False
    return record


# --------------------------------------------------------------------------- execution
def _chunks(units: list[_Unit], n_workers: int) -> list[list[_Unit]]:
    groups: dict[str, list[_Unit]] = collections.defaultdict(list)
    for u in units:
        groups[u.signature].append(u)
    target = max(1, math.ceil(len(units) / max(1, n_workers)))
    tasks = []
    for g in groups.values():
        for i in range(0, len(g), target):
            tasks.append(g[i:i + target])
    return sorted(tasks, key=len, reverse=True)


def _execute(tasks: list[list[_Unit]], runner: Callable, backend: str, n_jobs: int | None,
             client: Any) -> Any:
    """Yield lists of unit records as tasks finish."""
    if backend == "serial":
        for t in tasks:
            for u in t:  # one unit at a time: the progress bar moves per config
                yield runner([u])
        return
    if backend == "loky":
        from joblib import Parallel, delayed

        parallel = Parallel(n_jobs=n_jobs or -1, backend="loky",
                            return_as="generator_unordered")
        yield from parallel(delayed(runner)(t) for t in tasks)
        return
    # dask
    import distributed

    own = False
    if client is None:
        try:
            client = distributed.get_client()
        except ValueError:
            raise RuntimeError(
                "backend='dask' needs a Dask cluster: start one, e.g. `client = distributed."
                "Client(distributed.LocalCluster())` or `Client('tcp://scheduler:8786')`, and "
                "pass `client=client` (or create it before calling run).") from None
    elif isinstance(client, str):
        client = distributed.Client(client)
        own = True
    try:
        futures = client.map(runner, tasks, pure=False)
        for fut in distributed.as_completed(futures):
            yield fut.result()
    finally:
        if own:
            client.close()


def _normalize_key(key: Any) -> jax.Array:
    if isinstance(key, bool):
        raise TypeError("`key` must be a jax.random.key or an int seed; got a bool.")
    if isinstance(key, int | np.integer):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"`key` must be a single key; got shape {key.shape}.")
        return key
    raise TypeError(f"`key` must be a jax.random.key or an int seed; got {type(key).__name__}.")


def _check_options(method: str, options: Mapping[str, Any], where: str) -> None:
    from ctxppl.infer import DEFAULTS

    bad = sorted(set(options) & set(_RESERVED_OPTIONS))
    if bad:
        raise TypeError(f"{where} sets {bad}, which ctx.workflow.run controls itself (splits "
                        "become `weights` on the ModelSpec's plate; progress is per config).")
    unknown = sorted(set(options) - set(DEFAULTS[method]))
    if unknown:
        raise TypeError(f"{where} has unknown fit option(s) {unknown} for method={method!r}; "
                        f"valid options: {sorted(set(DEFAULTS[method]) - set(_RESERVED_OPTIONS))}.")


def _prepare_unit(model_factory: Callable, config: dict, config_id: int, data: Any,
                  splits: Any, method: str, scorers: dict, base_key: jax.Array,
                  common: dict) -> tuple[_Unit, ModelSpec | None, Any, Splits | None]:
    from ctxppl.infer._sites import model_structure

    unit = _Unit(config_id, config)
    if common["factory_sig"] is not None:
        try:
            common["factory_sig"].bind(**config)
        except TypeError as e:
            raise TypeError(f"`model_factory` cannot take config {config} as keyword "
                            f"arguments ({e}); its parameters are {common['factory_sig']}, "
                            "they must match the grid's names.") from None
    try:
        spec = model_factory(**config)
    except Exception as e:  # noqa: BLE001 - a factory failing for one config is a failed row
        if common["errors"] == "raise":
            raise
        unit.error = _error_text(e)
        return unit, None, None, None
    if not isinstance(spec, ModelSpec):
        got = f"{type(spec).__name__} {spec!r}"[:200]
        raise TypeError(_MSG_FACTORY.format(config=config, got=got))
    _check_options(method, spec.options, f"ModelSpec.options of config {config}")
    args, kwargs = spec.resolve(data)  # KeyError on unknown names: a bug, raise now
    model = spec.bound_model()
    try:
        structure = model_structure(model, args, kwargs)
    except Exception as e:  # noqa: BLE001 - e.g. a config the model cannot build
        if common["errors"] == "raise":
            raise
        unit.error = f"model failed on the data: {_error_text(e)}"
        return unit, spec, None, None
    if spec.plate not in structure.plates:
        raise ValueError(f"ModelSpec `plate` {spec.plate!r} is not a plate of the model for "
                         f"config {config}; its plates are {sorted(structure.plates)}.")
    n = structure.plates[spec.plate]
    splits = as_splits(splits, n)
    for s in scorers.values():
        check = getattr(s, "check", None)
        if check is not None:
            check(data, structure.sites, method)
    opts = {**common["options"], **dict(spec.options)}
    unit.key_data = _fold_key(base_key, config)
    model_fp = fingerprint_callable(model)
    unit.signature = fingerprint_data(("sig", model_fp, _shapes((args, kwargs)),
                                       _options_fingerprint(opts)))
    unit.fit_key = fingerprint_data(("fit", model_fp, common["factory_fp"], sorted(
        config.items()), common["data_fp"], splits.fingerprint(), method,
        _options_fingerprint(opts), unit.key_data, common["versions"], common["max_batch"]))
    unit.score_key = fingerprint_data(("score", unit.fit_key, common["scorers_fp"]))
    return unit, spec, (args, kwargs), splits


def run(model_factory: Callable[..., ModelSpec], grid: Any, splits: Any, data: Any, *,
        method: str = "map", scoring: Any = None, key: Any = 0, backend: str = "serial",
        n_jobs: int | None = None, client: Any = None, cache: Any = None,
        progress: bool = True, errors: str = "warn", max_batch: int | None = None,
        **fit_options: Any) -> Any:
    r"""Fit every config of a grid on every split; one row per (config, split).

    ``model_factory(**config)`` returns a :class:`ModelSpec` (the model, its plate, and which
    data entries feed which model arguments). All splits of a config are fitted together in
    one jit-compiled, vmapped ``ctx.fit_many`` call (splits are member weights on the plate);
    configs with the same compiled signature reuse one compiled program; distinct signatures
    run in parallel with ``backend="loky"`` (local processes) or ``"dask"`` (any Dask cluster).

    Args:
        model_factory: ``factory(**config) -> ModelSpec``.
        grid: Configs: a list of dicts (:func:`grid`), a ``ParameterGrid``, a DataFrame, a
            dict of lists, or ``None`` (one config, no hyperparameters).
        splits: A :class:`Splits` (``kfold``, ``bootstrap``, ...), a list of
            ``(train, test)`` index arrays, or ``None`` (one in-sample split).
        data: A dict of arrays or a pandas DataFrame; rows are the plate's members.
        method: ``"map"``, ``"laplace"`` or ``"svi"``.
        scoring: A scorer, a list of scorers, or a dict ``name -> scorer``; a scorer is a
            function of one :class:`Evaluation` returning a float or a dict of floats.
        key: Seed or ``jax.random.key``; each config gets a key derived from it and from the
            config's values (independent of the grid's order, so cached fits stay valid).
        backend: ``"serial"``, ``"loky"`` (joblib processes) or ``"dask"``.
        n_jobs: Worker processes for ``"loky"`` (default: all cores).
        client: For ``"dask"``: a ``distributed.Client`` or a scheduler address (default: the
            current client).
        cache: ``None``, a directory, or a ``joblib.Memory``: fits and scores are stored there
            and reused by later runs (works with every backend; the directory must be visible
            to all workers).
        progress: Show a progress bar over configs (tqdm).
        errors: ``"warn"`` (default: failed fits become rows with ``error`` set, plus one
            summary warning), ``"ignore"``, or ``"raise"`` (stop at the first exception, to
            debug).
        max_batch: At most this many splits per ``fit_many`` call (default: all splits of a
            config in one call). Bounds memory for thousands of resamples; on a few CPU
            cores a few dozen per call can also be faster than hundreds. Part of the cache
            key (it changes the per-fit seeds).
        **fit_options: Options of ``ctx.fit_many`` (``num_steps``, ``learning_rate``, ...).

    Returns:
        A pandas DataFrame with the config columns, ``split``, ``fit`` (the
        :class:`ctxppl.Fit`, or ``None`` when the fit raised), one column per score,
        ``converged``, ``seconds`` (the config's ``fit_many`` wall time divided by the number
        of splits; compilation included), ``batch_seconds``, ``cached`` and ``error``.
        ``df.attrs["summary"]`` says how many fits failed and why.

    Raises:
        ValueError / TypeError / KeyError: before any fit, on an empty grid, a factory that
            does not return a ModelSpec, unknown data names, splits outside the data, a bad
            scoring function or unknown options.

    Examples:
        >>> import numpy as np, jax.numpy as jnp, numpyro, numpyro.distributions as dist
        >>> import ctxppl as ctx
        >>> def model(y=None, *, prior_scale):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, prior_scale))
        ...     with ctx.plate("rows", y.shape[0]):
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> def factory(prior_scale):
        ...     return ctx.workflow.ModelSpec(model, "rows", kwargs={"y": "y"},
        ...                                   constants={"prior_scale": prior_scale})
        >>> data = {"y": np.arange(6.0)}
        >>> df = ctx.workflow.run(factory, ctx.workflow.grid(prior_scale=[0.1, 10.0]),
        ...                       ctx.workflow.kfold(6, k=3), data,
        ...                       scoring=[ctx.workflow.mse()], progress=False)
        >>> df.groupby("prior_scale")["mse"].mean().round(1).tolist()
        [8.7, 3.5]
    """
    import pandas as pd

    # ---- validate everything before any fit
    if not callable(model_factory):
        raise TypeError(f"`model_factory` must be callable (config -> ModelSpec); got "
                        f"{type(model_factory).__name__}.")
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS} (all splits of a config are one "
                         f"vmapped fit_many call; NUTS is not vmapped); got {method!r}.")
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}; got {backend!r}.")
    if errors not in ("warn", "ignore", "raise"):
        raise ValueError(f"`errors` must be 'warn', 'ignore' or 'raise'; got {errors!r}.")
    if max_batch is not None and (not isinstance(max_batch, int) or max_batch < 1):
        raise ValueError(f"`max_batch` must be a positive int or None; got {max_batch!r}.")
    if n_jobs is not None and (not isinstance(n_jobs, int) or n_jobs == 0):
        raise ValueError(f"`n_jobs` must be a non-zero int or None; got {n_jobs!r}.")
    if not (isinstance(data, Mapping) or hasattr(data, "columns")):
        raise TypeError(f"`data` must be a dict of arrays or a pandas DataFrame; got "
                        f"{type(data).__name__}.")
    _check_options(method, fit_options, "run(**fit_options)")
    configs = as_configs(grid)
    scorers = as_scorers(scoring)
    base_key = _normalize_key(key)
    store = ResultCache(cache)
    try:
        factory_sig = inspect.signature(model_factory)
    except (TypeError, ValueError):
        factory_sig = None
    common = {"options": dict(fit_options), "versions": versions(), "factory_sig": factory_sig,
              "errors": errors, "max_batch": max_batch,
              "factory_fp": fingerprint_callable(model_factory),
              "data_fp": fingerprint_data(data),
              "scorers_fp": {n: fingerprint_callable(s) for n, s in sorted(scorers.items())}}
    units, specs, inputs, split_of = [], {}, {}, {}
    for i, config in enumerate(configs):
        u, spec, inp, sp = _prepare_unit(model_factory, config, i, data, splits, method,
                                         scorers, base_key, common)
        units.append(u)
        specs[i], inputs[i], split_of[i] = spec, inp, sp
    ok_splits = [s for s in split_of.values() if s is not None]
    if not ok_splits:  # every config failed before fitting: still check the splits' form
        first = units[0].error
        raise RuntimeError(f"ctx.workflow.run: the model could not be built for any config "
                           f"(first error: {first}).")
    the_splits = ok_splits[0]

    # ---- cached configs load here; the rest are dispatched
    runner = functools.partial(_run_task, model_factory, data=data, splits=the_splits,
                               method=method, options=dict(fit_options), scorers=scorers,
                               cache=store, errors=errors, max_batch=max_batch)
    records: dict[int, dict] = {}
    pending = []
    for u in units:
        if u.error is not None:
            records[u.config_id] = {"config_id": u.config_id, "error": u.error, "cached": False}
        elif store.has_fit(u.fit_key) and (not scorers or store.has_score(u.score_key)):
            records[u.config_id] = runner([u])[0]
        else:
            pending.append(u)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(units), desc=f"ctx.workflow.run ({backend})",
                   initial=len(records))
    try:
        workers = 1 if backend == "serial" else (n_jobs if n_jobs and n_jobs > 0 else max(
            1, os.cpu_count() or 1))
        tasks = _chunks(pending, workers) if backend != "serial" else [[u] for u in pending]
        for out in _execute(tasks, runner, backend, n_jobs, client):
            for rec in out:
                records[rec["config_id"]] = rec
            if bar is not None:
                bar.update(len(out))
    finally:
        if bar is not None:
            bar.close()

    # ---- assemble the table
    rows = []
    B = len(the_splits)
    for u in units:
        rec = records[u.config_id]
        spec, inp = specs[u.config_id], inputs[u.config_id]
        fit_res, scores = rec.get("fit"), rec.get("scores")
        many = None
        if fit_res is not None and spec is not None:
            many = _rebuild(fit_res, spec.bound_model(), *inp)
        fit_errors = _fit_errors(fit_res) if fit_res is not None else [rec.get("error")] * B
        for i in range(B):
            row = dict(u.config)
            row["split"] = i
            row["fit"] = many[i] if many is not None else None
            err = rec.get("error") or fit_errors[i]
            if scores is not None:
                row.update(scores["values"][i])
                err = err or scores["errors"][i]
            row["converged"] = bool(fit_errors[i] is None and rec.get("error") is None)
            secs = fit_res["seconds"] if fit_res is not None else float("nan")
            row["seconds"] = secs / B
            row["batch_seconds"] = secs
            row["cached"] = bool(rec.get("cached", False))
            row["error"] = err
            rows.append(row)
    df = pd.DataFrame(rows)
    for name in scorers:  # keep a column per scorer even when every fit failed
        if name not in df.columns and not any(c.startswith(f"{name}_") for c in df.columns):
            df[name] = float("nan")
    config_cols = {k for c in configs for k in c}
    score_cols = [c for c in df.columns if c not in config_cols and c not in (
        "fit", "split", "converged", "seconds", "batch_seconds", "cached", "error")]
    df[score_cols] = df[score_cols].astype(float)
    failed = df["error"].notna()
    df.loc[failed & ~df["converged"], score_cols] = float("nan")
    counts = collections.Counter(df.loc[failed, "error"])
    summary = (f"{int(failed.sum())} of {len(df)} fits failed" + (": " + "; ".join(
        f"{n} x {e}" for e, n in counts.most_common(5)) if counts else ""))
    df.attrs["summary"] = summary
    if failed.any() and errors == "warn":
        warnings.warn(f"ctx.workflow.run: {summary}. Inspect df[df.error.notna()] or "
                      "ctx.workflow.failures(df).", RuntimeWarning, stacklevel=2)
    return df


def failures(df: Any) -> Any:
    r"""Failed rows of a :func:`run` table, counted by error message.

    Args:
        df: The DataFrame returned by :func:`run`.

    Returns:
        A DataFrame with columns ``error`` and ``count`` (most frequent first).

    Examples:
        >>> import pandas as pd, ctxppl as ctx
        >>> df = pd.DataFrame({"error": [None, "FitError: nan", "FitError: nan"]})
        >>> ctx.workflow.failures(df).to_dict("records")
        [{'error': 'FitError: nan', 'count': 2}]
    """
    import pandas as pd

    if "error" not in getattr(df, "columns", ()):
        raise ValueError("`df` must be a table returned by ctx.workflow.run (with an `error` "
                         "column).")
    counts = df["error"].dropna().value_counts()
    return pd.DataFrame({"error": counts.index.tolist(), "count": counts.to_numpy().tolist()})
