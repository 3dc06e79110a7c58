"""Per-feature effect curves of neural additive (NGAM) encoders."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import numpy as np

from ctxppl.analysis._effects import (
    get_heterogeneous_predictor_effects,
)
from ctxppl.analysis._source import (
    names_of,
)
from ctxppl.plot._base import as_2d_float, band, drop_unused, grid_shape, new_figure
from ctxppl.plot._panels import panel_positions, param_labels

__all__ = ["ngam_effects"]


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
        out_labels = param_labels(encoder, shape, "beta")
        if names is None:
            names = names_of(encoder, "context_names_", d, "c", C)
    else:
        raise TypeError(f"`encoder` must be a ctx.nn.NGAM or a fitted model with "
                        f"predict_params; got {type(encoder).__name__}.")
    names = [f"c{j}" for j in range(d)] if names is None else [str(s) for s in names]
    if len(names) != d:
        raise ValueError(f"`names` must hold {d} names; got {len(names)}.")
    pos = panel_positions((curves.shape[-1],), outputs, out_labels, max_lines, "outputs")
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
