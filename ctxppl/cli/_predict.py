"""``ctxppl predict DIR NEW.csv``: per-sample parameters and predictions for new rows."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pandas as pd

from ctxppl._files import FileFormatError, atomic_write, file_sha256
from ctxppl.cli._data import UsageError, numeric_matrix, read_csv, require_columns, row_ids
from ctxppl.cli._fit import estimator_class, has_intervals, param_table
from ctxppl.cli._output import FORMAT, MANIFEST, Reporter, safe_name

__all__ = ["run_predict", "read_manifest"]


def read_manifest(folder: str) -> dict[str, Any]:
    """The ``manifest.json`` of a fit folder, with a :class:`UsageError` for a missing,
    damaged or foreign one."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isdir(folder):
        raise UsageError(f"`DIR`: no such folder: {folder!r} (the `--out` of `ctxppl fit`).")
    if not os.path.exists(path):
        raise UsageError(f"`DIR`: {folder!r} has no {MANIFEST}; is it the `--out` folder of "
                         "`ctxppl fit`?")
    try:
        with open(path, encoding="utf-8") as f:
            man = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise UsageError(f"`DIR`: {path!r} is damaged (not valid JSON: {e}); run `ctxppl fit` "
                         "again to rewrite the folder.") from None
    if not isinstance(man, dict):
        raise UsageError(f"`DIR`: {path!r} is damaged (not a JSON object).")
    if man.get("format") != FORMAT:
        raise UsageError(f"`DIR`: {path!r} was not written by this version of `ctxppl fit` "
                         f"(format {man.get('format')!r}, expected {FORMAT!r}).")
    need = ["model", "method", "context", "predictors"] + (
        ["formula", "data"] if man.get("model") == "mixed" else ["outcome"])
    missing = [k for k in need if k not in man]
    if missing:
        raise UsageError(f"`DIR`: {path!r} is damaged (it lacks {missing}); run `ctxppl fit` "
                         "again to rewrite the folder.")
    return man


def run_predict(args: Any) -> str:
    """``ctxppl predict DIR NEW.csv``: per-sample parameters and predictions for new rows.

    Everything is checked (manifest, NEW.csv's columns, for mixed models the training data)
    before the model is loaded or refitted."""
    say = Reporter(args.quiet)
    man = read_manifest(args.dir)
    df = read_csv(args.new, "NEW.csv")
    ids = row_ids(df, args.id if args.id is not None else man.get("id"), args.new)
    out = args.out or os.path.join(args.dir, "predictions.csv")
    if os.path.isdir(out):
        raise UsageError(f"`--out`: {out!r} is a folder; give a CSV file name.")
    if man["model"] == "mixed":
        _check_mixed(man, df, args.new)
        table = _predict_mixed(man, df, args, say)
    else:
        X = _check_estimator_input(man, df, args.new)
        table = _predict_estimator(man, df, X, args, say)
    table.insert(0, ids.name, ids.to_numpy())
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    text = table.to_csv(index=False).encode()
    atomic_write(out, lambda fh: fh.write(text))
    say(f"wrote {len(table)} predictions to {out}")
    return out


def _check_estimator_input(man: dict, df: pd.DataFrame, path: str) -> np.ndarray | None:
    """NEW.csv's context (and predictor) columns, checked before the model is loaded."""
    numeric_matrix(df, man["context"], "--context (from the fit)", path)
    preds = man["predictors"]
    if man["model"] in ("regression", "classification"):
        require_columns(df, preds, "--predictors (from the fit)", path)
    if not all(c in df.columns for c in preds):
        return None
    return numeric_matrix(df, preds, "--predictors (from the fit)", path)


def _check_mixed(man: dict, df: pd.DataFrame, path: str) -> None:
    """NEW.csv has the formula's columns, and the training CSV is the one that was fitted
    (mixed models are refitted from it: a changed file would silently change predictions)."""
    import formulaic

    from ctxppl.models.mixed import parse_formula

    try:
        parsed = parse_formula(man["formula"])
        need = set(formulaic.Formula(parsed.fixed).required_variables)
        for t in parsed.random:
            need |= set(formulaic.Formula(t.lhs).required_variables) | set(t.group_columns)
        for o in parsed.offsets:
            need |= set(formulaic.Formula(o).required_variables)
    except (ValueError, TypeError) as e:
        raise UsageError(f"`DIR`: the manifest's formula {man['formula']!r} does not parse "
                         f"({e}); run the fit again.") from None
    require_columns(df, sorted(need), f"the formula {man['formula']!r}", path)
    train = man["data"]
    if not os.path.exists(train):
        raise UsageError(f"the training data {train!r} of this mixed-model fit is gone; "
                         "`ctxppl predict` refits mixed models from it. Restore it or fit "
                         "again.")
    want = man.get("data_sha256")
    if want is None:
        raise UsageError("`DIR`: this mixed-model folder was written without a checksum of "
                         "its training data (by an older ctxppl); fit it again to predict.")
    if file_sha256(train) != want:
        raise UsageError(f"the training data {train!r} changed since this mixed model was "
                         "fitted (its SHA-256 differs from the one in the manifest); "
                         "`ctxppl predict` refits mixed models from it, so the predictions "
                         "would silently change. Fit again on the new data, or restore the "
                         "original file.")


def _predict_estimator(man: dict, df: pd.DataFrame, X: np.ndarray | None, args: Any,
                       say: Reporter) -> pd.DataFrame:
    model = man["model"]
    cls = estimator_class(model)
    try:
        est = cls.load(os.path.join(args.dir, "model.npz"))
    except (FileNotFoundError, FileFormatError) as e:
        raise UsageError(f"`DIR`: {e}") from None
    C = numeric_matrix(df, man["context"], "--context (from the fit)", args.new)
    preds = man["predictors"]
    say(f"predicting {len(df)} rows with the {model} model in {args.dir}")
    table = param_table(est, model, C, preds,
                        has_intervals(man["method"], man.get("bootstraps", 1),
                                      man.get("uncertainty", False)))
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
