"""Plots of per-sample parameters: true vs predicted, and parameters along a context axis."""

from __future__ import annotations

from typing import Any

import numpy as np

from ctxppl.analysis._effects import (
    _grid_params,
)
from ctxppl.analysis._source import (
    check_context,
    check_model,
    names_of,
    param_draws,
    resolve_index,
)
from ctxppl.plot._base import as_2d_float, band, drop_unused, grid_shape, new_figure, quantiles
from ctxppl.plot._panels import panel_positions, param_labels

__all__ = ["true_vs_predicted", "params_vs_context"]

_KINDS = ("space", "diagonal")


def _pred_summary(predicted: Any, n: int, d: int, interval: float
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(mean, lower, upper)`` of predictions given as ``(n, d)``, draws ``(S, n, d)`` or an
    ``Interval``."""
    if hasattr(predicted, "estimate") and hasattr(predicted, "lower"):
        est = np.asarray(predicted.estimate, dtype=np.float64)
        if est.ndim == 3:  # per-draw estimates
            est = est.mean(axis=0)
        est = est.reshape(est.shape[0], -1)
        lo = np.asarray(predicted.lower, dtype=np.float64).reshape(est.shape)
        hi = np.asarray(predicted.upper, dtype=np.float64).reshape(est.shape)
    else:
        p = np.asarray(predicted, dtype=np.float64)
        if p.ndim == 3:
            lo, hi = quantiles(p, interval)
            est = p.mean(axis=0)
        else:
            est = as_2d_float("predicted", p)
            lo = hi = None
    if est.shape != (n, d):
        raise ValueError(f"`predicted` must match `true` ({n} samples x {d} parameters), or "
                         f"have a leading draws axis; got {np.shape(predicted)}.")
    if not np.all(np.isfinite(est)):
        raise ValueError("`predicted` contains NaN/inf values.")
    return est, lo, hi


def true_vs_predicted(true: Any, predicted: Any, *, kind: str = "space",
                      observed: Any = None, highlight: Any = None, dims: tuple[int, int] = (0, 1),
                      names: list[str] | None = None, interval: float = 0.95, ax: Any = None,
                      title: str | None = None) -> Any:
    r"""True against predicted per-sample effects, as in the seed tutorial "Death to Cluster
    Models".

    ``kind="space"`` scatters the samples in the plane of two parameters (``dims``): true
    effects (light blue; ``observed`` training samples darker), predicted effects (red) and
    the ``highlight`` ed samples' true (orange) and predicted (gold) effects.
    ``kind="diagonal"`` draws one panel per parameter, predicted against true with the
    :math:`y=x` line, interval bars when ``predicted`` has draws, and the MSE in the title.

    Args:
        true: True effects ``(n, d)``.
        predicted: Predicted effects ``(n, d)``, draws ``(S, n, d)`` or an
            :class:`~ctxppl.estimators.Interval`.
        kind: ``"space"`` or ``"diagonal"``.
        observed: True effects of the observed (training) samples ``(m, d)`` (space only).
        highlight: Indices of samples of interest (space only).
        dims: The two parameters of the plane (space only).
        names: Parameter names.
        interval: Interval mass for draws.
        ax: Existing Axes (space, or diagonal with one parameter).
        title: Figure title.

    Returns:
        The matplotlib Figure.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> w = np.random.default_rng(0).normal(size=(50, 2))
        >>> fig = ctx.plot.true_vs_predicted(w, w + 0.1, highlight=[0, 1])
        >>> len(fig.axes), len(ctx.plot.true_vs_predicted(w, w, kind="diagonal").axes)
        (1, 2)
    """
    if kind not in _KINDS:
        raise ValueError(f"`kind` must be one of {_KINDS}; got {kind!r}.")
    t = as_2d_float("true", true)
    n, d = t.shape
    est, lo, hi = _pred_summary(predicted, n, d, interval)
    names = [f"w{j}" for j in range(d)] if names is None else [str(s) for s in names]
    if len(names) != d:
        raise ValueError(f"`names` must hold {d} names; got {len(names)}.")
    if kind == "space":
        if d < 2:
            raise ValueError("kind='space' needs at least 2 parameters; use kind='diagonal'.")
        i, j = (resolve_index(k, names, "dims") for k in dims)
        fig, axes = new_figure(ax=ax, panel=(5.0, 4.2))
        a = axes[0, 0]
        a.scatter(t[:, i], t[:, j], s=8, c="lightsteelblue", label="true effects")
        if observed is not None:
            o = as_2d_float("observed", observed)
            if o.shape[1] != d:
                raise ValueError(f"`observed` must have {d} columns like `true`; got "
                                 f"{o.shape[1]}.")
            a.scatter(o[:, i], o[:, j], s=8, c="cornflowerblue",
                      label="true effects (observed samples)")
        a.scatter(est[:, i], est[:, j], s=6, c="crimson", alpha=0.6, label="predicted effects")
        if highlight is not None:
            h = np.asarray(highlight).reshape(-1)
            if h.dtype == bool:
                if h.shape != (n,):
                    raise ValueError(f"boolean `highlight` must have {n} entries.")
                h = np.flatnonzero(h)
            if h.size and (h.min() < -n or h.max() >= n):
                raise ValueError(f"`highlight` indices must be in [0, {n}); got {h.tolist()}.")
            a.scatter(t[h, i], t[h, j], s=30, c="darkorange", label="true (highlighted)")
            a.scatter(est[h, i], est[h, j], s=30, c="gold", edgecolors="k", lw=0.5,
                      label="predicted (highlighted)")
        a.set_xlabel(names[i])
        a.set_ylabel(names[j])
        a.legend(fontsize=7, loc="best")
    else:
        nr, nc = grid_shape(d)
        fig, axes = new_figure(nr, nc, ax=ax)
        used = drop_unused(fig, axes, d)
        for k, a in enumerate(used):
            if lo is not None:
                yerr = np.stack([est[:, k] - lo[:, k], hi[:, k] - est[:, k]])
                a.errorbar(t[:, k], est[:, k], yerr=np.clip(yerr, 0, None), fmt="o", ms=2,
                           lw=0.5, alpha=0.6, color="crimson")
            else:
                a.scatter(t[:, k], est[:, k], s=6, c="crimson", alpha=0.6)
            lims = [min(t[:, k].min(), est[:, k].min()), max(t[:, k].max(), est[:, k].max())]
            a.plot(lims, lims, "k--", lw=0.8)
            mse = float(np.mean((t[:, k] - est[:, k]) ** 2))
            a.set_title(f"{names[k]}  (MSE {mse:.3g})", fontsize=9)
            a.set_xlabel("true")
            a.set_ylabel("predicted")
    if title:
        fig.suptitle(title)
    return fig


def params_vs_context(model: Any, C: Any, *, context: int | str = 0, param: str = "beta",
                      index: Any = None, interval: float = 0.95, reference: Any = None,
                      n_vis: int = 100, show_samples: bool = True, max_panels: int = 12,
                      ax: Any = None) -> Any:
    r"""Per-sample parameters against one context feature, with uncertainty bands.

    For a fitted model each panel shows one parameter: the curve along a grid of the context
    feature (others at ``reference``) with its interval band over bootstraps / posterior
    draws, and every sample's own estimate with its interval (grey) at its observed context.
    Given an array of per-sample draws instead of a model, only the samples are drawn.

    Args:
        model: Fitted estimator / :class:`~ctxppl.analysis.FitParams`, or per-sample
            parameters ``(n, k)`` / draws ``(S, n, k)``.
        C: Contexts ``(n, n_contexts)``.
        context: The context feature (index or name) on the x axis.
        param: ``"beta"`` (coefficients) or ``"mu"`` (intercepts) of a model.
        index: Which parameters: a flat index, a position tuple, a predictor / outcome
            name, or a list of these (default: all, up to ``max_panels``).
        interval: Band / bar mass.
        reference: Other context features' value on the grid (see
            :func:`ctxppl.analysis.get_heterogeneous_predictor_effects`).
        n_vis: Grid points.
        show_samples: Draw the per-sample estimates.
        max_panels: Most panels drawn.
        ax: Existing Axes (one parameter).

    Returns:
        The matplotlib Figure.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> C = np.linspace(-1, 1, 30)[:, None]
        >>> draws = C[None, :, :] * np.random.default_rng(0).normal(1, 0.1, (20, 1, 2))
        >>> len(ctx.plot.params_vs_context(draws, C).axes)
        2
    """
    if param not in ("beta", "mu"):
        raise ValueError(f"`param` must be 'beta' or 'mu'; got {param!r}.")
    if hasattr(model, "predict_params"):
        check_model(model)
        Cc = check_context(model, C)
        c_names = names_of(model, "context_names_", Cc.shape[1], "c", C)
        j = resolve_index(context, c_names, "context")
        c_vis, betas, mus = _grid_params(model, Cc, None, n_vis, reference, param == "mu")
        grid = (betas if param == "beta" else mus)[j]  # (S, n_vis, *shape)
        shape = grid.shape[2:]
        samples = None
        if show_samples:
            dr = param_draws(model, Cc)
            samples = dr.betas if param == "beta" else dr.mus
        labels = param_labels(model, shape, param)
        x_grid = c_vis[:, j]
    else:
        arr = np.asarray(model, dtype=np.float64)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise ValueError(f"per-sample parameters must be (n, k) or draws (S, n, k); got "
                             f"shape {np.shape(model)}.")
        Cc = as_2d_float("C", C, allow_1d=True)
        if Cc.shape[0] != arr.shape[1]:
            raise ValueError(f"`C` has {Cc.shape[0]} rows but the parameters have "
                             f"{arr.shape[1]} samples.")
        c_names = names_of(None, "", Cc.shape[1], "c", C)
        j = resolve_index(context, c_names, "context")
        grid, x_grid, samples = None, None, arr
        shape = arr.shape[2:]
        labels = [f"{param}[{k}]" for k in range(int(np.prod(shape)))]
    pos = panel_positions(shape, index, labels, max_panels)
    nr, nc = grid_shape(len(pos))
    fig, axes = new_figure(nr, nc, ax=ax, sharex=True)
    used = drop_unused(fig, axes, len(pos))
    order = np.argsort(Cc[:, j])
    for a, k in zip(used, pos, strict=True):
        if samples is not None:
            s = samples.reshape(samples.shape[:2] + (-1,))[:, order, k]  # (S, n)
            m = s.mean(axis=0)
            if s.shape[0] > 1:
                lo, hi = quantiles(s, interval)
                a.errorbar(Cc[order, j], m, yerr=np.stack([m - lo, hi - m]).clip(0), fmt="o",
                           ms=2, lw=0.4, color="0.55", alpha=0.6, zorder=1)
            else:
                a.scatter(Cc[order, j], m, s=5, color="0.45", alpha=0.7, zorder=1)
        if grid is not None:
            g = grid.reshape(grid.shape[:2] + (-1,))[:, :, k]
            band(a, x_grid, g, interval, color="C0")
        a.set_title(labels[k], fontsize=9)
        a.set_xlabel(c_names[j])
    return fig
