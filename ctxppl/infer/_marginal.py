r"""``method="marginal"``: Gaussian weights integrated out, hyperparameters by their marginal
likelihood, then a Laplace approximation over the hyperparameters.

The latent sites split into *weights* :math:`\beta` -- sample sites marked
``infer={"ctx_linear": True}`` with a Normal prior (``ctx.encoder`` marks the arrays an
encoder's output is linear in, e.g. the basis weights of :class:`ctxppl.nn.HSGP`) -- and
*hyperparameters* :math:`\eta` (every other latent site, in unconstrained space) plus the
point-estimated ``param`` sites :math:`\psi`. With :math:`H = -\nabla^2_\beta \log p` at the
conditional mode :math:`\hat\beta(\eta, \psi)`,

.. math::

    \log p(y \mid \eta, \psi) + \log p(\eta) \approx
    \log p(y, \hat\beta, \eta) + \tfrac{D}{2}\log 2\pi - \tfrac12 \log\det H,

exact when the likelihood is Gaussian and linear in :math:`\beta` (then :math:`\beta \mid y,
\eta` is exactly Gaussian), otherwise the Laplace approximation of the marginal likelihood
(Rasmussen & Williams 2006, sec. 3.4). The hyperparameters maximise it (L-BFGS-B on one
compiled value-and-gradient); a Gaussian at the maximum, with the Hessian of the negative log
marginal as precision (central differences of that gradient), stands for their posterior
(``hyper="laplace"``; ``hyper="map"`` holds them fixed); each hyperparameter draw gets its own
exact Gaussian over the weights.

Numerics (float32 is enough): Gaussian observations enter :math:`H` in square-root form --
:math:`H = R^\top R` from a QR factorisation of :math:`[L_0^\top; B]`, where :math:`B` is the
Jacobian of the standardised residuals :math:`(y - \mu)/\sigma` and :math:`L_0 L_0^\top` the
rest of :math:`H` (priors, other likelihoods) -- so a small noise scale (noise-free data) does
not square the condition number. Other likelihoods enter through the per-member parameters
(``ctx.contextual`` sites): :math:`\sum_i J_i^\top \Lambda_i J_i` with :math:`J_i =
\partial\theta_i / \partial\beta` and :math:`\Lambda_i = -\nabla^2_{\theta_i}\log p` (the
likelihood factorises over members), or, without such sites, the Hessian of the whole model.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.infer.util import log_density

from ctxppl.infer._loop import CONVERGED, MAX_STEPS, NONFINITE
from ctxppl.infer._sites import (
    _is_latent,
    _is_real,
    constrain_substitute,
    constrained_values,
    initial_unconstrained,
    wrap_model,
)

__all__ = ["run_marginal", "weight_sites", "contextual_sites"]

_MSG_NO_WEIGHTS = (
    "method='marginal' integrates out Gaussian weights, but the model has none: a sample site "
    "with a Normal prior marked infer={{'ctx_linear': True}}. Give an encoder that is linear in "
    "its weights a prior, e.g.\n\n"
    "    gp = ctx.nn.HSGP(C.shape[1], X.shape[1], domain=C)\n"
    "    enc = ctx.encoder('enc', gp, prior=gp.prior)\n\n"
    "Latent sites of this model: {latents}."
)


def _base(d: Any) -> Any:
    while isinstance(d, dist.Independent | dist.ExpandedDistribution | dist.MaskedDistribution):
        d = d.base_dist
    return d


def _mask(d: Any) -> Any:
    """The mask of a (possibly wrapped) MaskedDistribution, else ``None``."""
    while isinstance(d, dist.Independent | dist.ExpandedDistribution | dist.MaskedDistribution):
        if isinstance(d, dist.MaskedDistribution) and not isinstance(d._mask, bool):
            return d._mask
        if isinstance(d, dist.MaskedDistribution) and d._mask is False:
            return False
        d = d.base_dist
    return None


def weight_sites(tr: dict) -> tuple[list[str], list[str], list[str]]:
    """``(weights, hyper_latents, params)`` site names of a trace (see the module doc)."""
    weights, hyper, params = [], [], []
    for n, s in tr.items():
        if s["type"] == "param":
            params.append(n)
        elif _is_latent(s):
            if s["infer"].get("ctx_linear") and isinstance(_base(s["fn"]), dist.Normal) \
                    and _is_real(s["fn"].support):
                weights.append(n)
            else:
                hyper.append(n)
    if not weights:
        raise ValueError(_MSG_NO_WEIGHTS.format(latents=sorted(hyper) or "none"))
    return weights, hyper, params


def contextual_sites(tr: dict) -> list[str]:
    """Per-member parameter sites written by ``ctx.contextual`` (deterministic ones)."""
    return [n for n, s in tr.items() if s["type"] == "deterministic"
            and s.get("infer", {}).get("ctx_contextual")]


def _gaussian_sites(tr: dict) -> list[str]:
    return [n for n, s in tr.items() if s["type"] == "sample" and s["is_observed"]
            and not n.startswith("_") and isinstance(_base(s["fn"]), dist.Normal)
            and _mask(s["fn"]) is not False]


def _psd(lam: jax.Array) -> jax.Array:
    """Per-member curvature blocks with negative eigenvalues set to zero (generalised
    Gauss-Newton: a penalty that is not convex, e.g. a DAG penalty, must not make ``H``
    indefinite). The gradient passes straight through (the projection is held), so blocks
    that are already positive semi-definite -- every log-concave likelihood -- are exact."""
    w, v = jnp.linalg.eigh(0.5 * (lam + jnp.swapaxes(lam, -1, -2)))
    proj = jnp.einsum("...ij,...j,...kj->...ik", v, jnp.maximum(w, 0.0), v)
    return lam + jax.lax.stop_gradient(proj - lam)


@jax.jit
def _solve_upper(R: jax.Array, eps: jax.Array) -> jax.Array:
    """``R^{-1} eps``: draws with covariance ``(R^T R)^{-1}``."""
    return jax.scipy.linalg.solve_triangular(R, eps, lower=False)


def _qr_r(A: jax.Array) -> jax.Array:
    return jnp.linalg.qr(A, mode="r")


def _gram_solve(R: jax.Array, g: jax.Array) -> jax.Array:
    """``(R^T R)^{-1} g``."""
    y = jax.scipy.linalg.solve_triangular(R, g, trans="T", lower=False)
    return jax.scipy.linalg.solve_triangular(R, y, lower=False)


@jax.custom_vjp
def _half_logdet_gram(A: jax.Array) -> jax.Array:
    r""":math:`\tfrac12 \log\det(A^\top A)` by QR, with the explicit gradient
    :math:`A (A^\top A)^{-1}` (two triangular solves instead of differentiating the QR)."""
    return jnp.sum(jnp.log(jnp.abs(jnp.diag(_qr_r(A)))))


def _half_logdet_fwd(A):  # noqa: ANN001, ANN202
    R = _qr_r(A)
    return jnp.sum(jnp.log(jnp.abs(jnp.diag(R)))), (A, R)


def _half_logdet_bwd(res, ct):  # noqa: ANN001, ANN202
    A, R = res
    return (ct * _gram_solve(R, A.T).T,)


_half_logdet_gram.defvjp(_half_logdet_fwd, _half_logdet_bwd)


class _Problem:
    """The model as functions of flat weights ``b`` and unconstrained others ``o``."""

    def __init__(self, model, args, kwargs, u, weights, tr):  # noqa: ANN001
        self.model, self.args, self.kwargs = model, args, kwargs
        b0, self.unravel = ravel_pytree({n: u[n] for n in weights})
        self.b0 = jnp.zeros_like(b0)
        self.size = b0.shape[0]
        self.gauss = tuple(_gaussian_sites(tr))
        thetas = contextual_sites(tr)
        leads = {jnp.shape(tr[n]["value"])[0] if jnp.ndim(tr[n]["value"]) else None
                 for n in thetas}
        self.thetas = tuple(thetas) if len(leads) == 1 and None not in leads else ()

    def _values(self, b, o):  # noqa: ANN001, ANN202
        return {**o, **self.unravel(b)}

    def lj(self, b, o, fixed=None, hide=()):  # noqa: ANN001, ANN201
        """``log p`` (with log|J| of the hyperparameters' transforms); ``fixed`` sets the
        per-member parameters, ``hide`` drops sites."""
        m = constrain_substitute(self.model, self._values(b, o), jacobian=True)
        if fixed:
            m = handlers.substitute(m, data=fixed)
        if hide:
            m = handlers.block(m, hide=list(hide))
        lp, _ = log_density(handlers.seed(m, jax.random.key(0)), self.args, self.kwargs, {})
        return lp

    def nlj(self, b, o):  # noqa: ANN001, ANN201
        return -self.lj(b, o)

    def _trace(self, b, o):  # noqa: ANN001, ANN202
        m = handlers.seed(constrain_substitute(self.model, self._values(b, o)),
                          jax.random.key(0))
        return handlers.trace(m).get_trace(*self.args, **self.kwargs)

    def _residuals(self, b, o):  # noqa: ANN001, ANN202
        """Standardised residuals of the Gaussian observations, flat."""
        tr = self._trace(b, o)
        out = []
        for n in self.gauss:
            s = tr[n]
            base = _base(s["fn"])
            y = s["value"]
            r = (y - jnp.broadcast_to(base.loc, jnp.shape(y))) / jnp.broadcast_to(
                base.scale, jnp.shape(y))
            mask = _mask(s["fn"])
            if mask is not None:
                r = r * jnp.broadcast_to(mask, jnp.shape(r))
            if s["scale"] is not None:
                r = r * jnp.sqrt(jnp.broadcast_to(s["scale"], jnp.shape(r)))
            out.append(jnp.ravel(r))
        return jnp.concatenate(out) if out else jnp.zeros((0,), self.b0.dtype)

    def _theta(self, b, o):  # noqa: ANN001, ANN202
        tr = self._trace(b, o)
        th = {n: tr[n]["value"] for n in self.thetas}
        n = next(iter(th.values())).shape[0]
        return jnp.concatenate([jnp.reshape(v, (n, -1)) for v in th.values()], axis=1), th

    def _rest(self, b, o):  # noqa: ANN001, ANN202
        """Gradient and Hessian of ``-log p`` without the Gaussian observations."""
        if not self.thetas:
            f = lambda bb: -self.lj(bb, o, hide=self.gauss)
            return jax.grad(f)(b), jax.hessian(f)(b)
        flat, th = self._theta(b, o)
        J = jax.jacfwd(lambda bb: self._theta(bb, o)[0])(b)  # (n, p, D)
        n, p = flat.shape
        shapes = {k: v.shape for k, v in th.items()}
        cuts = list(itertools.accumulate(math.prod(v[1:]) for v in shapes.values()))[:-1]

        def unflat(t):  # noqa: ANN001, ANN202
            return {k: jnp.reshape(x, shapes[k])
                    for k, x in zip(shapes, jnp.split(t, cuts, axis=1), strict=True)}

        f = lambda bb, t: -self.lj(bb, o, unflat(t), self.gauss)
        g_t = jax.grad(f, 1)(b, flat)
        # one Hessian-vector product per member parameter gives column k of every block
        eye = jnp.broadcast_to(jnp.eye(p, dtype=flat.dtype)[:, None, :], (p, n, p))
        cols = jax.vmap(lambda v: jax.jvp(lambda t: jax.grad(f, 1)(b, t), (flat,), (v,))[1])(eye)
        lam = _psd(jnp.moveaxis(cols, 0, -1))  # (n, p, p)
        g = jax.grad(f, 0)(b, flat) + jnp.einsum("npd,np->d", J, g_t)
        h = jax.hessian(f, 0)(b, flat) + jnp.einsum("npd,npq,nqe->de", J, lam, J)
        return g, h

    def factor(self, b, o):  # noqa: ANN001, ANN201
        """``(g, A)``: gradient of ``-log p`` and a square root ``A`` of its Hessian,
        ``H = A^T A`` (Gaussian observations as rows of residual Jacobians, never squared)."""
        g, h = self._rest(b, o)
        l0 = jnp.linalg.cholesky(0.5 * (h + h.T))
        if not self.gauss:
            return g, l0.T
        B = jax.jacfwd(self._residuals)(b, o)  # (m, D)
        # the exact gradient (a noise scale that depends on the weights, as in a Markov
        # network, adds terms the residuals do not carry; H is then Gauss-Newton there)
        return jax.grad(self.nlj)(b, o), jnp.concatenate([l0.T, B], axis=0)

    def newton(self, b, o):  # noqa: ANN001, ANN201
        """One Newton step from ``b``: ``(new b, R at b)`` with ``R^T R = H``."""
        g, A = self.factor(b, o)
        R = _qr_r(A)
        return b - _gram_solve(R, g), R

    def neg_marginal(self, o, b):  # noqa: ANN001, ANN201
        r"""Negative Laplace log marginal at ``o`` (``b``: a warm start).

        A Newton step from ``b`` and one step of iterative refinement (the gradient again at
        the new point, the same factor) give the mode to float32 accuracy. The gradient holds
        the mode fixed (envelope theorem: :math:`\nabla_\beta \log p = 0` there), and
        :math:`\log\det H` has an explicit gradient (:func:`_half_logdet_gram`) that ignores
        how :math:`H` moves with the mode (it does not, for a Gaussian likelihood)."""
        b0 = jax.lax.stop_gradient(b)
        g, A = self.factor(b0, o)
        R = _qr_r(jax.lax.stop_gradient(A))
        b1 = jax.lax.stop_gradient(b0 - _gram_solve(R, g))
        b1 = jax.lax.stop_gradient(b1 - _gram_solve(R, jax.grad(self.nlj)(b1, o)))
        val = self.nlj(b1, o) + _half_logdet_gram(A) - 0.5 * self.size * math.log(2 * math.pi)
        return val, b1

    def mode(self, b, o, steps):  # noqa: ANN001, ANN201
        """Newton to convergence (at most ``steps``; a Gaussian likelihood needs one step and
        a second to confirm), halving a step that fails to lower the objective. Returns the
        mode and ``R`` of the last factorisation (at the mode up to the last, tiny step)."""
        def body(carry):  # noqa: ANN001, ANN202
            i, b, _, _ = carry
            f0 = self.nlj(b, o)
            b_new, R = self.newton(b, o)

            def worse(c):  # noqa: ANN001, ANN202
                j, bn = c
                return (j < 6) & ~(self.nlj(bn, o) <= f0 + 1e-6 * jnp.abs(f0))

            _, b_new = jax.lax.while_loop(worse, lambda c: (c[0] + 1, 0.5 * (b + c[1])),
                                          (0, b_new))
            delta = jnp.max(jnp.abs(b_new - b)) / (1.0 + jnp.max(jnp.abs(b)))
            return i + 1, b_new, R, delta

        def cond(carry):  # noqa: ANN001, ANN202
            i, _, _, delta = carry
            return (i < steps) & (delta > 1e-5)

        R0 = jnp.zeros((self.size, self.size), b.dtype)
        _, b, R, _ = jax.lax.while_loop(cond, body, (0, b, R0, jnp.asarray(jnp.inf, b.dtype)))
        return b, R


# ---------------------------------------------------------------- compiled stages
def _setup(model, plate, wts, init_strategy, key, args, kwargs):  # noqa: ANN001, ANN202
    full = wrap_model(model, plate, wts, full=True)
    u, _, _ = initial_unconstrained(full, key, args, kwargs, init_strategy)
    tr = handlers.trace(handlers.substitute(handlers.seed(full, key), substitute_fn=init_strategy)
                        ).get_trace(*args, **kwargs)
    weights, hyper, params = weight_sites(tr)
    prob = _Problem(full, args, kwargs, u, weights, tr)
    others = {n: u[n] for n in hyper + params}
    o0, unravel_o = ravel_pytree(others)
    flags = {n: jax.tree_util.tree_map(lambda a, f=(n in hyper): jnp.full(jnp.shape(a), f),
                                       others[n]) for n in others}
    is_hyper = ravel_pytree(flags)[0] > 0.5
    return prob, o0, unravel_o, is_hyper, tuple(hyper), tuple(params), tuple(weights)


@eqx.filter_jit
def _stage_init(setup):  # noqa: ANN001, ANN202
    prob, o0, _, is_hyper, *_ = _setup(*setup)
    return o0, prob.b0, is_hyper


@eqx.filter_jit
def _stage_fg(setup, o, b):  # noqa: ANN001, ANN202
    prob, _, unravel_o, *_ = _setup(*setup)
    (val, b1), g = jax.value_and_grad(lambda oo: prob.neg_marginal(unravel_o(oo), b),
                                      has_aux=True)(o)
    return val, g, b1


@eqx.filter_jit
def _stage_mode(setup, o, b, steps):  # noqa: ANN001, ANN202
    """The conditional mode of the weights and ``R`` (``R^T R = H``) there."""
    prob, _, unravel_o, *_ = _setup(*setup)
    b, R = prob.mode(b, unravel_o(o), steps)
    return b, R, jnp.all(jnp.isfinite(R))


@eqx.filter_jit
def _stage_values(setup, os, bs):  # noqa: ANN001, ANN202
    """Constrained values of every latent and param site at each (o, b) pair."""
    prob, _, unravel_o, *_ = _setup(*setup)
    key = jax.random.key(0)
    return jax.vmap(lambda o, b: constrained_values(
        prob.model, {**unravel_o(o), **prob.unravel(b)}, key, prob.args, prob.kwargs))(os, bs)


# ---------------------------------------------------------------- driver
def _fd_hessian(fg, x, idx, step=5e-2):  # noqa: ANN001, ANN202
    """Hessian over ``x[idx]`` by central differences of the gradient ``fg`` (not
    symmetrised: its asymmetry measures the differencing noise)."""
    k = len(idx)
    h = np.zeros((k, k))
    for j, i in enumerate(idx):
        d = step * max(1.0, abs(x[i]))
        xp, xm = x.copy(), x.copy()
        xp[i] += d
        xm[i] -= d
        h[:, j] = (fg(xp)[1][idx] - fg(xm)[1][idx]) / (2 * d)
    return h


def run_marginal(model: Any, key: jax.Array, args: tuple, kwargs: dict, opts: dict[str, Any],
                 weights: Any = None) -> tuple[dict, dict, dict]:
    """Fit ``model`` by ``method="marginal"``: ``(values, samples, info)``."""
    from scipy.optimize import minimize

    k_init, k_hyper, k_draw = jax.random.split(key, 3)
    setup = (model, opts["plate"], weights, opts["init_strategy"], k_init, args, kwargs)
    steps = int(opts["newton_steps"])
    o0, b, is_hyper = _stage_init(setup)
    b = _stage_mode(setup, o0, b, steps)[0]
    dtype = o0.dtype
    state = {"b": b, "hist": [], "best": (np.inf, np.asarray(o0, np.float64), b)}
    bar = None
    if opts["progress"]:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(opts["num_steps"]), desc="ctxppl marginal", leave=False)

    def fg(x, b=None):  # noqa: ANN001, ANN202
        val, g, b1 = _stage_fg(setup, jnp.asarray(x, dtype), state["b"] if b is None else b)
        val, g = float(val), np.asarray(g, np.float64)
        if not (np.isfinite(val) and np.all(np.isfinite(g))):
            return np.inf, np.zeros_like(g), None
        return val, g, b1

    def fun(x):  # noqa: ANN001, ANN202
        val, g, b1 = fg(x)
        if b1 is not None:
            state["hist"].append(val)
            if val < state["best"][0]:
                state["best"] = (val, np.array(x, np.float64), b1)
            state["b"] = b1
        return val, g

    def callback(*_):  # noqa: ANN002, ANN202
        if bar is not None:
            bar.update(1)
            if state["hist"]:
                bar.set_postfix_str(f"loss {state['hist'][-1]:.6g}", refresh=False)

    idx = np.flatnonzero(np.asarray(is_hyper))
    laplace = opts["hyper"] == "laplace" and idx.size > 0
    t0 = time.perf_counter()
    x0, nit, info = np.asarray(o0, np.float64), 0, {}
    try:
        # L-BFGS-B; at a stationary point with clearly negative curvature (a saddle, e.g.
        # a symmetric start) step off along that direction and optimise again (twice at most)
        for attempt in range(3):
            res = minimize(fun, x0, jac=True, method="L-BFGS-B", callback=callback,
                           options={"maxiter": int(opts["num_steps"]),
                                    "ftol": float(opts["tol"]), "gtol": 1e-5})
            nit += int(res.nit)
            best_val, o_hat, b = state["best"]
            if not np.isfinite(best_val) or not laplace:
                break
            b_hat = _stage_mode(setup, jnp.asarray(o_hat, dtype), b, steps)[0]
            h = _fd_hessian(lambda x, b_hat=b_hat: fg(x, b_hat)[:2], o_hat, idx)
            noise = float(np.max(np.abs(h - h.T)))
            h = 0.5 * (h + h.T)
            lam, vec = np.linalg.eigh(h)
            tol = max(2.0 * noise, 1e-3 * max(float(np.max(np.abs(lam))), 1e-12))
            info.update(hyper_hessian=h, hyper_hessian_noise=noise, hyper_restarts=attempt)
            if lam[0] > -tol or attempt == 2:
                break
            v = np.zeros_like(o_hat)
            v[idx] = vec[:, 0] * min(1.0, 1.0 / math.sqrt(-lam[0]))
            tries = [(fg(o_hat + sgn * v, b_hat)[0], sgn) for sgn in (1.0, -1.0)]
            x0 = o_hat + min(tries)[1] * v
            state["b"] = b_hat
    finally:
        if bar is not None:
            bar.close()
    best_val, o_hat, b = state["best"]
    if not np.isfinite(best_val):
        status = NONFINITE
    elif nit >= int(opts["num_steps"]):
        status = MAX_STEPS
    else:
        status = CONVERGED
    info.update({"loss_history": np.asarray(state["hist"]), "num_steps": nit,
                 "status": status, "val_history": np.zeros(0),
                 "optimizer_message": str(res.message),
                 "optimize_seconds": time.perf_counter() - t0})
    o_hat_j = jnp.asarray(o_hat, dtype)
    b_hat, _, ok = _stage_mode(setup, o_hat_j, b, steps)
    info["hessian_ok"] = bool(ok)

    # hyperparameters: a Gaussian in unconstrained space around the type-II MAP
    K = int(opts["num_hyper_samples"]) if laplace and "hyper_hessian" in info else 1
    os_ = np.repeat(o_hat[None], K, axis=0)
    info["hyper_hessian_ok"] = True
    if K > 1:
        lam, vec = np.linalg.eigh(info["hyper_hessian"])
        scale = max(float(np.max(np.abs(lam))), 1e-12)
        # a clearly negative curvature (beyond the differencing error, measured by the
        # asymmetry) is a saddle: reported; directions within that error of flat (e.g. a
        # noise scale at its floor) stay at the maximum
        tol = max(2.0 * info["hyper_hessian_noise"], 1e-3 * scale)
        info["hyper_hessian_ok"] = bool(np.all(lam > -tol))
        keep = lam > 1e-8 * scale
        info["hyper_flat_directions"] = int(np.sum(~keep))
        if info["hyper_hessian_ok"]:
            eps = np.asarray(jax.random.normal(k_hyper, (K, idx.size)), np.float64)
            std = np.where(keep, 1.0 / np.sqrt(np.where(keep, lam, 1.0)), 0.0)
            os_[:, idx] += (eps * std) @ vec.T
        else:
            K, os_ = 1, os_[:1]
    S = int(opts["num_samples"])
    per = -(-S // K)
    # each hyperparameter draw: its own mode and exact Gaussian over the weights
    bs, oks = [], []
    for k, kk in enumerate(jax.random.split(k_draw, K)):
        bk, R, okk = _stage_mode(setup, jnp.asarray(os_[k], dtype), b_hat, steps)
        eps = jax.random.normal(kk, (bk.shape[0], per), bk.dtype)
        bs.append(bk[None] + _solve_upper(R, eps).T)
        oks.append(bool(okk))
    info["hessian_ok"] = info["hessian_ok"] and all(oks)
    bs = jnp.concatenate(bs)
    bs = jnp.reshape(bs, (-1, bs.shape[-1]))[:S]
    orep = jnp.asarray(np.concatenate([np.repeat(os_, per, axis=0)[:S], o_hat[None]]), dtype)
    draws = _stage_values(setup, orep, jnp.concatenate([bs, b_hat[None]]))  # last: the MAP
    point = jax.tree_util.tree_map(lambda a: a[-1:], draws)
    draws = jax.tree_util.tree_map(lambda a: a[:-1], draws)
    prob_names = _names(setup)
    hyper, params, weights_ = prob_names
    latents = hyper + weights_
    samples = {n: draws[n] for n in latents}
    values = {**{n: jax.tree_util.tree_map(lambda a: a[0], point[n]) for n in params},
              **{n: jnp.mean(samples[n], axis=0) for n in latents}}
    return values, samples, info


def _names(setup):  # noqa: ANN001, ANN202
    out = {}

    def run(setup):  # noqa: ANN001, ANN202
        out["names"] = _setup(*setup)[4:]
        return 0

    eqx.filter_eval_shape(run, setup)
    return out["names"]
