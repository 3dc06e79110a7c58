r"""Per-sample parameter draws of a fitted contextualized model, whatever produced them.

Every analysis function reads parameters through one interface: ``predict_params(C,
individual_preds=True)``, which ctxppl's estimators provide and :class:`FitParams` adds to any
:class:`ctxppl.Fit`. The leading axis ``S`` of the result holds bootstrap fits, posterior
draws, or both (``B`` bootstraps times ``D`` draws), so p-values and intervals come from the
posterior wherever the fit has one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["FitParams", "ParamDraws", "param_draws", "check_model", "check_context",
           "draw_source", "names_of", "resolve_index"]


class ParamDraws(NamedTuple):
    """Per-sample parameters for every bootstrap / posterior draw.

    Attributes:
        betas: ``(S, n, *outcomes, p)``: the last axis indexes predictors.
        mus: ``(S, n, *outcomes)`` or ``None`` when the model has no intercept site.
    """

    betas: np.ndarray
    mus: np.ndarray | None


def _fit_of(model: Any) -> Any:
    return getattr(model, "fit_", None) if not isinstance(model, FitParams) else model.fit


def draw_source(model: Any) -> str:
    """Where a model's parameter draws come from: ``"point"`` (one MAP fit),
    ``"bootstrap"``, ``"posterior"`` or ``"bootstrap+posterior"``.

    Examples:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist, ctxppl as ctx
        >>> def model(y=None):
        ...     numpyro.sample("y", dist.Normal(numpyro.sample("m", dist.Normal()), 1), obs=y)
        >>> fit = ctx.fit(model, jnp.array(1.0), key=0, progress=False)
        >>> draw_source(ctx.analysis.FitParams(fit, lambda C: (), beta="m"))
        'point'
    """
    fit = _fit_of(model)
    if fit is None:
        return "unknown"
    boot = bool(fit.batch_shape) and fit.batch_shape[0] > 1
    post = fit.method != "map"
    if boot and post:
        return "bootstrap+posterior"
    return "bootstrap" if boot else ("posterior" if post else "point")


class FitParams:
    r"""Give any :class:`ctxppl.Fit` the ``predict_params`` interface of the estimators, so
    every :mod:`ctxppl.analysis` function and :mod:`ctxppl.plot` plot works with hand-written
    models too.

    ``predict_params(C, individual_preds=True)`` runs ``fit.predict(*make_args(C))`` and
    returns the sites ``beta`` (per-sample coefficients, predictors on the last axis) and
    ``mu`` (per-sample intercepts, optional) with a leading axis of bootstraps (``fit_many``)
    and posterior draws (SVI, Laplace, NUTS).

    Args:
        fit: A fitted :class:`ctxppl.Fit` (single or from ``fit_many``).
        make_args: ``C -> tuple`` of model arguments for contexts ``C`` (predictors and
            outcomes can be dummies: only the parameter sites are read).
        beta: Site of the per-sample coefficients, shape ``(n, *outcomes, p)``.
        mu: Site of the per-sample intercepts ``(n, *outcomes)``, or ``None``.
        context_names: Optional names of the context features.
        feature_names: Optional names of the predictors.
        target_names: Optional names of the outcomes.

    Examples:
        >>> import jax.numpy as jnp, numpy as np, numpyro, numpyro.distributions as dist
        >>> import ctxppl as ctx
        >>> def model(C, X, Y=None):
        ...     enc = ctx.encoder("enc", ctx.nn.Linear(1, 1))
        ...     with ctx.plate("n", C.shape[0], context=C):
        ...         w = ctx.contextual("w", enc)
        ...         numpyro.sample("y", dist.Normal(jnp.sum(X * w, -1), 1.0), obs=Y)
        >>> C = np.linspace(-1, 1, 20)[:, None]; X = np.ones((20, 1))
        >>> fit = ctx.fit(model, C, X, 2 * C[:, 0], key=0, progress=False, num_steps=500)
        >>> params = ctx.analysis.FitParams(fit, lambda C: (C, np.ones((len(C), 1))), beta="w")
        >>> betas, mus = params.predict_params(np.array([[0.5]]), individual_preds=True)
        >>> betas.shape, mus is None, bool(abs(betas[0, 0, 0] - 1.0) < 0.1)
        ((1, 1, 1), True, True)
    """

    def __init__(self, fit: Any, make_args: Callable[[np.ndarray], tuple], beta: str = "beta",
                 mu: str | None = None, *, context_names: Sequence[str] | None = None,
                 feature_names: Sequence[str] | None = None,
                 target_names: Sequence[str] | None = None):
        if not hasattr(fit, "predict") or not hasattr(fit, "batch_shape"):
            raise TypeError(f"`fit` must be a ctxppl.Fit; got {type(fit).__name__}.")
        if not callable(make_args):
            raise TypeError(f"`make_args` must be a callable C -> tuple of model arguments; "
                            f"got {type(make_args).__name__}.")
        self.fit = fit
        self.make_args = make_args
        self.beta = beta
        self.mu = mu
        self.context_names_ = None if context_names is None else list(context_names)
        self.feature_names_ = None if feature_names is None else list(feature_names)
        self.target_names_ = None if target_names is None else list(target_names)

    def __repr__(self) -> str:
        return f"FitParams({self.fit!r}, beta={self.beta!r}, mu={self.mu!r})"

    def _flat(self, v: Any) -> np.ndarray:
        """``(B?, D?, n, ...)`` -> ``(S, n, ...)``."""
        v = np.asarray(v)
        lead = len(self.fit.batch_shape) + (self.fit.samples is not None)
        if lead == 0:
            return v[None]
        return v.reshape((-1,) + v.shape[lead:])

    def predict_params(self, C: Any, individual_preds: bool = False) -> tuple:
        """Per-sample ``(betas, mus)`` at contexts ``C`` (``mus`` is ``None`` without a
        ``mu`` site); with ``individual_preds`` a leading axis of bootstraps x draws."""
        C = np.asarray(C)
        args = tuple(self.make_args(C))
        sites = [self.beta] + ([self.mu] if self.mu is not None else [])
        out = self.fit.predict(*args, return_sites=sites)
        missing = [s for s in sites if s not in out]
        if missing:
            raise ValueError(f"the fitted model has no site(s) {missing}; pass the names of "
                             "its per-sample parameter sites as `beta=` / `mu=`.")
        betas = self._flat(out[self.beta])
        mus = None if self.mu is None else self._flat(out[self.mu])
        if not individual_preds:
            betas = betas.mean(axis=0)
            mus = None if mus is None else mus.mean(axis=0)
        return betas, mus


def check_model(model: Any, name: str = "model") -> None:
    """``model`` must be fitted and offer ``predict_params`` (estimator or FitParams)."""
    if isinstance(model, type):
        raise TypeError(f"`{name}` must be a fitted model instance; got the class "
                        f"{model.__name__} (call .fit(...) first).")
    if not hasattr(model, "predict_params"):
        raise TypeError(f"`{name}` must be a fitted ctxppl estimator or a "
                        f"ctx.analysis.FitParams (anything with predict_params); got "
                        f"{type(model).__name__}. For a ctx.Fit, wrap it: "
                        "ctx.analysis.FitParams(fit, make_args, beta='...').")
    if isinstance(model, FitParams):
        return
    from sklearn.utils.validation import check_is_fitted

    if hasattr(model, "get_params"):
        check_is_fitted(model, "fit_")


def check_context(model: Any, C: Any, name: str = "C") -> np.ndarray:
    """Contexts as a finite 2-D float array with the model's number of columns."""
    if C is None:
        raise ValueError(f"`{name}` is required; got None.")
    arr = np.asarray(C.to_numpy() if hasattr(C, "to_numpy") else C)
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"`{name}` must be numeric; got dtype {arr.dtype}.") from e
    if arr.ndim != 2:
        hint = f" For one feature write `{name}.reshape(-1, 1)`." if arr.ndim == 1 else ""
        raise ValueError(f"`{name}` must be 2-D (samples, context features); got shape "
                         f"{arr.shape}.{hint}")
    if arr.shape[0] == 0:
        raise ValueError(f"`{name}` is empty (shape {arr.shape}).")
    want = getattr(model, "n_context_features_", None)
    if want is not None and arr.shape[1] != want:
        raise ValueError(f"`{name}` must have {want} columns (as in fit); got {arr.shape[1]}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` contains NaN/inf values.")
    return arr


def param_draws(model: Any, C: np.ndarray) -> ParamDraws:
    """``predict_params(C, individual_preds=True)`` as :class:`ParamDraws` with validated
    shapes. Models returning a single array (Bayesian networks) give ``mus=None``.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> class Toy:  # anything with predict_params works
        ...     def predict_params(self, C, individual_preds=False):
        ...         return np.ones((3, len(C), 1, 2)), np.zeros((3, len(C), 1))
        >>> from ctxppl.analysis._source import param_draws
        >>> d = param_draws(Toy(), np.zeros((4, 1)))
        >>> d.betas.shape, d.mus.shape
        ((3, 4, 1, 2), (3, 4, 1))
    """
    out = model.predict_params(C, individual_preds=True)
    if isinstance(out, tuple):
        betas, mus = out[0], (out[1] if len(out) > 1 else None)
    else:
        betas, mus = out, None
    betas = np.asarray(betas, dtype=np.float64)
    if _is_dag_model(model):
        # W[j, k] is the edge j -> k: x_k's coefficient on its parent x_j. Put the parent
        # (the predictor) last, as for every other model: betas[..., k, j] = W[j, k].
        betas = np.swapaxes(betas, -1, -2)
    n = C.shape[0]
    if betas.ndim < 3 or betas.shape[1] != n:
        raise ValueError(f"`model.predict_params(C, individual_preds=True)` must return "
                         f"coefficients of shape (draws, {n}, ..., predictors); got "
                         f"{betas.shape}.")
    if mus is not None:
        mus = np.asarray(mus, dtype=np.float64)
        if mus.ndim < 2 or mus.shape[:2] != betas.shape[:2]:
            raise ValueError(f"intercepts from `model.predict_params` have shape {mus.shape}; "
                             f"expected a leading {betas.shape[:2]}.")
    return ParamDraws(betas, mus)


def _is_dag_model(model: Any) -> bool:
    from ctxppl.estimators import ContextualizedBayesianNetworks

    return isinstance(model, ContextualizedBayesianNetworks)


def names_of(model: Any, attr: str, k: int, prefix: str, data: Any = None) -> list[str]:
    """Names for ``k`` columns: the model's ``attr`` (e.g. ``context_names_``), else the
    columns of a DataFrame ``data``, else ``prefix0, prefix1, ...``."""
    names = getattr(model, attr, None)
    if names is None and attr == "target_names_" and not hasattr(model, "n_outputs_") and \
            getattr(model, "n_features_", None) == k:
        names = getattr(model, "feature_names_", None)  # networks: the outcomes are features
    if names is not None and len(names) == k:
        return [str(n) for n in names]
    if data is not None and hasattr(data, "columns") and len(data.columns) == k:
        return [str(c) for c in data.columns]
    if data is not None and getattr(data, "name", None) is not None and k == 1:
        return [str(data.name)]
    return [f"{prefix}{i}" for i in range(k)]


def resolve_index(which: int | str, names: Sequence[str], arg: str) -> int:
    """Position of a feature given by index or name; errors name the argument."""
    if isinstance(which, (int, np.integer)) and not isinstance(which, bool):
        if not -len(names) <= int(which) < len(names):
            raise ValueError(f"`{arg}` index {which} is out of range for {len(names)} "
                             f"features {list(names)}.")
        return int(which) % len(names)
    if isinstance(which, str):
        if which not in names:
            raise ValueError(f"`{arg}` {which!r} is not a known feature; expected one of "
                             f"{list(names)}.")
        return list(names).index(which)
    raise TypeError(f"`{arg}` must be an int index or a feature name; got "
                    f"{type(which).__name__}.")
