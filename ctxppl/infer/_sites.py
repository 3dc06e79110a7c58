"""Site utilities shared by the inference routines: discover, constrain, evaluate.

Everything here works inside ``jax.jit`` (the model is traced, nothing is concrete).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to
from numpyro.distributions.util import sum_rightmost
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.util import log_density

from ctxppl._handlers import minibatch, per_shard_minibatch, subsample_with_replacement, weight
from ctxppl._lru import LRU

__all__ = ["latent_and_param_sites", "initial_unconstrained", "constrain_substitute",
           "neg_log_joint", "constrained_values", "obs_neg_log_lik", "wrap_model",
           "ModelStructure", "model_structure"]


def _is_latent(site: dict) -> bool:
    return (site["type"] == "sample" and not site["is_observed"]
            and not site["infer"].get("is_auxiliary", False))


def _param_constraint(site: dict) -> Any:
    return site["kwargs"].get("constraint", constraints.real)


def _is_real(c: Any) -> bool:
    return c is constraints.real or (
        isinstance(c, constraints.independent) and c.base_constraint is constraints.real)


def wrap_model(model, plate=None, weights=None, batch_size=None, full=False, shards=None):  # noqa: ANN001, ANN201
    """Apply ctxppl's plate handlers: per-member ``weights``, minibatch size or full batch;
    ``shards`` (``{plate: (num_shards, sharding)}``) draws minibatches per row shard."""
    if weights is not None:
        model = weight(model, plate=plate, weights=weights)
    if full:
        return minibatch(model, size=None)
    if batch_size is not None:
        model = minibatch(model, plate=plate, size=batch_size)
    # outermost, so it sees the final subsample size of every plate
    return sample_minibatches(subsample_with_replacement(model), shards)


def sample_minibatches(fn, shards=None):  # noqa: ANN001, ANN201
    """``fn`` drawing minibatches of row-sharded plates per shard (see per_shard_minibatch)."""
    return per_shard_minibatch(fn, shards=dict(shards)) if shards else fn


def latent_and_param_sites(tr: dict) -> tuple[list[str], list[str]]:
    latents = [n for n, s in tr.items() if _is_latent(s)]
    params = [n for n, s in tr.items() if s["type"] == "param"]
    for n in latents:
        if tr[n]["fn"].support.is_discrete:
            raise ValueError(
                f"site {n!r} is a discrete latent variable; MAP, Laplace, SVI and NUTS in ctxppl "
                "need continuous latents. Marginalise it (e.g. numpyro's funsor enumeration) "
                "or observe it.")
    return latents, params


def initial_unconstrained(model, key, args, kwargs, init_strategy):  # noqa: ANN001, ANN201
    """Unconstrained initial values of every param and latent sample site."""
    tr = handlers.trace(handlers.substitute(handlers.seed(model, key),
                                            substitute_fn=init_strategy)).get_trace(*args, **kwargs)
    latents, params = latent_and_param_sites(tr)
    u = {}
    for n in params:
        c = _param_constraint(tr[n])
        u[n] = tr[n]["value"] if _is_real(c) else biject_to(c).inv(tr[n]["value"])
    for n in latents:
        u[n] = biject_to(tr[n]["fn"].support).inv(tr[n]["value"])
    return u, tuple(latents), tuple(params)


def _constrain(u: dict, jacobian: bool, msg: dict) -> Any:
    name = msg["name"]
    if name not in u:
        return None
    if msg["type"] == "param":
        c = _param_constraint(msg)
        return u[name] if _is_real(c) else biject_to(c)(u[name])
    if msg["type"] != "sample" or msg["is_observed"]:
        return None
    support = msg["fn"].support
    x = u[name]
    if _is_real(support):
        return x
    t = biject_to(support)
    y = t(x)
    if jacobian:
        log_det = t.log_abs_det_jacobian(x, y)
        n_event = len(msg["fn"].event_shape)
        log_det = sum_rightmost(log_det, jnp.ndim(log_det) - jnp.ndim(y) + n_event)
        numpyro.factor(f"_{name}_log_det", log_det)
    return y


def constrain_substitute(model, u: dict, jacobian: bool = False):  # noqa: ANN001, ANN201
    """``model`` with every site in ``u`` set from its unconstrained value."""
    return handlers.substitute(model, substitute_fn=partial(_constrain, u, jacobian))


def neg_log_joint(model, u, key, args, kwargs, jacobian=False):  # noqa: ANN001, ANN201
    """``-log p(data, latents)`` at unconstrained ``u`` (plus log|J| when ``jacobian``)."""
    m = handlers.seed(constrain_substitute(model, u, jacobian), key)
    lp, _ = log_density(m, args, kwargs, {})
    return -lp


def constrained_values(model, u, key, args, kwargs):  # noqa: ANN001, ANN201
    """Constrained values of the sites in ``u``."""
    m = handlers.seed(constrain_substitute(model, u), key)
    tr = handlers.trace(m).get_trace(*args, **kwargs)
    return {n: tr[n]["value"] for n in u}


def obs_neg_log_lik(model, values, key, args, kwargs):  # noqa: ANN001, ANN201
    """``-sum`` over observed sites of scaled log-likelihood with sites set to ``values``."""
    m = handlers.seed(handlers.substitute(model, data=values), key)
    tr = handlers.trace(m).get_trace(*args, **kwargs)
    total = jnp.zeros(())
    for site in tr.values():
        if site["type"] == "sample" and site["is_observed"] and not site["name"].startswith("_"):
            lp = site["fn"].log_prob(site["value"])
            if site["scale"] is not None:
                lp = lp * site["scale"]
            total = total + jnp.sum(lp)
    return -total


def _abstract_trace(model, key, args, kwargs):  # noqa: ANN001, ANN202
    """A trace for shapes only. Latent values come from ``init_to_uniform`` (defined for
    improper sites too, unlike sampling the prior); non-array arguments stay Python values
    (``eqx.filter_eval_shape`` traces only arrays)."""
    m = handlers.substitute(handlers.seed(model, key), substitute_fn=init_to_uniform)
    return handlers.trace(m).get_trace(*args, **kwargs)


def param_templates(model, args, kwargs):  # noqa: ANN001, ANN201
    """Abstract values (pytrees of ShapeDtypeStruct) of every ``param`` site."""
    return model_structure(model, args, kwargs).params


class SiteInfo(NamedTuple):
    type: str
    shape: tuple[int, ...]
    observed: bool
    plates: tuple[tuple[str, int], ...]  # (plate name, dim) for each enclosing plate
    event_ndim: int
    batch_shape: tuple[int, ...] | None = None  # the distribution's (sample sites)
    encoder: bool = False  # a weight of a Bayesian encoder (ctx.encoder with a prior)


class ModelStructure(NamedTuple):
    """Shape-level description of a model run: plates, sites and the abstract values of the
    ``param`` sites (no values). Shared between callers: treat it as read-only."""

    plates: dict[str, int]
    sites: dict[str, SiteInfo]
    params: dict[str, Any]


def _trace_structure(model, args, kwargs):  # noqa: ANN001, ANN202
    out: dict[str, Any] = {}

    def run(args, kwargs):  # noqa: ANN001, ANN202
        # the key is made inside the abstract trace: no seeding program is compiled
        tr = _abstract_trace(model, jax.random.key(0), args, kwargs)
        plates, sites, params = {}, {}, {}
        for n, s in tr.items():
            if s["type"] == "plate":
                plates[n] = int(s["args"][0])
            elif s["type"] in ("sample", "deterministic", "param"):
                leaves = jax.tree_util.tree_leaves(s["value"])
                shape = tuple(jnp.shape(leaves[0])) if len(leaves) == 1 else ()
                frames = tuple((f.name, f.dim) for f in s["cond_indep_stack"])
                if s["type"] == "sample":
                    event_ndim = len(s["fn"].event_shape)
                elif s["type"] == "param":
                    event_ndim = s["kwargs"].get("event_dim") or 0
                    params[n] = jax.tree_util.tree_map(
                        lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)),
                        s["value"])
                else:  # deterministic: assume its batch dims are exactly the plates' dims
                    event_ndim = max(len(shape) - max([-d for _, d in frames], default=0), 0)
                batch = tuple(s["fn"].batch_shape) if s["type"] == "sample" else None
                encoder = bool((s.get("infer") or {}).get("ctx_encoder", False))
                sites[n] = SiteInfo(s["type"], shape, bool(s.get("is_observed", False)),
                                    frames, event_ndim, batch, encoder)
        out["structure"] = ModelStructure(plates, sites, params)
        return 0

    eqx.filter_eval_shape(run, args, kwargs)
    return out["structure"]


# Structures already traced, keyed by the model and the shapes/dtypes of the array arguments
# (values of the other arguments): a second fit, predict or to_arviz at the same shapes does
# not trace the model again. Derived values only, like jit's own cache.
_STRUCTURES: LRU[ModelStructure] = LRU(64)


def _structure_key(model, full, args, kwargs):  # noqa: ANN001, ANN202
    leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
    sig = tuple((tuple(x.shape), str(x.dtype), bool(getattr(x, "weak_type", False)))
                if hasattr(x, "shape") and hasattr(x, "dtype") else (type(x), x)
                for x in leaves)
    key = (model, full, treedef, sig)
    try:
        hash(key)
    except TypeError:  # an unhashable model or argument: trace every time
        return None
    return key


def model_structure(model, args, kwargs, full=False):  # noqa: ANN001, ANN201
    """Trace ``model`` abstractly (``eqx.filter_eval_shape``): its plates, sites and param
    shapes; ``full=True`` traces it with every plate at full size (no subsampling), as
    ``predict`` runs it. Remembered per model and argument shapes (the last 64)."""
    cache_key = _structure_key(model, full, args, kwargs)
    hit = None if cache_key is None else _STRUCTURES.get(cache_key)
    if hit is not None:
        return hit
    traced = wrap_model(model, full=True) if full else model
    structure = _trace_structure(traced, args, kwargs)  # outside the lock: it may take long
    if cache_key is not None:
        _STRUCTURES.put(cache_key, structure)
    return structure
