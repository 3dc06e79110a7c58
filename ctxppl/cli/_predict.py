"""``ctxppl predict DIR NEW.csv``: per-sample parameters and predictions for new rows."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pandas as pd

from ctxppl.cli._data import UsageError, numeric_matrix, read_csv, require_columns, row_ids
from ctxppl.cli._fit import estimator_class, param_table
from ctxppl.cli._output import FORMAT, MANIFEST, Reporter, safe_name

__all__ = ["run_predict"]


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
    cls = estimator_class(model)
    est = cls.load(os.path.join(args.dir, "model.npz"))
    C = numeric_matrix(df, man["context"], "--context (from the fit)", args.new)
    preds = man["predictors"]
    has_x = all(c in df.columns for c in preds)
    if model in ("regression", "classification") and not has_x:
        require_columns(df, preds, "--predictors (from the fit)", args.new)
    X = numeric_matrix(df, preds, "--predictors (from the fit)", args.new) if has_x else None
    say(f"predicting {len(df)} rows with the {model} model in {args.dir}")
    table = param_table(est, model, C, preds, man["method"] != "map")
    out = pd.DataFrame(index=range(len(df)))
    if model == "regression":
        out[f"{man['outcome']}_pred"] = est.predict(C, X)
    elif model == "classification":
        proba = est.predict_proba(C, X)
        out[f"{man['outcome']}_pred"] = est.classes_[np.argmax(proba, axis=1)]
        for k, c in enumerate(est.classes_):
            out[f"p_{safe_name(c)}"] = proba[:, k]
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
    return pd.DataFrame({f"{safe_name(name)}_pred": pred})
