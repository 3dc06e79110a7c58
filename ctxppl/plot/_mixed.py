"""Random-effect caterpillar plots for :func:`ctxppl.mixed` results."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ctxppl.plot._base import drop_unused, grid_shape, new_figure

__all__ = ["caterpillar"]


def caterpillar(result: Any, group: str | None = None, *, coef: Any = None,
                level: float | None = None, sort: bool = True, max_labels: int = 40,
                ax: Any = None) -> Any:
    r"""Caterpillar plot: every group's random effect with its interval, sorted, one panel
    per coefficient.

    Intervals are :math:`\hat b \pm z_{(1+\text{level})/2}\,\mathrm{se}` with the conditional
    SDs (point fits) or posterior SDs (posterior fits) of
    :meth:`MixedResult.ranef(std_errors=True) <ctxppl.models.mixed.MixedResult.ranef>`.

    Args:
        result: A :class:`~ctxppl.models.mixed.MixedResult` (from :func:`ctxppl.mixed`), or a
            DataFrame indexed by group with columns ``<coef>`` and ``<coef>_se``.
        group: The random-effect term (needed when there are several).
        coef: Coefficient name(s) to draw (default all of the term).
        level: Interval mass (default: the result's ``level``, else 0.95).
        sort: Order groups by their estimate.
        max_labels: Label the groups on the axis when there are at most this many.
        ax: Existing Axes (one coefficient).

    Returns:
        The matplotlib Figure.

    Examples:
        >>> import numpy as np, pandas as pd, ctxppl as ctx
        >>> rng = np.random.default_rng(0)
        >>> g = np.repeat(np.arange(15), 8)
        >>> df = pd.DataFrame({"g": g, "x": rng.normal(size=120)})
        >>> df["y"] = df.x + rng.normal(size=15)[g] + 0.5 * rng.normal(size=120)
        >>> len(ctx.plot.caterpillar(ctx.mixed("y ~ x + (1 | g)", df)).axes)
        1
    """
    if isinstance(result, pd.DataFrame):
        df = result
        default_level = 0.95
    elif hasattr(result, "ranef"):
        df = result.ranef(group, std_errors=True)
        default_level = float(getattr(result, "level", 0.95))
    else:
        raise TypeError(f"`result` must be a ctx.mixed result or a DataFrame of random "
                        f"effects; got {type(result).__name__}.")
    level = default_level if level is None else float(level)
    if not 0 < level < 1:
        raise ValueError(f"`level` must be in (0, 1); got {level!r}.")
    coefs = [c for c in df.columns if not str(c).endswith("_se")]
    if coef is not None:
        wanted = [coef] if isinstance(coef, str) else list(coef)
        unknown = [c for c in wanted if c not in coefs]
        if unknown:
            raise ValueError(f"`coef` {unknown} not among the random coefficients {coefs}.")
        coefs = wanted
    if not coefs:
        raise ValueError("no random-effect coefficients to plot.")
    z = float(stats.norm.ppf(0.5 + level / 2))
    nr, nc = grid_shape(len(coefs), max_cols=3)
    G = len(df)
    fig, axes = new_figure(nr, nc, ax=ax, panel=(3.6, max(2.5, min(0.16 * G, 9.0))))
    used = drop_unused(fig, axes, len(coefs))
    labels = np.asarray([str(v) for v in df.index])
    for a, c in zip(used, coefs, strict=True):
        est = df[c].to_numpy(dtype=np.float64)
        se_col = f"{c}_se"
        se = df[se_col].to_numpy(dtype=np.float64) if se_col in df else np.full(G, np.nan)
        order = np.argsort(est) if sort else np.arange(G)
        y = np.arange(G)
        has_se = np.isfinite(se[order])
        a.errorbar(est[order], y, xerr=np.where(has_se, z * se[order], 0.0), fmt="o", ms=3,
                   lw=0.8, color="C0", ecolor="0.5")
        a.axvline(0.0, color="k", lw=0.6, ls="--")
        if G <= max_labels:
            a.set_yticks(y, labels[order], fontsize=7)
        else:
            a.set_yticks([])
            a.set_ylabel(f"{G} groups (sorted)")
        a.set_xlabel(f"{c} (±{100 * level:g}% interval)")
    return fig
