"""lme4 (through R) as the peer of ``ctx.mixed``: fits, fresh-process runs, peak memory.

``bench/peers/setup_lme4.sh`` installs R and lme4 from Debian's packages where it can; when
R or lme4 is missing :func:`lme4_missing` says why and the benchmark leaves the lme4 columns
empty. Each lme4 fit runs ``bench/peers/lme4_runner.R`` on a CSV; its time is
``system.time`` around ``lmer``/``glmer`` only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "lme4_runner.R"

_MISSING: list[str | None] = []


def lme4_missing() -> str | None:
    """``None`` when R and lme4 work, else the reason (after trying the set-up once)."""
    if not _MISSING:
        subprocess.run(["bash", str(HERE / "setup_lme4.sh")], check=False)
        try:
            out = subprocess.run(["Rscript", "-e", "suppressMessages(library(lme4))"],
                                 capture_output=True, text=True, timeout=120)
            _MISSING.append(None if out.returncode == 0 else
                            f"library(lme4) failed: {out.stderr.strip()[-200:]}")
        except (OSError, subprocess.TimeoutExpired) as e:
            _MISSING.append(f"no working Rscript ({type(e).__name__}: {e})")
    return _MISSING[0]


def run_lme4(csv: Path, formula: str, family: str = "gaussian",
             factors: tuple[str, ...] = (), peak: bool = False) -> dict:
    """One lme4 fit: ``fit_seconds`` (lmer/glmer only), ``process_seconds`` (the whole
    Rscript run: R start-up, ``library(lme4)``, ``read.csv``, fit), estimates, logLik;
    ``peak``: also ``peak_mb``, the R process's peak resident memory (GNU time)."""
    argv = ["Rscript", str(RUNNER), str(csv), formula, family, ",".join(factors)]
    return run_r(argv, peak)


def run_r(argv: list[str], peak: bool = False) -> dict:
    """Run an R script printing one JSON line; ``process_seconds`` and, with ``peak``, the
    peak resident memory ``peak_mb`` (``/usr/bin/time``; None where it is missing)."""
    timer = Path("/usr/bin/time")
    wrap = [str(timer), "-f", "MAXRSS_KB %M"] if peak and timer.exists() else []
    t0 = time.perf_counter()
    out = subprocess.run(wrap + argv, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_seconds"] = wall
    if peak:
        kb = [ln.split()[1] for ln in out.stderr.splitlines() if ln.startswith("MAXRSS_KB")]
        res["peak_mb"] = float(kb[-1]) / 1024 if kb else None
    return res


_FRESH = """
import time, resource
t0 = time.perf_counter()
import pandas as pd
import ctxppl as ctx
d = pd.read_csv({csv!r})
{convert}
res = ctx.mixed({formula!r}, d, **{opts!r})
res.fixed_effects
t1 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print({{"in_process_seconds": t1 - t0, "peak_mb": float(peak), "loglik":
       float(res.loglik if res.loglik is not None else -0.5 * res.deviance),
       "loglik_se": None if res.deviance_se is None else 0.5 * float(res.deviance_se),
       "fit_seconds": float(res.diagnostics["seconds"]["total"]),
       "layout": res.diagnostics.get("layout"),
       "est": [float(v) for v in res.params] + [float(v) for v in res.random_effects["sd"]]}})
"""


def fresh_ctxppl(csv: Path, formula: str, opts: dict, categorical: tuple[str, ...] = (),
                 python: str = sys.executable) -> dict:
    """``ctx.mixed`` in a new Python process (imports, CSV, fit, table): its wall time from
    process start, and its peak resident memory (MiB)."""
    convert = "\n".join(f"d[{c!r}] = d[{c!r}].astype(str)" for c in categorical)
    code = _FRESH.format(csv=str(csv), convert=convert, formula=formula, opts=opts)
    t0 = time.perf_counter()
    out = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    res = eval(out.stdout.strip().splitlines()[-1], {})  # noqa: S307 - our own dict literal
    res["process_seconds"] = wall
    return res


def write_csv(df: pd.DataFrame, folder: str | Path, name: str) -> Path:
    path = Path(folder) / f"{name}.csv"
    df.to_csv(path, index=False)
    return path


def temp_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="ctxppl-mixed-bench-")
