"""Heatmap of heterogeneity-test p-values."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ctxppl.plot._base import new_figure

__all__ = ["heterogeneity"]


def _from_frame(df: pd.DataFrame) -> tuple[np.ndarray, list[str], list[str]]:
    cols = {c.lower(): c for c in df.columns}
    ctx_c = cols.get("context")
    pred_c = cols.get("predictor")
    tgt_c = cols.get("target") or cols.get("outcome")
    p_c = cols.get("pvals") or cols.get("pvalue")
    if ctx_c is None or pred_c is None or p_c is None:
        raise ValueError("`pvals` DataFrame needs columns Context, Predictor and Pvals (from "
                         "test_each_context) or context, predictor and pvalue (from "
                         f"effects_table); got {list(df.columns)}.")
    col = df[pred_c].astype(str)
    if tgt_c is not None and df[tgt_c].nunique() > 1:
        col = col + " → " + df[tgt_c].astype(str)
    table = pd.DataFrame({"row": df[ctx_c].astype(str), "col": col,
                          "p": df[p_c].astype(float)})
    if table.duplicated(["row", "col"]).any():
        raise ValueError("`pvals` has several rows per (context, predictor, target).")
    wide = table.pivot(index="row", columns="col", values="p")
    wide = wide.reindex(index=pd.unique(table["row"]), columns=pd.unique(table["col"]))
    return wide.to_numpy(), list(wide.index), list(wide.columns)


def heterogeneity(pvals: Any, *, alpha: float = 0.05, context_names: list[str] | None = None,
                  predictor_names: list[str] | None = None, annotate: bool = True,
                  cmap: str = "viridis", ax: Any = None, title: str | None = None) -> Any:
    r"""Heatmap of heterogeneity tests: rows are context features, columns predictors (and
    outcomes), colour is :math:`-\log_{10} p`; cells with :math:`p \le` ``alpha`` are
    starred.

    Args:
        pvals: The DataFrame of :func:`ctxppl.analysis.test_each_context` or
            :func:`ctxppl.analysis.effects_table`, or the array of
            :func:`ctxppl.analysis.calc_heterogeneous_predictor_effects_pvals`
            ``(n_contexts, n_predictors, *outcomes)``.
        alpha: Significance level for the stars.
        context_names: Labels of the context features (array input).
        predictor_names: Labels of the predictors (array input).
        annotate: Print p-values in the cells.
        cmap: Colour map.
        ax: Existing Axes.
        title: Axes title.

    Returns:
        The matplotlib Figure (heatmap and colour bar).

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> fig = ctx.plot.heterogeneity(np.array([[0.001, 0.5], [0.2, 0.04]]))
        >>> len(fig.axes)
        2
    """
    if not 0 < alpha < 1:
        raise ValueError(f"`alpha` must be in (0, 1); got {alpha!r}.")
    if isinstance(pvals, pd.DataFrame):
        P, rows, cols = _from_frame(pvals)
    else:
        arr = np.asarray(pvals, dtype=np.float64)
        if arr.ndim < 2:
            raise ValueError(f"`pvals` must be (n_contexts, n_predictors, ...); got shape "
                             f"{arr.shape}.")
        d, p = arr.shape[:2]
        rest = arr.shape[2:]
        P = arr.reshape(d, -1)
        rows = context_names or [f"c{j}" for j in range(d)]
        preds = predictor_names or [f"x{k}" for k in range(p)]
        if len(rows) != d or len(preds) != p:
            raise ValueError(f"need {d} `context_names` and {p} `predictor_names`; got "
                             f"{len(rows)} and {len(preds)}.")
        n_out = int(np.prod(rest)) if rest else 1
        cols = [preds[k] if n_out == 1 else f"{preds[k]} → y{o}" for k in range(p)
                for o in range(n_out)]
    finite = P[np.isfinite(P)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise ValueError("`pvals` must lie in [0, 1].")
    score = -np.log10(np.clip(P, 1e-300, 1.0))
    fig, axes = new_figure(ax=ax, figsize=(1.0 + 0.9 * len(cols), 1.0 + 0.55 * len(rows))
                           if ax is None else None)
    a = axes[0, 0]
    im = a.imshow(score, cmap=cmap, aspect="auto", vmin=0.0,
                  vmax=max(float(np.nanmax(score)) if finite.size else 1.0, -np.log10(alpha)))
    a.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=8)
    a.set_yticks(range(len(rows)), rows, fontsize=8)
    a.set_xlabel("predictor")
    a.set_ylabel("context")
    if annotate:
        top = np.nanmax(score) if finite.size else 1.0
        for (r, c), v in np.ndenumerate(P):
            if not np.isfinite(v):
                continue
            star = "*" if v <= alpha else ""
            a.text(c, r, f"{v:.2g}{star}", ha="center", va="center", fontsize=7,
                   color="white" if score[r, c] < 0.6 * top else "black")
    fig.colorbar(im, ax=a, label=r"$-\log_{10}\,p$")
    if title:
        a.set_title(title)
    return fig
