"""Size and power of the heterogeneity test of ``ctxppl.analysis`` over independent data sets.

    python bench/null_pvalues.py [--null 200] [--alt 100]

Each replication simulates ``y = x . beta(c) + N(0, 1)`` (n = 200, two context features
``c ~ U(-1, 1)``, two predictors ``x ~ N(0, 1)``, ``beta_0(c) = 1 + gamma c_0``,
``beta_1 = -0.5``), fits it as ``ctx.analysis.test_each_context`` does by default (a
varying-coefficient model linear in the context, bootstrap refits in one compiled
``fit_many`` call) and computes ``calc_heterogeneous_predictor_effects_pvals`` for the four
(context, predictor) pairs. Size: the fraction of p-values below 0.05 with ``gamma = 0``
(4 x ``--null`` p-values); power: the fraction for the pair (c0, x0) with ``gamma > 0``.
The replications are the ones of ``tests/analysis/_null.py`` (also run by
``make test-slow``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import warnings
from pathlib import Path

import numpy as np
from scipy import stats

from ctxppl import analysis as A

sys.path.insert(0, str(Path(__file__).parent))
from _common import ROOT, command, machine, write_section  # noqa: E402

_spec = importlib.util.spec_from_file_location("_ctx_null", ROOT / "tests" / "analysis" /
                                               "_null.py")
null = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(null)


def interval(k: int, m: int) -> str:
    """Clopper-Pearson 95% interval of a binomial fraction."""
    lo = stats.beta.ppf(0.025, k, m - k + 1) if k else 0.0
    hi = stats.beta.ppf(0.975, k + 1, m - k) if k < m else 1.0
    return f"[{lo:.3f}, {hi:.3f}]"


def ideal_bootstrap(draws: int, rule: str, effects: int = 100_000) -> float:
    """Rejection rate at 0.05 of a null effect from an ideal Gaussian bootstrap: estimate
    ~ N(0, 1), ``draws`` bootstrap replicates ~ N(estimate, 1); ``rule`` "plain" is the
    normal tail with the sample SD (the former normal rule), "t" ctx's."""
    rng = np.random.default_rng(0)
    d = rng.normal(size=effects)[None] + rng.normal(size=(draws, effects))
    m, s = d.mean(0), d.std(0, ddof=1)
    if rule == "plain":
        p = 2 * stats.norm.sf(np.abs(m) / s)
    else:
        p = A.sign_pvalue(d, 0, method="normal")
    return float(np.mean(p < 0.05))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--null", type=int, default=200)
    ap.add_argument("--alt", type=int, default=100)
    ap.add_argument("--mlp", type=int, default=20)
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    size_rows, power_rows = [], []
    for boot in (100, 20):
        R = args.null if boot == 100 else args.null // 2
        with warnings.catch_warnings():  # 20 bootstraps: the count rule says it cannot reject
            warnings.filterwarnings("ignore", message=".*smallest two-sided p-value")
            pvals, sec = null.replicate(R, bootstraps=boot, seed=1)
        for method, p in pvals.items():
            k, m = int(np.sum(p < 0.05)), p.size
            level = null.count_level(boot) if method == "count" else 0.05
            size_rows.append(f"| {boot} | {method} | {R} | {m} | {k / m:.4f} {interval(k, m)} | "
                             f"{level:.4f} | {sec:.2f} |")
            print(boot, method, k / m, flush=True)
    mlp_rows = []
    if args.mlp:
        pvals, sec = null.replicate(args.mlp, bootstraps=40, seed=3, model={})
        for method, p in pvals.items():
            k, m = int(np.sum(p < 0.05)), p.size
            level = null.count_level(40) if method == "count" else 0.05
            mlp_rows.append(f"| 40 | {method} | {args.mlp} | {m} | {k / m:.4f} "
                            f"{interval(k, m)} | {level:.4f} | {np.median(p):.2f} | "
                            f"{sec:.2f} |")
            print("mlp", method, k / m, float(np.median(p)), flush=True)
    for gamma in (0.25, 0.5):
        pvals, sec = null.replicate(args.alt, bootstraps=100, gamma=gamma, seed=2)
        for method, p in pvals.items():
            hit = p[:, 0, 0] < 0.05
            others = p.reshape(len(p), -1)[:, 1:] < 0.05
            power_rows.append(f"| {gamma} | {method} | {args.alt} | {hit.mean():.3f} "
                              f"{interval(int(hit.sum()), hit.size)} | {others.mean():.3f} | "
                              f"{sec:.2f} |")
            print(gamma, method, hit.mean(), flush=True)
    lines = [
        "## Heterogeneity p-values: size under the null, power", "",
        f"Command: `{command()}` ({machine()}; load average {load0:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end). Independent data sets, n = 200, "
        "`y = x . beta(c) + N(0, 1)`, `beta_0(c) = 1 + gamma c_0`; each fitted as "
        "`test_each_context` fits by default (linear in the context, bootstraps in one "
        "`fit_many` call), p-values of `calc_heterogeneous_predictor_effects_pvals` for the "
        "4 (context, predictor) pairs. 95% Clopper-Pearson intervals in brackets. "
        "`make test-slow` asserts the 200-replication size in [0.02, 0.08] and within its "
        "binomial error of the level (tests/analysis/test_pvals.py).", "",
        "Size (gamma = 0): fraction of p-values below 0.05.", "",
        "| bootstraps | rule | replications | p-values | fraction < 0.05 | exact level | "
        "s per replication |",
        "|---|---|---|---|---|---|---|", *size_rows, "",
        "The count rule's p-values are 2 (1 + k) / (B + 1) (k bootstraps across zero): its "
        "level is the largest such value below 0.05 -- 4/101 = 0.0396 with 100 bootstraps, "
        "and none at all with contextualized-ml's 20 (the smallest p-value is 2/21 = 0.095), "
        "which was `test_each_context`'s default: a 5% test that could never reject. It now "
        "defaults to 100 bootstraps and warns when the count rule cannot reach 0.05. The "
        "normal rule now uses Student's t with S - 1 degrees of freedom and the predictive "
        "spread s sqrt(1 + 1/S) (the chance that one more draw falls across zero); with an "
        "ideal Gaussian bootstrap (100,000 simulated null effects) the former plain normal "
        f"tail rejected {ideal_bootstrap(20, 'plain'):.1%} of them at 20 draws and "
        f"{ideal_bootstrap(100, 'plain'):.1%} at 100, the t rule "
        f"{ideal_bootstrap(20, 't'):.1%} and {ideal_bootstrap(100, 't'):.1%}.", "",
        "The estimators' default network (`ContextualizedRegressor()`: MLP archetypes) "
        "under the same null, 40 bootstraps (not what `test_each_context` fits by default):",
        "", "| bootstraps | rule | replications | p-values | fraction < 0.05 | exact level | "
        "median p | s per replication |", "|---|---|---|---|---|---|---|---|", *mlp_rows, "",
        "Far below the level: with the network the test is conservative (its null p-values "
        "pile up near 1, so it also loses power). A likely cause: the bootstrap refits of a "
        "non-convex network start from different random initialisations, and their spread "
        "adds optimisation noise to sampling noise. Use the linear varying-coefficient model "
        "(the default of `test_each_context`) for tests of heterogeneity.", "",
        "Power (gamma > 0, pair (c0, x0)); the other three pairs stay null.", "",
        "| gamma | rule | replications | power at 0.05 | fraction < 0.05 of the null pairs | "
        "s per replication |",
        "|---|---|---|---|---|---|", *power_rows]
    write_section("null_pvalues", "\n".join(lines))


if __name__ == "__main__":
    main()
