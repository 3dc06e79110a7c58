r"""Laplace-approximate marginal likelihood of a GLMM (what lme4's ``glmer`` maximises).

With spherical random effects :math:`u` (:math:`b = \Lambda u`, :math:`u \sim N(0, I)`),
linear predictor :math:`\eta = X\beta + Z\Lambda u + \mathrm{offset}` and the family's
log-likelihood :math:`\ell`, the deviance

.. math::

    d(\beta, \theta) = -2\sum_i w_i\,\ell(y_i \mid \eta_i(\hat u)) + \lVert\hat u\rVert^2
        + \log\left|\Lambda^T Z^T H Z \Lambda + I\right|

is evaluated at the conditional mode :math:`\hat u` (penalised IRLS: Newton steps on
:math:`u`, with step halving, vectorised over groups), where :math:`H` holds the observed
information :math:`-w_i\,\partial^2\ell/\partial\eta^2` (equal to the IRLS weights for the
canonical links; every family here is log-concave in :math:`\eta`, so it is positive).

Differentiation: the Newton iterations run under ``stop_gradient``; one more Newton step,
taken with gradients on, carries the implicit-function derivative
:math:`\partial\hat u/\partial\psi = H^{-1}\partial g/\partial\psi` exactly (``g`` vanishes at
the mode), so the outer Newton on :math:`(\beta, \theta, \log\phi)` sees exact gradients.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ctxppl._programs import stored_jit
from ctxppl.models.mixed._families import Family
from ctxppl.models.mixed._linalg import chol, logdet_chol, make_lambda, solve_lower, solve_lower_t
from ctxppl.models.mixed._optim import minimize_newton
from ctxppl.models.mixed._reml import FAST_COMPILE, SMALL, Structure

__all__ = ["GLMMData", "fit_laplace"]

_STEPS = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.015625)


class GLMMData(NamedTuple):
    """Observation-level arrays (working dtype). ``cols``: group code (block) or columns."""

    y: Any
    X: Any
    Z: Any
    cols: Any
    w: Any
    offset: Any
    trials: Any


def _split(psi, p, n_theta):
    return psi[:p], psi[p:p + n_theta], psi[p + n_theta:]


def _zlam(Z, lams, structure: Structure):
    """Rows of :math:`Z\\Lambda` (same sparsity pattern as ``Z``)."""
    out, i = [], 0
    for lam, (_, q) in zip(lams, structure.sizes, strict=True):
        out.append(Z[:, i:i + q] @ lam)
        i += q
    return jnp.concatenate(out, 1) if len(out) > 1 else out[0]


class _Inner(NamedTuple):
    """Assembly and solves of the penalised system, for one layout."""

    eta: Any
    grad_hess: Any
    solve: Any
    logdet: Any
    objective: Any  # per-group (block) or total (dense) penalised log-likelihood


def _inner(family: Family, data: GLMMData, ZL, eta0, disp, structure: Structure, Q: int):
    def loglik(eta):
        return data.w * family.loglik(data.y, eta, disp, data.trials)

    def score_info(eta):
        s, h = family.score_info(data.y, eta, disp, data.trials)
        return data.w * s, data.w * jnp.maximum(h, 0.0)

    if structure.mode == "block":
        G, q = Q, ZL.shape[1]
        codes = data.cols

        def eta(u):
            return eta0 + jnp.sum(ZL * u[codes], -1)

        def grad_hess(u):
            s, h = score_info(eta(u))
            g = jax.ops.segment_sum(ZL * s[:, None], codes, G) - u
            Hm = jax.ops.segment_sum(h[:, None, None] * ZL[:, :, None] * ZL[:, None, :], codes, G)
            return g, Hm + jnp.eye(q, dtype=ZL.dtype)

        def solve(H, g):
            L = chol(H)
            return solve_lower_t(L, solve_lower(L, g[..., None]))[..., 0], L

        def objective(u):
            return jax.ops.segment_sum(loglik(eta(u)), codes, G) - 0.5 * jnp.sum(u * u, -1)
    else:
        cols = data.cols

        def eta(u):
            return eta0 + jnp.sum(ZL * u[cols], -1)

        def grad_hess(u):
            s, h = score_info(eta(u))
            g = jnp.zeros(Q, ZL.dtype).at[cols].add(ZL * s[:, None]) - u
            outer = h[:, None, None] * ZL[:, :, None] * ZL[:, None, :]
            Hm = jnp.zeros((Q, Q), ZL.dtype).at[cols[:, :, None], cols[:, None, :]].add(outer)
            return g, Hm + jnp.eye(Q, dtype=ZL.dtype)

        def solve(H, g):
            L = jnp.linalg.cholesky(H)
            x = jax.scipy.linalg.solve_triangular(L, g, lower=True)
            return jax.scipy.linalg.solve_triangular(L, x, lower=True, trans=1), L

        def objective(u):
            return jnp.sum(loglik(eta(u))) - 0.5 * jnp.sum(u * u)

    return _Inner(eta, grad_hess, solve, logdet_chol, objective)


def _mode(inner: _Inner, u0, structure: Structure, max_iter: int = 50, tol: float = 1e-6):
    """Conditional mode of ``u`` by Newton with step halving (per group in the block layout)."""
    steps = jnp.asarray(_STEPS, u0.dtype)

    def cond(c):
        return (c[1] < max_iter) & (c[2] > tol)

    def body(c):
        u, it, _ = c
        g, H = inner.grad_hess(u)
        delta, _ = inner.solve(H, g)
        cands = u[None] + steps.reshape((-1,) + (1,) * u.ndim) * delta[None]
        vals = jax.vmap(inner.objective)(cands)  # (S, G) block, (S,) dense
        best = jnp.argmax(jnp.where(jnp.isfinite(vals), vals, -jnp.inf), axis=0)
        if structure.mode == "block":
            t = steps[best][:, None]
        else:
            t = steps[best]
        u_new = u + t * delta
        return u_new, it + 1, jnp.max(jnp.abs(u_new - u))

    u, it, err = lax.while_loop(cond, body, (u0, jnp.asarray(0), jnp.asarray(jnp.inf, u0.dtype)))
    return u, it, err


def _setup(psi, data: GLMMData, structure: Structure, family: Family, Q: int):
    p = data.X.shape[1]
    n_theta = psi.shape[0] - p - (1 if family.name == "negative_binomial" else 0)
    beta, theta, rest = _split(psi, p, n_theta)
    disp = jnp.exp(rest[0]) if family.name == "negative_binomial" else None
    lams = make_lambda(theta, structure.layout)
    ZL = _zlam(data.Z, lams, structure)
    eta0 = data.X @ beta + data.offset
    return _inner(family, data, ZL, eta0, disp, structure, Q), lams, disp


def laplace_deviance(psi, data: GLMMData, structure: Structure, family: Family, Q: int):
    """``(deviance, (u_hat, inner_iterations, inner_error))`` at ``psi``."""
    inner, _, disp = _setup(psi, data, structure, family, Q)
    ZL_cols = data.Z.shape[1]
    shape = (Q, ZL_cols) if structure.mode == "block" else (Q,)
    u0 = jnp.zeros(shape, psi.dtype)
    u_k, it, err = _mode(inner, u0, structure)
    u_k = lax.stop_gradient(u_k)
    g, H = inner.grad_hess(u_k)
    delta, _ = inner.solve(H, g)
    u = u_k + delta  # differentiable: carries d u_hat / d psi
    _, H = inner.grad_hess(u)
    L = chol(H) if structure.mode == "block" else jnp.linalg.cholesky(H)
    ll = jnp.sum(data.w * family.loglik(data.y, inner.eta(u), disp, data.trials))
    dev = -2.0 * ll + jnp.sum(u * u) + inner.logdet(L)
    return dev, (u, it, err)


def _fit_laplace(data: GLMMData, psi0: jax.Array, structure: Structure, family: Family, Q: int,
                max_iter: int = 100) -> dict[str, jax.Array]:
    """Maximise the Laplace marginal likelihood over ``(beta, theta[, log phi])``."""
    scale = 1.0 / jnp.sum(data.w > 0)

    def objective(s):  # noqa: ANN001, ANN202
        dev, aux = laplace_deviance(s, data, structure, family, Q)
        return scale * dev, aux

    res = minimize_newton(objective, psi0, has_aux=True, max_iter=max_iter, gtol=1e-6)
    u, it, err = res.aux
    inner, _, _ = _setup(res.x, data, structure, family, Q)
    _, H = inner.grad_hess(u)
    L = chol(H) if structure.mode == "block" else jnp.linalg.cholesky(H)
    return {"psi": res.x, "deviance": res.fun / scale, "u": u, "L": L, "hess": res.hess / scale,
            "grad": res.grad, "num_iter": res.num_iter, "status": res.status,
            "inner_iter": it, "inner_err": err}


# structure, family, Q and max_iter are static (not arrays); a fresh process loads the
# lowered program from ctxppl's store (ctxppl/_programs.py)
fit_laplace_small = stored_jit(_fit_laplace, "mixed_laplace", compiler_options=FAST_COMPILE)
fit_laplace_large = stored_jit(_fit_laplace, "mixed_laplace")


def fit_laplace(data: GLMMData, psi0: jax.Array, structure: Structure, family: Family, Q: int,
                max_iter: int = 100) -> dict[str, jax.Array]:
    """Jitted :func:`_fit_laplace` (fast-compiling variant for small problems)."""
    fn = fit_laplace_small if data.y.shape[0] < 10 * SMALL else fit_laplace_large
    return fn(data, psi0, structure, family, Q, max_iter)
