"""``ctxppl demo``: the seed tutorial "Death to Cluster Models" reproduced with ctxppl.

Population OLS, KMeans(15) cluster OLS and contextualized regressions fitted by MAP and SVI,
and the calibrated route (a Gaussian-process encoder, ``method="marginal"``) with the coverage
of its 90% intervals, compared on response MSE and effect-size MSE on the 5,404 unobserved
patients. The
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
    fit_seed_calibrated,
    fit_seed_map,
    tutorial_model,
)

__all__ = ["run_demo", "format_table", "plot_effects", "plot_line", "context_line"]


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
             calibrated: bool = True) -> list[dict]:
    """Run the comparison, print the table, write ``effects.png`` into ``out``.

    The same as ``ctxppl demo`` (``tests/cli/test_demo.py`` runs it). ``calibrated`` adds the
    calibrated route (a Gaussian-process encoder fitted by ``method="marginal"``) with the
    coverage of its 90% intervals and a panel of them along a line through context space.
    Returns one dict per model (``effect_mse``, ``response_mse``, ...).

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
    k_map, k_relu, k_svi, k_cal = jax.random.split(key, 4)
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

    line = None
    if calibrated:
        row, line = _calibrated_row(d, k_cal, progress)
        rows.append(row)
    print(format_table(rows))
    if out:
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, "effects.png")
        plot_effects(rows, d, path, line=line)
        print(f"\nwrote {path}")
    return rows


def _coverage(draws: np.ndarray, truth: np.ndarray, level: float = 0.9) -> tuple[float, float]:
    """Fraction of ``truth`` inside the central ``level`` intervals of ``draws`` (axis 0), and
    the intervals' mean width."""
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return float(np.mean((truth >= lo) & (truth <= hi))), float(np.mean(hi - lo))


def context_line(d: ClusterTutorialData, num: int = 161) -> tuple[np.ndarray, np.ndarray]:
    """``(t, C)``: the raw contexts ``(t, -t)``, ``t`` in [-1, 1] (through the observed disks
    at (-0.5, 0.5), (0, 0), (0.5, -0.5) and the empty space between), standardised as ``d``."""
    t = np.linspace(-1, 1, num)
    raw = np.stack([t, -t], axis=1)
    return t, ((raw - d.C_mean) / d.C_std).astype(np.float32)


def _calibrated_row(d: ClusterTutorialData, key: Any, progress: bool) -> tuple[dict, dict]:
    from ctxppl.datasets._cluster_tutorial import _effects

    fit = fit_seed_calibrated(d, key, progress=progress)
    t, C_line = context_line(d)
    # one prediction (one compiled shape) for unobserved, observed and line contexts
    C = np.concatenate([d.C_test, d.C_train, C_line])
    X = np.concatenate([d.X_test, d.X_train, np.zeros_like(C_line)])
    w = np.asarray(fit.predict(C, X, return_sites=["w"])["w"])
    n_u, n_o = len(d.C_test), len(d.C_train)
    draws, obs, w_line = w[:, :n_u], w[:, n_u:n_u + n_o], w[:, n_u + n_o:]
    cov_u, width_u = _coverage(draws, d.W_test)
    cov_o, width_o = _coverage(obs, d.W_train)
    diag = fit.diagnostics
    hyper = "positive definite" if diag.get("hyper_hessian_ok", False) else "NOT positive definite"
    note = (f"90% intervals cover {cov_u:.0%} of the unobserved patients' true effects (mean "
            f"width {width_u:.3f}), {cov_o:.0%} of the observed ({width_o:.3f}); "
            f"hyperparameter Hessian {hyper}, {diag.get('num_steps', 0)} L-BFGS steps")
    row = _row("ctxppl calibrated (HSGP, marginal)", draws.mean(0), d, diag["seconds"], note)
    row.update(coverage_unobserved=cov_u, coverage_observed=cov_o, width_unobserved=width_u,
               width_observed=width_o)
    lo, hi = np.quantile(w_line, [0.05, 0.95], axis=0)
    line = {"t": t, "mean": w_line.mean(0), "lo": lo, "hi": hi,
            "true": _effects(np.stack([t, -t], axis=1))}
    return row, line


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


def plot_effects(rows: list[dict], d: ClusterTutorialData, path: str,
                 line: dict | None = None) -> None:
    """True vs predicted effects on unobserved patients, one panel per model; with ``line``
    (from the calibrated row) a last panel of 90% intervals along the line of
    :func:`context_line`, the true effects drawn in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows) + (line is not None)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.8))
    axes = np.atleast_1d(axes)
    for ax, r in zip(axes, rows, strict=False):
        ax.scatter(d.W_test[:, 0], d.W_test[:, 1], s=3, c="lightsteelblue", label="true")
        ax.scatter(d.W_train[:, 0], d.W_train[:, 1], s=3, c="cornflowerblue",
                   label="true (observed)")
        ax.scatter(r["w_test"][:, 0], r["w_test"][:, 1], s=2, c="crimson", alpha=0.5,
                   label="predicted")
        ax.set_title(f"{r['model']}\neffect MSE {r['effect_mse']:.3f}", fontsize=8)
        ax.set_xlabel("effect of A per dose")
        ax.set_xlim(-1.6, 2.3)
        ax.set_ylim(-1.6, 2.3)
    axes[0].set_ylabel("effect of B per dose")
    axes[0].legend(fontsize=6, loc="lower right")
    if line is not None:
        plot_line(axes[-1], line)
    fig.tight_layout()
    from ctxppl._files import atomic_write

    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)


def plot_line(ax: Any, line: dict) -> None:
    """90% intervals of both effects along the context line ``(t, -t)``, the observed disks
    shaded, the true effects dashed."""
    t = line["t"]
    for lo_t in (-0.5, 0.0, 0.5):  # the disks of radius 0.1 around (t, -t) centres
        ax.axvspan(lo_t - 0.1 / np.sqrt(2), lo_t + 0.1 / np.sqrt(2), color="0.88", lw=0)
    for k, (name, color) in enumerate((("A", "crimson"), ("B", "navy"))):
        ax.fill_between(t, line["lo"][:, k], line["hi"][:, k], color=color, alpha=0.25, lw=0,
                        label=f"90% interval, effect of {name}")
        ax.plot(t, line["mean"][:, k], color=color, lw=1)
        ax.plot(t, line["true"][:, k], color="k", lw=1, ls="--",
                label="true effect" if k == 0 else None)
    ax.set_title("calibrated route along context (t, -t)\n(grey: observed disks)", fontsize=8)
    ax.set_xlabel("t")
    ax.legend(fontsize=6, loc="upper center")
