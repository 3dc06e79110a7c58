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
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax

from ctxppl.infer._validate import normalize_key
from ctxppl.workflow._cache import ResultCache, fingerprint_callable, fingerprint_data, versions
from ctxppl.workflow._execute import BACKENDS, chunks, execute
from ctxppl.workflow._grid import as_configs
from ctxppl.workflow._scores import as_scorers
from ctxppl.workflow._spec import ModelSpec
from ctxppl.workflow._splits import Splits, as_splits
from ctxppl.workflow._units import (
    Unit,
    error_text,
    fit_errors,
    fold_key,
    options_fingerprint,
    rebuild,
    run_task,
    shapes,
)

__all__ = ["ModelSpec", "run", "failures"]

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
                  common: dict) -> tuple[Unit, ModelSpec | None, Any, Splits | None]:
    from ctxppl.infer._sites import model_structure

    unit = Unit(config_id, config)
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
        unit.error = error_text(e)
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
        unit.error = f"model failed on the data: {error_text(e)}"
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
    unit.key_data = fold_key(base_key, config)
    model_fp = fingerprint_callable(model)
    unit.signature = fingerprint_data(("sig", model_fp, shapes((args, kwargs)),
                                       options_fingerprint(opts)))
    unit.fit_key = fingerprint_data(("fit", model_fp, common["factory_fp"], sorted(
        config.items()), common["data_fp"], splits.fingerprint(), method,
        options_fingerprint(opts), unit.key_data, common["versions"], common["max_batch"]))
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
        cache: ``None``, a directory, or a ``joblib.Memory`` (its location): fits and scores
            are stored there (atomically, without pickle) and reused by later runs (works with
            every backend; the directory must be visible to all workers).
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
    base_key = normalize_key(key)
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
    runner = functools.partial(run_task, model_factory, data=data, splits=the_splits,
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
        tasks = chunks(pending, workers) if backend != "serial" else [[u] for u in pending]
        for out in execute(tasks, runner, backend, n_jobs, client):
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
            many = rebuild(fit_res, spec.bound_model(), *inp)
        failed = fit_errors(fit_res) if fit_res is not None else [rec.get("error")] * B
        for i in range(B):
            row = dict(u.config)
            row["split"] = i
            row["fit"] = many[i] if many is not None else None
            err = rec.get("error") or failed[i]
            if scores is not None:
                row.update(scores["values"][i])
                err = err or scores["errors"][i]
            row["converged"] = bool(failed[i] is None and rec.get("error") is None)
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
