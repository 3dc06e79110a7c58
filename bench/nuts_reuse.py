"""Repeated NUTS fits of one model on new data: ctx.fit (compiled sampler reused) vs NumPyro.

    python bench/nuts_reuse.py [--repeats 5] [--groups 50]

The seed's one-level hierarchical model (``mu_i ~ Normal(mu, tau)``, ``y_i ~ Normal(mu_i, 1)``)
fitted ``--repeats`` times, each on a new simulated data set of the same shape (what a
simulation study, a bootstrap or a CV loop does): ``ctx.fit(..., method="nuts",
progress=False)`` against the plain NumPyro a user writes (a new ``MCMC`` per data set,
``progress_bar=False``), 500 warm-up + 500 draws, 2 chains (vectorized), the same model.
Reported: the first call, the mean of the later calls, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS

sys.path.insert(0, str(Path(__file__).parent))
from _common import command, machine, write_section  # noqa: E402

import ctxppl as ctx  # noqa: E402

DRAWS = {"num_warmup": 500, "num_samples": 500, "num_chains": 2}


def build(plate):  # noqa: ANN001, ANN201
    def model(y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfNormal(2.0))
        with plate("i", y.shape[0]):
            mu_i = numpyro.sample("mu_i", dist.Normal(mu, tau))
            numpyro.sample("y", dist.Normal(mu_i, 1.0), obs=y)
    return model


def ctx_fit(model, y, key):  # noqa: ANN001, ANN201
    fit = ctx.fit(model, y, method="nuts", key=key, progress=False, chain_method="vectorized",
                  **DRAWS)
    return np.asarray(fit.samples["mu"])


def numpyro_fit(model, y, key):  # noqa: ANN001, ANN201
    mcmc = MCMC(NUTS(model), progress_bar=False, chain_method="vectorized", **DRAWS)
    mcmc.run(jax.random.key(key), y)
    return np.asarray(mcmc.get_samples()["mu"])


def timed(fn, model, ys):  # noqa: ANN001, ANN201
    out = []
    for k, y in enumerate(ys):
        t = time.perf_counter()
        draws = fn(model, y, k)
        out.append((time.perf_counter() - t, float(np.mean(draws))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--groups", type=int, default=50)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    ys = [(rng.normal(1.0, 1.0, args.groups) + rng.normal(0, 1.0, args.groups)).astype(
        np.float32) for _ in range(args.repeats)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # r_hat/divergence reports
        mine = timed(ctx_fit, build(ctx.plate), ys)
        peer = timed(numpyro_fit, build(numpyro.plate), ys)
    rows = ["| | first call s | later calls, mean s | posterior means of mu (first 3) |",
            "|---|---|---|---|"]
    for name, res in (("ctxppl `ctx.fit(method='nuts')`", mine),
                      ("NumPyro, new `MCMC` per data set", peer)):
        rows.append(f"| {name} | {res[0][0]:.2f} | {np.mean([r[0] for r in res[1:]]):.2f} | "
                    f"{', '.join(f'{r[1]:.3f}' for r in res[:3])} |")
    later = np.mean([r[0] for r in peer[1:]]) / np.mean([r[0] for r in mine[1:]])
    body = "\n".join([
        "## Repeated NUTS fits: compiled sampler reused",
        "",
        f"Command: `{command()}` ({machine()}). The seed's one-level hierarchical model with "
        f"{args.groups} groups, fitted {args.repeats} times on new data of the same shape; "
        "500 warm-up + 500 draws, 2 vectorized chains, no progress bar. NumPyro as a user "
        "writes it compiles its sampler again for every `MCMC`; `ctx.fit` keeps the compiled "
        "sampler (data and MAP values are its arguments). 1-minute load average at the end: "
        f"{os.getloadavg()[0]:.1f} (other jobs share the 2 cores: compare the ratio).",
        "",
        *rows,
        "",
        f"Later calls: ctxppl **{later:.1f}x** faster than a new NumPyro `MCMC` per data set "
        "(both include sampling; the first call of each compiles).",
    ])
    print(body)
    write_section("nuts_reuse", body)


if __name__ == "__main__":
    main()
