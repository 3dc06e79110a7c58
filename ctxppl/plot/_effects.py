"""Plots of the effects in :mod:`ctxppl.analysis` (contextualized-ml's names and layout)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ctxppl.analysis._effects import (
    get_heterogeneous_predictor_effects,
    get_homogeneous_context_effects,
    get_homogeneous_predictor_effects,
)
from ctxppl.analysis._source import (
    names_of,
)
from ctxppl.plot._base import as_2d_float, band, drop_unused, grid_shape, new_figure
from ctxppl.plot._panels import panel_positions, param_labels

__all__ = ["plot_homogeneous_context_effects", "plot_homogeneous_predictor_effects",
           "plot_heterogeneous_predictor_effects"]


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
    labels = param_labels(model, shape, "mu")
    pos = panel_positions(shape, outcome, labels, max(1, max_panels // d), "outcome")
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
    out_labels = param_labels(model, shape, "y") if shape else ["y"]
    k = panel_positions(shape, outcome, out_labels, 1, "outcome")[0] if shape else 0
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
    out_labels = param_labels(model, shape, "y") if shape else ["y"]
    k = panel_positions(shape, outcome, out_labels, 1, "outcome")[0] if shape else 0
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
