"""``ctxppl demo``: the seed tutorial "Death to Cluster Models" reproduced with ctxppl.

Population OLS, KMeans(15) cluster OLS and contextualized regressions fitted by MAP, SVI and
NUTS, compared on response MSE and effect-size MSE on the 5,404 unobserved patients. The
tutorial's models live beside its data (``ctxppl.datasets``).
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

import jax
import numpy as np

import ctxppl as ctx
from ctxppl.datasets import ClusterTutorialData, cluster_tutorial
from ctxppl.datasets._cluster_tutorial import (
    _DEFAULT_MODEL,
    _DEFAULT_OPTIMIZER,
    TUTORIAL_FIGURES,
    bayesian_tutorial_model,
    fit_seed_map,
    tutorial_model,
)

__all__ = ["run_demo", "format_table", "plot_effects"]


def _ols(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(X, y, rcond=None)[0]


def _mse(a: Any, b: Any) -> float:
    return float(np.mean((np.asarray(a) - np.asarray(b)) ** 2))


def _row(name: str, w_test: Any, d: ClusterTutorialData, seconds: float, note: str = "") -> dict:
    w_test = np.asarray(w_test)
    y_hat = np.sum(d.X_test * w_test, axis=-1)
    return {"model": name, "response_mse": _mse(y_hat, d.Y_test),
            "effect_mse": _mse(w_test, d.W_test), "seconds": seconds, "note": note,
            "w_test": w_test}


def run_demo(seed: int = 0, out: str | None = "demo_out", progress: bool = True,
             nuts: bool = True) -> list[dict]:
    """Run the comparison, print the table, write ``effects.png`` into ``out``.

    Takes about 20 s without NUTS (``tests/cli/test_demo.py`` runs it); the same as
    ``ctxppl demo``. Returns one dict per model (``effect_mse``, ``response_mse``, ...).

    Examples:
        >>> TUTORIAL_FIGURES["contextualized"]  # what the tutorial reports
        (0.032, 0.048)
    """
    from sklearn.cluster import KMeans

    d = cluster_tutorial(seed=seed)
    rows = []
    t = time.perf_counter()
    w = _ols(d.X_train, d.Y_train)
    rows.append(_row("population OLS", np.tile(w, (len(d.X_test), 1)), d,
                     time.perf_counter() - t))

    t = time.perf_counter()
    km = KMeans(n_clusters=15, n_init=10, random_state=seed).fit(d.C_train)
    coefs = np.stack([_ols(d.X_train[km.labels_ == k], d.Y_train[km.labels_ == k])
                      for k in range(15)])
    rows.append(_row("KMeans(15) cluster OLS", coefs[km.predict(d.C_test)], d,
                     time.perf_counter() - t))

    key = jax.random.key(seed)
    k_map, k_relu, k_svi, k_nuts = jax.random.split(key, 4)
    fit = fit_seed_map(d, k_map, progress=progress)
    rows.append(_row("ctxppl MAP (MLP 25x2, swish)", fit.predict(d.C_test, d.X_test)["w"], d,
                     fit.diagnostics["seconds"], "incl. compile"))
    relu = tutorial_model(activation="relu")
    fit_r = fit_seed_map(d, k_relu, model=relu, progress=progress)
    rows.append(_row("ctxppl MAP (MLP 25x2, relu)", fit_r.predict(d.C_test, d.X_test)["w"], d,
                     fit_r.diagnostics["seconds"], "the tutorial's activation"))

    svi = ctx.fit(_DEFAULT_MODEL, d.C_train, d.X_train, d.Y_train, method="svi", key=k_svi,
                  num_steps=3000, optimizer=_DEFAULT_OPTIMIZER, progress=progress)
    with warnings.catch_warnings():
        # the encoder is point-estimated, so the draws of `w` have zero width (ctx says so);
        # this row reports only their mean
        warnings.filterwarnings("ignore", message=".*carry no posterior uncertainty",
                                category=RuntimeWarning)
        w_svi = svi.predict(d.C_test, d.X_test)["w"].mean(0)
    rows.append(_row("ctxppl SVI (AutoNormal)", w_svi, d, svi.diagnostics["seconds"],
                     "encoder point-estimated: no per-patient uncertainty"))

    if nuts:
        with warnings.catch_warnings():
            # r_hat of individual network weights is meaningless (hidden units can swap);
            # we report r_hat of the per-patient effects instead.
            warnings.filterwarnings("ignore", message=".*r_hat.*", category=RuntimeWarning)
            nf = ctx.fit(bayesian_tutorial_model(), d.C_train, d.X_train, d.Y_train,
                         method="nuts", key=k_nuts, num_warmup=300, num_samples=300,
                         num_chains=2, progress=progress, on_failure="warn")
        draws = np.asarray(nf.predict(d.C_test, d.X_test)["w"])  # (draws, n, 2)
        lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
        cover = float(np.mean((d.W_test >= lo) & (d.W_test <= hi)))
        from numpyro.diagnostics import split_gelman_rubin

        by_chain = draws.reshape(2, -1, *draws.shape[1:])
        rhat_w = float(np.nanmax(split_gelman_rubin(by_chain)))
        rows.append(_row("ctxppl NUTS (Bayesian MLP 8x1)", draws.mean(0), d,
                         nf.diagnostics["seconds"],
                         f"90% interval covers {cover:.0%} of true effects; max r_hat(w) "
                         f"{rhat_w:.2f}; {nf.diagnostics['divergences']} divergences"))
    print(format_table(rows))
    if out:
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, "effects.png")
        plot_effects(rows, d, path)
        print(f"\nwrote {path}")
    return rows


def format_table(rows: list[dict]) -> str:
    """The demo's comparison as a Markdown table."""
    lines = ["| model | response MSE | effect MSE (unobserved) | fit s | note |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['response_mse']:.4f} | {r['effect_mse']:.4f} | "
                     f"{r['seconds']:.2f} | {r['note']} |")
    fig = TUTORIAL_FIGURES
    lines.append(f"\nTutorial's figures (response / effect MSE): population "
                 f"{fig['population'][0]}/{fig['population'][1]}, cluster {fig['cluster'][0]}/"
                 f"{fig['cluster'][1]}, contextualized {fig['contextualized'][0]}/"
                 f"{fig['contextualized'][1]}.")
    return "\n".join(lines)


def plot_effects(rows: list[dict], d: ClusterTutorialData, path: str) -> None:
    """True vs predicted effects on unobserved patients, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.8), sharex=True,
                             sharey=True)
    for ax, r in zip(np.atleast_1d(axes), rows, strict=True):
        ax.scatter(d.W_test[:, 0], d.W_test[:, 1], s=3, c="lightsteelblue", label="true")
        ax.scatter(d.W_train[:, 0], d.W_train[:, 1], s=3, c="cornflowerblue",
                   label="true (observed)")
        ax.scatter(r["w_test"][:, 0], r["w_test"][:, 1], s=2, c="crimson", alpha=0.5,
                   label="predicted")
        ax.set_title(f"{r['model']}\neffect MSE {r['effect_mse']:.3f}", fontsize=8)
        ax.set_xlabel("effect of A per dose")
    np.atleast_1d(axes)[0].set_ylabel("effect of B per dose")
    np.atleast_1d(axes)[0].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    from ctxppl._files import atomic_write

    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)
