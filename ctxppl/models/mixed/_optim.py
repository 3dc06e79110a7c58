r"""A damped Newton minimiser for the few covariance (and fixed-effect) parameters.

The marginal likelihood of a mixed model has a handful of parameters (e.g. 3 for a
correlated intercept + slope) while one evaluation touches every group, so a Hessian is
cheap and Newton converges in a few steps where BFGS needs dozens.

Compile time, not run time, dominates small fits, and XLA compiles every call site of the
objective separately. So the objective is called at exactly **one** place: each iteration
of one ``lax.while_loop`` evaluates ``value_and_grad`` (``vmap``-ed) at a batch of ``2d+1``
points, alternating two phases:

* *derivatives* -- the points are :math:`x` and :math:`x \pm h e_i`; the Hessian is the
  central difference of the exact (autodiff) gradients, symmetrised;
* *line search* -- the points are :math:`x + 2^{-k} t_0 d` for ``k = 0..2d`` along the
  Newton direction :math:`d = -|H|^{-1} g` (eigenvalues made positive and floored, so
  saddles and negative curvature are escaped); the largest step meeting the Armijo
  condition is taken, or the search continues with smaller steps.

Auxiliary outputs of the objective at the final point come back with the result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["NewtonResult", "minimize_newton", "CONVERGED", "MAX_ITER", "NO_DECREASE"]

# status codes
CONVERGED, MAX_ITER, NO_DECREASE = 1, 2, 3


class NewtonResult(NamedTuple):
    x: jax.Array
    fun: jax.Array
    grad: jax.Array
    hess: jax.Array
    num_iter: jax.Array
    status: jax.Array
    aux: Any


def _direction(g: jax.Array, H: jax.Array) -> jax.Array:
    lam, V = jnp.linalg.eigh(H)
    floor = jnp.maximum(1e-8 * jnp.max(jnp.abs(lam)), 1e-12)
    lam = jnp.maximum(jnp.abs(lam), floor)
    return -(V @ ((V.T @ g) / lam))


def minimize_newton(f: Callable[[jax.Array], Any], x0: jax.Array, *, has_aux: bool = False,
                    max_iter: int = 100, gtol: float = 1e-6) -> NewtonResult:
    r"""Minimise a smooth scalar ``f`` of a small vector from ``x0`` (jit-compatible).

    Stops when :math:`\max_i |g_i| \le` ``gtol`` (the caller scales ``f`` to O(1)), when no
    step decreases ``f`` any more (the precision floor of the dtype), or after ``max_iter``
    Newton steps.
    """
    fa = f if has_aux else (lambda x: (f(x), None))
    vg = jax.vmap(jax.value_and_grad(fa, has_aux=True))
    dtype = x0.dtype
    d = x0.shape[0]
    m = 2 * d + 1
    eye = jnp.eye(d, dtype=dtype)
    halves = 2.0 ** -jnp.arange(m, dtype=dtype)
    eps = jnp.finfo(dtype).eps

    def points(x, phase, direc, t0):
        h = 1e-3 * jnp.maximum(1.0, jnp.abs(x))
        deriv = jnp.concatenate([x[None], x + h[:, None] * eye, x - h[:, None] * eye], 0)
        line = x[None] + (t0 * halves)[:, None] * direc[None]
        return jnp.where(phase == 0, deriv, line), h

    # aux structure from one abstract evaluation
    aux0 = jax.eval_shape(lambda x: fa(x)[1], x0)
    aux0 = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), aux0)

    def cond(s):
        return (s["status"] == 0) & (s["it"] < 2 * max_iter)

    def body(s):
        x, phase = s["x"], s["phase"]
        pts, h = points(x, phase, s["d"], s["t0"])
        (vals, auxs), grads = vg(pts)
        # --- derivative phase
        v, g = vals[0], grads[0]
        H = (grads[1:d + 1] - grads[d + 1:]) / (2 * h[:, None])
        H = 0.5 * (H + H.T)
        conv = jnp.max(jnp.abs(g)) <= gtol
        flat = (s["it"] > 0) & (s["dec"] <= 8 * eps * jnp.maximum(1.0, jnp.abs(v))) \
            & (s["step"] <= 1e-4 * (1 + jnp.max(jnp.abs(x))))
        direc = _direction(g, H)
        der = {**s, "v": v, "g": g, "H": H, "d": direc, "t0": jnp.asarray(1.0, dtype),
               "phase": jnp.asarray(1), "slope": jnp.dot(g, direc),
               "aux": jax.tree_util.tree_map(lambda a: a[0], auxs),
               "status": jnp.where(conv, CONVERGED, jnp.where(flat, NO_DECREASE, 0))}
        # --- line-search phase
        t = s["t0"] * halves
        # Armijo; within the rounding noise of f (float32 near the optimum) the exact
        # gradient decides instead: accept when the directional derivative shrank.
        noise = 8 * eps * jnp.maximum(1.0, jnp.abs(s["v"]))
        dd = grads @ s["d"]
        armijo = vals <= s["v"] + 1e-4 * t * s["slope"]
        in_noise = (vals <= s["v"] + noise) & (jnp.abs(dd) <= 0.9 * jnp.abs(s["slope"]))
        ok = jnp.isfinite(vals) & jnp.all(jnp.isfinite(grads), -1) & (armijo | in_noise)
        first = jnp.argmax(ok)
        found = jnp.any(ok)
        step = t[first] * s["d"]
        tiny = s["t0"] * halves[-1] < 1e-10
        lin = {**s, "x": jnp.where(found, x + step, x),
               "v": jnp.where(found, vals[first], s["v"]),
               "dec": jnp.where(found, s["v"] - vals[first], s["dec"]),
               "step": jnp.where(found, jnp.max(jnp.abs(step)), s["step"]),
               "phase": jnp.where(found, 0, 1),
               "t0": jnp.where(found, s["t0"], s["t0"] * halves[-1] * 0.5),
               "status": jnp.where(~found & tiny, NO_DECREASE, 0)}
        out = jax.tree_util.tree_map(lambda a, b: jnp.where(phase == 0, a, b), der, lin)
        out["it"] = s["it"] + 1
        return out

    s0 = {"x": x0, "v": jnp.asarray(jnp.inf, dtype), "g": jnp.zeros_like(x0),
          "H": jnp.zeros((d, d), dtype), "d": jnp.zeros_like(x0),
          "t0": jnp.asarray(1.0, dtype), "slope": jnp.asarray(0.0, dtype),
          "step": jnp.asarray(jnp.inf, dtype), "dec": jnp.asarray(jnp.inf, dtype),
          "phase": jnp.asarray(0), "it": jnp.asarray(0),
          "status": jnp.asarray(0), "aux": aux0}
    s = lax.while_loop(cond, body, s0)
    status = jnp.where(s["status"] == 0, MAX_ITER, s["status"])
    return NewtonResult(s["x"], s["v"], s["g"], s["H"], s["it"] // 2, status, s["aux"])
