r"""Exploration from the Laplace posterior: predictive moments, Thompson sampling, UCB.

The posterior of an entity's coefficients is :math:`\mathcal N(m, P^{-1})`. Draws use the
*covariance* :math:`P^{-1}` (through the Cholesky factor of :math:`P`: with
:math:`P = L L^\top`, :math:`\theta = m + L^{-\top} z` has covariance :math:`P^{-1}`), so the
spread shrinks as data accumulate. (Sampling with :math:`P` itself, as one known peer does,
makes exploration *grow* with data.)
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["predictive_moments", "predictive_mean", "sample_coefficients", "ucb_from_moments"]


def _chol_batch(precision: jax.Array) -> jax.Array:
    return jnp.linalg.cholesky(precision)


@partial(jax.jit, static_argnames=("full",))
def _moments(mean: jax.Array, precision: jax.Array, x: jax.Array, offset: jax.Array,
             full: bool) -> tuple[jax.Array, jax.Array]:
    eta = jnp.sum(mean * x, -1) + offset
    if full:
        chol = _chol_batch(precision)
        z = jax.vmap(lambda c, v: jax.scipy.linalg.solve_triangular(c, v, lower=True))(chol, x)
        var = jnp.sum(z * z, -1)
    else:
        var = jnp.sum(x * x / precision, -1)
    return eta, var


def predictive_moments(mean: Float[Array, "n d"], precision: Float[Array, "n ..."],
                       x: Float[Array, "n d"],
                       offset: Float[Array, " n"]) -> tuple[jax.Array, jax.Array]:
    r"""Mean and variance of the linear predictor :math:`x^\top\theta + o` per record.

    Args:
        mean: Coefficient mean of each record's entity ``(n, d)``.
        precision: Its precision ``(n, d, d)`` or diagonal ``(n, d)``.
        x: Features ``(n, d)``.
        offset: Offsets ``(n,)``.

    Returns:
        ``(eta, var)``, each ``(n,)``: :math:`x^\top m + o` and :math:`x^\top P^{-1} x`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from ctxppl.online._explore import predictive_moments
        >>> eta, var = predictive_moments(jnp.ones((1, 2)), 4 * jnp.eye(2)[None],
        ...                               jnp.ones((1, 2)), jnp.zeros(1))
        >>> float(eta[0]), float(var[0])
        (2.0, 0.5)
    """
    return _moments(mean, precision, x, offset, precision.ndim == 3)


def predictive_mean(family: str, eta: jax.Array, var: jax.Array) -> jax.Array:
    r"""Posterior predictive mean of the response from the linear predictor's moments.

    Gaussian: :math:`\eta`. Poisson: :math:`e^{\eta + s^2/2}` (exact for a Gaussian
    :math:`\eta`). Bernoulli: the probit approximation
    :math:`\sigma(\eta / \sqrt{1 + \pi s^2 / 8})` of :math:`E[\sigma(\eta)]`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from ctxppl.online import predictive_mean
        >>> float(predictive_mean("poisson", jnp.array(0.0), jnp.array(2.0)))  # e^1
        2.7182817459106445
    """
    if family == "gaussian":
        return eta
    if family == "poisson":
        return jnp.exp(eta + 0.5 * var)
    return jax.nn.sigmoid(eta / jnp.sqrt(1.0 + jnp.pi * var / 8.0))


@partial(jax.jit, static_argnames=("num_samples", "full"))
def _sample(key: jax.Array, mean: jax.Array, precision: jax.Array, num_samples: int,
            full: bool) -> jax.Array:
    z = jax.random.normal(key, (num_samples,) + mean.shape, mean.dtype)
    if full:
        chol = _chol_batch(precision)
        solve = jax.vmap(lambda c, v: jax.scipy.linalg.solve_triangular(c, v, lower=True,
                                                                         trans="T"))
        dev = jax.vmap(lambda zz: solve(chol, zz))(z)
    else:
        dev = z / jnp.sqrt(precision)[None]
    return mean[None] + dev


def sample_coefficients(key: jax.Array, mean: Float[Array, "k d"],
                        precision: Float[Array, "k ..."], num_samples: int = 1) -> jax.Array:
    r"""Draws :math:`\theta \sim \mathcal N(m, P^{-1})` for each of ``k`` entities.

    Args:
        key: PRNG key.
        mean: ``(k, d)`` means.
        precision: ``(k, d, d)`` precisions or ``(k, d)`` diagonal precisions.
        num_samples: Draws per entity.

    Returns:
        ``(num_samples, k, d)``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from ctxppl.online._explore import sample_coefficients
        >>> th = sample_coefficients(jax.random.key(0), jnp.zeros((1, 1)),
        ...                          jnp.full((1, 1, 1), 100.0), num_samples=4000)
        >>> round(float(th.std()), 1)  # covariance 1/100, not the precision
        0.1
    """
    if mean.ndim != 2:
        raise ValueError(f"`mean` must have shape (entities, features); got {mean.shape}.")
    return _sample(key, mean, precision, int(num_samples), precision.ndim == 3)


def ucb_from_moments(eta: jax.Array, var: jax.Array, alpha: float) -> jax.Array:
    r"""Upper confidence bound :math:`\eta + \alpha\, s` of the linear predictor.

    Examples:
        >>> import jax.numpy as jnp
        >>> from ctxppl.online._explore import ucb_from_moments
        >>> float(ucb_from_moments(jnp.array(1.0), jnp.array(4.0), 0.5))
        2.0
    """
    return eta + alpha * jnp.sqrt(var)
