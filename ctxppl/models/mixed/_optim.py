r"""A damped Newton minimiser for the few covariance (and fixed-effect) parameters.

The marginal likelihood of a mixed model has a handful of parameters (e.g. 3 for a
correlated intercept + slope) while one evaluation touches every group, so a Hessian is
cheap and Newton converges in a few steps where BFGS needs dozens. The Hessian is the
central difference of the exact (autodiff) gradient, all ``2d`` gradients in one ``vmap``:
that compiles like one gradient, where forward-over-reverse ``jax.hessian`` took 3-4x
longer to compile than to run on typical problems. The direction uses :math:`|H|` (eigenvalues made positive, floored), so
saddle points and negative curvature are escaped; a backtracking (Armijo) line search
guarantees descent. Everything runs in one ``lax.while_loop`` (jit, no host round trips).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["NewtonResult", "minimize_newton"]

# status codes
CONVERGED, MAX_ITER, NO_DECREASE = 1, 2, 3


class NewtonResult(NamedTuple):
    x: jax.Array
    fun: jax.Array
    grad: jax.Array
    hess: jax.Array
    num_iter: jax.Array
    status: jax.Array


def minimize_newton(f: Callable[[jax.Array], jax.Array], x0: jax.Array, *,
                    max_iter: int = 100, gtol: float = 1e-5,
                    max_halvings: int = 30) -> NewtonResult:
    r"""Minimise a smooth scalar ``f`` of a small vector from ``x0`` (jit-compatible).

    Stops when :math:`\max_i |g_i| \le` ``gtol`` (the caller scales ``f`` to O(1)), when
    no step along the Newton direction decreases ``f`` (the precision floor of the dtype),
    or after ``max_iter`` iterations.
    """
    vg = jax.vmap(jax.value_and_grad(f))
    dtype = x0.dtype
    d = x0.shape[0]
    eye = jnp.eye(d, dtype=dtype)

    def derivs(x):
        h = 1e-3 * jnp.maximum(1.0, jnp.abs(x))
        pts = jnp.concatenate([x[None], x + h[:, None] * eye, x - h[:, None] * eye], 0)
        v, g = vg(pts)
        H = (g[1:d + 1] - g[d + 1:]) / (2 * h[:, None])
        return v[0], g[0], 0.5 * (H + H.T)

    def direction(g, H):
        H = 0.5 * (H + H.T)
        lam, V = jnp.linalg.eigh(H)
        floor = jnp.maximum(1e-8 * jnp.max(jnp.abs(lam)), 1e-12)
        lam = jnp.maximum(jnp.abs(lam), floor)
        return -(V @ ((V.T @ g) / lam))

    def cond(s):
        return (s[5] == 0) & (s[4] < max_iter)

    def body(s):
        # One call site each for the derivatives and for f (XLA compiles every call site).
        x, _, _, _, it, _ = s
        v, g, H = derivs(x)
        conv = jnp.max(jnp.abs(g)) <= gtol
        d = direction(g, H)
        slope = jnp.dot(g, d)

        def ls_cond(c):
            t, fv, k = c
            bad = ~jnp.isfinite(fv) | (fv > v + 1e-4 * t * slope)
            return (k == 0) | (bad & (k <= max_halvings))

        def ls_body(c):
            t, _, k = c
            t = 0.5 * t
            return t, f(x + t * d), k + 1

        t, fv, k = lax.while_loop(ls_cond, ls_body, (jnp.asarray(2.0, dtype),
                                                     jnp.asarray(jnp.inf, v.dtype),
                                                     jnp.asarray(0)))
        ok = jnp.isfinite(fv) & (fv <= v) & (k <= max_halvings) & ~conv
        x_new = jnp.where(ok, x + t * d, x)
        # A step that no longer changes f (dtype precision) ends the search.
        flat = (jnp.abs(v - fv) <= 4 * jnp.finfo(dtype).eps * jnp.maximum(1.0, jnp.abs(v))) & (
            jnp.max(jnp.abs(t * d)) <= 1e-4 * (1 + jnp.max(jnp.abs(x))))
        status = jnp.where(conv, CONVERGED, jnp.where(~ok | flat, NO_DECREASE, 0))
        return x_new, jnp.where(ok, fv, v), g, H, it + 1, status

    s0 = (x0, jnp.asarray(jnp.inf, dtype), jnp.zeros_like(x0), jnp.zeros((d, d), dtype),
          jnp.asarray(0), jnp.asarray(0))
    x, v, g, H, it, status = lax.while_loop(cond, body, s0)
    status = jnp.where(status == 0, MAX_ITER, status)
    return NewtonResult(x, v, g, H, it, status)
