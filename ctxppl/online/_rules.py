r"""Update rules for per-entity random effects: what :func:`update_entities` applies.

A :class:`Rule` names the likelihood family, the base prior precision, the forgetting factor
and the covariance form; the factories (:func:`ridge`, :func:`bayes_linear`,
:func:`logistic`, :func:`bayes_logistic`, :func:`bayes_poisson`, :func:`rule`) are the
settings users choose from. The update itself is in :mod:`ctxppl.online._updates`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Rule", "rule", "ridge", "logistic", "bayes_logistic", "bayes_poisson",
           "bayes_linear", "FAMILIES"]

FAMILIES = ("gaussian", "bernoulli", "poisson")
_ALIASES = {"linear": "gaussian", "normal": "gaussian", "logistic": "bernoulli",
            "binomial": "bernoulli"}
#: status codes returned per entity by :func:`update_entities`.


@dataclasses.dataclass(frozen=True)
class Rule:
    r"""How one entity's coefficients absorb a minibatch (hashable: a static jit argument).

    Build it with :func:`rule` or one of the shortcuts (:func:`ridge`, :func:`logistic`,
    :func:`bayes_logistic`, :func:`bayes_poisson`, :func:`bayes_linear`).

    Attributes:
        family: ``"gaussian"`` (identity link), ``"bernoulli"`` (logit) or ``"poisson"`` (log).
        prior_precision: Base prior precision :math:`p_0` (a float, or a tuple with one value
            per feature). Lambda Learner's ``penalty``.
        delta: Forgetting factor :math:`\delta` in ``[0, 1]``; 1 keeps the whole past.
        covariance: ``"full"`` (a ``(d, d)`` precision per entity) or ``"diag"``.
        dispersion: Noise variance of the Gaussian family (ignored otherwise).
        max_iter: Newton iterations before an update counts as not converged.
        tol: Stop when the Newton step is below ``tol * (1 + max|theta|)``, or when the
            quadratic convergence rate predicts the next step below ``16 * tol**2 * (1 +
            max|theta|)``; ``None`` means the square root of the data type's machine
            epsilon (so the error left is at rounding level).

    Examples:
        >>> import ctxppl as ctx
        >>> ctx.online.rule("bernoulli", prior_precision=2.0, delta=0.8).family
        'bernoulli'
    """

    family: str = "bernoulli"
    prior_precision: float | tuple[float, ...] = 1.0
    delta: float = 1.0
    covariance: str = "full"
    dispersion: float = 1.0
    max_iter: int = 50
    tol: float | None = None

    def __post_init__(self) -> None:
        fam = _ALIASES.get(self.family, self.family)
        if fam not in FAMILIES:
            raise ValueError(f"`family` must be one of {FAMILIES} (or an alias in "
                             f"{sorted(_ALIASES)}); got {self.family!r}.")
        object.__setattr__(self, "family", fam)
        pp = self.prior_precision
        pp = tuple(float(p) for p in np.ravel(pp)) if np.ndim(pp) else float(pp)
        if np.any(~np.isfinite(pp)) or np.any(np.asarray(pp) <= 0):
            raise ValueError("`prior_precision` must be positive and finite (a proper prior "
                             f"keeps every update well posed); got {self.prior_precision!r}.")
        object.__setattr__(self, "prior_precision", pp)
        if not 0.0 <= float(self.delta) <= 1.0:
            raise ValueError(f"`delta` must lie in [0, 1]; got {self.delta!r}.")
        object.__setattr__(self, "delta", float(self.delta))
        if self.covariance not in ("full", "diag"):
            raise ValueError(f"`covariance` must be 'full' or 'diag'; got {self.covariance!r}.")
        if not float(self.dispersion) > 0:
            raise ValueError(f"`dispersion` must be positive; got {self.dispersion!r}.")
        object.__setattr__(self, "dispersion", float(self.dispersion))
        if int(self.max_iter) < 1:
            raise ValueError(f"`max_iter` must be at least 1; got {self.max_iter!r}.")
        object.__setattr__(self, "max_iter", int(self.max_iter))
        if self.tol is not None and not float(self.tol) > 0:
            raise ValueError(f"`tol` must be positive or None; got {self.tol!r}.")

    def prior_vector(self, num_features: int, dtype: np.dtype) -> np.ndarray:
        """The base prior precision as a ``(num_features,)`` array.

        Examples:
            >>> import numpy as np, ctxppl as ctx
            >>> ctx.online.ridge(2.0).prior_vector(3, np.float32).tolist()
            [2.0, 2.0, 2.0]
        """
        pp = np.asarray(self.prior_precision, dtype=dtype)
        if pp.ndim and pp.shape != (num_features,):
            raise ValueError(f"`prior_precision` has {pp.shape[0]} values but the model has "
                             f"{num_features} features.")
        return np.broadcast_to(pp, (num_features,)).copy()

    def to_dict(self) -> dict:
        """Plain-Python fields (for saving; ``Rule(**d)`` rebuilds the rule).

        Examples:
            >>> import ctxppl as ctx
            >>> ctx.online.logistic(3.0).to_dict()["delta"]
            0.0
        """
        d = dataclasses.asdict(self)
        if isinstance(d["prior_precision"], tuple):
            d["prior_precision"] = list(d["prior_precision"])
        return d


def rule(family: str = "bernoulli", *, prior_precision: float | tuple[float, ...] = 1.0,
         delta: float = 1.0, covariance: str = "full", dispersion: float = 1.0,
         max_iter: int = 50, tol: float | None = None) -> Rule:
    r"""An update rule: the sequential Laplace step of the module docstring.

    Args:
        family: ``"gaussian"``, ``"bernoulli"`` or ``"poisson"``.
        prior_precision: Base prior precision :math:`p_0` (float or one per feature).
        delta: Forgetting factor in ``[0, 1]`` (1: exact sequential Bayes; 0: only the
            current minibatch and the base prior count).
        covariance: ``"full"`` or ``"diag"`` precision per entity.
        dispersion: Gaussian noise variance.
        max_iter: Newton iteration limit.
        tol: Newton step tolerance (default ``sqrt(eps)`` of the data type).

    Returns:
        A :class:`Rule`.

    Examples:
        >>> import ctxppl as ctx
        >>> r = ctx.online.rule("poisson", delta=0.9, covariance="diag")
        >>> (r.family, r.delta, r.covariance)
        ('poisson', 0.9, 'diag')
    """
    return Rule(family, prior_precision, delta, covariance, dispersion, max_iter, tol)


def ridge(alpha: float = 1.0, *, delta: float = 1.0, covariance: str = "full") -> Rule:
    r"""Ridge regression updated online (recursive least squares with an L2 prior).

    With ``delta=1`` the coefficients after any number of minibatches equal the closed-form
    ridge solution :math:`(\alpha I + X^\top X)^{-1} X^\top (y - o)` on every record seen.

    Examples:
        >>> import ctxppl as ctx
        >>> ctx.online.ridge(0.5).family
        'gaussian'
    """
    return Rule("gaussian", alpha, delta, covariance)


def bayes_linear(prior_precision: float = 1.0, *, noise_variance: float = 1.0,
                 delta: float = 1.0, covariance: str = "full") -> Rule:
    r"""Bayesian linear regression with known noise variance (conjugate, exact updates).

    Examples:
        >>> import ctxppl as ctx
        >>> ctx.online.bayes_linear(noise_variance=0.25).dispersion
        0.25
    """
    return Rule("gaussian", prior_precision, delta, covariance, noise_variance)


def logistic(l2: float = 1.0, *, covariance: str = "full", max_iter: int = 50) -> Rule:
    r"""L2-penalised logistic regression of each minibatch (no memory: ``delta=0``).

    The same objective as Lambda Learner's ``TrainerLogisticLossWithL2``; the returned
    precision is the Hessian of that objective.

    Examples:
        >>> import ctxppl as ctx
        >>> ctx.online.logistic(10.0).delta
        0.0
    """
    return Rule("bernoulli", l2, 0.0, covariance, 1.0, max_iter)


def bayes_logistic(prior_precision: float = 1.0, *, delta: float = 1.0,
                   covariance: str = "full", max_iter: int = 50) -> Rule:
    r"""Sequential Bayesian logistic regression with a Laplace posterior and forgetting.

    ``bayes_logistic(lam, delta=d)`` is Lambda Learner's
    ``TrainerSequentialBayesianLogisticLossWithL2(penalty=lam, delta=d)``.

    Examples:
        >>> import ctxppl as ctx
        >>> ctx.online.bayes_logistic(10.0, delta=0.8).delta
        0.8
    """
    return Rule("bernoulli", prior_precision, delta, covariance, 1.0, max_iter)


def bayes_poisson(prior_precision: float = 1.0, *, delta: float = 1.0,
                  covariance: str = "full", max_iter: int = 50) -> Rule:
    r"""Sequential Bayesian Poisson regression (log link) with a Laplace posterior.

    Examples:
        >>> import ctxppl as ctx
        >>> ctx.online.bayes_poisson().family
        'poisson'
    """
    return Rule("poisson", prior_precision, delta, covariance, 1.0, max_iter)
