"""PNG plots written by ``ctxppl fit`` / ``ctxppl mixed`` (matplotlib, Agg backend).

Each function draws one figure to ``path`` and returns ``[path]`` (``[]`` when there is
nothing to draw).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["params_vs_context", "params_hist", "networks", "caterpillar", "loss"]

_MAX_PARAMS = 8
_MAX_CONTEXT = 3


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _main_columns(table: pd.DataFrame) -> list[str]:
    skip = {"row"}
    cols = [c for c in table.columns if not c.endswith(("_q05", "_q95")) and c not in skip
            and pd.api.types.is_numeric_dtype(table[c])]
    return cols


def params_vs_context(table: pd.DataFrame, C: np.ndarray, context: list[str], path: str
                      ) -> list[str]:
    """Every per-sample parameter against each context feature; 90% intervals as bars when
    the table has ``_q05``/``_q95`` columns."""
    plt = _plt()
    cols = [c for c in _main_columns(table) if c not in context][:_MAX_PARAMS]
    ctx_cols = context[:_MAX_CONTEXT]
    if not cols:
        return []
    nr, nc = len(cols), len(ctx_cols)
    fig, axes = plt.subplots(nr, nc, figsize=(3.6 * nc, 2.4 * nr), squeeze=False)
    for i, p in enumerate(cols):
        v = table[p].to_numpy(dtype=float)
        for j, cname in enumerate(ctx_cols):
            ax = axes[i, j]
            c = C[:, j]
            if f"{p}_q05" in table:
                lo, hi = table[f"{p}_q05"].to_numpy(), table[f"{p}_q95"].to_numpy()
                ax.vlines(c, lo, hi, color="tab:blue", alpha=0.15, lw=1)
            ax.scatter(c, v, s=4, color="tab:blue")
            if i == nr - 1:
                ax.set_xlabel(cname)
            if j == 0:
                ax.set_ylabel(p, fontsize=8)
    fig.suptitle("per-sample parameters vs context" +
                 (" (bars: 90% intervals)" if any(f"{p}_q05" in table for p in cols) else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]


def params_hist(table: pd.DataFrame, path: str) -> list[str]:
    """Histogram of every per-sample parameter across samples."""
    plt = _plt()
    cols = _main_columns(table)[:_MAX_PARAMS * 2]
    if not cols:
        return []
    nc = min(4, len(cols))
    nr = int(np.ceil(len(cols) / nc))
    fig, axes = plt.subplots(nr, nc, figsize=(3.2 * nc, 2.4 * nr), squeeze=False)
    for ax, p in zip(axes.ravel(), cols, strict=False):
        ax.hist(table[p].to_numpy(dtype=float), bins=30, color="tab:gray")
        ax.set_title(p, fontsize=8)
    for ax in axes.ravel()[len(cols):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]


def networks(mats: np.ndarray, names: list[str], C: np.ndarray, context: list[str],
             path: str, directed: bool) -> list[str]:
    """Mean network and the networks of the samples with the lowest, median and highest
    first context feature (heatmaps; rows -> columns for directed networks)."""
    plt = _plt()
    order = np.argsort(C[:, 0])
    picks = [("mean over samples", mats.mean(0))] + [
        (f"{context[0]} = {C[i, 0]:.3g}", mats[i])
        for i in (order[0], order[len(order) // 2], order[-1])]
    vmax = float(np.max(np.abs(mats))) or 1.0
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.8))
    for ax, (title, m) in zip(axes, picks, strict=True):
        im = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.8,
                 label="edge weight (row -> column)" if directed else "partial correlation")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]


def caterpillar(ranef: pd.DataFrame, name: str, path: str) -> list[str]:
    """Random effects of every group, sorted, with +-1.96 standard errors."""
    plt = _plt()
    coefs = [c for c in ranef.columns if not c.endswith("_se")]
    n = len(ranef)
    height = max(2.5, 1.2 + 0.14 * min(n, 200))
    fig, axes = plt.subplots(1, len(coefs), figsize=(3.6 * len(coefs), height), squeeze=False)
    for ax, c in zip(axes[0], coefs, strict=True):
        v = ranef[c].to_numpy(dtype=float)
        se = ranef[f"{c}_se"].to_numpy(dtype=float) if f"{c}_se" in ranef else np.zeros(n)
        o = np.argsort(v)
        y = np.arange(n)
        ax.errorbar(v[o], y, xerr=1.96 * np.nan_to_num(se[o]), fmt="o", ms=2, lw=0.8)
        ax.axvline(0, color="gray", lw=0.8)
        if n <= 60:
            ax.set_yticks(y, [str(s) for s in ranef.index[o]], fontsize=6)
        else:
            ax.set_yticks([])
        ax.set_title(f"{name}: {c}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]


def loss(history: np.ndarray, path: str) -> list[str]:
    """The optimisation loss per step (one line per bootstrap fit)."""
    h = np.asarray(history, dtype=float)
    h = h.reshape(-1, h.shape[-1]) if h.ndim else h.reshape(1, 1)
    if np.isfinite(h).sum(axis=1).max() < 2:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    for row in h:  # NaN after the last step of a fit that stopped early
        ok = np.isfinite(row)
        ax.plot(np.flatnonzero(ok) + 1, row[ok], lw=1, alpha=1.0 if len(h) == 1 else 0.6)
    ax.set_xlabel("step")
    ax.set_ylabel("loss" + (f" ({len(h)} bootstrap fits)" if len(h) > 1 else ""))
    if np.all(h[np.isfinite(h)] > 0):
        ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]
