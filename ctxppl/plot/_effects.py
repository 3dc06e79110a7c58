"""Plots of per-sample parameters and of the effects in :mod:`ctxppl.analysis`."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import numpy as np

from ctxppl.analysis._effects import (
    _grid_params,
    get_heterogeneous_predictor_effects,
    get_homogeneous_context_effects,
    get_homogeneous_predictor_effects,
)
from ctxppl.analysis._source import (
    check_context,
    check_model,
    names_of,
    param_draws,
    resolve_index,
)
from ctxppl.plot._base import as_2d_float, band, drop_unused, grid_shape, new_figure, quantiles

__all__ = ["true_vs_predicted", "params_vs_context", "plot_homogeneous_context_effects",
           "plot_homogeneous_predictor_effects", "plot_heterogeneous_predictor_effects",
           "ngam_effects"]

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


def _positions(shape: tuple[int, ...], index: Any, labels: list[str], max_panels: int,
               arg: str = "index") -> list[int]:
    """Flat positions into a parameter block of ``shape`` selected by ``index``."""
    size = int(np.prod(shape)) if shape else 1
    if index is None:
        pos = list(range(size))
    else:
        items = index if isinstance(index, list) else [index]
        pos = []
        for it in items:
            if isinstance(it, str):
                hits = [k for k, lab in enumerate(labels) if lab == it or
                        lab.endswith(f", {it}]") or lab.endswith(f"[{it}]")]
                if not hits:
                    raise ValueError(f"`{arg}` {it!r} matches no parameter; parameters are "
                                     f"{labels[:20]}.")
                pos.extend(hits)
            elif isinstance(it, tuple):
                if len(it) != len(shape) or any(not 0 <= v < s for v, s in zip(it, shape,
                                                                            strict=True)):
                    raise ValueError(f"`{arg}` {it} is not a position in parameters of shape "
                                     f"{shape}.")
                pos.append(int(np.ravel_multi_index(it, shape)))
            elif isinstance(it, (int, np.integer)) and 0 <= int(it) < size:
                pos.append(int(it))
            else:
                raise ValueError(f"`{arg}` entries must be flat ints in [0, {size}), tuples of "
                                 f"shape {shape} or names; got {it!r}.")
    if len(pos) > max_panels:
        raise ValueError(f"{len(pos)} parameters selected but at most {max_panels} panels are "
                         f"drawn; choose some with `{arg}=` (e.g. {labels[:3]}) or raise "
                         "`max_panels`.")
    return pos


def _labels(model: Any, shape: tuple[int, ...], param: str, Y: Any = None) -> list[str]:
    """``beta[y, x]`` style labels for a parameter block (predictors on the last axis)."""
    if not shape:
        return [param]
    names_per_axis: list[list[str]] = []
    for a, s in enumerate(shape):
        if param == "beta" and a == len(shape) - 1:
            names_per_axis.append(names_of(model, "feature_names_", s, "x"))
        elif a == 0:
            from ctxppl.analysis._pvals import _target_names

            names_per_axis.append(_target_names(model, Y, s))
        else:
            names_per_axis.append([str(v) for v in range(s)])
    return [f"{param}[{', '.join(names_per_axis[a][i] for a, i in enumerate(ix))}]"
            for ix in np.ndindex(*shape)]


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
        labels = _labels(model, shape, param)
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
    pos = _positions(shape, index, labels, max_panels)
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


def _exp_shift(draws: np.ndarray, exponentiate: bool, relative: bool) -> dict[str, Any]:
    """contextualized-ml's presentation: curves relative to the mean curve's minimum, then
    exponentiated for classifiers (odds ratios; summaries are taken on the link scale)."""
    if relative:
        draws = draws - draws.mean(axis=0).min()
    return {"draws": draws, "transform": np.exp if exponentiate else None}


def _band(a: Any, x: np.ndarray, shifted: dict[str, Any], interval: float) -> None:
    band(a, x, shifted["draws"], interval, transform=shifted["transform"])


def _is_classifier(model: Any, classification: bool | None) -> bool:
    if classification is not None:
        return bool(classification)
    return hasattr(model, "classes_")


def plot_homogeneous_context_effects(model: Any, C: Any, *, classification: bool | None = None,
                                     relative: bool = True, interval: float = 0.95,
                                     C_vis: Any = None, n_vis: int = 100, reference: Any = None,
                                     outcome: Any = None, max_panels: int = 24) -> Any:
    r"""Direct effect of each context feature on the outcomes (the intercept :math:`\mu` along
    the feature), with bands over bootstraps / posterior draws. One panel per (outcome,
    context feature).

    Args:
        model: Fitted estimator / :class:`~ctxppl.analysis.FitParams` (with ``mu``).
        C: Contexts ``(n, n_contexts)``.
        classification: Exponentiate (odds ratios); default: when ``model`` is a classifier.
        relative: Shift every curve so its mean's minimum is 0 (1 after exponentiation), as
            contextualized-ml.
        interval: Band mass.
        C_vis: Optional grid ``(n_vis, n_contexts)`` instead of the even one over the range of
            ``C``.
        n_vis: Grid points per context feature.
        reference: Value of the other context features on the grid: ``"mean"`` (default), ``"zero"``
            or an array.
        outcome: Which intercepts (flat index, position, name or list); default all.
        max_panels: Most panels drawn.

    Returns:
        The matplotlib Figure.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> class Toy:
        ...     def predict_params(self, C, individual_preds=False):
        ...         return np.zeros((5, len(C), 1, 1)), np.stack([C[:, :1]] * 5)
        >>> len(ctx.plot.plot_homogeneous_context_effects(Toy(), np.eye(3)[:, :2]).axes)
        2
    """
    c_vis, eff = get_homogeneous_context_effects(model, C, C_vis=C_vis, n_vis=n_vis,
                                                 reference=reference)  # (d, S, n_vis, *M)
    d = eff.shape[0]
    shape = eff.shape[3:]
    labels = _labels(model, shape, "mu")
    pos = _positions(shape, outcome, labels, max(1, max_panels // d), "outcome")
    c_names = names_of(model, "context_names_", d, "c", C)
    expo = _is_classifier(model, classification)
    flat = eff.reshape(eff.shape[:3] + (-1,))
    fig, axes = new_figure(len(pos), d)
    for r, k in enumerate(pos):
        for j in range(d):
            a = axes[r, j]
            _band(a, c_vis[:, j], _exp_shift(flat[j, :, :, k], expo, relative), interval)
            a.set_xlabel(c_names[j])
            a.set_ylabel(("odds ratio: " if expo else "effect on ") + labels[k], fontsize=8)
    return fig


def plot_homogeneous_predictor_effects(model: Any, C: Any, X: Any, *,
                                       classification: bool | None = None,
                                       relative: bool = True, interval: float = 0.95,
                                       C_vis: Any = None, n_vis: int = 100, outcome: Any = 0,
                                       max_panels: int = 24) -> Any:
    r"""Context-invariant effect of each predictor on an outcome: the average coefficient
    times the predictor over its range, :math:`\bar\beta_k x_k`, with bands over bootstraps /
    posterior draws; panels ordered by the size of the effect.

    Args:
        model: Fitted estimator / :class:`~ctxppl.analysis.FitParams`.
        C: Contexts to average the coefficients over.
        X: Predictors ``(n, n_predictors)`` (their ranges and names).
        classification: Exponentiate (odds ratios); default: when ``model`` is a classifier.
        relative: Shift every curve so its mean's minimum is 0 (1 after exponentiation).
        interval: Band mass.
        C_vis: Optional other contexts to average over.
        n_vis: Points along each predictor.
        outcome: Which outcome (flat index, position or name) when there are several.
        max_panels: Most panels drawn.

    Returns:
        The matplotlib Figure.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> class Toy:
        ...     def predict_params(self, C, individual_preds=False):
        ...         return np.ones((5, len(C), 1, 2)), np.zeros((5, len(C), 1))
        >>> fig = ctx.plot.plot_homogeneous_predictor_effects(Toy(), np.zeros((4, 1)),
        ...                                                   np.eye(4)[:, :2])
        >>> len(fig.axes)
        2
    """
    Xa = as_2d_float("X", X, allow_1d=True)
    _, eff = get_homogeneous_predictor_effects(model, C, C_vis=C_vis)  # (p, S, *O)
    p = eff.shape[0]
    if Xa.shape[1] != p:
        raise ValueError(f"`X` must have {p} columns (one per predictor); got {Xa.shape[1]}.")
    shape = eff.shape[2:]
    out_labels = _labels(model, shape, "y") if shape else ["y"]
    k = _positions(shape, outcome, out_labels, 1, "outcome")[0] if shape else 0
    flat = eff.reshape(eff.shape[:2] + (-1,))[:, :, k]  # (p, S)
    x_names = names_of(model, "feature_names_", p, "x", X)
    x_vis = np.linspace(Xa.min(axis=0), Xa.max(axis=0), n_vis)  # (n_vis, p)
    impact = np.abs(flat.mean(axis=1) * np.ptp(x_vis, axis=0))
    order = np.argsort(-impact)[:max_panels]
    expo = _is_classifier(model, classification)
    nr, nc = grid_shape(len(order))
    fig, axes = new_figure(nr, nc)
    used = drop_unused(fig, axes, len(order))
    for a, j in zip(used, order, strict=True):
        curves = flat[j][:, None] * x_vis[None, :, j]  # (S, n_vis)
        _band(a, x_vis[:, j], _exp_shift(curves, expo, relative), interval)
        a.set_xlabel(x_names[j])
        a.set_ylabel(("odds ratio" if expo else "influence") + f" on {out_labels[k]}",
                     fontsize=8)
    return fig


def plot_heterogeneous_predictor_effects(model: Any, C: Any, X: Any = None, *,
                                         interval: float = 0.95, C_vis: Any = None,
                                         n_vis: int = 100, reference: Any = None,
                                         outcome: Any = 0, min_effect_size: float = 0.0,
                                         max_panels: int = 24) -> Any:
    r"""How each predictor's coefficient changes along each context feature
    (:math:`\beta_k(c_j) - \overline{\beta_k}`), with bands over bootstraps / posterior draws.
    Rows: context features; columns: predictors.

    Args:
        model: Fitted estimator / :class:`~ctxppl.analysis.FitParams`.
        C: Contexts ``(n, n_contexts)``.
        X: Predictors (only their names are used; optional).
        interval: Band mass.
        C_vis: Optional grid ``(n_vis, n_contexts)`` instead of the even one over the range of
            ``C``.
        n_vis: Grid points per context feature.
        reference: Value of the other context features on the grid: ``"mean"`` (default), ``"zero"``
            or an array.
        outcome: Which outcome (flat index, position or name).
        min_effect_size: Skip (context, predictor) pairs whose mean curve never exceeds this
            in absolute value.
        max_panels: Most panels drawn.

    Returns:
        The matplotlib Figure.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> class Toy:
        ...     def predict_params(self, C, individual_preds=False):
        ...         b = np.stack([C[:, :2]] * 5)[:, :, None, :]
        ...         return b, np.zeros(b.shape[:3])
        >>> len(ctx.plot.plot_heterogeneous_predictor_effects(Toy(), np.eye(3)[:, :2]).axes)
        4
    """
    c_vis, eff = get_heterogeneous_predictor_effects(model, C, C_vis=C_vis, n_vis=n_vis,
                                                     reference=reference)
    d, p = eff.shape[:2]
    shape = eff.shape[4:]
    out_labels = _labels(model, shape, "y") if shape else ["y"]
    k = _positions(shape, outcome, out_labels, 1, "outcome")[0] if shape else 0
    flat = eff.reshape(eff.shape[:4] + (-1,))[..., k]  # (d, p, S, n_vis)
    keep = [(j, i) for j in range(d) for i in range(p)
            if np.abs(flat[j, i].mean(axis=0)).max() > min_effect_size]
    if not keep:
        raise ValueError(f"no heterogeneous effect exceeds `min_effect_size`={min_effect_size}.")
    if len(keep) > max_panels:
        raise ValueError(f"{len(keep)} (context, predictor) pairs to draw but `max_panels` is "
                         f"{max_panels}; raise it or `min_effect_size`.")
    c_names = names_of(model, "context_names_", d, "c", C)
    x_names = names_of(model, "feature_names_", p, "x", X)
    rows = sorted({j for j, _ in keep})
    cols = sorted({i for _, i in keep})
    fig, axes = new_figure(len(rows), len(cols))
    for r, j in enumerate(rows):
        for c, i in enumerate(cols):
            a = axes[r, c]
            if (j, i) not in keep:
                fig.delaxes(a)
                continue
            band(a, c_vis[:, j], flat[j, i], interval)
            a.axhline(0.0, color="k", lw=0.5, ls=":")
            a.set_xlabel(c_names[j])
            a.set_ylabel(f"influence of {x_names[i]} on {out_labels[k]}", fontsize=8)
    return fig


def ngam_effects(encoder: Any, C: Any = None, *, params: Any = None, grid: Any = None,
                 n_vis: int = 100, names: list[str] | None = None, outputs: Any = None,
                 interval: float = 0.95, reference: Any = None, max_lines: int = 8) -> Any:
    r"""Per-feature effect curves of a neural additive model, one panel per context feature.

    * A :class:`ctxppl.nn.NGAM`: its :meth:`~ctxppl.nn.NGAM.feature_effects`
      :math:`f_j(c_j)` along a grid; fitted weights come from ``params`` (the encoder's
      ``"<name>$params"`` entry of ``fit.params``; a leading draws / fits axis gives bands).
    * A fitted estimator (``encoder_type="ngam"``) or :class:`~ctxppl.analysis.FitParams`:
      the change of each coefficient along each feature -- for an additive encoder with a
      linear head exactly :math:`f_j(c_j)` up to a constant -- with bands over bootstraps /
      posterior draws.

    Args:
        encoder: NGAM module or fitted model.
        C: Contexts setting the grid's range (or give ``grid``).
        params: Fitted arrays of the NGAM (``eqx.partition`` structure), optionally with a
            leading axis of draws.
        grid: ``(n_vis, in_size)`` grid instead of one built from ``C``.
        n_vis: Grid points.
        names: Context feature names.
        outputs: Which outputs / coefficients (flat indices or names), up to ``max_lines``.
        interval: Band mass.
        reference: Other features' value (fitted models; see :mod:`ctxppl.analysis`).
        max_lines: Most lines per panel.

    Returns:
        The matplotlib Figure.

    Examples:
        >>> import jax, numpy as np, ctxppl as ctx
        >>> enc = ctx.nn.NGAM(2, 3, width=4, depth=1, key=jax.random.key(0))
        >>> len(ctx.plot.ngam_effects(enc, np.random.default_rng(0).normal(size=(20, 2))).axes)
        2
    """
    from ctxppl import nn as cnn

    if isinstance(encoder, cnn.NGAM):
        curves, x, out_labels = _ngam_curves(encoder, C, params, grid, n_vis)
        d = x.shape[1]
    elif hasattr(encoder, "predict_params"):
        if grid is not None:
            C = grid if C is None else C
        c_vis, eff = get_heterogeneous_predictor_effects(encoder, C, C_vis=grid, n_vis=n_vis,
                                                         reference=reference)
        d, p = eff.shape[:2]
        shape = eff.shape[4:] + (p,)
        # (d, p, S, n_vis, *O) -> (S, n_vis, d, *O, p)
        curves = np.moveaxis(np.moveaxis(eff, 1, -1), 0, 2)
        curves = curves.reshape(curves.shape[:3] + (-1,))
        x = c_vis
        out_labels = _labels(encoder, shape, "beta")
        if names is None:
            names = names_of(encoder, "context_names_", d, "c", C)
    else:
        raise TypeError(f"`encoder` must be a ctx.nn.NGAM or a fitted model with "
                        f"predict_params; got {type(encoder).__name__}.")
    names = [f"c{j}" for j in range(d)] if names is None else [str(s) for s in names]
    if len(names) != d:
        raise ValueError(f"`names` must hold {d} names; got {len(names)}.")
    pos = _positions((curves.shape[-1],), outputs, out_labels, max_lines, "outputs")
    nr, nc = grid_shape(d)
    fig, axes = new_figure(nr, nc)
    used = drop_unused(fig, axes, d)
    for j, a in enumerate(used):
        for k in pos:
            band(a, x[:, j], curves[:, :, j, k], interval, label=out_labels[k])
        a.set_xlabel(names[j])
        a.set_ylabel(f"effect of {names[j]}", fontsize=8)
    if len(pos) > 1:
        used[0].legend(fontsize=6)
    return fig


def _ngam_curves(encoder: Any, C: Any, params: Any, grid: Any, n_vis: int
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(S, n_vis, in_size, out)`` feature effects of an NGAM on a grid."""
    import jax.numpy as jnp

    d = encoder.in_size
    if grid is not None:
        x = as_2d_float("grid", grid, allow_1d=False)
    elif C is not None:
        x = np.linspace(*np.quantile(as_2d_float("C", C), [0.0, 1.0], axis=0), n_vis)
    else:
        raise ValueError("pass `C` (to span its range) or `grid` to plot an NGAM.")
    if x.shape[1] != d:
        raise ValueError(f"the NGAM takes {d} context features; got {x.shape[1]} columns.")
    arrays, static = eqx.partition(encoder, eqx.is_inexact_array)
    if params is None:
        stacked, lead = jax.tree_util.tree_map(lambda a: a[None], arrays), 1
    else:
        t_leaves, t_def = jax.tree_util.tree_flatten(arrays)
        p_leaves, p_def = jax.tree_util.tree_flatten(params)
        if t_def != p_def:
            raise ValueError("`params` does not have the NGAM's structure; pass the encoder's "
                             "'<name>$params' entry of fit.params.")
        extra = {np.ndim(p) - np.ndim(t) for p, t in zip(p_leaves, t_leaves, strict=True)}
        if len(extra) != 1 or extra.pop() not in (0, 1, 2):
            raise ValueError("`params` leaves must match the NGAM's arrays, optionally with one "
                             "or two leading draw axes.")
        lead = np.ndim(p_leaves[0]) - np.ndim(t_leaves[0])
        stacked = params
        if lead == 0:
            stacked = jax.tree_util.tree_map(lambda a: jnp.asarray(a)[None], params)
        elif lead == 2:
            stacked = jax.tree_util.tree_map(
                lambda a: jnp.reshape(jnp.asarray(a), (-1,) + jnp.shape(a)[2:]), params)

    xs = jnp.asarray(x, dtype=jnp.result_type(float))
    eff = np.asarray(_feature_effects(stacked, static, xs), dtype=np.float64)  # (S, n_vis, d, *o)
    eff = eff.reshape(eff.shape[:3] + (-1,))
    labels = [f"f[{k}]" for k in range(eff.shape[-1])]
    return eff, x, labels



def _feature_effects_impl(stacked: Any, static: Any, xs: Any) -> Any:
    def one(arr: Any) -> Any:
        return jax.vmap(eqx.combine(arr, static).feature_effects)(xs)

    return jax.vmap(one)(stacked)


_feature_effects = eqx.filter_jit(_feature_effects_impl)
