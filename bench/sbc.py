"""Simulation-based calibration (Talts et al. 2018) of ctx's posterior routes.

    python bench/sbc.py [--replications 500] [--loop 5] [--gp 200]

The seed's normal-normal hierarchical model (``mu_global ~ N(0, 0.5)``, ten
``mu_i ~ N(mu_global, 0.5)``, ``y_i ~ N(mu_i, 0.1)``) under ``ctx.fit``'s defaults for NUTS
(500 warm-up + 500 draws, 2 chains, thinned to 99 draws) and Laplace (99 draws):
``ctx.infer.sbc`` draws parameters and data from the prior, fits every data set in one
compiled, vmapped program, and ranks each true parameter among its posterior draws. Each of
the 11 rank histograms (10 bins) gets a chi-square test; the family-wise p-value is the
smallest times 11 (Bonferroni). Each method runs twice (the second call is compiled).
Side by side, the same fits as a Python loop of ``ctx.fit`` calls (compiled sampler reused;
``--loop`` of them timed, per replication).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
from numpyro.infer import Predictive

sys.path.insert(0, str(Path(__file__).parent))
from _common import ROOT, command, machine, write_section  # noqa: E402

import ctxppl as ctx  # noqa: E402

# the models of the slow SBC tests (tests/infer/test_sbc.py), so both run the same problems
_spec = importlib.util.spec_from_file_location("_ctx_sbc", ROOT / "tests" / "infer" /
                                               "test_sbc.py")
_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tests)
hierarchical, gp_regression = _tests.hierarchical, _tests.gp_regression
N = 10


def loop_seconds(method: str, n: int) -> float:
    """Seconds per replication of a Python loop of ctx.fit (after one warm-up call)."""
    ys = Predictive(hierarchical, num_samples=n + 1)(jax.random.key(9), N=N)["y_i"]
    opts = {"num_samples": 99} if method == "laplace" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # convergence reports: not timed here
        ctx.fit(hierarchical, ys[0], method=method, key=0, progress=False, **opts)
        t = time.perf_counter()
        for i in range(1, n + 1):
            ctx.fit(hierarchical, ys[i], method=method, key=i, progress=False, **opts)
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replications", type=int, default=500)
    ap.add_argument("--loop", type=int, default=5)
    ap.add_argument("--gp", type=int, default=200)
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    rows = []
    for method, key in (("nuts", 1), ("laplace", 2)):
        runs = [ctx.infer.sbc(hierarchical, None, model_kwargs={"N": N}, observed=["y_i"],
                              method=method, key=key + 10 * i, num_replications=args.replications,
                              num_draws=99, bins=10, progress=False) for i in range(2)]
        per_loop = loop_seconds(method, args.loop)
        rows.append((method, runs, per_loop))
        print(method, runs[0].pvalue, runs[1].pvalue, runs[0].seconds, runs[1].seconds,
              per_loop, flush=True)
    gp = ctx.infer.sbc(gp_regression, _tests.C_GP, _tests.X_GP, observed=["y"],
                       method="marginal", key=3, num_replications=args.gp, num_draws=99,
                       bins=10, progress=False)
    print("marginal", gp.pvalue, gp.seconds, flush=True)
    pooled = np.histogram(gp.ranks["w"].ravel(), bins=10, range=(0, 100))[0]
    lines = ["## Simulation-based calibration: NUTS, Laplace and the calibrated route", "",
             f"Command: `{command()}` ({machine()}; load average {load0:.1f} at the start, "
             f"{os.getloadavg()[0]:.1f} at the end). `ctx.infer.sbc` on the seed's normal-normal "
             "model (10 members): every replication draws (mu_global, mu_i, y) from the prior, "
             "fits y with `ctx.fit`'s defaults (NUTS: 500 + 500 draws, 2 chains, thinned to 99; "
             "Laplace: 99 draws) and ranks the truth among the draws; 10-bin chi-square test "
             "per parameter; family-wise p = min p x 11 (Bonferroni). `make test-slow` asserts "
             "family-wise p > 0.01 at 200 replications (tests/infer/test_sbc.py).", "",
             "| method | replications | p mu_global | min p mu_i (10) | family-wise p | "
             "failed fits | first call s (compiles unless cached) | again s (compiled) | per replication: "
             "sbc / ctx.fit loop |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method, (res, again), per_loop in rows:
        R = res.ranks["mu_i"].shape[0]
        per = again.seconds / R
        lines.append(
            f"| {method} | {R} (+{R}) | {float(res.pvalues['mu_global']):.3f} | "
            f"{float(np.min(res.pvalues['mu_i'])):.3f} | {res.pvalue:.3f} "
            f"({again.pvalue:.3f}) | {res.failures + again.failures} | {res.seconds:.1f} | "
            f"{again.seconds:.1f} | {per:.3f} s / {per_loop:.3f} s ({per_loop / per:.1f}x) |")
    verdict = ", ".join(f"{m} {'uniform' if r.pvalue > 0.01 else 'NOT uniform'} "
                        f"(family-wise p {r.pvalue:.3f})" for m, (r, _), _ in rows)
    lines += ["", f"At the 1% family-wise level: {verdict}. P-values are of the first run, the "
              "second run's family-wise p in brackets. One `sbc` call is one "
              "compiled program (Laplace: the fits vmapped; NUTS: `lax.map` over "
              "replications -- vmapped chains would advance in lockstep at the pace of the "
              "longest trajectory); the loop column is the same fits as separate `ctx.fit` "
              "calls with the compiled sampler reused (after a warm-up call)."]
    lines += ["", "The calibrated contextualized route: `ctx.nn.HSGP` encoder (12 basis "
              "functions, its own priors on lengthscale and amplitude) with "
              "`method=\"marginal\"`, on y = x w(c) + N(0, 0.3^2) at 30 contexts; the "
              "30 per-sample coefficients w(c_i) are ranked (a loop of `ctx.fit` calls: the "
              "marginal route's optimiser runs from the host).", "",
              "| route | replications | min p over w(c_i) (30) | family-wise p | failed fits | "
              "s | pooled rank histogram (10 bins) |", "|---|---|---|---|---|---|---|",
              f"| HSGP + marginal | {args.gp} | {float(np.min(gp.pvalues['w'])):.3f} | "
              f"{gp.pvalue:.3f} | {gp.failures} | {gp.seconds:.1f} | "
              f"{' '.join(str(int(c)) for c in pooled)} |"]
    write_section("sbc", "\n".join(lines))


if __name__ == "__main__":
    main()
