"""``ctxppl fit``, ``ctxppl predict`` and ``ctxppl mixed``: fit a CSV, write the results.

``fit`` writes into ``--out DIR``:

* ``params.csv`` (and ``params.parquet`` when pyarrow is installed): one row per data row,
  keyed by the row id (``--id`` column or the 0-based row number), one column per
  per-sample parameter; posterior methods add ``<param>_q05`` / ``<param>_q95``;
* ``posterior.nc`` (ArviZ netCDF; without netCDF4/h5netcdf: ``posterior_nc/<group>.nc``,
  one netCDF3 file per ArviZ group);
* ``summary.csv`` (each parameter across samples) and ``metrics.json``;
* PNG plots; ``model.npz`` + ``manifest.json`` for ``ctxppl predict``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np
import pandas as pd

from ctxppl._cli_data import (
    UsageError,
    check_outcome,
    numeric_matrix,
    read_csv,
    require_columns,
    row_ids,
    split_columns,
)

__all__ = ["Reporter", "run_fit", "run_predict", "run_mixed", "write_posterior",
           "MANIFEST", "FORMAT"]

MANIFEST = "manifest.json"
FORMAT = "ctxppl-cli/1"
_INTERVAL = 0.9  # equal-tailed interval written as <param>_q05 / <param>_q95


class Reporter:
    """Status lines on stderr (silent with ``--quiet``)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- estimators
def _estimator_class(model: str) -> Any:
    from ctxppl import estimators as E

    return {"regression": E.ContextualizedRegressor,
            "classification": E.ContextualizedClassifier,
            "markov": E.ContextualizedMarkovNetworks,
            "bayesian-network": E.ContextualizedBayesianNetworks}[model]


def _show_progress(est: Any, on: bool) -> None:
    """Turn the core's progress bars on/off for this estimator instance.

    The estimators fit silently (``progress=False``); the command line wants bars, so the
    instance's fit options are wrapped (the class, its saved form and sklearn's
    ``get_params`` are untouched)."""
    orig = getattr(est, "_fit_options", None)
    if orig is None:  # pragma: no cover - estimator API changed: no bars, still correct
        return

    def options(n: int) -> tuple[str, dict[str, Any]]:
        method, opt = orig(n)
        opt = dict(opt)
        if "progress" in opt:
            opt["progress"] = on
        if opt.get("map_options") is not None:
            opt["map_options"] = {**opt["map_options"], "progress": on}
        return method, opt

    est._fit_options = options


def _safe(name: Any) -> str:
    return "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in str(name))


def _linear_table(est: Any, C: np.ndarray, predictors: list[str], posterior: bool,
                  labels: list[str] | None) -> pd.DataFrame:
    """Per-sample coefficients and intercepts of a regressor/classifier."""
    if posterior:
        b, m = est.predict_params(C, interval=_INTERVAL)
        parts = {"": (b.estimate, m.estimate), "_q05": (b.lower, m.lower),
                 "_q95": (b.upper, m.upper)}
    else:
        b, m = est.predict_params(C)
        parts = {"": (b, m)}
    q = parts[""][0].shape[1]
    names: list[tuple[str, int, int | None]] = []
    for g in range(q):
        tag = "" if q == 1 or labels is None else _safe(labels[g])
        for j, x in enumerate(predictors):
            names.append((f"beta_{tag + '_' if tag else ''}{x}", g, j))
        names.append((f"intercept{'_' + tag if tag else ''}", g, None))
    cols: dict[str, np.ndarray] = {}
    for suffix, (beta, mu) in parts.items():
        for name, g, j in names:
            cols[name + suffix] = beta[:, g, j] if j is not None else mu[:, g]
    return pd.DataFrame(cols)


def _network_table(est: Any, model: str, C: np.ndarray, predictors: list[str],
                   posterior: bool) -> pd.DataFrame:
    """Per-sample network edges: partial correlations (Markov) or DAG weights (Bayesian)."""
    p = len(predictors)
    if model == "markov":
        pairs = [(a, b) for a in range(p) for b in range(a + 1, p)]
        name = "pcorr_{}__{}"
        est_mat = est.predict_networks(C)
        band = est.predict_networks(C, interval=_INTERVAL) if posterior else None
    else:
        pairs = [(a, b) for a in range(p) for b in range(p) if a != b]
        name = "edge_{}__{}"
        est_mat = est.predict_networks(C)  # projected onto DAGs
        band = est.predict_params(C, interval=_INTERVAL) if posterior else None
    cols = {name.format(predictors[a], predictors[b]): est_mat[:, a, b] for a, b in pairs}
    if band is not None:
        for suffix, arr in (("_q05", band.lower), ("_q95", band.upper)):
            for a, b in pairs:
                cols[name.format(predictors[a], predictors[b]) + suffix] = arr[:, a, b]
    return pd.DataFrame(cols)


def _param_table(est: Any, model: str, C: np.ndarray, predictors: list[str],
                 posterior: bool) -> pd.DataFrame:
    if model in ("regression", "classification"):
        labels = None
        if model == "classification":
            classes = [str(c) for c in est.classes_]
            labels = classes[1:] if len(classes) == 2 else classes
        return _linear_table(est, C, predictors, posterior, labels)
    return _network_table(est, model, C, predictors, posterior)


def _summary(table: pd.DataFrame) -> pd.DataFrame:
    """Each per-sample parameter across samples (interval columns summarised by width)."""
    main = [c for c in table.columns if not c.endswith(("_q05", "_q95"))]
    rows = []
    for c in main:
        v = table[c].to_numpy(dtype=float)
        row = {"parameter": c, "mean": v.mean(), "sd": v.std(ddof=1) if len(v) > 1 else 0.0,
               "min": v.min(), "q05": np.quantile(v, 0.05), "median": np.median(v),
               "q95": np.quantile(v, 0.95), "max": v.max()}
        if f"{c}_q05" in table:
            row["mean_interval_width"] = float(np.mean(table[f"{c}_q95"] - table[f"{c}_q05"]))
        rows.append(row)
    return pd.DataFrame(rows)


def _metrics(est: Any, model: str, C: np.ndarray, X: np.ndarray, y: Any) -> dict[str, float]:
    if model == "regression":
        pred = est.predict(C, X)
        return {"r2": float(est.score(C, X, y)),
                "rmse": float(np.sqrt(np.mean((pred - np.asarray(y, float)) ** 2)))}
    if model == "classification":
        return {"accuracy": float(est.score(C, X, y))}
    return {"reconstruction_mse": float(np.mean(est.measure_mses(C, X)))}


# ----------------------------------------------------------------------------- writing
def _write_table(df: pd.DataFrame, out: str, stem: str) -> list[str]:
    files = [f"{stem}.csv"]
    df.to_csv(os.path.join(out, f"{stem}.csv"), index=False)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return files
    df.to_parquet(os.path.join(out, f"{stem}.parquet"), index=False)
    return files + [f"{stem}.parquet"]


def _groups(idata: Any) -> dict[str, Any]:
    """ArviZ groups as xarray Datasets (DataTree in arviz 1.x, InferenceData in 0.x)."""
    if hasattr(idata, "children"):
        return {k: v.to_dataset() for k, v in idata.children.items()}
    return {g: getattr(idata, g) for g in idata.groups()}


def _arviz_of(fit: Any) -> tuple[Any, str | None]:
    """``fit.to_arviz()``; if that fails, the posterior draws alone (and a note saying why)."""
    try:
        return fit.to_arviz(), None
    except Exception as e:  # noqa: BLE001 - a failed export must not lose the fit
        from ctxppl.infer._arviz import from_groups

        draws = fit.samples if fit.samples is not None else {
            k: np.asarray(v)[None, None] for k, v in fit.params.items()
            if k not in fit.param_names}
        post = {k: np.asarray(v) for k, v in draws.items()}
        idata = from_groups({"posterior": post})
        return idata, (f"Fit.to_arviz() failed ({type(e).__name__}: {e}); wrote the posterior "
                       "draws only")


def write_posterior(idata: Any, out: str) -> tuple[list[str], str | None]:
    """Write ArviZ data as ``posterior.nc`` (netCDF4, needs ``h5netcdf`` or ``netCDF4``);
    without either library, as ``posterior_nc/<group>.nc`` (netCDF3 through scipy).

    Returns:
        ``(files written, note)``; ``note`` says why the fallback was used (or ``None``).
    """
    path = os.path.join(out, "posterior.nc")
    engine = None
    # h5netcdf >= 1.8 no longer pulls in h5py, which it needs to write
    for mods, eng in ((("h5netcdf", "h5py"), "h5netcdf"), (("netCDF4",), "netcdf4")):
        try:
            for mod in mods:
                __import__(mod)
        except ImportError:
            continue
        engine = eng
        break
    if engine is not None:
        idata.to_netcdf(path, engine=engine)
        return ["posterior.nc"], None
    folder = os.path.join(out, "posterior_nc")
    os.makedirs(folder, exist_ok=True)
    files = []
    for name, ds in _groups(idata).items():
        ds = ds.copy()
        # netCDF3 has no int64/bool: store integer coordinates and variables as int32
        for k in list(ds.variables):
            if ds[k].dtype.kind in "iu" and ds[k].dtype.itemsize > 4:
                ds[k] = ds[k].astype(np.int32)
            elif ds[k].dtype.kind == "b":
                ds[k] = ds[k].astype(np.int8)
        ds.attrs = {k: (v if isinstance(v, str | int | float) else str(v))
                    for k, v in ds.attrs.items()}
        ds.to_netcdf(os.path.join(folder, f"{name}.nc"), engine="scipy")
        files.append(f"posterior_nc/{name}.nc")
    note = ("neither h5netcdf nor netCDF4 is installed: wrote one netCDF3 file per ArviZ "
            "group (xarray.open_dataset each); `pip install h5netcdf` gives posterior.nc")
    return files, note


def _plots(model: str, table: pd.DataFrame, C: np.ndarray, context: list[str],
           predictors: list[str], est: Any, out: str) -> list[str]:
    from ctxppl import _cli_plots as P

    files = []
    files += P.params_vs_context(table, C, context, os.path.join(out, "params_vs_context.png"))
    files += P.params_hist(table, os.path.join(out, "params_hist.png"))
    if model in ("markov", "bayesian-network"):
        mats = est.predict_networks(C)
        files += P.networks(mats, predictors, C, context, os.path.join(out, "networks.png"),
                            directed=model == "bayesian-network")
    hist = est.fit_.diagnostics.get("loss_history") if hasattr(est, "fit_") else None
    if hist is not None:
        files += P.loss(np.asarray(hist), os.path.join(out, "loss.png"))
    return [os.path.basename(f) for f in files]


# ----------------------------------------------------------------------------- fit
def _prepare_out(out: str) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"`--out`: {out!r} exists and is not a folder.")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UsageError(f"`--out`: cannot create folder {out!r}: {e}") from e


def run_fit(args: Any) -> dict[str, Any]:
    """``ctxppl fit``: read, check, fit, write. Returns the manifest."""
    say = Reporter(args.quiet)
    df = read_csv(args.data)
    context = split_columns(args.context, "--context")
    predictors = split_columns(args.predictors, "--predictors")
    if not context:
        raise UsageError("`--context` is required: the column(s) each sample's parameters "
                         "depend on (for `--model mixed`: the grouping column(s)).")
    if args.model != "mixed" and not predictors:
        raise UsageError(f"`--model {args.model}` needs `--predictors` (comma-separated "
                         "columns).")
    if args.model in ("markov", "bayesian-network") and len(predictors) < 2:
        raise UsageError(f"`--model {args.model}` needs at least 2 `--predictors` (the "
                         f"network's nodes); got {predictors}.")
    overlap = sorted(set(context) & set(predictors) | ({args.outcome} & (set(context)
                                                                          | set(predictors))))
    if overlap:
        raise UsageError(f"column(s) {overlap} appear in more than one of `--context`, "
                         "`--predictors`, `--outcome`.")
    check_outcome(args.model, df, args.outcome, args.data)
    ids = row_ids(df, args.id, args.data)
    if args.model == "mixed":
        return _fit_mixed(args, df, context, predictors, ids, say)
    C = numeric_matrix(df, context, "--context", args.data)
    X = numeric_matrix(df, predictors, "--predictors", args.data)
    y = None if args.outcome is None else df[args.outcome].to_numpy()
    if args.model == "regression":
        y = y.astype(float)
    _prepare_out(args.out)
    say(f"read {args.data}: {len(df)} rows; model {args.model}, method {args.method}")

    cls = _estimator_class(args.model)
    est = cls(**_estimator_options(args))
    _show_progress(est, not args.quiet)
    say("fitting (the first fit includes JAX compilation)")
    t = time.perf_counter()
    try:
        est.fit(C, X) if y is None else est.fit(C, X, y)
    except ValueError as e:  # the estimators validate before any work
        raise UsageError(str(e)) from e
    seconds = time.perf_counter() - t
    say(f"fitted in {seconds:.1f}s; writing results to {args.out}")
    posterior = args.method != "map"
    table = _param_table(est, args.model, C, predictors, posterior)
    table.insert(0, ids.name, ids.to_numpy())
    files = _write_table(table, args.out, "params")
    summary = _summary(table.drop(columns=[ids.name]))
    files += _write_table(summary, args.out, "summary")
    metrics = {"seconds": seconds, **_metrics(est, args.model, C, X, y)}
    diag = est.fit_.diagnostics
    for k in ("message", "num_steps", "divergences"):
        if k in diag:
            metrics[k] = diag[k] if isinstance(diag[k], str) else int(np.asarray(diag[k]))
    idata, arviz_note = _arviz_of(est.fit_)
    nc, note = write_posterior(idata, args.out)
    note = "; ".join(n for n in (arviz_note, note) if n) or None
    if note:
        say(f"note: {note}")
    files += nc
    if not args.no_plots:
        files += _plots(args.model, table.drop(columns=[ids.name]), C, context, predictors,
                        est, args.out)
    est.save(os.path.join(args.out, "model.npz"))
    files.append("model.npz")
    manifest = _manifest(args, context, predictors, ids, len(df), metrics, files, note)
    if args.model == "classification":
        manifest["classes"] = [str(c) for c in est.classes_]
    _finish(args.out, manifest, summary, metrics, say, args.quiet)
    return manifest


def _estimator_options(args: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {"inference": args.method, "random_state": args.seed,
                            "encoder_type": args.encoder, "width": args.width,
                            "depth": args.depth, "num_samples": args.num_samples,
                            "max_epochs": args.epochs, "learning_rate": args.learning_rate}
    if args.archetypes is not None:
        opts["num_archetypes"] = args.archetypes
    if args.bootstraps > 1:
        opts["n_bootstraps"] = args.bootstraps
    return opts


def _manifest(args: Any, context: list[str], predictors: list[str], ids: pd.Series, n: int,
              metrics: dict, files: list[str], note: str | None) -> dict[str, Any]:
    from ctxppl import __version__

    m = {"format": FORMAT, "ctxppl_version": __version__, "command": "fit",
         "data": os.path.abspath(args.data), "model": args.model, "method": args.method,
         "context": context, "predictors": predictors, "outcome": args.outcome,
         "id": None if args.id is None else ids.name, "seed": args.seed, "n_rows": n,
         "metrics": metrics, "files": sorted(set(files) | {MANIFEST})}
    if note:
        m["note"] = note
    return m


def _finish(out: str, manifest: dict, summary: pd.DataFrame, metrics: dict, say: Reporter,
            quiet: bool) -> None:
    with open(os.path.join(out, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=2, default=str)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, default=str)
    if "metrics.json" not in manifest["files"]:
        manifest["files"] = sorted(manifest["files"] + ["metrics.json"])
        with open(os.path.join(out, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=2, default=str)
    if not quiet:
        with pd.option_context("display.width", 120, "display.max_columns", 20):
            print(summary.round(4).to_string(index=False))
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in metrics.items()))
    say(f"wrote {len(manifest['files'])} files to {out}")


# ----------------------------------------------------------------------------- mixed
def _mixed_formula(outcome: str, predictors: list[str], groups: list[str], slopes: bool) -> str:
    fixed = " + ".join(predictors) if predictors else "1"
    re = " + ".join(predictors) if slopes and predictors else "1"
    return f"{outcome} ~ {fixed} + " + " + ".join(f"({re} | {g})" for g in groups)


def _fit_mixed(args: Any, df: pd.DataFrame, groups: list[str], predictors: list[str],
               ids: pd.Series, say: Reporter) -> dict[str, Any]:
    require_columns(df, groups, "--context", args.data)
    numeric_matrix(df, predictors, "--predictors", args.data)
    for g in groups:
        if df[g].isna().any():
            raise UsageError(f"`--context`: grouping column {g!r} of {args.data!r} has missing "
                             "values.")
    formula = _mixed_formula(args.outcome, predictors, groups, args.random_slopes)
    return _mixed_common(args, formula, df, ids, say, predictors=predictors, groups=groups)


def run_mixed(args: Any) -> dict[str, Any]:
    """``ctxppl mixed FORMULA DATA.csv``."""
    say = Reporter(args.quiet)
    df = read_csv(args.data)
    ids = row_ids(df, args.id, args.data)
    return _mixed_common(args, args.formula, df, ids, say)


def _mixed_common(args: Any, formula: str, df: pd.DataFrame, ids: pd.Series, say: Reporter,
                  predictors: list[str] | None = None, groups: list[str] | None = None
                  ) -> dict[str, Any]:
    import warnings

    import ctxppl as ctx

    out = args.out
    if out:
        _prepare_out(out)
    say(f"read {args.data}: {len(df)} rows; formula {formula!r}, method {args.method}")
    opts: dict[str, Any] = {}
    if args.method != "map":
        opts.update(key=args.seed, progress=not args.quiet)
        if args.method == "nuts":
            opts.update(num_samples=args.num_samples, num_warmup=args.num_samples)
        else:
            opts.update(num_samples=args.num_samples)
    family = getattr(args, "family", "gaussian")
    t = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = ctx.mixed(formula, df, family=family, method=args.method, **opts)
    except (ValueError, TypeError, KeyError) as e:  # ctx.mixed checks its input first
        raise UsageError(f"{type(e).__name__}: {e}") from e
    seconds = time.perf_counter() - t
    for w in caught:
        say(f"warning: {w.message}")
    if not args.quiet:
        print(res.summary())
    manifest: dict[str, Any] = {"formula": formula, "seconds": seconds}
    if not out:
        return manifest
    say(f"fitted in {seconds:.1f}s; writing results to {out}")
    files: list[str] = []
    files += _write_table(res.fixed_effects.reset_index(names="term"), out, "fixed_effects")
    files += _write_table(res.random_effects, out, "random_effects")
    per_row = pd.DataFrame({ids.name: ids.to_numpy()})
    cats = []
    for b in res.design.blocks:
        re = res.ranef(b.name, std_errors=True)
        files += _write_table(re.reset_index(names=b.factor.name), out, f"ranef_{_safe(b.name)}")
        cats.append((b.name, re))
        coef = res.coef(b.name)
        keys = _group_keys(df, b.factor.columns)
        codes = coef.index.get_indexer(pd.Index(keys))
        for c in coef.columns:
            col = f"{_safe(c)}_{_safe(b.name)}" if len(res.design.blocks) > 1 else _safe(c)
            per_row[col] = np.where(codes >= 0, coef[c].to_numpy()[np.maximum(codes, 0)],
                                    np.nan)
    per_row["fitted"] = res.predict()
    files += _write_table(per_row, out, "params")
    summary = _summary(per_row.drop(columns=[ids.name, "fitted"]))
    files += _write_table(summary, out, "summary")
    nc, note = write_posterior(res.to_arviz(), out)
    files += nc
    if not args.no_plots:
        from ctxppl import _cli_plots as P

        for name, re in cats:
            files += [os.path.basename(f) for f in P.caterpillar(
                re, name, os.path.join(out, f"caterpillar_{_safe(name)}.png"))]
    metrics = {"seconds": seconds, "converged": bool(res.converged)}
    y = np.asarray(res.design.y, dtype=float)
    if y.ndim == 1:
        metrics["rmse"] = float(np.sqrt(np.mean((per_row["fitted"].to_numpy() - y) ** 2)))
    from ctxppl import __version__

    manifest = {"format": FORMAT, "ctxppl_version": __version__, "command": "mixed",
                "data": os.path.abspath(args.data), "model": "mixed", "method": args.method,
                "formula": formula, "family": family, "seed": args.seed,
                "id": None if args.id is None else ids.name, "n_rows": len(df),
                "context": groups, "predictors": predictors, "metrics": metrics,
                "files": sorted(set(files) | {MANIFEST})}
    if note:
        manifest["note"] = note
    _finish(out, manifest, summary, metrics, say, quiet=True)
    return manifest


def _group_keys(df: pd.DataFrame, cols: Any) -> list[Any]:
    cols = list(cols)
    if len(cols) == 1:
        return df[cols[0]].tolist()
    return [":".join(str(v) for v in row) for row in zip(*(df[c] for c in cols), strict=True)]


# ----------------------------------------------------------------------------- predict
def run_predict(args: Any) -> str:
    """``ctxppl predict DIR NEW.csv``: per-sample parameters and predictions for new rows."""
    say = Reporter(args.quiet)
    path = os.path.join(args.dir, MANIFEST)
    if not os.path.isdir(args.dir):
        raise UsageError(f"`DIR`: no such folder: {args.dir!r} (the `--out` of `ctxppl fit`).")
    if not os.path.exists(path):
        raise UsageError(f"`DIR`: {args.dir!r} has no {MANIFEST}; is it the `--out` folder of "
                         "`ctxppl fit`?")
    with open(path) as f:
        man = json.load(f)
    if man.get("format") != FORMAT:
        raise UsageError(f"`DIR`: {path!r} was not written by this version of `ctxppl fit` "
                         f"(format {man.get('format')!r}, expected {FORMAT!r}).")
    df = read_csv(args.new, "NEW.csv")
    ids = row_ids(df, args.id if args.id is not None else man.get("id"), args.new)
    out = args.out or os.path.join(args.dir, "predictions.csv")
    if man["model"] == "mixed":
        table = _predict_mixed(man, df, args, say)
    else:
        table = _predict_estimator(man, df, args, say)
    table.insert(0, ids.name, ids.to_numpy())
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    table.to_csv(out, index=False)
    say(f"wrote {len(table)} predictions to {out}")
    return out


def _predict_estimator(man: dict, df: pd.DataFrame, args: Any, say: Reporter) -> pd.DataFrame:
    model = man["model"]
    cls = _estimator_class(model)
    est = cls.load(os.path.join(args.dir, "model.npz"))
    C = numeric_matrix(df, man["context"], "--context (from the fit)", args.new)
    preds = man["predictors"]
    has_x = all(c in df.columns for c in preds)
    if model in ("regression", "classification") and not has_x:
        require_columns(df, preds, "--predictors (from the fit)", args.new)
    X = numeric_matrix(df, preds, "--predictors (from the fit)", args.new) if has_x else None
    say(f"predicting {len(df)} rows with the {model} model in {args.dir}")
    table = _param_table(est, model, C, preds, man["method"] != "map")
    out = pd.DataFrame(index=range(len(df)))
    if model == "regression":
        out[f"{man['outcome']}_pred"] = est.predict(C, X)
    elif model == "classification":
        proba = est.predict_proba(C, X)
        out[f"{man['outcome']}_pred"] = est.classes_[np.argmax(proba, axis=1)]
        for k, c in enumerate(est.classes_):
            out[f"p_{_safe(c)}"] = proba[:, k]
    elif X is not None:
        out["reconstruction_mse"] = est.measure_mses(C, X)
    return pd.concat([out, table], axis=1)


def _predict_mixed(man: dict, df: pd.DataFrame, args: Any, say: Reporter) -> pd.DataFrame:
    """Mixed models are refitted from the training CSV (ctx.mixed results have no save
    format yet); the marginal (method map) fit is deterministic, posterior fits use the
    stored seed."""
    import ctxppl as ctx

    train = read_csv(man["data"], "training data (from the fit)")
    opts: dict[str, Any] = {}
    if man["method"] != "map":
        opts.update(key=man["seed"], progress=not args.quiet)
    say(f"refitting {man['formula']!r} on {man['data']} (mixed results are not saved)")
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reported when the model was fitted
            res = ctx.mixed(man["formula"], train, family=man.get("family", "gaussian"),
                            method=man["method"], **opts)
        pred = res.predict(df, allow_new_groups=True)
    except (ValueError, TypeError, KeyError) as e:
        raise UsageError(f"{type(e).__name__}: {e}") from e
    name = res.design.parsed.response if hasattr(res.design, "parsed") else "y"
    return pd.DataFrame({f"{_safe(name)}_pred": pred})
