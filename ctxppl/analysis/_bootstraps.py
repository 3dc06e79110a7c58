"""Selection of good bootstrap fits (contextualized-ml's ``select_good_bootstraps``)."""

from __future__ import annotations

import copy
from typing import Any

import jax
import numpy as np

from ctxppl.analysis._source import FitParams, check_model

__all__ = ["select_good_bootstraps", "take_fits"]


def take_fits(fit: Any, idx: Any) -> Any:
    """The fits ``idx`` (an index array) of a ``ctx.fit_many`` result, still batched.

    Examples:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist, ctxppl as ctx
        >>> def model(y=None):
        ...     numpyro.sample("y", dist.Normal(numpyro.sample("m", dist.Normal()), 1), obs=y)
        >>> fits = ctx.fit_many(model, jnp.array(1.0), key=0, num_fits=3, progress=False)
        >>> from ctxppl.analysis._bootstraps import take_fits
        >>> take_fits(fits, [0, 2]).batch_shape
        (2,)
    """
    from ctxppl.infer import Fit

    if not fit.batch_shape:
        raise ValueError("`fit` is a single fit; only ctx.fit_many results hold several.")
    n = fit.batch_shape[0]
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    if idx.size == 0 or idx.min() < -n or idx.max() >= n:
        raise IndexError(f"fit indices {idx.tolist()} out of range for {n} fits.")

    def take(tree: Any) -> Any:
        return None if tree is None else jax.tree_util.tree_map(lambda a: a[idx], tree)

    diag = {}
    for k, v in fit.diagnostics.items():
        if isinstance(v, list) and len(v) == n:
            diag[k] = [v[i] for i in idx]
        elif isinstance(v, np.ndarray | jax.Array) and np.ndim(v) >= 1 and len(v) == n:
            diag[k] = v[idx]
        else:
            diag[k] = v
    return Fit(model=fit.model, args=fit.args, kwargs=fit.kwargs, method=fit.method,
               params=take(fit.params), samples=take(fit.samples), diagnostics=diag,
               options=fit.options, key=fit.key, param_names=fit.param_names,
               guide_params=take(fit.guide_params), batch_shape=(int(idx.size),))


def select_good_bootstraps(model: Any, train_errs: Any, tol: float = 2.0) -> Any:
    r"""Drop divergent or bad bootstrap fits: keep those whose mean training error is at most
    ``tol`` times the smallest one (NaN errors -- diverged fits -- are dropped).

    Unlike contextualized-ml, the input model is left unchanged: a shallow copy holding only
    the kept bootstraps is returned (attribute ``bootstraps_kept_`` lists their indices;
    ``n_bootstraps``, a constructor argument, keeps its value so ``clone`` refits as many).

    Args:
        model: A fitted ctxppl estimator (or :class:`~ctxppl.analysis.FitParams`) with
            ``n_bootstraps >= 2``.
        train_errs: Training errors ``(S, n)`` or ``(S, n, n_outcomes)`` with one row per
            bootstrap -- or per bootstrap and posterior draw, as ``predict(...,
            individual_preds=True)`` returns them (rows are grouped by bootstrap).
        tol: Keep bootstraps with mean error ``<= tol * min``.

    Returns:
        The model restricted to the kept bootstraps.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> rng = np.random.default_rng(0)
        >>> C, X = rng.normal(size=(100, 1)), rng.normal(size=(100, 2))
        >>> Y = X[:, 0] + 0.1 * rng.normal(size=100)
        >>> est = ctx.estimators.ContextualizedRegressor(
        ...     n_bootstraps=3, encoder_type="linear", metamodel_type="naive",
        ...     max_epochs=100, random_state=0).fit(C, X, Y)
        >>> errs = np.ones((3, 100)) * np.array([[0.1], [0.5], [0.15]])
        >>> good = ctx.analysis.select_good_bootstraps(est, errs)
        >>> good.bootstraps_kept_.tolist(), good.predict_params(C, individual_preds=True)[0].shape
        ([0, 2], (2, 100, 1, 2))
    """
    check_model(model)
    fit = model.fit if isinstance(model, FitParams) else model.fit_
    B = fit.batch_shape[0] if fit.batch_shape else 1
    if B < 2:
        raise ValueError("select_good_bootstraps needs a model fitted with n_bootstraps >= 2; "
                         f"`model` holds {B} fit.")
    if not tol >= 1:
        raise ValueError(f"`tol` must be >= 1 (the best bootstrap is always kept); got {tol!r}.")
    errs = np.asarray(train_errs, dtype=np.float64)
    if errs.ndim not in (2, 3):
        raise ValueError(f"`train_errs` must be (bootstraps, samples) or (bootstraps, samples, "
                         f"outcomes); got shape {errs.shape}.")
    if errs.shape[0] % B:
        raise ValueError(f"`train_errs` has {errs.shape[0]} rows; expected a multiple of the "
                         f"model's {B} bootstraps (one row per bootstrap or per draw).")
    per = errs.reshape(B, -1)
    finite = np.all(np.isfinite(per), axis=1)
    mean = np.where(finite, np.where(np.isfinite(per), per, 0.0).mean(axis=1), np.inf)
    if not finite.any():
        raise ValueError("every bootstrap has NaN/inf training errors; nothing to keep.")
    keep = np.flatnonzero(finite & (mean <= tol * mean[finite].min()))
    sub = take_fits(fit, keep)
    if isinstance(model, FitParams):
        new = copy.copy(model)
        new.fit = sub
    else:
        new = copy.copy(model)
        new.fit_ = sub
        tm = jax.tree_util.tree_map
        new.params_ = tm(lambda a: np.asarray(a)[keep], model.params_)
        new.draws_ = tm(lambda a: np.asarray(a)[keep], model.draws_)
    new.bootstraps_kept_ = keep
    return new
