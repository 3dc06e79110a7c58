"""Figure helpers shared by every ctxppl plot.

Figures are built with :class:`matplotlib.figure.Figure` directly, never through pyplot: no
global figure registry (nothing to close, no "too many figures" warning), no backend switch
(``matplotlib.use`` is never called), safe on headless machines and in threads. A Figure is
displayed by Jupyter when it is a cell's value; elsewhere call ``fig.savefig("plot.png")``.
Every plot also takes ``ax=`` to draw into an existing single panel.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["new_figure", "grid_shape", "drop_unused", "band", "as_2d_float", "quantiles"]

PANEL = (3.6, 3.0)


def grid_shape(k: int, ncols: int | None = None, max_cols: int = 4) -> tuple[int, int]:
    """Rows and columns for ``k`` panels."""
    if k < 1:
        raise ValueError("nothing to plot (0 panels).")
    nc = max(1, min(k, ncols or max_cols))
    return math.ceil(k / nc), nc


def new_figure(nrows: int = 1, ncols: int = 1, *, ax: Any = None,
               figsize: tuple[float, float] | None = None, sharex: bool = False,
               sharey: bool = False, panel: tuple[float, float] = PANEL) -> tuple[Any, np.ndarray]:
    """A pyplot-free Figure with an ``(nrows, ncols)`` array of Axes, or ``ax``'s figure."""
    if ax is not None:
        if nrows * ncols != 1:
            raise ValueError(f"`ax` holds one panel, but this plot draws {nrows * ncols}; omit "
                             "`ax` (a new figure is made) or select fewer panels.")
        if not hasattr(ax, "figure") or not hasattr(ax, "plot"):
            raise TypeError(f"`ax` must be a matplotlib Axes; got {type(ax).__name__}.")
        return ax.figure, np.array([[ax]])
    from matplotlib.figure import Figure

    size = figsize or (panel[0] * ncols, panel[1] * nrows)
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex, sharey=sharey)
    return fig, axes


def drop_unused(fig: Any, axes: np.ndarray, k: int) -> list[Any]:
    """Delete the panels after the first ``k``; return the used ones."""
    flat = list(axes.flat)
    for a in flat[k:]:
        fig.delaxes(a)
    return flat[:k]


def quantiles(draws: np.ndarray, interval: float, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed ``interval`` bounds over ``axis``."""
    if not 0 < interval < 1:
        raise ValueError(f"`interval` must be in (0, 1); got {interval!r}.")
    q = (1 - interval) / 2
    lo, hi = np.quantile(draws, [q, 1 - q], axis=axis)
    return lo, hi


def band(ax: Any, x: np.ndarray, draws: np.ndarray, interval: float, *, color: Any = None,
         label: str | None = None, transform: Any = None) -> None:
    """Mean line of ``draws`` ``(S, len(x))`` and its interval band (no band for one draw);
    a monotone ``transform`` (e.g. ``np.exp``) is applied to the summaries."""
    f = (lambda v: v) if transform is None else transform
    mean = draws.mean(axis=0)
    (line,) = ax.plot(x, f(mean), color=color, label=label, lw=1.6)
    if draws.shape[0] > 1:
        lo, hi = quantiles(draws, interval)
        ax.fill_between(x, f(lo), f(hi), color=line.get_color(), alpha=0.25, lw=0)


def as_2d_float(name: str, x: Any, *, allow_1d: bool = True) -> np.ndarray:
    """A finite float array of 2 dims (1-D becomes one column when allowed)."""
    arr = np.asarray(x.to_numpy() if hasattr(x, "to_numpy") else x)
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"`{name}` must be numeric; got dtype {arr.dtype}.") from e
    if arr.ndim == 1 and allow_1d:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"`{name}` must be 2-D (samples, parameters); got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` contains NaN/inf values.")
    return arr
