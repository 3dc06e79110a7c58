"""``ctxppl fit``: read a CSV, fit an estimator (or a mixed model), write the fit folder."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pandas as pd

from ctxppl._files import file_sha256
from ctxppl.cli._data import (
    UsageError,
    check_outcome,
    numeric_matrix,
    read_csv,
    row_ids,
    split_columns,
)
from ctxppl.cli._output import (
    FORMAT,
    INTERVAL,
    MANIFEST,
    Reporter,
    arviz_of,
    check_out,
    finish,
    output_folder,
    report,
    safe_name,
    summary_table,
    wants_posterior,
    write_posterior,
    write_table,
)

__all__ = ["run_fit", "estimator_class", "param_table", "has_intervals"]


def estimator_class(model: str) -> Any:
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


def _linear_table(est: Any, C: np.ndarray, predictors: list[str], posterior: bool,
                  labels: list[str] | None) -> pd.DataFrame:
    """Per-sample coefficients and intercepts of a regressor/classifier."""
    if posterior:
        b, m = est.predict_params(C, interval=INTERVAL)
        parts = {"": (b.estimate, m.estimate), "_q05": (b.lower, m.lower),
                 "_q95": (b.upper, m.upper)}
    else:
        b, m = est.predict_params(C)
        parts = {"": (b, m)}
    q = parts[""][0].shape[1]
    names: list[tuple[str, int, int | None]] = []
    for g in range(q):
        tag = "" if q == 1 or labels is None else safe_name(labels[g])
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
        band = est.predict_networks(C, interval=INTERVAL) if posterior else None
    else:
        pairs = [(a, b) for a in range(p) for b in range(p) if a != b]
        name = "edge_{}__{}"
        est_mat = est.predict_networks(C)  # projected onto DAGs
        band = est.predict_params(C, interval=INTERVAL) if posterior else None
    cols = {name.format(predictors[a], predictors[b]): est_mat[:, a, b] for a, b in pairs}
    if band is not None:
        for suffix, arr in (("_q05", band.lower), ("_q95", band.upper)):
            for a, b in pairs:
                cols[name.format(predictors[a], predictors[b]) + suffix] = arr[:, a, b]
    return pd.DataFrame(cols)


def has_intervals(method: str, bootstraps: int, uncertainty: bool = False) -> bool:
    """Posterior methods, bootstrapped MAP fits and ``--uncertainty`` give per-row 90%
    intervals."""
    return method != "map" or bootstraps > 1 or bool(uncertainty)


def param_table(est: Any, model: str, C: np.ndarray, predictors: list[str],
                 posterior: bool) -> pd.DataFrame:
    if model in ("regression", "classification"):
        labels = None
        if model == "classification":
            classes = [str(c) for c in est.classes_]
            labels = classes[1:] if len(classes) == 2 else classes
        return _linear_table(est, C, predictors, posterior, labels)
    return _network_table(est, model, C, predictors, posterior)


def _metrics(est: Any, model: str, C: np.ndarray, X: np.ndarray, y: Any) -> dict[str, float]:
    if model == "regression":
        pred = est.predict(C, X)
        return {"r2": float(est.score(C, X, y)),
                "rmse": float(np.sqrt(np.mean((pred - np.asarray(y, float)) ** 2)))}
    if model == "classification":
        return {"accuracy": float(est.score(C, X, y))}
    return {"reconstruction_mse": float(np.mean(est.measure_mses(C, X)))}


def _plots(model: str, table: pd.DataFrame, C: np.ndarray, context: list[str],
           predictors: list[str], est: Any, out: str) -> list[str]:
    from ctxppl.cli import _plots as P

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
        from ctxppl.cli._mixed import fit_mixed

        return fit_mixed(args, df, context, predictors, ids, say)
    C = numeric_matrix(df, context, "--context", args.data)
    X = numeric_matrix(df, predictors, "--predictors", args.data)
    y = None if args.outcome is None else df[args.outcome].to_numpy()
    if args.model == "regression":
        y = y.astype(float)
    check_out(args.out)  # before the fit: a bad --out must not cost a fit
    how = ("Gaussian-process coefficients, method 'marginal' (--uncertainty)"
           if args.uncertainty else f"method {args.method}")
    say(f"read {args.data}: {len(df)} rows; model {args.model}, {how}")

    cls = estimator_class(args.model)
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
    posterior = has_intervals(args.method, args.bootstraps, args.uncertainty)
    table = param_table(est, args.model, C, predictors, posterior)
    table.insert(0, ids.name, ids.to_numpy())
    summary = summary_table(table.drop(columns=[ids.name]))
    metrics = {"seconds": seconds, **_metrics(est, args.model, C, X, y)}
    diag = est.fit_.diagnostics
    for k in ("message", "num_steps", "divergences"):
        if k in diag:  # one value, or one per bootstrap fit
            v = np.asarray(diag[k]) if not isinstance(diag[k], str | list) else diag[k]
            metrics[k] = v.tolist() if isinstance(v, np.ndarray) else v
    with output_folder(args.out) as out:  # all or nothing: a failure leaves --out as it was
        files = write_table(table, out, "params")
        files += write_table(summary, out, "summary")
        note = None
        if wants_posterior(args):  # ArviZ + netCDF: ~1-2 s, so only when asked or useful
            idata, arviz_note = arviz_of(est.fit_)
            nc, note = write_posterior(idata, out)
            note = "; ".join(n for n in (arviz_note, note) if n) or None
            files += nc
        if args.plots:
            files += _plots(args.model, table.drop(columns=[ids.name]), C, context, predictors,
                            est, out)
        est.save(os.path.join(out, "model.npz"))
        files.append("model.npz")
        manifest = _manifest(args, context, predictors, ids, len(df), metrics, files, note)
        if args.model == "classification":
            manifest["classes"] = [str(c) for c in est.classes_]
        finish(out, manifest, metrics)
    if note:
        say(f"note: {note}")
    report(args.out, manifest, summary, metrics, say, args.quiet)
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
    if args.uncertainty:
        opts["uncertainty"] = True
    return opts


def _manifest(args: Any, context: list[str], predictors: list[str], ids: pd.Series, n: int,
              metrics: dict, files: list[str], note: str | None) -> dict[str, Any]:
    from ctxppl import __version__

    m = {"format": FORMAT, "ctxppl_version": __version__, "command": "fit",
         "data": os.path.abspath(args.data), "data_sha256": file_sha256(args.data),
         "model": args.model, "method": args.method,
         "context": context, "predictors": predictors, "outcome": args.outcome,
         "id": None if args.id is None else ids.name, "seed": args.seed, "n_rows": n,
         "bootstraps": args.bootstraps, "uncertainty": bool(args.uncertainty),
         "metrics": metrics, "files": sorted(set(files) | {MANIFEST})}
    if note:
        m["note"] = note
    return m
