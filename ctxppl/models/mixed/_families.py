r"""Observation families of mixed models: likelihood, link, outcome checks, NumPyro site.

A :class:`Family` is a small immutable description. Everything an engine needs is derived
from its elementwise log-likelihood :math:`\ell(y \mid \eta)` in the linear predictor
:math:`\eta`: the score and the observed information that drive the Laplace (PIRLS)
iterations are ``jax.grad`` of it, so adding a family means writing one ``loglik``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import gammaln, log_ndtr, ndtr

__all__ = ["Family", "gaussian", "bernoulli", "binomial", "poisson", "negative_binomial",
           "get_family", "FAMILIES"]

_LINKS = {
    "gaussian": ("identity",),
    "bernoulli": ("logit", "probit"),
    "binomial": ("logit", "probit"),
    "poisson": ("log",),
    "negative_binomial": ("log",),
}


class Family(NamedTuple):
    r"""An observation family with its link (hashable, static under ``jit``).

    Attributes:
        name: ``"gaussian"``, ``"bernoulli"``, ``"binomial"``, ``"poisson"`` or
            ``"negative_binomial"``.
        link: ``"identity"``, ``"logit"``, ``"probit"`` or ``"log"``.

    Examples:
        >>> from ctxppl.models.mixed import binomial
        >>> binomial(link="probit")
        Family(name='binomial', link='probit')
    """

    name: str
    link: str

    @property
    def has_dispersion(self) -> bool:
        """Whether the family has a dispersion parameter (residual SD or NB ``phi``)."""
        return self.name in ("gaussian", "negative_binomial")

    def inverse_link(self, eta: jax.Array) -> jax.Array:
        """Mean of one trial (probability, rate or mean) at linear predictor ``eta``."""
        if self.link == "identity":
            return eta
        if self.link == "logit":
            return jax.nn.sigmoid(eta)
        if self.link == "probit":
            return ndtr(eta)
        return jnp.exp(eta)

    def loglik(self, y: jax.Array, eta: jax.Array, disp: Any = None,
               trials: Any = None) -> jax.Array:
        r"""Elementwise :math:`\log p(y \mid \eta)` (``disp``: residual SD or NB ``phi``)."""
        if self.name == "gaussian":
            return -0.5 * ((y - eta) / disp) ** 2 - jnp.log(disp) - 0.5 * np.log(2 * np.pi)
        if self.name in ("bernoulli", "binomial"):
            n = 1.0 if trials is None else trials
            if self.link == "logit":
                lp, lq = jax.nn.log_sigmoid(eta), jax.nn.log_sigmoid(-eta)
            else:
                lp, lq = log_ndtr(eta), log_ndtr(-eta)
            out = y * lp + (n - y) * lq
            if self.name == "binomial":
                out = out + gammaln(n + 1.0) - gammaln(y + 1.0) - gammaln(n - y + 1.0)
            return out
        if self.name == "poisson":
            return y * eta - jnp.exp(eta) - gammaln(y + 1.0)
        # negative binomial (NB2), mean mu = exp(eta), variance mu + mu^2 / phi
        phi = disp
        log_mu_phi = jnp.logaddexp(eta, jnp.log(phi))
        return (gammaln(y + phi) - gammaln(phi) - gammaln(y + 1.0)
                + phi * (jnp.log(phi) - log_mu_phi) + y * (eta - log_mu_phi))

    def score_info(self, y: jax.Array, eta: jax.Array, disp: Any = None,
                   trials: Any = None) -> tuple[jax.Array, jax.Array]:
        r"""Elementwise :math:`\partial\ell/\partial\eta` and observed information
        :math:`-\partial^2\ell/\partial\eta^2` (closed forms; autodiff for probit)."""
        if self.name in ("bernoulli", "binomial") and self.link == "logit":
            n = 1.0 if trials is None else trials
            mu = jax.nn.sigmoid(eta)
            return y - n * mu, n * mu * (1.0 - mu)
        if self.name == "poisson":
            mu = jnp.exp(eta)
            return y - mu, mu
        if self.name == "negative_binomial":
            mu = jnp.exp(eta)
            return (y - mu) * disp / (disp + mu), disp * mu * (disp + y) / (disp + mu) ** 2
        if self.name == "gaussian":
            return (y - eta) / disp ** 2, jnp.ones_like(eta) / disp ** 2
        ll = lambda e: jnp.sum(self.loglik(y, e, disp, trials))  # noqa: E731
        s = jax.grad(ll)(eta)
        h = -jax.jvp(jax.grad(ll), (eta,), (jnp.ones_like(eta),))[1]
        return s, h

    def check_outcome(self, y: np.ndarray, trials: np.ndarray | None, rows: Any) -> None:
        """Raise a ``ValueError`` naming offending rows when ``y`` cannot come from the family."""
        y = np.asarray(y, dtype=float)

        def fail(mask: np.ndarray, what: str) -> None:
            bad = np.flatnonzero(mask)
            if bad.size:
                labels = list(np.asarray(rows)[bad[:10]])
                more = f" (and {bad.size - 10} more)" if bad.size > 10 else ""
                raise ValueError(f"`family`={self.name!r} needs {what}; the response has "
                                 f"{bad.size} value(s) that are not, at rows {labels}{more}.")

        if self.name == "bernoulli":
            fail(~np.isin(y, (0.0, 1.0)), "a binary (0/1 or bool) response; for counts out "
                 "of n trials use family='binomial' with `trials=`")
        elif self.name == "binomial":
            n = np.ones_like(y) if trials is None else np.asarray(trials, dtype=float)
            fail((n <= 0) | (n != np.round(n)), "`trials` that are positive integers")
            fail((y < 0) | (y > n) | (y != np.round(y)),
                 "integer successes between 0 and `trials`")
        elif self.name in ("poisson", "negative_binomial"):
            fail((y < 0) | (y != np.round(y)), "non-negative integer counts")

    def observe(self, name: str, eta: jax.Array, obs: Any, disp: Any = None, trials: Any = None,
                weights: Any = None) -> jax.Array:
        r"""Record the observation site ``name`` in a NumPyro program.

        Gaussian ``weights`` are precisions (:math:`\mathrm{Var}(y_i) = \sigma^2 / w_i`, as in
        lme4); for the other families they multiply the log-likelihood (prior weights).
        """
        if self.name == "gaussian":
            scale = disp if weights is None else disp / jnp.sqrt(weights)
            return numpyro.sample(name, dist.Normal(eta, scale), obs=obs)
        if self.name == "bernoulli":
            d = (dist.BernoulliLogits(eta) if self.link == "logit"
                 else dist.BernoulliProbs(jnp.clip(ndtr(eta), 1e-7, 1 - 1e-7)))
        elif self.name == "binomial":
            n = 1 if trials is None else trials
            d = (dist.BinomialLogits(eta, total_count=n) if self.link == "logit"
                 else dist.BinomialProbs(jnp.clip(ndtr(eta), 1e-7, 1 - 1e-7), total_count=n))
        elif self.name == "poisson":
            d = dist.Poisson(jnp.exp(eta))
        else:
            d = dist.NegativeBinomial2(jnp.exp(eta), disp)
        if weights is None:
            return numpyro.sample(name, d, obs=obs)
        with numpyro.handlers.scale(scale=weights):
            return numpyro.sample(name, d, obs=obs)


def gaussian() -> Family:
    """Normal observations with identity link (``lmer``).

    Examples:
        >>> from ctxppl.models.mixed import gaussian
        >>> gaussian().link
        'identity'
    """
    return Family("gaussian", "identity")


def bernoulli(link: str = "logit") -> Family:
    """Binary observations, ``link="logit"`` or ``"probit"``.

    Examples:
        >>> from ctxppl.models.mixed import bernoulli
        >>> bernoulli("probit").name
        'bernoulli'
    """
    return get_family("bernoulli", link)


def binomial(link: str = "logit") -> Family:
    """Counts of successes out of ``trials``, ``link="logit"`` or ``"probit"``.

    Examples:
        >>> from ctxppl.models.mixed import binomial
        >>> binomial().link
        'logit'
    """
    return get_family("binomial", link)


def poisson() -> Family:
    """Counts with log link.

    Examples:
        >>> from ctxppl.models.mixed import poisson
        >>> poisson().link
        'log'
    """
    return Family("poisson", "log")


def negative_binomial() -> Family:
    """Over-dispersed counts (NB2: variance ``mu + mu**2 / phi``) with log link.

    Examples:
        >>> from ctxppl.models.mixed import negative_binomial
        >>> negative_binomial().has_dispersion
        True
    """
    return Family("negative_binomial", "log")


_ALIASES = {"normal": "gaussian", "logistic": "bernoulli", "negbinomial": "negative_binomial",
            "negbin": "negative_binomial", "nb": "negative_binomial"}
FAMILIES = tuple(_LINKS)


def get_family(family: str | Family, link: str | None = None) -> Family:
    """Resolve ``family`` (a :class:`Family` or a name) and an optional ``link`` override.

    Examples:
        >>> from ctxppl.models.mixed import get_family
        >>> get_family("negbinomial")
        Family(name='negative_binomial', link='log')
    """
    if isinstance(family, Family):
        name, default = family.name, family.link
    elif isinstance(family, str):
        name = _ALIASES.get(family.lower(), family.lower())
        if name not in _LINKS:
            raise ValueError(f"`family` must be one of {list(FAMILIES)} (or a Family); got "
                             f"{family!r}.")
        default = _LINKS[name][0]
    else:
        raise TypeError(f"`family` must be a string or a Family; got {type(family).__name__}.")
    link = default if link is None else link
    if link not in _LINKS[name]:
        raise ValueError(f"`link`={link!r} is not available for family {name!r}; choose one of "
                         f"{list(_LINKS[name])}.")
    return Family(name, link)
