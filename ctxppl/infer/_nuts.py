"""NUTS through numpyro's MCMC; point-estimated encoders are held at their MAP values.

Compiled samplers are reused: ``run_nuts`` keeps a small LRU of compiled runners (see
:func:`_runner`) keyed by the model, the sampler options, the static (non-array) arguments
and the shapes and dtypes of the array arguments. The data, the MAP values of
point-estimated sites and the member weights are *arguments* of the compiled program, never
constants baked into it, so a second ``ctx.fit(..., method="nuts")`` on new data of the same
shapes does not recompile.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from numpyro import handlers
from numpyro.infer import MCMC, NUTS

from ctxppl._lru import LRU
from ctxppl._programs import stored_jit

__all__ = ["run_nuts"]

_RUNNERS: LRU[tuple[Callable, threading.Lock | None]] = LRU(16)


class _ArrayMarker:
    """Stands for an array leaf among the static leaves of the model arguments."""

    def __repr__(self) -> str:
        return "<array>"


_ARRAY = _ArrayMarker()


def _is_array(x: Any) -> bool:
    return isinstance(x, np.ndarray | jax.Array | np.generic)


def _program(model: Callable, treedef: Any, statics: tuple, plate: str | None) -> Callable:
    """The model as a function of (MAP values, array leaves, weights): what MCMC compiles."""
    def program(fixed: dict, arrays: list, weights: Any = None) -> None:
        it = iter(arrays)
        leaves = [next(it) if s is _ARRAY else s for s in statics]
        args, kwargs = jax.tree_util.tree_unflatten(treedef, leaves)
        m = model
        if weights is not None:
            from ctxppl._handlers import weight

            m = weight(m, plate=plate, weights=weights)
        with handlers.substitute(data=fixed):
            m(*args, **kwargs)

    return program


def _signature(tree: Any) -> tuple:
    return tuple((tuple(np.shape(x)), str(x.dtype if hasattr(x, "dtype") else
                                          np.result_type(x)))
                 for x in jax.tree_util.tree_leaves(tree))


def _runner(model: Callable, treedef: Any, statics: tuple, opts: dict[str, Any],
            method: str) -> tuple[Callable, threading.Lock | None]:
    """``run(key, fixed, arrays, weights) -> (samples by chain, diverging)`` for one model.

    Without a progress bar (``progress=False``, or numpyro turning it off, as it does under
    CI and pytest-xdist) the whole of ``MCMC.run`` -- initialisation, warm-up and sampling --
    is one ``jax.jit`` program, compiled once. With a progress bar numpyro steps the chains
    from Python; then the ``MCMC`` object itself is kept, whose compiled warm-up/sampling
    step is reused (only its initialisation is re-traced), and a lock keeps two threads from
    driving it at once. Chains in parallel over devices (``pmap``) are jit-compiled like the
    others (jit of pmap), so every chain count and chain method reuses its compiled sampler.
    """
    def build(progress: bool) -> MCMC:
        program = _program(model, treedef, statics, opts["plate"])
        kernel = NUTS(program, target_accept_prob=opts["target_accept_prob"],
                      max_tree_depth=opts["max_tree_depth"], dense_mass=opts["dense_mass"],
                      init_strategy=opts["init_strategy"])
        return MCMC(kernel, num_warmup=opts["num_warmup"], num_samples=opts["num_samples"],
                    num_chains=int(opts["num_chains"]), chain_method=method,
                    thinning=opts["thinning"], progress_bar=progress, jit_model_args=True)

    def drive(mcmc: MCMC, key: Any, fixed: dict, arrays: list, weights: Any) -> tuple:
        run_args = (fixed, arrays) if weights is None else (fixed, arrays, weights)
        mcmc.run(jax.random.split(key)[1], *run_args, extra_fields=("diverging",))
        return (mcmc.get_samples(group_by_chain=True),
                mcmc.get_extra_fields(group_by_chain=True)["diverging"])

    mcmc = build(bool(opts["progress"]))
    if mcmc.progress_bar:
        return (lambda key, fixed, arrays, weights: drive(mcmc, key, fixed, arrays, weights),
                threading.Lock())

    def run(key: Any, fixed: dict, arrays: list, weights: Any) -> tuple:
        return drive(build(False), key, fixed, arrays, weights)

    return stored_jit(run, "nuts"), None


def _cached_runner(model: Callable, args: tuple, kwargs: dict, opts: dict[str, Any],
                   fixed: dict, weights: Any, method: str) -> tuple[Callable, Any, list]:
    """The runner for this model, options and shapes (from the LRU, else new), its lock
    (acquired; None when not needed) and the array arguments."""
    leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
    statics = tuple(_ARRAY if _is_array(x) else x for x in leaves)
    arrays = [x for x in leaves if _is_array(x)]
    options = (opts["num_warmup"], opts["num_samples"], int(opts["num_chains"]), method,
               opts["thinning"], opts["target_accept_prob"], opts["max_tree_depth"],
               opts["dense_mass"], opts["init_strategy"], bool(opts["progress"]))
    key = (model, treedef, statics, _signature(arrays), tuple(sorted(fixed)),
           _signature([fixed[k] for k in sorted(fixed)]), weights is None or _signature(weights),
           opts["plate"] if weights is not None else None, options)
    try:
        hash(key)
    except TypeError:  # unhashable static arguments: a fresh runner, compiled anew
        run, _ = _runner(model, treedef, statics, opts, method)
        return run, None, arrays
    run, lock = _RUNNERS.get_or_make(key, lambda: _runner(model, treedef, statics, opts, method))
    if lock is not None and not lock.acquire(blocking=False):
        run, _ = _runner(model, treedef, statics, opts, method)  # busy: do not wait
        return run, None, arrays
    return run, lock, arrays


def run_nuts(model, key, args, kwargs, opts: dict[str, Any], fixed: dict[str, Any],  # noqa: ANN001, ANN201
             weights: Any = None):
    """Sample the latent sites of ``model`` with NUTS (``fixed`` param sites substituted,
    optional member ``weights`` on ``opts["plate"]``); the chains draw from
    ``jax.random.split(key)[1]`` (the first half seeds an empirical-Bayes MAP fit), split
    inside the compiled sampler so that a fresh process compiles no program for it.

    Returns ``(samples grouped by chain, {"divergences", "divergences_per_chain"})``; R-hat
    and ESS are computed by the caller (:mod:`ctxppl.infer._diagnostics`), which knows which
    sites are worth checking.
    """
    num_chains = int(opts["num_chains"])
    method = opts["chain_method"]
    if method == "auto":  # one chain: vectorized (no pmap), so the compiled sampler is reused
        method = ("parallel" if num_chains > 1 and jax.local_device_count() >= num_chains
                  else "vectorized")
    run, lock, arrays = _cached_runner(model, args, kwargs, opts, fixed, weights, method)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*CPU.*devices.*")
            samples, diverging = run(key, fixed, arrays, weights)
        samples = jax.device_get(samples)
        diverging = np.asarray(diverging)
    finally:
        if lock is not None:
            lock.release()
    diagnostics = {"divergences": int(diverging.sum()),
                   "divergences_per_chain": diverging.sum(axis=1)}
    return samples, diagnostics
