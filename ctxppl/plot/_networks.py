"""Per-sample networks: adjacency heatmaps or circular graphs."""

from __future__ import annotations

from typing import Any

import numpy as np

from ctxppl.plot._base import drop_unused, grid_shape, new_figure

__all__ = ["networks"]

_KINDS = ("heatmap", "graph")


def networks(adjacency: Any, *, kind: str = "heatmap", samples: Any = None,
             names: list[str] | None = None, max_panels: int = 6, threshold: float = 0.0,
             directed: bool = False, ncols: int = 3, vmax: float | None = None,
             titles: list[str] | None = None, ax: Any = None) -> Any:
    r"""Draw per-sample networks (correlations, partial correlations, precisions, DAGs).

    Args:
        adjacency: ``(p, p)`` or per-sample ``(n, p, p)`` weights (e.g.
            ``est.predict_networks(C)``), or an :class:`~ctxppl.estimators.Interval`
            (its estimate is drawn).
        kind: ``"heatmap"`` (one shared, symmetric colour scale) or ``"graph"`` (nodes on a
            circle; edge width :math:`\propto |w|`, red positive, blue negative).
        samples: Which samples to draw (indices); default up to ``max_panels`` evenly
            spaced ones.
        names: Node names.
        max_panels: Most panels drawn when ``samples`` is not given.
        threshold: Hide edges with :math:`|w| \le` ``threshold`` (graphs; heatmaps mask them).
        directed: Draw ``W[j, k]`` as an arrow ``j -> k`` (Bayesian networks); otherwise the
            upper triangle is drawn as undirected edges.
        ncols: Panels per row.
        vmax: Colour / width scale (default: the largest :math:`|w|` drawn).
        titles: Panel titles (default ``"sample i"``).
        ax: Existing Axes (one network).

    Returns:
        The matplotlib Figure.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> W = np.random.default_rng(0).normal(size=(10, 4, 4))
        >>> len(ctx.plot.networks(W, samples=[0, 5]).axes)  # 2 heatmaps + colour bar
        3
        >>> len(ctx.plot.networks(W[0], kind="graph", directed=True).axes)
        1
    """
    if kind not in _KINDS:
        raise ValueError(f"`kind` must be one of {_KINDS}; got {kind!r}.")
    A = adjacency.estimate if hasattr(adjacency, "estimate") else adjacency
    A = np.asarray(A, dtype=np.float64)
    if A.ndim == 2:
        A = A[None]
    if A.ndim != 3 or A.shape[1] != A.shape[2]:
        raise ValueError(f"`adjacency` must be (p, p) or (n, p, p); got shape "
                         f"{np.shape(adjacency)}.")
    n, p = A.shape[:2]
    if p < 2:
        raise ValueError(f"a network needs at least 2 nodes; got p={p}.")
    if samples is None:
        idx = np.unique(np.linspace(0, n - 1, min(n, max_panels)).round().astype(int))
    else:
        idx = np.asarray(samples, dtype=np.int64).reshape(-1)
        if idx.size == 0 or idx.min() < -n or idx.max() >= n:
            raise ValueError(f"`samples` must be indices in [0, {n}); got {idx.tolist()}.")
    names = [str(j) for j in range(p)] if names is None else [str(s) for s in names]
    if len(names) != p:
        raise ValueError(f"`names` must hold {p} names; got {len(names)}.")
    titles = [f"sample {i}" for i in idx] if titles is None else list(titles)
    if len(titles) != len(idx):
        raise ValueError(f"`titles` must hold {len(idx)} titles; got {len(titles)}.")
    sel = A[idx]
    if not np.all(np.isfinite(sel)):
        raise ValueError("`adjacency` contains NaN/inf values in the selected samples.")
    off = ~np.eye(p, dtype=bool)
    scale = float(vmax) if vmax is not None else float(np.abs(sel[:, off]).max() or 1.0)
    nr, nc = grid_shape(len(idx), ncols)
    fig, axes = new_figure(nr, nc, ax=ax, panel=(3.4, 3.2))
    used = drop_unused(fig, axes, len(idx))
    im = None
    for a, W, title in zip(used, sel, titles, strict=True):
        if kind == "heatmap":
            shown = np.where(np.abs(W) > threshold, W, np.nan)
            im = a.imshow(shown, cmap="RdBu_r", vmin=-scale, vmax=scale)
            a.set_xticks(range(p), names, rotation=90, fontsize=7)
            a.set_yticks(range(p), names, fontsize=7)
        else:
            _graph(a, W, names, threshold, directed, scale)
        a.set_title(title, fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=used, shrink=0.8)
    return fig


def _graph(a: Any, W: np.ndarray, names: list[str], threshold: float, directed: bool,
           scale: float) -> None:
    from matplotlib.patches import FancyArrowPatch

    p = W.shape[0]
    ang = np.pi / 2 - 2 * np.pi * np.arange(p) / p
    xy = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    if directed:
        js, ks = np.nonzero((np.abs(W) > threshold) & ~np.eye(p, dtype=bool))
    else:
        js, ks = np.nonzero(np.triu(np.abs(W) > threshold, k=1))
    for j, k in zip(js, ks, strict=True):  # edges of one drawn network
        w = W[j, k]
        style = "-|>" if directed else "-"
        a.add_patch(FancyArrowPatch(xy[j], xy[k], arrowstyle=style, mutation_scale=10,
                                    lw=0.5 + 3.5 * min(abs(w) / scale, 1.0),
                                    color="tab:red" if w > 0 else "tab:blue", alpha=0.8,
                                    shrinkA=9, shrinkB=9))
    a.scatter(xy[:, 0], xy[:, 1], s=260, c="white", edgecolors="k", zorder=3)
    for j in range(p):
        a.text(xy[j, 0], xy[j, 1], names[j], ha="center", va="center", fontsize=7, zorder=4)
    a.set_xlim(-1.3, 1.3)
    a.set_ylim(-1.3, 1.3)
    a.set_aspect("equal")
    a.axis("off")
