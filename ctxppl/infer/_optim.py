r"""MAP, Laplace and SVI as :class:`~ctxppl.infer._loop.Stepper` s, run in one jitted call.

``run_opt`` fits one model; ``run_opt_many`` vmaps the same function over keys and member
weights (``ctx.fit_many``). Both are module-level :class:`~ctxppl._programs.stored_jit`
functions (``eqx.filter_jit`` whose exported programs persist across processes) whose static
arguments are the model and a hashable :class:`OptSpec`, so a second fit of the same model
with the same settings and array shapes reuses the compiled program, and a fresh process
loads it instead of lowering it again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.infer import SVI, Predictive, Trace_ELBO, autoguide
from numpyro.optim import optax_to_numpyro

from ctxppl._handlers import subsample_with_replacement
from ctxppl._programs import stored_jit
from ctxppl.infer._loop import NONFINITE, LoopOptions, Stepper, optimize
from ctxppl.infer._sites import (
    constrained_values,
    initial_unconstrained,
    neg_log_joint,
    obs_neg_log_lik,
    sample_minibatches,
    wrap_model,
)

__all__ = ["OptSpec", "run_opt", "run_opt_many", "fit_many_draws", "make_optimizer",
           "make_guide", "GUIDES"]

OPTIMIZERS: dict[str, Callable[[float], optax.GradientTransformation]] = {
    "adam": optax.adam, "adamw": optax.adamw, "sgd": optax.sgd, "rmsprop": optax.rmsprop,
    "adabelief": optax.adabelief, "lion": optax.lion,
}

GUIDES: dict[str, Callable] = {
    "normal": autoguide.AutoNormal,
    "diagonal": autoguide.AutoDiagonalNormal,
    "mvn": autoguide.AutoMultivariateNormal,
    "lowrank": autoguide.AutoLowRankMultivariateNormal,
    "laplace": autoguide.AutoLaplaceApproximation,
    "delta": autoguide.AutoDelta,
}


class OptSpec(NamedTuple):
    """Hashable settings of an optimisation-based fit (static under jit)."""

    method: str
    optimizer: Any
    learning_rate: float
    loop: LoopOptions
    plate: str | None
    batch_size: int | None
    init_strategy: Callable
    guide: Any
    num_particles: int
    num_samples: int
    clip_norm: float | None
    shards: tuple = ()  # ((plate, (num_shards, sharding)), ...): row-sharded plates


def make_optimizer(spec: OptSpec) -> optax.GradientTransformation:
    if isinstance(spec.optimizer, optax.GradientTransformation):
        tx = spec.optimizer
    else:
        tx = OPTIMIZERS[spec.optimizer](spec.learning_rate)
    if spec.clip_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(spec.clip_norm), tx)
    return tx


def make_guide(guide: Any, model: Callable, init_strategy: Callable | None = None) -> Callable:
    """An autoguide by name (started at ``init_strategy``), or ``guide(model)``."""
    if isinstance(guide, str):
        if init_strategy is None:
            return GUIDES[guide](model)
        return GUIDES[guide](model, init_loc_fn=init_strategy)
    return guide(model)


def _point_stepper(spec, train, full, args, kwargs, val_model, jacobian, names):  # noqa: ANN001, ANN202
    """The MAP / Laplace stepper; tracing ``init`` records the latent site names in
    ``names["latents"]`` (so the model is not traced again to learn them)."""
    tx = make_optimizer(spec)

    def init(key):  # noqa: ANN001, ANN202
        u, names["latents"], _ = initial_unconstrained(train, key, args, kwargs,
                                                       spec.init_strategy)
        return u, tx.init(u)

    def step(state, key):  # noqa: ANN001, ANN202
        u, opt_state = state
        loss, g = jax.value_and_grad(neg_log_joint, argnums=1)(train, u, key, args, kwargs,
                                                               jacobian)
        updates, opt_state = tx.update(g, opt_state, u)
        return (optax.apply_updates(u, updates), opt_state), loss

    val_loss = None
    if val_model is not None:
        def val_loss(state):  # noqa: ANN001, ANN202
            k = jax.random.key(0)
            values = constrained_values(full, state[0], k, args, kwargs)
            return obs_neg_log_lik(val_model, values, k, args, kwargs)

    return Stepper(init, step, val_loss)


def _laplace_draws(full, u, latents, key, args, kwargs, num_samples):  # noqa: ANN001, ANN202
    """Gaussian at the mode in unconstrained space, precision = Hessian of -log density."""
    lat = {n: u[n] for n in latents}
    rest = {n: v for n, v in u.items() if n not in lat}
    z, unravel = ravel_pytree(lat)
    k_h, k_eps = jax.random.split(key)

    def f(z):  # noqa: ANN001, ANN202
        return neg_log_joint(full, {**rest, **unravel(z)}, k_h, args, kwargs, jacobian=True)

    h = jax.hessian(f)(z)
    h = 0.5 * (h + h.T)
    chol = jnp.linalg.cholesky(h)
    ok = jnp.all(jnp.isfinite(chol))
    eps = jax.random.normal(k_eps, (num_samples, z.shape[0]), z.dtype)
    zs = z[None, :] + jax.scipy.linalg.solve_triangular(chol.T, eps.T, lower=False).T
    draws = jax.vmap(lambda zz: constrained_values(full, {**rest, **unravel(zz)}, k_h, args,
                                                   kwargs))(zs)
    return {n: draws[n] for n in latents}, ok, h


def _run_opt_impl(model, spec, key, args, kwargs, weights, val_weights, token):  # noqa: ANN001, ANN202
    train = wrap_model(model, spec.plate, weights, spec.batch_size, shards=spec.shards)
    full = wrap_model(model, spec.plate, weights, full=True)
    val_model = None
    if val_weights is not None:
        val_model = wrap_model(model, spec.plate, val_weights, full=True)
    k_fit, k_post = jax.random.split(key)
    out: dict[str, Any] = {"samples": None, "guide_params": None}
    if spec.method in ("map", "laplace"):
        jacobian = spec.method == "laplace"
        names: dict[str, Any] = {}
        stepper = _point_stepper(spec, train, full, args, kwargs, val_model, jacobian, names)
        state, info = optimize(stepper, k_fit, spec.loop, token)
        u = state[0]
        latents = names["latents"]
        out["values"] = constrained_values(full, u, k_post, args, kwargs)
        if jacobian and latents:
            draws, ok, h = _laplace_draws(full, u, latents, k_post, args, kwargs,
                                          spec.num_samples)
            out["samples"] = draws
            info["hessian_ok"] = ok
        elif jacobian:
            info["hessian_ok"] = jnp.asarray(True)
    elif spec.method == "svi":
        tx = make_optimizer(spec)
        # the guide draws the minibatch (the model replays it): make it the fast sampler
        guide = sample_minibatches(subsample_with_replacement(
            make_guide(spec.guide, train, spec.init_strategy)), spec.shards)
        svi = SVI(train, guide, optax_to_numpyro(tx), Trace_ELBO(num_particles=spec.num_particles))
        val_loss = None
        if val_model is not None:
            def val_loss(state):  # noqa: ANN001, ANN202
                p = svi.get_params(state)
                g = make_guide(spec.guide, full, spec.init_strategy)
                draws = Predictive(g, params=p, num_samples=1)(jax.random.key(0), *args,
                                                                **kwargs)
                values = {**p, **{n: v[0] for n, v in draws.items()}}
                return obs_neg_log_lik(val_model, values, jax.random.key(0), args, kwargs)

        stepper = Stepper(lambda k: svi.init(k, *args, **kwargs),
                          lambda s, k: svi.update(s, *args, **kwargs), val_loss)
        state, info = optimize(stepper, k_fit, spec.loop, token)
        params = svi.get_params(state)
        tr = handlers.trace(handlers.seed(handlers.substitute(full, data=params), k_post)
                            ).get_trace(*args, **kwargs)
        model_params = {n: params[n] for n, s in tr.items() if s["type"] == "param" and n in params}
        latents = [n for n, s in tr.items() if s["type"] == "sample" and not s["is_observed"]
                   and not s["infer"].get("is_auxiliary", False)]
        draws = Predictive(make_guide(spec.guide, full, spec.init_strategy), params=params,
                           num_samples=spec.num_samples)(k_post, *args, **kwargs)
        out["samples"] = {n: draws[n] for n in latents}
        out["values"] = {**model_params,
                         **{n: jnp.mean(draws[n], axis=0) for n in latents}}
        out["guide_params"] = {n: v for n, v in params.items() if n not in model_params}
    else:  # pragma: no cover - validated by the caller
        raise ValueError(spec.method)
    finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x))
                                  for x in jax.tree_util.tree_leaves(out["values"])] or [True]))
    info["status"] = jnp.where(finite, info["status"], NONFINITE)
    out["info"] = info
    return out


run_opt = stored_jit(_run_opt_impl, "run_opt")


def _run_opt_many_impl(model, spec, keys, args, kwargs, weights, val_weights, token):  # noqa: ANN001, ANN202
    """``run_opt`` vmapped over ``keys`` (and ``weights`` / ``val_weights`` when given)."""
    w_axis = None if weights is None else 0
    v_axis = None if val_weights is None else 0
    return jax.vmap(lambda k, w, v: _run_opt_impl(model, spec, k, args, kwargs, w, v, token),
                    in_axes=(0, w_axis, v_axis))(keys, weights, val_weights)


run_opt_many = stored_jit(_run_opt_many_impl, "run_opt_many")


def _fit_many_draws_impl(key, weights, num_fits, size, bootstrap, num_val):  # noqa: ANN001, ANN202
    """``ctx.fit_many``'s random inputs: each fit's key (as key data), its bootstrap member
    weights (when ``bootstrap``) and its ``num_val`` held-out members (when positive), in
    one program rather than one small compiled program per step in every fresh process."""
    keys = jax.random.split(key, num_fits)
    if bootstrap:
        draws = jax.random.randint(jax.random.fold_in(key, 17), (num_fits, size), 0, size)
        weights = jax.vmap(lambda r: jnp.bincount(r, length=size))(draws).astype(
            jnp.result_type(float))
    val = None
    if num_val:  # each fit holds out its own random members for early stopping
        val = jax.vmap(lambda k: jnp.zeros(size).at[
            jax.random.permutation(jax.random.fold_in(k, 11), size)[:num_val]].set(1.0))(keys)
        weights = (jnp.ones((num_fits, size)) if weights is None else weights) * (1.0 - val)
    return jax.random.key_data(keys), weights, val


fit_many_draws = stored_jit(_fit_many_draws_impl, "fit_many_draws")
