"""``ctxppl mixed FORMULA DATA.csv`` and ``ctxppl fit --model mixed``: lme4 formulas."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pandas as pd

from ctxppl._files import file_sha256
from ctxppl.cli._data import UsageError, numeric_matrix, read_csv, require_columns, row_ids
from ctxppl.cli._output import (
    FORMAT,
    MANIFEST,
    Reporter,
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

__all__ = ["run_mixed", "fit_mixed"]


def _mixed_formula(outcome: str, predictors: list[str], groups: list[str], slopes: bool) -> str:
    fixed = " + ".join(predictors) if predictors else "1"
    re = " + ".join(predictors) if slopes and predictors else "1"
    return f"{outcome} ~ {fixed} + " + " + ".join(f"({re} | {g})" for g in groups)


def fit_mixed(args: Any, df: pd.DataFrame, groups: list[str], predictors: list[str],
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

    if args.out:
        check_out(args.out)  # before the fit; nothing is created unless the run succeeds
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
    if not args.out:
        return manifest
    say(f"fitted in {seconds:.1f}s; writing results to {args.out}")
    with output_folder(args.out) as out:  # all or nothing: a failure leaves --out as it was
        manifest, summary, metrics = _write_mixed(args, res, formula, family, df, ids, out,
                                                  seconds, groups, predictors)
    report(args.out, manifest, summary, metrics, say, quiet=True)
    return manifest


def _write_mixed(args: Any, res: Any, formula: str, family: str, df: pd.DataFrame,
                 ids: pd.Series, out: str, seconds: float, groups: list[str] | None,
                 predictors: list[str] | None) -> tuple[dict, pd.DataFrame, dict]:
    files: list[str] = []
    files += write_table(res.fixed_effects.reset_index(names="term"), out, "fixed_effects")
    files += write_table(res.random_effects, out, "random_effects")
    per_row = pd.DataFrame({ids.name: ids.to_numpy()})
    cats = []
    for b in res.design.blocks:
        re = res.ranef(b.name, std_errors=True)
        files += write_table(re.reset_index(names=b.factor.name), out, f"ranef_{safe_name(b.name)}")
        cats.append((b.name, re))
        coef = res.coef(b.name)
        keys = _group_keys(df, b.factor.columns)
        codes = coef.index.get_indexer(pd.Index(keys))
        for c in coef.columns:
            col = (f"{safe_name(c)}_{safe_name(b.name)}" if len(res.design.blocks) > 1
                   else safe_name(c))
            per_row[col] = np.where(codes >= 0, coef[c].to_numpy()[np.maximum(codes, 0)],
                                    np.nan)
    per_row["fitted"] = res.predict()
    files += write_table(per_row, out, "params")
    summary = summary_table(per_row.drop(columns=[ids.name, "fitted"]))
    files += write_table(summary, out, "summary")
    note = None
    if wants_posterior(args):
        nc, note = write_posterior(res.to_arviz(), out)
        files += nc
    if args.plots:
        from ctxppl.cli import _plots as P

        for name, re in cats:
            files += [os.path.basename(f) for f in P.caterpillar(
                re, name, os.path.join(out, f"caterpillar_{safe_name(name)}.png"))]
    metrics = {"seconds": seconds, "converged": bool(res.converged)}
    y = np.asarray(res.design.y, dtype=float)
    if y.ndim == 1:
        metrics["rmse"] = float(np.sqrt(np.mean((per_row["fitted"].to_numpy() - y) ** 2)))
    from ctxppl import __version__

    manifest = {"format": FORMAT, "ctxppl_version": __version__, "command": "mixed",
                "data": os.path.abspath(args.data), "data_sha256": file_sha256(args.data),
                "model": "mixed", "method": args.method,
                "formula": formula, "family": family, "seed": args.seed,
                "id": None if args.id is None else ids.name, "n_rows": len(df),
                "context": groups, "predictors": predictors, "metrics": metrics,
                "files": sorted(set(files) | {MANIFEST})}
    if note:
        manifest["note"] = note
    finish(out, manifest, metrics)
    return manifest, summary, metrics


def _group_keys(df: pd.DataFrame, cols: Any) -> list[Any]:
    cols = list(cols)
    if len(cols) == 1:
        return df[cols[0]].tolist()
    return [":".join(str(v) for v in row) for row in zip(*(df[c] for c in cols), strict=True)]
