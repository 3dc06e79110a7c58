"""``ctx.plate`` costs nothing: NUTS on the seed's hierarchical model, ctx.plate vs numpyro.plate.

    python bench/plate_overhead.py [--repeats 5]

Both models compile to the same program (ctx.plate only adds trace-time Python), so the ratio
should be 1 within noise. Runs alternate A/B to share the machine's noise; each timed run
reuses the compiled sampler (``jit_model_args=True``), compile time is reported separately.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS, Predictive

sys.path.insert(0, str(Path(__file__).parent))
from _common import command, machine, write_section  # noqa: E402

import ctxppl as ctx  # noqa: E402


def build(plate):
    def model(ys=None, N=None):
        if ys is not None:
            N = ys.shape[0]
        mu_global = numpyro.sample("mu_global", dist.Normal(0.0, 0.5))
        with plate("N", N):
            mu_i = numpyro.sample("mu_i", dist.Normal(mu_global, 0.5))
            numpyro.sample("y_i", dist.Normal(mu_i, 0.1), obs=ys)

    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    lines = ["## ctx.plate overhead (NUTS, seed hierarchical model)", "",
             f"Command: `{command()}` ({machine()}). 1,000 warmup + 1,000 samples, one chain; "
             f"median of {args.repeats} alternating runs of the compiled sampler.", "",
             "| N | numpyro.plate s | ctx.plate s | ratio ctx/numpyro | compile s (numpyro / ctx) |",
             "|---|---|---|---|---|"]
    for n in (10, 1000):
        ys = Predictive(build(numpyro.plate), num_samples=1)(jax.random.key(0), N=n)["y_i"][0]
        runners, compile_s = {}, {}
        for name, plate in (("numpyro", numpyro.plate), ("ctx", ctx.plate)):
            mcmc = MCMC(NUTS(build(plate)), num_warmup=1000, num_samples=1000,
                        progress_bar=False, jit_model_args=True)
            t = time.perf_counter()
            mcmc.run(jax.random.key(1), ys=ys)
            jax.block_until_ready(mcmc.get_samples())
            compile_s[name] = time.perf_counter() - t
            runners[name] = mcmc
        times = {"numpyro": [], "ctx": []}
        for r in range(args.repeats):
            for name in (("numpyro", "ctx") if r % 2 == 0 else ("ctx", "numpyro")):
                t = time.perf_counter()
                runners[name].run(jax.random.key(2 + r), ys=ys)
                jax.block_until_ready(runners[name].get_samples())
                times[name].append(time.perf_counter() - t)
        a, b = np.median(times["numpyro"]), np.median(times["ctx"])
        lines.append(f"| {n} | {a:.3f} | {b:.3f} | {b / a:.3f} | {compile_s['numpyro']:.2f} / "
                     f"{compile_s['ctx']:.2f} |")
        print(lines[-1], flush=True)
    lines.append("\nTarget: ratio within 5% of 1.")
    write_section("plate_overhead", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
