"""Contextualized model families: ctxppl estimators vs contextualized-ml 0.2.9, same data, one run.

    .venv/bin/python bench/families.py [--sizes 5000 20000] [--families ...]
        [--peer-default regressor|all|none] [--bootstraps 30] [--no-write]

For every family (regressor, classifier, correlation, Markov and Bayesian networks) and size
N, simulated data with known per-sample parameters are written to an .npz; the peer fits
them in its own venv (``bench/peers/contextualized_families_runner.py``, torch pinned to one
thread) and ctxppl fits them here with default settings. Reported: fit seconds (ctxppl split
into first call = compile + fit, and a second, compiled fit with another seed), parameter
error on held-out contexts, and ratios. The bootstrap section times ``n_bootstraps=30`` in
one ``ctx.fit_many`` call against 30 separate compiled ctxppl fits and the peer's bootstraps
(measured for a few and extrapolated linearly: the peer fits bootstraps one after another).
Writes its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
PEER_PY = ROOT / "bench" / ".venv-contextualized" / "bin" / "python"
RUNNER = ROOT / "bench" / "peers" / "contextualized_families_runner.py"
N_TEST = 1000


# ---------------------------------------------------------------------- simulations
def sim_regressor(n, rng):
    C = rng.uniform(-1, 1, (n, 2))
    X = rng.normal(size=(n, 4))
    B = np.stack([np.sin(2 * C[:, 0]) + C[:, 1], C[:, 0] ** 2 - C[:, 1], C[:, 0] * C[:, 1],
                  np.cos(C[:, 0]) + 0.5 * C[:, 1]], 1)
    mu = 0.5 * C[:, 0]
    Y = (X * B).sum(1) + mu + 0.1 * rng.normal(size=n)
    return {"C": C, "X": X, "Y": Y[:, None]}, {"beta": B, "mu": mu}


def sim_classifier(n, rng):
    C = rng.uniform(-1, 1, (n, 2))
    X = rng.normal(size=(n, 3))
    B = np.stack([2 * C[:, 0], 1 - C[:, 1], 2 * C[:, 0] * C[:, 1]], 1)
    mu = 0.3 * C[:, 1]
    p = 1 / (1 + np.exp(-((X * B).sum(1) + mu)))
    y = (rng.uniform(size=n) < p).astype(float)
    return {"C": C, "X": X, "Y": y[:, None]}, {"beta": B, "mu": mu}


def _gaussian(cov, rng):
    L = np.linalg.cholesky(cov)
    return np.einsum("nij,nj->ni", L, rng.normal(size=cov.shape[:2]))


def sim_correlation(n, rng, p=5):
    C = rng.uniform(-1, 1, (n, 2))
    R = np.tile(np.eye(p), (n, 1, 1))
    R[:, 0, 1] = R[:, 1, 0] = 0.8 * C[:, 0]
    R[:, 2, 3] = R[:, 3, 2] = 0.6 * C[:, 1]
    return {"C": C, "X": _gaussian(R, rng)}, {"network": R}


def sim_markov(n, rng, p=5):
    C = rng.uniform(-1, 1, (n, 2))
    P = np.tile(np.eye(p), (n, 1, 1))
    P[:, 0, 1] = P[:, 1, 0] = 0.4 * C[:, 0]
    P[:, 1, 2] = P[:, 2, 1] = np.where(C[:, 1] > 0, 0.3, 0.0)
    P[:, 3, 4] = P[:, 4, 3] = -0.35
    return {"C": C, "X": _gaussian(np.linalg.inv(P), rng)}, {"network": P}


def sim_bayesian(n, rng, p=5):
    C = rng.uniform(-1, 1, (n, 2))
    W = np.zeros((n, p, p))
    W[:, 0, 1] = 1.0 + 0.5 * C[:, 0]
    W[:, 1, 2] = -1.0 + 0.5 * C[:, 1] ** 2
    W[:, 0, 3] = 0.8 * C[:, 1]
    X = 0.5 * rng.normal(size=(n, p))
    for j in range(p):  # topological order 0..4
        X[:, j] += np.einsum("ni,ni->n", X, W[:, :, j])
    return {"C": C, "X": X}, {"network": W}


# Extra ctxppl rows with a shorter budget, for families where the peer's best setting stops
# early at a much larger error: the speed ratio at matched (not better) accuracy.
MATCHED = {"bayesian": {"max_epochs": 2}}

SIMS = {"regressor": sim_regressor, "classifier": sim_classifier,
        "correlation": sim_correlation, "markov": sim_markov, "bayesian": sim_bayesian}


def error(family, params, truth):
    """Parameter error on the test contexts (see docs/benchmarks.md for each metric)."""
    if family in ("regressor", "classifier"):
        betas, mus = params
        return float(np.mean((np.asarray(betas)[:, 0] - truth["beta"]) ** 2))
    net = np.asarray(params)
    off = ~np.eye(net.shape[-1], dtype=bool)
    return float(np.mean((net[:, off] - truth["network"][:, off]) ** 2))


# ---------------------------------------------------------------------- ctxppl side
def ctx_estimator(family, **kw):
    from ctxppl import estimators as E

    cls = {"regressor": E.ContextualizedRegressor, "classifier": E.ContextualizedClassifier,
           "correlation": E.ContextualizedCorrelationNetworks,
           "markov": E.ContextualizedMarkovNetworks,
           "bayesian": E.ContextualizedBayesianNetworks}[family]
    return cls(**kw)


def ctx_params(family, est, C):
    if family in ("regressor", "classifier"):
        return est.predict_params(C)
    if family == "correlation":
        return est.predict_networks(C)
    if family == "markov":
        return est.predict_precisions(C)
    return est.predict_networks(C)  # DAG-projected


def ctx_fit(family, train, **kw):
    est = ctx_estimator(family, **kw)
    t0 = time.perf_counter()
    if "Y" in train:
        y = train["Y"][:, 0]
        est.fit(train["C"], train["X"], y)
    else:
        est.fit(train["C"], train["X"])
    return est, time.perf_counter() - t0


def run_ctx(family, train, test, truth, **kw):
    _, first = ctx_fit(family, train, random_state=0, **kw)
    est, second = ctx_fit(family, train, random_state=1, **kw)
    return {"first_s": first, "fit_s": second, "compile_s": max(first - second, 0.0),
            "error": error(family, ctx_params(family, est, test["C"]), truth)}


# ---------------------------------------------------------------------- peer side
def run_peer(family, npz, setting, bootstraps=1, seed=0):
    with tempfile.NamedTemporaryFile(suffix=".npz", delete=False) as f:
        out = f.name
    cmd = [str(PEER_PY), str(RUNNER), npz, out, "--family", family, "--setting", setting,
           "--bootstraps", str(bootstraps), "--seed", str(seed), "--threads", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"peer runner failed ({family}, {setting}):\n{res.stderr[-3000:]}")
    info = json.loads(res.stdout.strip().splitlines()[-1])
    data = np.load(out)
    params = (data["params"], data["mus"]) if "mus" in data.files else data["params"]
    os.unlink(out)
    return info, params


def write_npz(path, train, test):
    arrays = {f"{k}_train": v for k, v in train.items()}
    arrays["C_test"] = test["C"]
    np.savez(path, **arrays)


# ---------------------------------------------------------------------- bootstraps
def bench_bootstraps(train, B, peer_npz, peer_measure):
    from ctxppl.estimators import ContextualizedRegressor

    y = train["Y"][:, 0]
    t0 = time.perf_counter()
    ContextualizedRegressor(n_bootstraps=B, random_state=0).fit(train["C"], train["X"], y)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    ContextualizedRegressor(n_bootstraps=B, random_state=1).fit(train["C"], train["X"], y)
    many = time.perf_counter() - t0
    ContextualizedRegressor(random_state=0).fit(train["C"], train["X"], y)  # compile
    t0 = time.perf_counter()
    for s in range(B):
        ContextualizedRegressor(random_state=100 + s).fit(train["C"], train["X"], y)
    separate = time.perf_counter() - t0
    info, _ = run_peer("regressor", peer_npz, "best", bootstraps=peer_measure)
    peer = info["fit_seconds"] / peer_measure * B
    return {"B": B, "many_first_s": first, "many_s": many, "separate_s": separate,
            "peer_measured_s": info["fit_seconds"], "peer_measured_B": peer_measure,
            "peer_s": peer}


# ---------------------------------------------------------------------- report
def fmt(x, nd=2):
    return f"{x:.{nd}f}" if x < 100 else f"{x:.0f}"


def table(rows, boot, cmd):
    head = ("| family | N | ctxppl compiled fit (s) | ctxppl compile (s) | peer best (s) | "
            "peer default (s) | ratio vs best (compiled / incl. compile) | ctxppl error | "
            "peer best error | peer default error |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        pd_s = fmt(r["peer_default_s"]) if r.get("peer_default_s") else "n/a"
        pd_e = f"{r['peer_default_error']:.4f}" if r.get("peer_default_error") is not None \
            else "n/a"
        ratio = f"{r['peer_best_s'] / r['fit_s']:.0f}x / {r['peer_best_s'] / r['first_s']:.1f}x"
        lines.append(f"| {r['family']} | {r['N']} | {fmt(r['fit_s'])} | {fmt(r['compile_s'])} "
                     f"| {fmt(r['peer_best_s'])} | {pd_s} | {ratio} | {r['error']:.4f} | "
                     f"{r['peer_best_error']:.4f} | {pd_e} |")
    out = "\n".join(lines)
    if boot:
        out += (
            f"\n\nBootstraps (regressor, N={boot['N']}, B={boot['B']}): one `ctx.fit_many` call "
            f"{fmt(boot['many_s'])} s compiled ({fmt(boot['many_first_s'])} s with compile); "
            f"{boot['B']} separate compiled ctxppl fits {fmt(boot['separate_s'])} s; peer "
            f"(`train_batch_size=64`) {fmt(boot['peer_s'])} s, extrapolated from "
            f"{boot['peer_measured_B']} bootstraps measured in {fmt(boot['peer_measured_s'])} s. "
            f"Ratios: {boot['peer_s'] / boot['many_s']:.0f}x vs the peer, "
            f"{boot['separate_s'] / boot['many_s']:.1f}x vs separate compiled fits.")
    out += f"\n\nCommand: `{cmd}`"
    return out


METRICS = """Parameter error on 1,000 held-out contexts: regressor/classifier -- mean squared
error of the per-sample coefficients; correlation -- of the off-diagonal correlations;
Markov -- of the off-diagonal precision entries (unit-diagonal truth; the peer's
`predict_precisions` assumes unit diagonals); Bayesian -- of the DAG-projected adjacency
matrices (both libraries project with the same thresholding rule). Peer times are its
`fit` call (torch on one thread); "best" is `train_batch_size=64`, "default" batch size 1.
ctxppl "compiled fit" is a second fit (new seed) after a first call that compiled; the
compile column is the difference."""


def update_docs(text):
    path = ROOT / "docs" / "benchmarks.md"
    start, end = "<!-- bench:families -->", "<!-- /bench:families -->"
    section = f"{start}\n## Model families vs contextualized-ml 0.2.9\n\n{text}\n\n{METRICS}\n{end}"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in old and end in old:
        new = old[:old.index(start)] + section + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(new)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    ap.add_argument("--families", nargs="+", default=list(SIMS))
    ap.add_argument("--large-families", nargs="+", default=["regressor"],
                    help="families also run at sizes > 5000")
    ap.add_argument("--peer-default", default="regressor",
                    help="families for which the peer's default setting also runs")
    ap.add_argument("--bootstraps", type=int, default=30)
    ap.add_argument("--peer-boot-measure", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    cmd = "python bench/families.py " + " ".join(sys.argv[1:])
    if not PEER_PY.exists():
        subprocess.run(["bash", str(ROOT / "bench" / "peers" / "setup_contextualized.sh")],
                       check=True)
    rows, boot = [], None
    tmp = tempfile.mkdtemp()
    for n in a.sizes:
        for fam in a.families:
            if n > 5000 and fam not in a.large_families:
                continue
            rng = np.random.default_rng(n)
            train, _ = SIMS[fam](n, rng)
            test, truth = SIMS[fam](N_TEST, np.random.default_rng(n + 1))
            npz = os.path.join(tmp, f"{fam}_{n}.npz")
            write_npz(npz, train, test)
            r = {"family": fam, "N": n, **run_ctx(fam, train, test, truth)}
            info, params = run_peer(fam, npz, "best")
            r["peer_best_s"], r["peer_best_error"] = info["fit_seconds"], error(fam, params,
                                                                                 truth)
            r["peer_best_epochs"] = info["epochs"]
            if a.peer_default in ("all", fam) and n == min(a.sizes):
                info, params = run_peer(fam, npz, "default")
                r["peer_default_s"] = info["fit_seconds"]
                r["peer_default_error"] = error(fam, params, truth)
            rows.append(r)
            print(json.dumps(r), flush=True)
            if fam in MATCHED:
                kw = MATCHED[fam]
                label = ", ".join(f"{k}={v}" for k, v in kw.items())
                m = {**r, "family": f"{fam} ({label})",
                     **run_ctx(fam, train, test, truth, **kw)}
                m.pop("peer_default_s", None)
                m.pop("peer_default_error", None)
                rows.append(m)
                print(json.dumps(m), flush=True)
            if fam == "regressor" and n == min(a.sizes) and a.bootstraps > 1:
                boot = {"N": n, **bench_bootstraps(train, a.bootstraps, npz,
                                                   a.peer_boot_measure)}
                print(json.dumps(boot), flush=True)
    text = (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
            f"(shared); ctxppl on CPU JAX.\n\n" + table(rows, boot, cmd))
    print(text)
    if not a.no_write:
        update_docs(text)


if __name__ == "__main__":
    main()
