r"""Bootstrap and posterior p-values for the effects of a fitted contextualized model.

Every test asks whether an effect :math:`\delta` (a contrast of per-sample parameters) has a
consistent sign across the model's draws -- bootstrap refits, posterior draws, or both. For
draws :math:`\delta_1, \dots, \delta_S` with mean :math:`\bar\delta`:

* ``method="count"`` (contextualized-ml's rule): with
  :math:`k = \#\{s : \delta_s \operatorname{sign}\bar\delta < 0\}`,
  :math:`p_1 = (a + k) / (S + a)` (``a`` = ``laplace_smoothing``);
* ``method="normal"``: :math:`p_1 = 1 - T_{S-1}\big(|\bar\delta| / (s \sqrt{1 + 1/S})\big)`
  with :math:`s = \operatorname{sd}(\delta)` and :math:`T_{S-1}` Student's t distribution:
  the chance that one more draw falls on the other side of zero, for normal draws whose mean
  and spread are estimated from the :math:`S` at hand (the plain normal
  :math:`\Phi(-|\bar\delta|/s)` ignores that and rejects too often with few draws: 7.1%
  instead of 5% with 20 bootstraps). It is not floored at :math:`a / (S + a)` and so suits
  few bootstraps.

The two-sided p-value (default) is :math:`\min(1, 2 p_1)`: uniform under "no effect" for
bootstraps of an asymptotically normal estimator, and for posterior draws the Bayesian
two-sided tail probability :math:`2\min(P(\delta>0\mid y), P(\delta<0\mid y))`, which equals
the classical p-value under a flat prior in a Gaussian model. ``sided="one"`` returns
:math:`p_1`, exactly contextualized-ml's numbers.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ctxppl._warnings import find_stack_level
from ctxppl.analysis._effects import (
    get_heterogeneous_predictor_effects,
    get_homogeneous_context_effects,
    get_homogeneous_predictor_effects,
)
from ctxppl.analysis._source import check_context, check_model, draw_source, names_of

__all__ = ["sign_pvalue", "get_possible_pvals", "calc_pval_bootstraps_one_sided",
           "calc_pval_bootstraps_one_sided_mean", "calc_homogeneous_context_effects_pvals",
           "calc_homogeneous_predictor_effects_pvals",
           "calc_heterogeneous_predictor_effects_pvals", "effects_table", "test_each_context"]

_SIDED = ("one", "two")
_LEVEL = 0.05  # the conventional level a p-value rule must be able to reach
_METHODS = ("count", "normal")
_CONTRASTS = ("endpoints", "slope")


def _check_pval_options(sided: str, method: str, laplace_smoothing: float) -> None:
    if sided not in _SIDED:
        raise ValueError(f"`sided` must be one of {_SIDED}; got {sided!r}.")
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS}; got {method!r}.")
    if not laplace_smoothing >= 0:
        raise ValueError(f"`laplace_smoothing` must be >= 0; got {laplace_smoothing!r}.")


def sign_pvalue(draws: Any, axis: int = 0, *, sided: str = "two", method: str = "count",
                laplace_smoothing: float = 1.0) -> np.ndarray:
    r"""P-value of "the effect is zero" from bootstrap / posterior draws of the effect.

    Args:
        draws: Draws of one or many effects; the draws run along ``axis``.
        axis: Axis of the draws.
        sided: ``"two"`` (default) or ``"one"`` (contextualized-ml's: the share of draws
            whose sign disagrees with the mean's).
        method: ``"count"`` (share of draws on the other side of zero, Laplace-smoothed) or
            ``"normal"`` (normal approximation of the draws).
        laplace_smoothing: Pseudo-count ``a`` of the ``"count"`` rule.

    Returns:
        P-values with ``axis`` removed. An effect whose draws are all exactly zero gets 1.

    Examples:
        >>> import numpy as np
        >>> from ctxppl.analysis import sign_pvalue
        >>> d = np.array([[1.0, -1.0], [2.0, 1.0], [3.0, -2.0], [-0.5, 1.5]])  # 4 draws
        >>> sign_pvalue(d)  # two-sided: 2 (1 + k) / (S + 1)
        array([0.8, 1. ])
        >>> sign_pvalue(d, sided="one")
        array([0.4, 0.6])
        >>> sign_pvalue(d, method="normal").round(3)
        array([0.47, 0.95])
    """
    _check_pval_options(sided, method, laplace_smoothing)
    d = np.moveaxis(np.asarray(draws, dtype=np.float64), axis, 0)
    S = d.shape[0]
    if S < 1:
        raise ValueError("`draws` is empty along `axis`.")
    if method == "normal" and S < 2:
        raise ValueError("method='normal' needs at least 2 draws along `axis`; got 1.")
    mean = d.mean(axis=0)
    sign = np.sign(mean)
    if method == "count":
        k = np.sum(d * sign < 0, axis=0)
        p1 = (laplace_smoothing + k) / (S + laplace_smoothing)
    else:
        sd = d.std(axis=0, ddof=1) * np.sqrt(1.0 + 1.0 / S)  # predictive spread
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(sd > 0, np.abs(mean) / np.where(sd > 0, sd, 1.0), np.inf)
        p1 = stats.t.sf(z, df=S - 1)
    p1 = np.where(sign == 0, 0.5 if sided == "two" else 1.0, p1)
    p = np.minimum(1.0, 2.0 * p1) if sided == "two" else p1
    return np.asarray(p)


def get_possible_pvals(num_bootstraps: int, sided: str = "two",
                       laplace_smoothing: float = 1.0) -> list[float]:
    """Smallest and largest p-value the ``"count"`` rule can give with ``num_bootstraps``
    draws.

    Examples:
        >>> from ctxppl.analysis import get_possible_pvals
        >>> get_possible_pvals(19)
        [0.1, 1.0]
        >>> get_possible_pvals(19, sided="one")  # contextualized-ml's numbers
        [0.05, 0.95]
    """
    _check_pval_options(sided, "count", laplace_smoothing)
    B = int(num_bootstraps)
    lo = laplace_smoothing / (B + laplace_smoothing)
    hi = B / (B + laplace_smoothing)
    return [2 * lo, 1.0] if sided == "two" else [lo, hi]


def calc_pval_bootstraps_one_sided(estimates: Any, thresh: float = 0.0,
                                   laplace_smoothing: float = 1.0) -> np.ndarray:
    """contextualized-ml's one-sided rule: ``(a + #{estimates < thresh}) / (S + a)`` along
    axis 0.

    Examples:
        >>> import numpy as np
        >>> from ctxppl.analysis import calc_pval_bootstraps_one_sided
        >>> float(calc_pval_bootstraps_one_sided(np.array([-1.0, 1.0, 2.0, 3.0])))
        0.4
    """
    e = np.asarray(estimates, dtype=np.float64)
    return (laplace_smoothing + np.sum(e < thresh, axis=0)) / (e.shape[0] + laplace_smoothing)


def calc_pval_bootstraps_one_sided_mean(estimates: Any, laplace_smoothing: float = 1.0
                                        ) -> np.ndarray:
    """contextualized-ml's sign-consistency rule: the one-sided p-value of the side of the
    mean (same as ``sign_pvalue(estimates, sided="one")``).

    Examples:
        >>> import numpy as np
        >>> from ctxppl.analysis import calc_pval_bootstraps_one_sided_mean
        >>> float(calc_pval_bootstraps_one_sided_mean(np.array([-1.0, -2.0, -3.0, 0.5])))
        0.4
    """
    return sign_pvalue(estimates, 0, sided="one", method="count",
                       laplace_smoothing=laplace_smoothing)


def _n_draws(model: Any, C: np.ndarray) -> int:
    from ctxppl.analysis._source import param_draws

    return int(param_draws(model, C[:1]).betas.shape[0])


def _validate_draws(S: int, model: Any, verbose: bool, sided: str,
                    laplace_smoothing: float, method: str = "count") -> None:
    if S < 2:
        raise ValueError(
            "p-values need at least 2 bootstrap fits or posterior draws; `model` has "
            f"S={S} (a single MAP fit). Refit with n_bootstraps >= 2 or with "
            "inference='svi' | 'laplace' | 'nuts'.")
    lowest = get_possible_pvals(S, sided, laplace_smoothing)[0]
    if method == "count" and lowest > _LEVEL:
        factor = 2 if sided == "two" else 1
        need = math.ceil(laplace_smoothing * (factor / _LEVEL - 1))
        warnings.warn(
            f"with {S} draws the smallest {sided}-sided p-value of the 'count' rule is "
            f"{lowest:.3g} > {_LEVEL}: no effect can be significant at the {_LEVEL:.0%} level "
            f"(the test has neither size nor power there). Use >= {need} bootstraps / draws, "
            "or method='normal'.", UserWarning, stacklevel=find_stack_level())
    if verbose:
        lo, _ = get_possible_pvals(S, sided, laplace_smoothing)
        print(f"Testing a model with {S} draws ({draw_source(model)}); the smallest possible "
              f"p-value of the 'count' rule is {lo:.3g}. Use more bootstraps / draws, or "
              "method='normal', for smaller p-values.")


def _contrast(effects: np.ndarray, c_grid: np.ndarray, vis_axis: int, contrast: str
              ) -> np.ndarray:
    """Collapse the grid axis: endpoint difference or least-squares slope per unit of c."""
    if contrast not in _CONTRASTS:
        raise ValueError(f"`contrast` must be one of {_CONTRASTS}; got {contrast!r}.")
    e = np.moveaxis(effects, vis_axis, -1)
    if contrast == "endpoints":
        return e[..., -1] - e[..., 0]
    # c_grid: (n_ctx, n_vis), broadcast over the middle axes
    c = c_grid - c_grid.mean(axis=1, keepdims=True)
    denom = np.sum(c**2, axis=1)
    shape = (c.shape[0],) + (1,) * (e.ndim - 2) + (c.shape[1],)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sum(e * c.reshape(shape), axis=-1) / np.where(
            denom > 0, denom, 1.0).reshape(shape[:-1])


def calc_homogeneous_context_effects_pvals(model: Any, C: Any, verbose: bool = False, *,
                                           sided: str = "two", method: str = "count",
                                           laplace_smoothing: float = 1.0,
                                           contrast: str = "endpoints", C_vis: Any = None,
                                           n_vis: int = 100, reference: Any = None
                                           ) -> np.ndarray:
    r"""P-values of the direct effects of each context feature on the intercepts.

    Tests whether :math:`\mu(c_j = \max) - \mu(c_j = \min)` (``contrast="endpoints"``, as
    contextualized-ml) or the slope of :math:`\mu` along :math:`c_j` (``"slope"``) is zero,
    from the model's bootstraps and/or posterior draws.

    Args:
        model: A fitted ctxppl estimator or :class:`~ctxppl.analysis.FitParams`, with
            ``n_bootstraps >= 2`` or a posterior (SVI, Laplace, NUTS).
        C: Contexts ``(n, n_contexts)``.
        verbose: Print the smallest p-value the draws allow.
        sided: ``"two"`` (default) or ``"one"`` (contextualized-ml's numbers); see
            :func:`~ctxppl.analysis.sign_pvalue`.
        method: ``"count"`` (share of draws across zero, Laplace-smoothed) or ``"normal"`` (normal
            approximation).
        laplace_smoothing: Pseudo-count of the ``"count"`` rule.
        contrast: ``"endpoints"`` or ``"slope"``.
        C_vis: Optional grid ``(n_vis, n_contexts)`` instead of the even one over the range of
            ``C``.
        n_vis: Grid points per context feature.
        reference: Value of the other context features on the grid: ``"mean"`` (default), ``"zero"``
            or an array.

    Returns:
        P-values of shape ``(n_contexts, *mu_shape)`` (``(n_contexts, n_outcomes)`` for a
        regressor).

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> class Toy:  # 50 draws of mu(c) = (2 + noise) c_0
        ...     def predict_params(self, C, individual_preds=False):
        ...         a = 2 + 0.1 * np.random.default_rng(0).normal(size=(50, 1, 1))
        ...         return np.zeros((50, len(C), 1, 1)), a * C[None, :, :1]
        >>> C = np.random.default_rng(1).uniform(-1, 1, (30, 2))
        >>> ctx.analysis.calc_homogeneous_context_effects_pvals(Toy(), C).round(3)
        array([[0.039],
               [1.   ]])
    """
    _check_pval_options(sided, method, laplace_smoothing)
    check_model(model)
    C = check_context(model, C)
    c_vis, eff = get_homogeneous_context_effects(model, C, C_vis=C_vis, n_vis=n_vis,
                                                 reference=reference)
    _validate_draws(eff.shape[1], model, verbose, sided, laplace_smoothing, method)
    diffs = _contrast(eff, c_vis.T, 2, contrast)  # (n_ctx, S, *M)
    return sign_pvalue(diffs, 1, sided=sided, method=method,
                       laplace_smoothing=laplace_smoothing)


def calc_homogeneous_predictor_effects_pvals(model: Any, C: Any, verbose: bool = False, *,
                                             sided: str = "two", method: str = "count",
                                             laplace_smoothing: float = 1.0, C_vis: Any = None
                                             ) -> np.ndarray:
    r"""P-values of the context-invariant effect of each predictor (its coefficient averaged
    over the contexts ``C``) being zero.

    Args:
        model: A fitted ctxppl estimator or :class:`~ctxppl.analysis.FitParams` with draws.
        C: Contexts to average over ``(n, n_contexts)``.
        verbose: Print the smallest p-value the draws allow.
        sided: ``"two"`` (default) or ``"one"`` (contextualized-ml's numbers); see
            :func:`~ctxppl.analysis.sign_pvalue`.
        method: ``"count"`` (share of draws across zero, Laplace-smoothed) or ``"normal"`` (normal
            approximation).
        laplace_smoothing: Pseudo-count of the ``"count"`` rule.
        C_vis: Optional other contexts to average over.

    Returns:
        P-values of shape ``(n_predictors, *outcomes)``.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> class Toy:  # beta = (1 + noise, noise) for every sample, 40 draws
        ...     def predict_params(self, C, individual_preds=False):
        ...         e = 0.2 * np.random.default_rng(0).normal(size=(40, 1, 1, 2))
        ...         b = np.broadcast_to(e + np.array([1.0, 0.0]), (40, len(C), 1, 2))
        ...         return b, np.zeros((40, len(C), 1))
        >>> p = ctx.analysis.calc_homogeneous_predictor_effects_pvals(Toy(), np.zeros((5, 1)))
        >>> p.shape, bool(p[0, 0] < 0.05), bool(p[1, 0] > 0.05)
        ((2, 1), True, True)
    """
    _check_pval_options(sided, method, laplace_smoothing)
    _, eff = get_homogeneous_predictor_effects(model, C, C_vis=C_vis)  # (p, S, *O)
    _validate_draws(eff.shape[1], model, verbose, sided, laplace_smoothing, method)
    return sign_pvalue(eff, 1, sided=sided, method=method, laplace_smoothing=laplace_smoothing)


def calc_heterogeneous_predictor_effects_pvals(model: Any, C: Any, verbose: bool = False, *,
                                               sided: str = "two", method: str = "count",
                                               laplace_smoothing: float = 1.0,
                                               contrast: str = "endpoints", C_vis: Any = None,
                                               n_vis: int = 100, reference: Any = None
                                               ) -> np.ndarray:
    r"""Heterogeneity test: does context feature ``j`` change the coefficient of predictor
    ``k``? P-values of :math:`\beta_k(c_j=\max) - \beta_k(c_j=\min) = 0` (or of the slope of
    :math:`\beta_k` along :math:`c_j`), other context features at ``reference``.

    Args:
        model: A fitted ctxppl estimator or :class:`~ctxppl.analysis.FitParams` with draws.
        C: Contexts ``(n, n_contexts)``.
        verbose: Print the smallest p-value the draws allow.
        sided: ``"two"`` (default) or ``"one"`` (contextualized-ml's numbers); see
            :func:`~ctxppl.analysis.sign_pvalue`.
        method: ``"count"`` (share of draws across zero, Laplace-smoothed) or ``"normal"`` (normal
            approximation).
        laplace_smoothing: Pseudo-count of the ``"count"`` rule.
        contrast: ``"endpoints"`` (contextualized-ml) or ``"slope"``.
        C_vis: Optional grid ``(n_vis, n_contexts)`` instead of the even one over the range of
            ``C``.
        n_vis: Grid points per context feature.
        reference: Value of the other context features on the grid: ``"mean"`` (default), ``"zero"``
            or an array.

    Returns:
        P-values of shape ``(n_contexts, n_predictors, *outcomes)``.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> class Toy:  # 40 draws of beta_0(c) = (1 + noise) c_0, beta_1 = 1
        ...     def predict_params(self, C, individual_preds=False):
        ...         a = 1 + 0.2 * np.random.default_rng(0).normal(size=(40, 1))
        ...         b = np.stack(np.broadcast_arrays(a * C[None, :, 0], 1.0), -1)[:, :, None]
        ...         return b, np.zeros(b.shape[:3])
        >>> p = ctx.analysis.calc_heterogeneous_predictor_effects_pvals(
        ...     Toy(), np.random.default_rng(1).uniform(-1, 1, (30, 2)))
        >>> p.shape, p[:, :, 0].round(3).tolist()
        ((2, 2, 1), [[0.049, 1.0], [1.0, 1.0]])
    """
    _check_pval_options(sided, method, laplace_smoothing)
    check_model(model)
    C = check_context(model, C)
    c_vis, eff = get_heterogeneous_predictor_effects(model, C, C_vis=C_vis, n_vis=n_vis,
                                                     reference=reference)
    _validate_draws(eff.shape[2], model, verbose, sided, laplace_smoothing, method)
    diffs = _contrast(eff, c_vis.T, 3, contrast)  # (d, p, S, n_vis, *O) -> (d, p, S, *O)
    return sign_pvalue(diffs, 2, sided=sided, method=method,
                       laplace_smoothing=laplace_smoothing)


_KINDS = ("heterogeneous", "homogeneous_predictor", "homogeneous_context")


def effects_table(model: Any, C: Any, kind: str = "heterogeneous", *, interval: float = 0.95,
                  sided: str = "two", method: str = "count", laplace_smoothing: float = 1.0,
                  contrast: str = "endpoints", C_vis: Any = None, n_vis: int = 100,
                  reference: Any = None) -> pd.DataFrame:
    r"""One tidy table of effects with intervals and p-values, all from the same draws
    (bootstraps and/or posterior draws).

    Args:
        model: A fitted ctxppl estimator or :class:`~ctxppl.analysis.FitParams` with draws.
        C: Contexts ``(n, n_contexts)``.
        kind: ``"heterogeneous"`` (one row per context x predictor x outcome: the change of
            the coefficient along the context), ``"homogeneous_predictor"`` (predictor x
            outcome: the average coefficient) or ``"homogeneous_context"`` (context x
            outcome: the change of the intercept along the context).
        interval: Mass of the equal-tailed interval over the draws.
        sided: ``"two"`` (default) or ``"one"`` (contextualized-ml's numbers); see
            :func:`~ctxppl.analysis.sign_pvalue`.
        method: ``"count"`` (share of draws across zero, Laplace-smoothed) or ``"normal"`` (normal
            approximation).
        laplace_smoothing: Pseudo-count of the ``"count"`` rule.
        contrast: ``"endpoints"`` (contextualized-ml) or ``"slope"``.
        C_vis: Optional grid ``(n_vis, n_contexts)`` instead of the even one over the range of
            ``C``.
        n_vis: Grid points per context feature.
        reference: Value of the other context features on the grid: ``"mean"`` (default), ``"zero"``
            or an array.

    Returns:
        DataFrame with the name columns (``context``, ``predictor``, ``outcome`` as they
        apply), ``effect`` (mean over draws), ``lower``, ``upper``, ``pvalue``, ``source``
        (``"bootstrap"``, ``"posterior"``, ...) and ``n_draws``.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> class Toy:  # 40 draws of beta_0(c) = (1 + noise) c_0
        ...     def predict_params(self, C, individual_preds=False):
        ...         a = 1 + 0.2 * np.random.default_rng(0).normal(size=(40, 1, 1))
        ...         return (a * C[None, :, :1])[..., None], np.zeros((40, len(C), 1))
        >>> t = ctx.analysis.effects_table(Toy(), np.array([[-1.0], [1.0]]))
        >>> t[["context", "predictor", "outcome", "pvalue"]].round(3)
          context predictor outcome  pvalue
        0      c0        x0      y0   0.049
    """
    return _table(model, C, kind, interval=interval, sided=sided, method=method,
                  laplace_smoothing=laplace_smoothing, contrast=contrast, C_vis=C_vis,
                  n_vis=n_vis, reference=reference)


def _table(model: Any, C: Any, kind: str, *, interval: float = 0.95, sided: str = "two",
           method: str = "count", laplace_smoothing: float = 1.0, contrast: str = "endpoints",
           C_vis: Any = None, n_vis: int = 100, reference: Any = None, Y: Any = None
           ) -> pd.DataFrame:
    if kind not in _KINDS:
        raise ValueError(f"`kind` must be one of {_KINDS}; got {kind!r}.")
    if not 0 < interval < 1:
        raise ValueError(f"`interval` must be in (0, 1); got {interval!r}.")
    _check_pval_options(sided, method, laplace_smoothing)
    check_model(model)
    Cc = check_context(model, C)
    if kind == "heterogeneous":
        c_vis, eff = get_heterogeneous_predictor_effects(model, Cc, C_vis=C_vis, n_vis=n_vis,
                                                         reference=reference)
        draws = np.moveaxis(_contrast(eff, c_vis.T, 3, contrast), 2, 0)  # (S, d, p, *O)
        axes = ["context", "predictor"]
    elif kind == "homogeneous_predictor":
        _, eff = get_homogeneous_predictor_effects(model, Cc, C_vis=C_vis)
        draws = np.moveaxis(eff, 1, 0)  # (S, p, *O)
        axes = ["predictor"]
    else:
        c_vis, eff = get_homogeneous_context_effects(model, Cc, C_vis=C_vis, n_vis=n_vis,
                                                     reference=reference)
        draws = np.moveaxis(_contrast(eff, c_vis.T, 2, contrast), 1, 0)  # (S, d, *M)
        axes = ["context"]
    S = draws.shape[0]
    _validate_draws(S, model, False, sided, laplace_smoothing, method)
    q = (1 - interval) / 2
    lo, hi = np.quantile(draws, [q, 1 - q], axis=0)
    pv = sign_pvalue(draws, 0, sided=sided, method=method, laplace_smoothing=laplace_smoothing)
    shape = pv.shape
    rest = shape[len(axes):]
    d = Cc.shape[1]
    names: dict[str, list[str]] = {
        "context": names_of(model, "context_names_", d, "c", C),
        "predictor": names_of(model, "feature_names_", shape[axes.index("predictor")], "x")
        if "predictor" in axes else [],
    }
    idx = np.indices(shape).reshape(len(shape), -1)
    cols: dict[str, Any] = {}
    for a, ax_name in enumerate(axes):
        cols[ax_name] = [names[ax_name][i] for i in idx[a]]
    if rest:
        n_out = rest[0]
        outs = _target_names(model, Y, n_out)
        cols["outcome"] = [outs[i] for i in idx[len(axes)]]
        for r in range(1, len(rest)):
            cols[f"index{r}"] = idx[len(axes) + r].tolist()
    cols.update(effect=draws.mean(axis=0).reshape(-1), lower=lo.reshape(-1),
                upper=hi.reshape(-1), pvalue=pv.reshape(-1))
    df = pd.DataFrame(cols)
    df["source"] = draw_source(model)
    df["n_draws"] = S
    return df


def test_each_context(model_constructor: Any, C: Any, X: Any, Y: Any, verbose: bool = False,
                      model_kwargs: dict[str, Any] | None = None,
                      fit_kwargs: dict[str, Any] | None = None, *, details: bool = False,
                      **pval_kwargs: Any) -> pd.DataFrame:
    r"""Heterogeneity test of each context feature on its own (contextualized-ml's
    ``test_each_context``): for every column ``C[:, j]`` fit a model with that single context
    feature and test, for every predictor and outcome, whether the coefficient changes along
    it (:func:`calc_heterogeneous_predictor_effects_pvals`).

    Args:
        model_constructor: An estimator class (``ContextualizedRegressor``,
            ``ContextualizedClassifier``, ...).
        C: Contexts ``(n, n_contexts)`` (DataFrame columns become names).
        X: Predictors ``(n, n_predictors)``.
        Y: Outcomes ``(n,)`` / ``(n, n_outcomes)`` (labels for a classifier).
        verbose: Print the smallest p-value the draws allow.
        model_kwargs: Constructor arguments; default
            ``{"encoder_type": "linear", "metamodel_type": "naive"}`` (a varying-coefficient
            model linear in the context, whose bootstrap p-values are calibrated).
        fit_kwargs: More constructor arguments (contextualized-ml passes ``n_bootstraps``,
            ``max_epochs``, ``learning_rate`` to ``fit``; ctxppl estimators take them in the
            constructor); default ``{"n_bootstraps": 100}``: the two-sided ``"count"`` rule
            reaches p < 0.05 only from 39 bootstraps on (contextualized-ml's 20 give at
            least 2/21 = 0.095, so a 5% test could never reject), and 100 put the smallest
            p-value at 0.02 (docs/benchmarks.md, null calibration).
        details: Add ``Effect``, ``Lower``, ``Upper`` (95% interval) and ``Source`` columns.
        **pval_kwargs: ``sided``, ``method``, ``laplace_smoothing``, ``contrast``, ``n_vis``.

    Returns:
        DataFrame with columns ``Context``, ``Predictor``, ``Target``, ``Pvals``, one row per
        (context, predictor, outcome).

    Examples:
        >>> import numpy as np, pandas as pd, ctxppl as ctx
        >>> rng = np.random.default_rng(0)
        >>> C = pd.DataFrame(rng.uniform(-1, 1, (200, 2)), columns=["age", "dose"])
        >>> X = pd.DataFrame(rng.normal(size=(200, 1)), columns=["x"])
        >>> Y = pd.DataFrame({"y": X.x * (1 + 2 * C.age) + 0.5 * rng.normal(size=200)})
        >>> p = ctx.analysis.test_each_context(
        ...     ctx.estimators.ContextualizedRegressor, C, X, Y,
        ...     fit_kwargs={"n_bootstraps": 40, "max_epochs": 300, "learning_rate": 0.05,
        ...                 "random_state": 0})
        >>> p.Context.tolist(), (p.Pvals <= 2 / 41).tolist()  # 2/41: least p of 40 bootstraps
        (['age', 'dose'], [True, False])
    """
    model_kwargs = {"encoder_type": "linear", "metamodel_type": "naive"} if model_kwargs is None \
        else dict(model_kwargs)
    fit_kwargs = {"n_bootstraps": 100} if fit_kwargs is None else dict(fit_kwargs)
    if not isinstance(model_constructor, type) or not hasattr(model_constructor, "fit"):
        raise TypeError(f"`model_constructor` must be an estimator class; got "
                        f"{model_constructor!r}.")
    allowed = set(inspect.signature(model_constructor.__init__).parameters) - {"self"}
    kwargs = {**model_kwargs, **fit_kwargs}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"{model_constructor.__name__} has no option(s) {unknown} (from "
                         "`model_kwargs` / `fit_kwargs`).")
    bad = set(pval_kwargs) - {"sided", "method", "laplace_smoothing", "contrast", "n_vis",
                              "reference"}
    if bad:
        raise TypeError(f"test_each_context() got unexpected keyword argument(s) {sorted(bad)}.")
    pval_kwargs.setdefault("sided", "two")
    pval_kwargs.setdefault("method", "count")
    pval_kwargs.setdefault("laplace_smoothing", 1.0)
    _check_pval_options(pval_kwargs["sided"], pval_kwargs["method"],
                        pval_kwargs["laplace_smoothing"])
    Ca = np.asarray(C.to_numpy() if hasattr(C, "to_numpy") else C)
    if Ca.ndim != 2:
        raise ValueError(f"`C` must be 2-D (samples, context features); got shape {Ca.shape}.")
    boot = int(kwargs.get("n_bootstraps", 1))
    if boot < 2 and kwargs.get("inference", "map") == "map":
        raise ValueError("test_each_context needs n_bootstraps >= 2 (in `fit_kwargs`) or a "
                         "posterior (inference='svi' | 'laplace' | 'nuts').")
    c_names = names_of(None, "", Ca.shape[1], "c", C)
    frames: list[pd.DataFrame] = []
    for j, cname in enumerate(c_names):  # one model per context feature (few; not samples)
        cj = Ca[:, j:j + 1]
        est = model_constructor(**kwargs).fit(cj, X, Y)
        table = _table(est, cj, "heterogeneous", Y=Y, **pval_kwargs)
        if verbose and j == 0:
            _validate_draws(int(table["n_draws"].iloc[0]), est, True, pval_kwargs["sided"],
                            pval_kwargs["laplace_smoothing"], "normal")
        target = table["outcome"] if "outcome" in table else _target_names(est, Y, 1)[0]
        frame = pd.DataFrame({"Context": cname, "Predictor": table["predictor"],
                              "Target": target, "Pvals": table["pvalue"].astype(float)})
        if details:
            frame["Effect"], frame["Lower"] = table["effect"], table["lower"]
            frame["Upper"], frame["Source"] = table["upper"], table["source"]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


test_each_context.__test__ = False  # a library function, not a pytest test


def _target_names(est: Any, Y: Any, n_out: int) -> list[str]:
    """Outcome names: a multiclass classifier's classes, the estimator's target names, the
    columns / name of ``Y``, else ``y0, y1, ...`` (``y`` for a single outcome of a 1-D
    ``Y``)."""
    classes = getattr(est, "classes_", None)
    if classes is not None and n_out == len(classes) and n_out > 2:
        return [str(c) for c in classes]
    names = names_of(est, "target_names_", n_out, "y", Y)
    if Y is not None and names == ["y0"] and np.ndim(Y) == 1 and getattr(Y, "name", None) is None:
        return ["y"]
    return names
