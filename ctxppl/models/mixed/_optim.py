r"""A damped Newton minimiser for the few covariance (and fixed-effect) parameters.

The marginal likelihood of a mixed model has a handful of parameters (e.g. 3 for a
correlated intercept + slope) while one evaluation touches every group, so a Hessian is
cheap and Newton converges in a few steps where BFGS needs dozens.

Compile time, not run time, dominates small fits, and XLA compiles every call site of the
objective separately. So the objective is called at exactly **one** place: each iteration
of one ``lax.while_loop`` evaluates ``value_and_grad`` (``vmap``-ed) at a batch of ``d+1``
points, in two phases:

* *Newton step* -- the points are the trial point :math:`x' = x + d` and
  :math:`x' + h e_i`, where :math:`d = -|H|^{-1} g` is the Newton direction (eigenvalues
  made positive and floored, so saddles and negative curvature are escaped). If
  :math:`x'` passes the Armijo test, its value, gradient and Hessian (forward differences
  of the exact autodiff gradients, symmetrised; their O(h) error only slows the last
  digits of Newton's quadratic convergence) are already there for the next step: one
  batched evaluation per Newton step.
* *line search* (when the full step fails) -- the points are :math:`x + 2^{-k} t_0 d`,
  ``k = 0..d``; the largest step passing the test is taken and its derivatives are
  evaluated next.

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
    m = d + 1
    eye = jnp.eye(d, dtype=dtype)
    halves = 2.0 ** -jnp.arange(m, dtype=dtype)
    eps = jnp.finfo(dtype).eps
    one = jnp.asarray(1.0, dtype)

    aux0 = jax.eval_shape(lambda x: fa(x)[1], x0)
    aux0 = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), aux0)

    def accept(val, grad, v, slope, direc, t):
        """Armijo; within the rounding noise of f (float32 near the optimum) the exact
        gradient decides instead: accept when the directional derivative shrank."""
        noise = 8 * eps * jnp.maximum(1.0, jnp.abs(v))
        dd = grad @ direc
        armijo = val <= v + 1e-4 * t * slope
        in_noise = (val <= v + noise) & (jnp.abs(dd) <= 0.9 * jnp.abs(slope))
        return jnp.isfinite(val) & jnp.all(jnp.isfinite(grad), -1) & (armijo | in_noise)

    def cond(s):
        return (s["status"] == 0) & (s["it"] < 3 * max_iter)

    def body(s):
        x, phase, t0 = s["x"], s["phase"], s["t0"]
        # phase 0: stencil at x; 2: stencil at the trial point x + t0 d; 1: line search
        center = jnp.where(phase == 2, x + t0 * s["d"], x)
        h = 1e-3 * jnp.maximum(1.0, jnp.abs(center))
        stencil = jnp.concatenate([center[None], center + h[:, None] * eye], 0)
        line = x[None] + (t0 * halves)[:, None] * s["d"][None]
        (vals, auxs), grads = vg(jnp.where(phase == 1, line, stencil))
        # --- stencil outcome (phase 0 always; phase 2 when the trial step is accepted)
        v, g = vals[0], grads[0]
        H = (grads[1:] - g[None]) / h[:, None]
        H = 0.5 * (H + H.T)
        direc = _direction(g, H)
        moved = phase == 2
        dec = jnp.where(moved, s["v"] - v, s["dec"])
        step = jnp.where(moved, t0 * jnp.max(jnp.abs(s["d"])), s["step"])
        flat = (s["it"] > 0) & (dec <= 8 * eps * jnp.maximum(1.0, jnp.abs(v))) & (
            step <= 1e-4 * (1 + jnp.max(jnp.abs(center))))
        conv = jnp.max(jnp.abs(g)) <= gtol
        new = {**s, "x": center, "v": v, "g": g, "H": H, "d": direc, "t0": one,
               "slope": jnp.dot(g, direc), "dec": dec, "step": step, "phase": jnp.asarray(2),
               "aux": jax.tree_util.tree_map(lambda a: a[0], auxs),
               "status": jnp.where(conv, CONVERGED, jnp.where(flat, NO_DECREASE, 0))}
        ok_trial = accept(v, g, s["v"], s["slope"], s["d"], t0)
        rejected = {**s, "phase": jnp.asarray(1), "t0": 0.5 * t0}
        # --- line-search outcome
        t = t0 * halves
        ok = accept(vals, grads, s["v"], s["slope"], s["d"], t)
        first = jnp.argmax(ok)
        found = jnp.any(ok)
        tstep = t[first] * s["d"]
        tiny = t0 * halves[-1] < 1e-10
        lin = {**s, "x": jnp.where(found, x + tstep, x),
               "dec": jnp.where(found, s["v"] - vals[first], s["dec"]),
               "step": jnp.where(found, jnp.max(jnp.abs(tstep)), s["step"]),
               "phase": jnp.where(found, 0, 1),
               "t0": jnp.where(found, one, t0 * halves[-1] * 0.5),
               "status": jnp.where(~found & tiny, NO_DECREASE, 0)}

        def pick(a, b, c):
            return jnp.where(phase == 1, c, jnp.where((phase == 0) | ok_trial, a, b))

        out = jax.tree_util.tree_map(pick, new, rejected, lin)
        out["it"] = s["it"] + 1
        out["newton"] = s["newton"] + ((phase != 1) & ((phase == 0) | ok_trial))
        return out

    s0 = {"x": x0, "v": jnp.asarray(jnp.inf, dtype), "g": jnp.zeros_like(x0),
          "H": jnp.zeros((d, d), dtype), "d": jnp.zeros_like(x0), "t0": one,
          "slope": jnp.asarray(0.0, dtype), "step": jnp.asarray(jnp.inf, dtype),
          "dec": jnp.asarray(jnp.inf, dtype), "phase": jnp.asarray(0), "it": jnp.asarray(0),
          "newton": jnp.asarray(0), "status": jnp.asarray(0), "aux": aux0}
    s = lax.while_loop(cond, body, s0)
    status = jnp.where(s["status"] == 0, MAX_ITER, s["status"])
    return NewtonResult(s["x"], s["v"], s["g"], s["H"], s["newton"], status, s["aux"])
