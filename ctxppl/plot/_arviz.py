"""Thin wrappers around ArviZ's trace, forest and pair plots, for arviz 0.x and 1.x.

arviz 1.x (``arviz_plots``) draws with ``plot_trace_dist`` / ``plot_forest`` / ``plot_pair``
and returns a ``PlotCollection``; arviz 0.x draws with ``plot_trace`` / ``plot_forest`` /
``plot_pair`` and returns Axes. Both are asked for matplotlib, and the wrappers return the
matplotlib Figure either way. Keyword arguments go to ArviZ unchanged, so they follow the
installed version's API. ArviZ creates its figures through pyplot: close them with
``matplotlib.pyplot.close(fig)`` when drawing many.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import numpy as np

from ctxppl.infer._arviz import arviz_major, from_groups

__all__ = ["trace", "forest", "pair", "to_arviz_data", "arviz_major", "from_draws"]


def from_draws(posterior: dict[str, Any]) -> Any:
    """ArviZ data (``DataTree`` on arviz 1.x, ``InferenceData`` on 0.x) from posterior draws
    ``{name: array (chains, draws, ...)}``.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> d = ctx.plot.from_draws({"a": np.zeros((2, 10))})
        >>> tuple(d["posterior"]["a"].shape)
        (2, 10)
    """

    if not isinstance(posterior, dict) or not posterior:
        raise TypeError("`posterior` must be a non-empty dict {name: (chains, draws, ...)}.")
    post = {k: np.asarray(v) for k, v in posterior.items()}
    bad = [k for k, v in post.items() if v.ndim < 2]
    if bad:
        raise ValueError(f"draws of {bad} must have shape (chains, draws, ...).")
    return from_groups({"posterior": post})


def to_arviz_data(data: Any) -> Any:
    """ArviZ data of a :class:`ctxppl.Fit`, a mixed-model result, a fitted estimator (its
    ``fit_``) or ArviZ data itself.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> d = ctx.plot.from_draws({"a": np.zeros((1, 5))})
        >>> ctx.plot.to_arviz_data(d) is d
        True
    """
    if hasattr(data, "fit_") and hasattr(data.fit_, "to_arviz"):
        fit = data.fit_
        if fit.batch_shape:
            raise ValueError("the estimator holds several bootstrap fits; plot one of them: "
                             "pass `est.fit_[i]`.")
        return fit.to_arviz()
    if hasattr(data, "to_arviz"):
        return data.to_arviz()
    if hasattr(data, "posterior") or (hasattr(data, "children") and "posterior" in
                                      getattr(data, "children", {})):
        return data
    raise TypeError(f"`data` must be a ctx.Fit, a ctx.mixed result, a fitted estimator or "
                    f"ArviZ data (InferenceData / DataTree); got {type(data).__name__}.")


@contextlib.contextmanager
def _quiet_arviz0() -> Any:
    """arviz 0.x calls matplotlib APIs deprecated in matplotlib 3.11 (``normalize_kwargs``
    with a dict); that warning is about ArviZ's code, not the caller's, so it is silenced."""
    from matplotlib import MatplotlibDeprecationWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=MatplotlibDeprecationWarning,
                                module=r"arviz\.")
        yield


def _figure_of(out: Any) -> Any:
    if hasattr(out, "get_viz"):  # arviz 1.x PlotCollection
        return np.asarray(out.get_viz("figure")).item()
    if hasattr(out, "figure") and not isinstance(out, np.ndarray):
        return out.figure
    return np.ravel(out)[0].figure


def _draw(new: str, old: str, data: Any, var_names: Any, kwargs: dict) -> Any:
    """ArviZ plot ``new`` (arviz 1.x, matplotlib backend) or ``old`` (0.x) as a Figure."""
    import arviz as az

    d = to_arviz_data(data)
    if arviz_major() >= 1:
        out = getattr(az, new)(d, var_names=var_names, backend="matplotlib", **kwargs)
    else:
        with _quiet_arviz0():
            out = getattr(az, old)(d, var_names=var_names, show=False, **kwargs)
    return _figure_of(out)


def trace(data: Any, var_names: Any = None, **kwargs: Any) -> Any:
    """Trace plot (marginal densities and draws per chain) of a posterior.

    ArviZ 1.x: ``arviz.plot_trace_dist``; 0.x: ``arviz.plot_trace``.

    Args:
        data: Fit, mixed result, estimator or ArviZ data.
        var_names: Sites to draw (per-sample sites make many panels: select with
            ``coords=`` or ``var_names``).
        **kwargs: Passed to ArviZ.

    Returns:
        The matplotlib Figure.

    Examples:
        >>> import numpy as np, matplotlib.pyplot as plt, ctxppl as ctx
        >>> d = ctx.plot.from_draws({"a": np.random.default_rng(0).normal(size=(2, 30))})
        >>> fig = ctx.plot.trace(d); len(fig.axes) >= 2
        True
        >>> plt.close(fig)
    """
    return _draw("plot_trace_dist", "plot_trace", data, var_names, kwargs)


def forest(data: Any, var_names: Any = None, **kwargs: Any) -> Any:
    """Forest plot (point estimates and credible intervals) of a posterior.

    Args:
        data: Fit, mixed result, estimator or ArviZ data.
        var_names: Sites to draw.
        **kwargs: Passed to ``arviz.plot_forest``.

    Returns:
        The matplotlib Figure.

    Examples:
        >>> import numpy as np, matplotlib.pyplot as plt, ctxppl as ctx
        >>> d = ctx.plot.from_draws({"a": np.random.default_rng(0).normal(size=(2, 30, 3))})
        >>> fig = ctx.plot.forest(d); plt.close(fig)
    """
    return _draw("plot_forest", "plot_forest", data, var_names, kwargs)


def pair(data: Any, var_names: Any = None, **kwargs: Any) -> Any:
    """Pair plot (pairwise scatter of posterior draws).

    Args:
        data: Fit, mixed result, estimator or ArviZ data.
        var_names: Sites to draw (at least two scalars in total).
        **kwargs: Passed to ``arviz.plot_pair``.

    Returns:
        The matplotlib Figure.

    Examples:
        >>> import numpy as np, matplotlib.pyplot as plt, ctxppl as ctx
        >>> rng = np.random.default_rng(0)
        >>> d = ctx.plot.from_draws({"a": rng.normal(size=(1, 30)), "b": rng.normal(size=(1, 30))})
        >>> fig = ctx.plot.pair(d); plt.close(fig)
    """
    return _draw("plot_pair", "plot_pair", data, var_names, kwargs)
