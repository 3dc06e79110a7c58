"""Contextualized regression at scale: ctxppl vs contextualized-ml 0.2.9, and growth with N.

    python bench/scale.py [--skip-peer-default] [--max-n 1000000]

Data: 10 context and 10 predictor features, W = tanh(C A), y = x.w + N(0, 0.1^2),
C, x ~ N(0, I), A ~ N(0, 1/10). N = 20,000 train / 5,000 test. The peer runs its default
estimator and its best setting (train_batch_size=64), torch pinned to one thread. ctxppl: MAP,
MLP 32x2 swish encoder, 3,000 Adam steps on minibatches of 512 (cosine decay). Then minibatch
SVI at N = 10^3 ... 10^6 in fresh processes: fit time, samples/s and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import command, machine, run_peer, write_section  # noqa: E402

CHILD = r"""
import json, resource, sys, time
import jax, jax.numpy as jnp, numpy as np, numpyro, numpyro.distributions as dist, optax
sys.path.insert(0, {bench!r})
from scale import data, model
import ctxppl as ctx
n, method, steps, bs = {n}, {method!r}, {steps}, {bs}
C, X, Y, W = data(n, seed=0)
tx = optax.adam(optax.cosine_decay_schedule(1e-2, steps, alpha=0.01))
opts = dict(num_steps=steps, optimizer=tx, tol=0.0, progress=False, batch_size=bs, plate="n")
if method == "svi":
    opts.update(num_samples=10)
t = time.perf_counter()
fit = ctx.fit(model, C, X, Y, method=method, key=0, **opts)
first = time.perf_counter() - t
t = time.perf_counter()
fit = ctx.fit(model, C, X, Y, method=method, key=1, **opts)
second = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(dict(n=n, first=first, compiled=second, rss_mb=rss,
                      samples_per_s=steps * bs / second)))
"""


def data(n: int, seed: int = 0, p: int = 10):
    rng = np.random.default_rng(seed)
    A = np.random.default_rng(12345).normal(0, 1 / np.sqrt(p), (p, p))
    C = rng.normal(size=(n, p)).astype(np.float32)
    X = rng.normal(size=(n, p)).astype(np.float32)
    W = np.tanh(C @ A)
    Y = ((X * W).sum(1) + 0.1 * rng.normal(size=n)).astype(np.float32)
    return C, X, Y, W


def model(C, X, Y=None):  # noqa: ANN001, ANN201
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    import ctxppl as ctx

    enc = ctx.encoder("enc", ctx.nn.MLP(C.shape[-1], X.shape[-1], width=32, depth=2,
                                        activation="swish"))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with ctx.plate("n", C.shape[0], context=C):
        w = ctx.contextual("w", enc)
        x = numpyro.subsample(X, event_dim=1)
        y = None if Y is None else numpyro.subsample(Y, event_dim=0)
        numpyro.sample("y", dist.Normal(jnp.sum(x * w, -1), sigma), obs=y)


def ctxppl_fit(C, X, Y, key, steps=3000, bs=512):  # noqa: ANN001, ANN201
    import optax

    import ctxppl as ctx

    tx = optax.adam(optax.cosine_decay_schedule(1e-2, steps, alpha=0.01))
    return ctx.fit(model, C, X, Y, key=key, num_steps=steps, optimizer=tx, tol=0.0,
                   batch_size=bs, plate="n", progress=False)


def child(n: int, method: str, steps: int, bs: int) -> dict:
    code = CHILD.format(bench=str(Path(__file__).parent), n=n, method=method, steps=steps,
                        bs=bs)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-peer-default", action="store_true",
                    help="skip the peer's default estimator (about 4 minutes)")
    ap.add_argument("--max-n", type=int, default=1_000_000)
    args = ap.parse_args()
    C, X, Y, W = data(25_000)
    tr, te = slice(0, 20_000), slice(20_000, 25_000)
    peer = {}
    with tempfile.NamedTemporaryFile(suffix=".npz") as f:
        np.savez(f.name, C_train=C[tr], X_train=X[tr], Y_train=Y[tr, None], C_test=C[te],
                 X_test=X[te], Y_test=Y[te, None], W_test=W[te])
        settings = ["batch64"] + ([] if args.skip_peer_default else ["default"])
        for s in settings:
            peer[s] = run_peer(f.name, s, 0)
            print(s, peer[s], flush=True)
    # ctxppl: first fit (compile included), then compiled fits
    t = time.perf_counter()
    fit = ctxppl_fit(C[tr], X[tr], Y[tr], 0)
    fit.predict(C[te], X[te])
    first = time.perf_counter() - t
    times, mses = [], []
    for k in (1, 2):
        t = time.perf_counter()
        fit = ctxppl_fit(C[tr], X[tr], Y[tr], k)
        w = np.asarray(fit.predict(C[te], X[te])["w"])
        times.append(time.perf_counter() - t)
        mses.append(float(np.mean((w - W[te]) ** 2)))
    ct, cm = float(np.mean(times)), float(np.mean(mses))
    lines = ["## Scale: contextualized regression, 10 context x 10 predictors, W = tanh(CA)", "",
             f"Command: `{command()}` ({machine()}).", "",
             "| fit | seconds | effect MSE (5,000 test) |", "|---|---|---|"]
    for s, r in peer.items():
        lines.append(f"| contextualized-ml 0.2.9, {s} | {r['fit_seconds']:.1f} | "
                     f"{r['effect_mse']:.4f} |")
    lines.append(f"| ctxppl MAP, first call (compile + fit + predict) | {first:.2f} | "
                 f"{mses[0]:.5f} |")
    lines.append(f"| ctxppl MAP, compiled (mean of 2 seeds) | {ct:.2f} | {cm:.5f} |")
    best = peer["batch64"]["fit_seconds"]
    lines += ["", f"Speed-up over the peer's best setting (batch 64): **{best / ct:.0f}x "
              f"compiled, {best / first:.0f}x including compilation**; effect MSE "
              f"{cm:.5f} vs {peer['batch64']['effect_mse']:.4f} (targets: <= 0.0027 and "
              ">= 10x).", "",
              "Minibatch SVI (AutoNormal over sigma, encoder point-estimated), 2,000 steps of "
              "512, each N in a fresh process (peak RSS of that process):", "",
              "| N | first call s (compile + fit) | compiled fit s | samples/s | peak RSS MB |",
              "|---|---|---|---|---|"]
    n = 1000
    while n <= args.max_n:
        r = child(n, "svi", 2000, 512)
        lines.append(f"| {n:,} | {r['first']:.2f} | {r['compiled']:.2f} | "
                     f"{r['samples_per_s']:,.0f} | {r['rss_mb']:.0f} |")
        print(lines[-1], flush=True)
        n *= 10
    lines.append("\nWith subsampling the cost of a step does not depend on N (indices are drawn "
                 "with replacement, O(batch)); the data only has to fit in memory once.")
    write_section("scale", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
