"""What every command writes: status lines, tables, the posterior, the manifest.

A fit folder written by ``ctxppl fit`` or ``ctxppl mixed --out`` holds:

* ``params.csv`` (and ``params.parquet`` when pyarrow is installed): one row per data row,
  keyed by the row id (``--id`` column or the 0-based row number), one column per
  per-sample parameter; posterior methods add ``<param>_q05`` / ``<param>_q95``;
* ``summary.csv`` (each parameter across samples) and ``metrics.json``;
* ``model.npz`` + ``manifest.json`` for ``ctxppl predict``;
* with ``--posterior`` (the default for posterior methods): ``posterior.nc`` (ArviZ netCDF;
  without netCDF4/h5netcdf: ``posterior_nc/<group>.nc``, one netCDF3 file per ArviZ group);
* with ``--plots``: PNG plots.

The two optional outputs cost more than the rest together (importing matplotlib, building
ArviZ data and writing netCDF: about a second each), hence behind flags.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from ctxppl._files import atomic_write, replace_folder
from ctxppl.cli._data import UsageError

__all__ = ["Reporter", "MANIFEST", "FORMAT", "INTERVAL", "safe_name", "write_table",
           "summary_table", "arviz_of", "wants_posterior", "write_posterior", "check_out",
           "output_folder", "finish", "report", "plain", "write_json"]

MANIFEST = "manifest.json"
FORMAT = "ctxppl-cli/1"
INTERVAL = 0.9  # equal-tailed interval written as <param>_q05 / <param>_q95


class Reporter:
    """Status lines on stderr (silent with ``--quiet``)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def safe_name(name: Any) -> str:
    return "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in str(name))


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
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


def write_table(df: pd.DataFrame, out: str, stem: str) -> list[str]:
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


def arviz_of(fit: Any) -> tuple[Any, str | None]:
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


def wants_posterior(args: Any) -> bool:
    """``--posterior`` / ``--no-posterior``, else yes for posterior methods and
    ``--uncertainty``, no for ``map``."""
    if args.posterior is not None:
        return args.posterior
    return args.method != "map" or bool(getattr(args, "uncertainty", False))


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


def check_out(out: str) -> None:
    """``--out`` must be new, empty, or the folder of an earlier run (it holds a manifest):
    a run replaces the whole folder, so it never takes over a folder of other files."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"`--out`: {out!r} exists and is not a folder.")
    if os.path.isdir(out) and os.listdir(out) and not os.path.exists(
            os.path.join(out, MANIFEST)):
        raise UsageError(f"`--out`: {out!r} is a folder of other files (it has no {MANIFEST}, "
                         "so it is not the output of an earlier ctxppl run); a run replaces "
                         "its whole --out folder, so give a new or empty folder.")
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.isdir(parent):  # the nearest folder that exists must be writable
        parent = os.path.dirname(parent)
    if not os.access(parent, os.W_OK):
        raise UsageError(f"`--out`: cannot create {out!r}: no permission to write in "
                         f"{parent!r}.")


@contextlib.contextmanager
def output_folder(out: str) -> Iterator[str]:
    """A temporary folder next to ``--out`` that replaces it when the block succeeds; a run
    that fails leaves an existing ``--out`` exactly as it was (see
    :func:`ctxppl._files.replace_folder`), and a run owns its folder (no stale files)."""
    check_out(out)
    with replace_folder(out) as tmp:
        yield tmp


def plain(value: Any) -> Any:
    """numpy scalars and arrays as plain Python values (for JSON and messages)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_json(path: str, obj: Any) -> None:
    text = json.dumps(obj, indent=2, default=plain)
    atomic_write(path, lambda fh: fh.write(text.encode()))


def finish(out: str, manifest: dict, metrics: dict) -> None:
    """Write ``metrics.json`` and, last, ``manifest.json`` into ``out`` (the run's
    temporary folder)."""
    manifest["files"] = sorted(set(manifest["files"]) | {"metrics.json", MANIFEST})
    write_json(os.path.join(out, "metrics.json"), metrics)
    write_json(os.path.join(out, MANIFEST), manifest)


def report(out: str, manifest: dict, summary: pd.DataFrame, metrics: dict, say: Reporter,
           quiet: bool) -> None:
    """Print the summary table and metrics, and say where the files are."""
    if not quiet:
        with pd.option_context("display.width", 120, "display.max_columns", 20):
            print(summary.round(4).to_string(index=False))
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in metrics.items()))
    say(f"wrote {len(manifest['files'])} files to {out}")
