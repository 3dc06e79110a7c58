r"""Effect handlers (NumPyro Messengers) that act on plates and their contexts.

Each handler is one effect, lower-case so it reads like a function, usable as a decorator
(``at_context(model, ...)``) or a context manager (``with at_context(...)``), and keeps no
state across calls: what one call needs lives on the handler only between ``__enter__``
and ``__exit__``. All are safe under ``jax.jit`` when the model is called inside the jitted
function (wrap the model, then jit the function that calls it).
"""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions.distribution import ExpandedDistribution, Independent
from numpyro.primitives import Messenger

from ctxppl._primitives import _align, check_context, context, encoder

__all__ = ["at_context", "contextualize", "weight", "minibatch", "subsample_with_replacement"]


def _need(value: Any, arg: str, handler: str) -> None:
    if value is None:
        raise ValueError(f"`{arg}` is required by ctx.handlers.{handler}; got None.")


class at_context(Messenger):
    r"""Evaluate a model with plate ``plate`` carrying another context.

    The plate's size becomes the new context's length (subsampling is switched off for
    it), so per-member sites such as ``ctx.contextual`` are computed at the new contexts.

    Args:
        fn: The model (optional when used as a context manager).
        plate: Name of the ``ctx.plate`` to re-contextualize.
        context: The new context (leading axis = new number of members).

    Examples:
        >>> import jax, jax.numpy as jnp, numpyro, ctxppl as ctx
        >>> def model():
        ...     enc = ctx.encoder("enc", ctx.nn.Linear(2, 1))
        ...     with ctx.plate("n", context=jnp.zeros((3, 2))):
        ...         return ctx.contextual("w", enc)
        >>> new = ctx.handlers.at_context(model, plate="n", context=jnp.ones((7, 2)))
        >>> numpyro.handlers.seed(new, 0)().shape
        (7, 1)

    Note:
        Under ``jax.jit`` pass the context as an argument of the jitted function and build
        the handler inside it, so the context is traced rather than baked in as a constant.
    """

    def __init__(self, fn=None, plate: str | None = None, context: Any = None):  # noqa: ANN001
        _need(plate, "plate", "at_context")
        _need(context, "context", "at_context")
        leaves = jax.tree_util.tree_leaves(context)
        if not leaves or jnp.ndim(leaves[0]) < 1:
            raise ValueError(f"`context` of at_context(plate={plate!r}) must be an array with a "
                             f"leading member axis; got {type(context).__name__}.")
        self.size = int(jnp.shape(leaves[0])[0])
        check_context(plate, self.size, context)
        self.plate = plate
        self.context = context
        super().__init__(fn)

    def process_message(self, msg) -> None:  # noqa: ANN001
        if msg["type"] == "ctx_plate" and msg["plate"] == self.plate:
            msg["context"] = self.context
            msg["size"] = self.size
            msg["value"] = True


class weight(Messenger):
    r"""Multiply the log density of every site inside ``ctx.plate(plate)`` by per-member weights.

    Weights of 0/1 select a fold; multinomial counts give a bootstrap resample with the same
    array shapes as the original data (which is what lets ``ctx.fit_many`` vmap over
    resamples). Weights apply to the current subsample when the plate subsamples.

    Args:
        fn: The model.
        plate: Name of the ``ctx.plate``.
        weights: Non-negative array of shape ``(size,)``.

    Examples:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist, ctxppl as ctx
        >>> def model():
        ...     with ctx.plate("n", 3):
        ...         numpyro.sample("y", dist.Normal(0.0, 1.0), obs=jnp.zeros(3))
        >>> w = ctx.handlers.weight(model, plate="n", weights=jnp.array([2.0, 0.0, 1.0]))
        >>> lp, _ = numpyro.infer.util.log_density(w, (), {}, {})
        >>> round(float(lp), 4) == round(3 * float(dist.Normal(0, 1).log_prob(0.0)), 4)
        True
    """

    def __init__(self, fn=None, plate: str | None = None, weights: Any = None):  # noqa: ANN001
        _need(plate, "plate", "weight")
        _need(weights, "weights", "weight")
        if jnp.ndim(weights) != 1:
            raise ValueError(f"`weights` of weight(plate={plate!r}) must be 1-D (one per member);"
                             f" got shape {jnp.shape(weights)}.")
        if not isinstance(weights, jax.core.Tracer):
            w = np.asarray(weights)
            if not (np.all(np.isfinite(w)) and np.all(w >= 0)):
                raise ValueError(f"`weights` of weight(plate={plate!r}) must be finite and "
                                 "non-negative.")
        self.plate = plate
        self.weights = jnp.asarray(weights)
        super().__init__(fn)

    def process_message(self, msg) -> None:  # noqa: ANN001
        if msg["type"] == "ctx_plate" and msg["plate"] == self.plate:
            old = msg["weights"]
            msg["weights"] = self.weights if old is None else old * self.weights


class minibatch(Messenger):
    r"""Set the subsample size of plates (numpyro's or ctxppl's) without editing the model.

    ``size=None`` switches subsampling off (every member, scale 1): this is how predictions
    and Laplace Hessians see the full data even when the model subsamples.

    Args:
        fn: The model.
        plate: Plate name, or ``None`` for every plate.
        size: Minibatch size, or ``None`` for the full plate.

    Examples:
        >>> import numpyro, ctxppl as ctx
        >>> def model():
        ...     with numpyro.plate("n", 100, subsample_size=10) as idx:
        ...         return idx
        >>> numpyro.handlers.seed(ctx.handlers.minibatch(model), 0)().shape
        (100,)
    """

    def __init__(self, fn=None, plate: str | None = None, size: int | None = None):  # noqa: ANN001
        if size is not None and (not isinstance(size, int | np.integer) or size < 1):
            raise ValueError(f"`size` of minibatch must be a positive int or None; got {size!r}.")
        self.plate = plate
        self.size = size
        super().__init__(fn)

    def process_message(self, msg) -> None:  # noqa: ANN001
        if msg["type"] != "plate" or self.plate not in (None, msg["name"]):
            return
        full = msg["args"][0]
        if self.size is None or self.size >= full:
            msg["args"] = (full, None)
            msg["value"] = jnp.arange(full)
        else:
            msg["args"] = (full, int(self.size))
            msg["value"] = None


def _indices_with_replacement(size: int, subsample_size: int | None,
                              rng_key: Any = None) -> jax.Array:
    if subsample_size is None or subsample_size >= size:
        return jnp.arange(size)
    if rng_key is None:
        raise ValueError("minibatches need a random key: run the model under "
                         "numpyro.handlers.seed (ctx.fit does).")
    return jax.random.randint(rng_key, (subsample_size,), 0, size)


class subsample_with_replacement(Messenger):
    r"""Draw plate minibatches with replacement: O(batch) per step instead of O(size).

    numpyro's default draws a subsample without replacement by a partial Fisher-Yates
    shuffle, a sequential loop that touches an array of the full plate size every step; on
    a million members that dominates the step. Drawing with replacement keeps the scaled
    log-likelihood unbiased (each index is uniform) at a negligible variance cost when the
    batch is much smaller than the plate. ``ctx.fit`` uses this for every subsampled plate.

    Args:
        fn: The model (or guide).
        plate: Plate name, or ``None`` for every subsampled plate.

    Examples:
        >>> import numpyro, ctxppl as ctx
        >>> def model():
        ...     with numpyro.plate("n", 10**6, subsample_size=3) as idx:
        ...         return idx
        >>> numpyro.handlers.seed(ctx.handlers.subsample_with_replacement(model), 0)().shape
        (3,)
    """

    def __init__(self, fn=None, plate: str | None = None):  # noqa: ANN001
        self.plate = plate
        super().__init__(fn)

    def process_message(self, msg) -> None:  # noqa: ANN001
        if (msg["type"] == "plate" and self.plate in (None, msg["name"])
                and msg["value"] is None):
            msg["fn"] = _indices_with_replacement


def _indices_per_shard(shards: int, size: int, subsample_size: int | None,
                       rng_key: Any = None) -> jax.Array:
    if subsample_size is None or subsample_size >= size:
        return jnp.arange(size)
    if rng_key is None:
        raise ValueError("minibatches need a random key: run the model under "
                         "numpyro.handlers.seed (ctx.fit does).")
    rows, per = size // shards, subsample_size // shards
    local = jax.random.randint(rng_key, (shards, per), 0, rows)
    return (jnp.arange(shards)[:, None] * rows + local).reshape(-1)


class per_shard_minibatch(Messenger):
    r"""Draw a plate's minibatch evenly from the row shards of its data (one block per shard).

    When a plate's rows are split over ``num_shards`` devices (possibly of several
    processes), a uniform minibatch would mostly need rows another device holds. Here shard
    ``s`` contributes ``subsample_size / num_shards`` rows drawn (with replacement) from its
    own block ``[s * size / num_shards, (s + 1) * size / num_shards)``, and ``ctx.plate``
    cuts its context and ``numpyro.subsample`` data block by block, so each device gathers
    only local rows and every device does the same work. The scaled log-likelihood stays
    unbiased (stratified sampling with equal strata). ``ctx.fit`` applies it by itself to
    plates whose data arrays are row-sharded.

    Args:
        fn: The model (or guide).
        shards: ``{plate name: (num_shards, row sharding)}``; the sharding (a
            ``NamedSharding`` splitting axis 0) pins the minibatch to the shards.

    Examples:
        >>> import jax.numpy as jnp, numpyro, ctxppl as ctx
        >>> from ctxppl._handlers import per_shard_minibatch
        >>> def model():
        ...     with ctx.plate("n", 8, subsample_size=4) as idx:
        ...         return idx
        >>> idx = numpyro.handlers.seed(per_shard_minibatch(model, shards={"n": (2, None)}), 0)()
        >>> bool(jnp.all(idx[:2] < 4) & jnp.all(idx[2:] >= 4))
        True
    """

    def __init__(self, fn=None, shards: dict[str, tuple[int, Any]] | None = None):  # noqa: ANN001
        self.shards = dict(shards or {})
        super().__init__(fn)

    def process_message(self, msg) -> None:  # noqa: ANN001
        if msg["type"] == "ctx_plate" and msg["plate"] in self.shards:
            msg["shards"] = self.shards[msg["plate"]]
        elif msg["type"] == "plate" and msg["name"] in self.shards and msg["value"] is None:
            num = self.shards[msg["name"]][0]
            size, sub = msg["args"][0], msg["args"][1]
            if sub is not None and sub < size:
                if size % num or sub % num:
                    raise ValueError(
                        f"plate {msg['name']!r} (size {size}) is split over {num} shards and "
                        f"draws minibatches per shard: its size and subsample size "
                        f"({sub}) must be multiples of {num}; choose `batch_size` (or "
                        f"`subsample_size`) as a multiple of {num}.")
                msg["fn"] = functools.partial(_indices_per_shard, num)


def _replace_loc(fn: dist.Distribution, new_loc: jax.Array, scale: Any) -> dist.Distribution:
    batch_shape, event_ndim = fn.batch_shape, len(fn.event_shape)
    base = fn
    while isinstance(base, ExpandedDistribution | Independent):
        base = base.base_dist
    if scale is not None:
        new = dist.Normal(new_loc, scale)
    elif "loc" in getattr(base, "arg_constraints", {}):
        kwargs = {k: getattr(base, k) for k in base.arg_constraints}
        kwargs["loc"] = new_loc
        new = type(base)(**kwargs)
    else:
        raise TypeError(
            f"contextualize can replace the `loc` of a location-scale site; site has "
            f"{type(base).__name__}. Pass `scale=` to make it Normal(f(c), scale).")
    new_event = len(new.event_shape)
    if event_ndim > new_event:
        new = new.to_event(event_ndim - new_event)
    return new.expand(jax.numpy.broadcast_shapes(batch_shape, new.batch_shape))


class contextualize(Messenger):
    r"""Turn a sample site of an unmodified NumPyro model into a context-encoded one.

    The site ``site`` inside plate ``plate`` gets location :math:`f(c_i)` (``mode="replace"``,
    the default) or its old location plus :math:`f(c_i)` (``mode="add"``); its scale and
    family are kept (or it becomes ``Normal(f(c_i), scale)`` when ``scale`` is given). The
    encoder's arrays are registered as NumPyro params ``f"{name}$params"`` (or random sites
    with ``prior``). ``context`` is needed when the plate is a plain ``numpyro.plate``.

    Args:
        fn: The model.
        site: Name of the sample site to contextualize.
        plate: Name of the plate whose members the site is over.
        encoder: An ``eqx.Module`` mapping one context row to the site's per-member shape.
        context: Per-member context of the plate (default: the ``ctx.plate``'s own).
        scale: Optional scale: the site becomes ``Normal(f(c_i), scale)``.
        mode: ``"replace"`` or ``"add"``.
        prior: Optional prior: a Bayesian encoder (see :func:`ctxppl.encoder`).
        name: Encoder site prefix (default ``f"{site}_encoder"``).

    Examples:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist, ctxppl as ctx
        >>> def model(N):
        ...     mu = numpyro.sample("mu_global", dist.Normal(0.0, 0.5))
        ...     with numpyro.plate("N", N):
        ...         return numpyro.sample("mu_i", dist.Normal(mu, 0.5))
        >>> C = jnp.ones((4, 2))
        >>> m = ctx.handlers.contextualize(model, site="mu_i", plate="N",
        ...                                encoder=ctx.nn.Linear(2, ()), context=C)
        >>> tr = numpyro.handlers.trace(numpyro.handlers.seed(m, 0)).get_trace(4)
        >>> tr["mu_i"]["value"].shape, "mu_i_encoder$params" in tr
        ((4,), True)
    """

    def __init__(self, fn=None, site: str | None = None, plate: str | None = None,  # noqa: ANN001
                 encoder: eqx.Module | None = None, context: Any = None, scale: Any = None,
                 mode: str = "replace", prior: Any = None, name: str | None = None):
        _need(site, "site", "contextualize")
        _need(plate, "plate", "contextualize")
        _need(encoder, "encoder", "contextualize")
        if mode not in ("replace", "add"):
            raise ValueError(f"`mode` of contextualize must be 'replace' or 'add'; got {mode!r}.")
        if context is not None:
            leaves = jax.tree_util.tree_leaves(context)
            check_context(plate, int(jnp.shape(leaves[0])[0]), context)
        self.site, self.plate_name, self.module = site, plate, encoder
        self.context, self.scale, self.mode, self.prior = context, scale, mode, prior
        self.name = name or f"{site}_encoder"
        self._live = None
        self._indices = None
        super().__init__(fn)

    def __enter__(self):  # noqa: ANN204
        out = super().__enter__()
        self._live = encoder(self.name, self.module, prior=self.prior)
        self._indices = None
        return out

    def __exit__(self, *args):  # noqa: ANN002, ANN204
        self._live = None
        self._indices = None
        return super().__exit__(*args)

    def postprocess_message(self, msg) -> None:  # noqa: ANN001
        if msg["type"] == "plate" and msg["name"] == self.plate_name:
            self._indices = msg["value"]

    def process_message(self, msg) -> None:  # noqa: ANN001
        if msg["type"] != "sample" or msg["name"] != self.site or msg["is_observed"]:
            return
        frames = [f for f in msg["cond_indep_stack"] if f.name == self.plate_name]
        if not frames:
            raise ValueError(f"contextualize(site={self.site!r}, plate={self.plate_name!r}): the "
                             f"site is not inside a plate named {self.plate_name!r}.")
        frame = frames[0]
        if self.context is None:
            c, _ = context(self.plate_name)
        else:
            c = self.context
            if frame.size != jnp.shape(jax.tree_util.tree_leaves(c)[0])[0]:
                idx = self._indices
                c = jax.tree_util.tree_map(lambda a: jnp.take(a, idx, axis=0), c)
        out = jax.vmap(self._live)(c)
        fn = msg["fn"]
        member = tuple(out.shape[1:])
        if member != tuple(fn.event_shape):
            raise ValueError(
                f"encoder output for contextualize(site={self.site!r}) has per-member shape "
                f"{member}, but the site's event shape is {tuple(fn.event_shape)}; give the "
                f"encoder out_shape={tuple(fn.event_shape)}.")
        new_loc = _align(out, frame.dim, len(member))
        if self.mode == "add":
            base = fn
            while isinstance(base, ExpandedDistribution | Independent):
                base = base.base_dist
            new_loc = new_loc + base.loc
        msg["fn"] = _replace_loc(fn, new_loc, self.scale)
