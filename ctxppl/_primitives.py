r"""The three ctxppl primitives: ``plate``, ``encoder`` and ``contextual``.

``plate`` is a :class:`numpyro.plate` that also carries a per-member *context*. ``contextual``
reads that context from the handler stack (never from global state): it sends a ``ctx_plate``
message that every enclosing ctxppl plate answers, innermost first. Handlers in
:mod:`ctxppl.handlers` answer the same message type to swap contexts (``at_context``) or to
weight members (``weight``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.primitives import CondIndepStackFrame, apply_stack

__all__ = ["plate", "context", "encoder", "contextual", "PlateInfo"]

_MSG_NO_PLATE = (
    "`ctx.{fn}({name!r})` found no enclosing `ctx.plate` with a `context=`{which}. Write:\n\n"
    "    with ctx.plate('patients', C.shape[0], context=C):\n"
    "        w = ctx.contextual('w', enc)\n"
)


def _no_default(*args: Any, **kwargs: Any) -> None:
    return None


def _is_concrete(x: Any) -> bool:
    """A value known on this process (not a tracer, not a multi-process global array)."""
    return not isinstance(x, jax.core.Tracer) and getattr(x, "is_fully_addressable", True)


def check_context(name: str, size: int, context: Any) -> None:
    """Validate a plate context: a pytree of numeric arrays, leading axis == plate size."""
    leaves = jax.tree_util.tree_leaves(context)
    if not leaves:
        raise ValueError(f"`context` of ctx.plate({name!r}) is an empty pytree; give an array.")
    for leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not (
            jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)
        ):
            raise TypeError(
                f"`context` of ctx.plate({name!r}) must hold numeric arrays; got a leaf of "
                f"type {type(leaf).__name__} with dtype {dtype}."
            )
        shape = jnp.shape(leaf)
        if len(shape) < 2:
            raise ValueError(
                f"`context` of ctx.plate({name!r}) must have ndim >= 2 (members, features); got "
                f"shape {shape}. For one feature write `C[:, None]`."
            )
        if shape[0] != size:
            raise ValueError(
                f"`context` of ctx.plate({name!r}, size={size}) must have leading axis {size} "
                f"(one row per member); got shape {shape}."
            )
        if _is_concrete(leaf) and not bool(np.all(np.isfinite(np.asarray(leaf)))):
            bad = int(np.sum(~np.isfinite(np.asarray(leaf))))
            raise ValueError(
                f"`context` of ctx.plate({name!r}) contains {bad} NaN/inf value(s); "
                "impute or drop those members first."
            )


def take_rows(a: Any, indices: jax.Array, shards: tuple[int, Any] | None,
              axis: int = 0) -> jax.Array:
    """``jnp.take(a, indices, axis)``; for per-shard minibatches of row-sharded data the
    gather runs block by block, so no device reads another device's rows."""
    size = jnp.shape(a)[axis]
    if shards is None or shards[0] < 2 or size % shards[0] or axis % jnp.ndim(a) != 0 \
            or jnp.shape(indices)[0] % shards[0]:
        return jnp.take(a, indices, axis=axis)
    num, sharding = shards
    rows, per = size // num, jnp.shape(indices)[0] // num
    local = (indices % rows).reshape(num, per)
    blocks = jnp.reshape(a, (num, rows) + jnp.shape(a)[1:])
    out = jax.vmap(lambda b, i: jnp.take(b, i, axis=0))(blocks, local)
    out = jnp.reshape(out, (num * per,) + jnp.shape(a)[1:])
    if sharding is not None:
        out = jax.lax.with_sharding_constraint(out, sharding)
    return out


class PlateInfo:
    """What ``ctx.context`` returns about a plate besides its context (read-only)."""

    __slots__ = ("name", "dim", "size", "subsample_size", "indices", "outer_frames")

    def __init__(self, name, dim, size, subsample_size, indices, outer_frames):
        self.name = name
        self.dim = dim
        self.size = size
        self.subsample_size = subsample_size
        self.indices = indices
        self.outer_frames = outer_frames

    def __repr__(self) -> str:
        return f"PlateInfo(name={self.name!r}, dim={self.dim}, size={self.size})"


class plate(numpyro.plate):
    r"""A :class:`numpyro.plate` whose members carry a context.

    A drop-in replacement for ``numpyro.plate``: same arguments, same trace, same log density,
    and ``with ctx.plate(...) as idx`` yields the subsample indices exactly as numpyro does. The
    extra keyword ``context`` is an array (or pytree of arrays) whose leading axis has one row
    per member; :func:`ctxppl.contextual` and :func:`ctxppl.context` read it from inside the
    plate, restricted to the current subsample.

    Args:
        name: Name of the plate.
        size: Number of members. May be ``None`` when ``context`` is given (then it is the
            context's leading axis).
        subsample_size: Optional minibatch size (as in numpyro).
        dim: Optional (negative) batch dimension (as in numpyro).
        context: Optional per-member context, leading axis ``size``. Validated: numeric,
            finite, ``ndim >= 2``.

    Examples:
        >>> import jax, jax.numpy as jnp, numpyro, ctxppl as ctx
        >>> C = jnp.ones((5, 3))
        >>> with numpyro.handlers.seed(rng_seed=0):
        ...     with ctx.plate("patients", 5, context=C, subsample_size=2) as idx:
        ...         c, info = ctx.context()
        >>> idx.shape, c.shape, info.name
        ((2,), (2, 3), 'patients')
    """

    def __init__(
        self,
        name: str,
        size: int | None = None,
        subsample_size: int | None = None,
        dim: int | None = None,
        *,
        context: Any = None,
    ) -> None:
        msg = {
            "type": "ctx_plate",
            "plate": name,
            "context": context,
            "size": size,
            "weights": None,
            "shards": None,  # (num_shards, sharding) when ctx.fit splits the rows
            "value": False,  # handlers set True when they replace the context
            "fn": _no_default,
            "args": (),
            "cond_indep_stack": [],
            "kwargs": {},
            "stop": False,
        }
        # Handlers (ctx.handlers.at_context / weight) may replace the context or add weights.
        apply_stack(msg)
        context, weights = msg["context"], msg["weights"]
        if msg["value"] is True:  # at_context: the new context's length is the size
            size, subsample_size = msg["size"], None
        if context is not None:
            leaves = jax.tree_util.tree_leaves(context)
            if size is None and leaves:
                size = jnp.shape(leaves[0])[0] if jnp.ndim(leaves[0]) else None
            check_context(name, size, context)
        if size is None:
            raise ValueError(f"ctx.plate({name!r}) needs `size` or `context`; got neither.")
        if weights is not None and jnp.shape(weights) != (size,):
            raise ValueError(
                f"weights for ctx.plate({name!r}, size={size}) must have shape ({size},); "
                f"got {jnp.shape(weights)}."
            )
        self.context = context
        self.weights = weights
        self.shards = msg["shards"]
        super().__init__(name, size, subsample_size=subsample_size, dim=dim)

    def _take(self, tree: Any) -> Any:
        if self.subsample_size == self.size:
            return tree
        return jax.tree_util.tree_map(lambda a: take_rows(a, self._indices, self.shards), tree)

    def process_message(self, msg) -> None:  # noqa: ANN001
        if msg["type"] == "ctx_plate":
            return
        if msg["type"] == "ctx_context":
            frame = CondIndepStackFrame(self.name, self.dim, self.subsample_size)
            msg["cond_indep_stack"].append(frame)
            want = msg["kwargs"]["plate"]
            if msg["value"] is None and self.context is not None and want in (None, self.name):
                msg["value"] = (
                    self._take(self.context),
                    PlateInfo(self.name, self.dim, self.size, self.subsample_size,
                              self._indices, ()),
                )
            return
        super().process_message(msg)
        if self.weights is not None and msg["type"] == "sample":
            w = self._take(self.weights)
            w = jnp.reshape(w, (-1,) + (1,) * (-self.dim - 1))
            msg["scale"] = w if msg["scale"] is None else msg["scale"] * w

    def postprocess_message(self, msg) -> None:  # noqa: ANN001
        if (self.shards is not None and msg["type"] == "subsample" and self.dim is not None
                and self.subsample_size < self.size
                and msg["kwargs"].get("event_dim") is not None):
            shape = jnp.shape(msg["value"])
            if len(shape) == msg["kwargs"]["event_dim"] - self.dim and shape[0] == self.size:
                # rows on the leading axis, split over devices: gather block by block
                msg["value"] = take_rows(msg["value"], self._indices, self.shards)
                return
        super().postprocess_message(msg)


def context(plate: str | None = None) -> tuple[Any, PlateInfo]:
    r"""The (subsampled) context of the innermost enclosing ``ctx.plate`` that has one.

    Args:
        plate: Name of the plate to read; by default the innermost plate with a context.

    Returns:
        ``(context, info)``: the context restricted to the current subsample, and a
        :class:`PlateInfo` with the plate's name, dim, size and subsample indices.

    Examples:
        >>> import jax.numpy as jnp, ctxppl as ctx
        >>> with ctx.plate("g", 3, context=jnp.eye(3)):
        ...     c, info = ctx.context()
        >>> c.shape, info.dim
        ((3, 3), -1)
    """
    msg = {
        "type": "ctx_context",
        "kwargs": {"plate": plate},
        "value": None,
        "fn": _no_default,
        "args": (),
        "cond_indep_stack": [],
        "stop": False,
    }
    apply_stack(msg)
    if msg["value"] is None:
        which = "" if plate is None else f" named {plate!r}"
        raise ValueError(_MSG_NO_PLATE.format(fn="context", name=plate or "", which=which))
    ctx_value, info = msg["value"]
    info.outer_frames = tuple(msg["cond_indep_stack"])
    return ctx_value, info


def _template_arrays(module: eqx.Module) -> tuple[Any, Any]:
    return eqx.partition(module, eqx.is_inexact_array)


def encoder(
    name: str,
    module: eqx.Module,
    prior: dist.Distribution | Callable[[str, tuple[int, ...]], dist.Distribution] | None = None,
) -> eqx.Module:
    r"""Register an Equinox module's arrays in a NumPyro model and return the live module.

    Without ``prior`` the module's floating-point arrays become one NumPyro ``param`` site
    ``f"{name}$params"`` (a point estimate: optimised by MAP/SVI, held at its MAP value by
    NUTS). When the module is a :class:`ctxppl.nn.Encoder`, its initial values are drawn from
    the model's PRNG stream (so every seed starts elsewhere); other modules start at their
    own values.

    With ``prior`` (a distribution, or a callable ``(path, shape) -> distribution``) every array
    becomes a random ``sample`` site named ``f"{name}{path}"`` (a Bayesian encoder). Arrays the
    module's output is linear in (its ``linear_fields``, e.g. the basis weights of
    :class:`ctxppl.nn.HSGP`) are marked ``infer={"ctx_linear": True}``: with a Normal prior
    they are Gaussian weights that ``ctx.fit(..., method="marginal")`` integrates out.

    Args:
        name: Site-name prefix.
        module: An ``eqx.Module``.
        prior: Optional prior for each array.

    Returns:
        The module with its arrays replaced by the site values.

    Examples:
        >>> import jax, numpyro, ctxppl as ctx
        >>> def model():
        ...     return ctx.encoder("enc", ctx.nn.Linear(3, 2))
        >>> tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace()
        >>> list(tr)
        ['enc$params']
    """
    if not isinstance(module, eqx.Module):
        raise TypeError(f"`module` of ctx.encoder({name!r}) must be an eqx.Module; got "
                        f"{type(module).__name__}.")
    arrays, static = _template_arrays(module)
    if prior is None:
        reinit = getattr(module, "reinit", None)

        def init(key):  # noqa: ANN001, ANN202
            if key is None or reinit is None:
                return arrays
            return _template_arrays(reinit(key))[0]

        if numpyro.primitives._PYRO_STACK:
            arrays = numpyro.param(f"{name}$params", init)
        return eqx.combine(arrays, static)

    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(arrays)
    linear = frozenset(getattr(module, "linear_fields", ()))
    values = []
    for path, leaf in leaves_with_path:
        site = f"{name}{jax.tree_util.keystr(path)}"
        prior_leaf = prior(site, leaf.shape) if callable(prior) and not isinstance(
            prior, dist.Distribution) else prior
        if not isinstance(prior_leaf, dist.Distribution):
            raise TypeError(f"`prior` of ctx.encoder({name!r}) must be a numpyro Distribution or "
                            f"a callable returning one; got {type(prior_leaf).__name__}.")
        d = prior_leaf.expand(leaf.shape).to_event(len(leaf.shape)) if leaf.shape else prior_leaf
        # marked, so convergence checks skip weights whose hidden units can swap labels;
        # arrays the module's output is linear in are Gaussian weights for method="marginal"
        field = getattr(path[0], "name", None) if path else None
        infer = {"ctx_encoder": True, **({"ctx_linear": True} if field in linear else {})}
        values.append(numpyro.sample(site, d, infer=infer))
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, values), static)


def _align(value: jax.Array, dim: int, event_ndim: int) -> jax.Array:
    """Move the member axis (0) of ``value`` to batch dim ``dim`` (event dims on the right)."""
    n_right = -dim - 1
    shape = value.shape[:1] + (1,) * n_right + value.shape[1:]
    return jnp.reshape(value, shape)


_MSG_MEMBER_SIZED = (
    "ctx.contextual({name!r}): each member of ctx.plate({plate!r}) gets parameters of shape "
    "{shape}, with as many values as the plate has members ({size}). That is usually an "
    "argument that is 1-D where (N, p) was meant, e.g. X of shape (N,) makes "
    "`ctx.nn.MLP(C.shape[-1], X.shape[-1])` output N values per member: pass X[:, None]. "
    "If the size is meant, pass event_shape= to ctx.contextual to say so.")


def _contextual_site(name: str, value: jax.Array) -> jax.Array:
    """``numpyro.deterministic`` marked ``infer={"ctx_contextual": True}``: inference routines
    (``method="marginal"``) find the per-member parameters by it."""
    if not numpyro.primitives._PYRO_STACK:
        return value
    msg = {"type": "deterministic", "name": name, "value": value, "cond_indep_stack": [],
           "infer": {"ctx_contextual": True}}
    return apply_stack(msg)["value"]


def contextual(
    name: str,
    encoder: Callable[[Any], jax.Array],
    scale: float | jax.Array | None = None,
    *,
    plate: str | None = None,
    event_shape: tuple[int, ...] | None = None,
    loc: jax.Array | float | None = None,
) -> jax.Array:
    r"""Per-member parameters :math:`\theta_i = f(c_i)`, or a contextualized random effect.

    Evaluates ``encoder`` on each member's context of the enclosing ``ctx.plate`` (vmapped,
    restricted to the current subsample) and records the result as a site with the plate's
    dims, so traces, ``Predictive`` and ArviZ see it.

    .. math::

        \theta_i = \mathrm{loc} + f(c_i) \quad\text{(deterministic, ``scale=None``)}\qquad
        \theta_i \sim \mathcal{N}(\mathrm{loc} + f(c_i),\ \mathrm{scale}^2)

    A constant encoder with a scale is a classic random effect; an MLP without a scale is a
    contextualized (varying-coefficient) model.

    Args:
        name: Site name.
        encoder: Callable mapping one member's context to its parameters (usually the
            module returned by :func:`ctxppl.encoder`).
        scale: Optional scale (float or sampled value) of the random deviation.
        plate: Which plate's context to use (default: the innermost plate with one).
        event_shape: Optional expected shape of one member's parameters; checked.
        loc: Optional offset added to the encoder output (e.g. a group-level parameter).

    Returns:
        Array with the plate's member axis at the plate's dim and the parameter shape as
        trailing (event) dims, e.g. ``(N, d)`` for a plate at ``dim=-1``.

    Examples:
        >>> import jax, jax.numpy as jnp, numpyro, ctxppl as ctx
        >>> def model(C):
        ...     enc = ctx.encoder("enc", ctx.nn.Linear(C.shape[1], 2))
        ...     with ctx.plate("n", C.shape[0], context=C):
        ...         return ctx.contextual("w", enc)
        >>> numpyro.handlers.seed(model, 0)(jnp.ones((4, 3))).shape
        (4, 2)
    """
    c, info = context(plate)
    in_size = getattr(encoder, "in_size", None)
    if isinstance(in_size, int) and jnp.ndim(c) >= 2 and jnp.shape(c)[-1] != in_size:
        raise ValueError(
            f"ctx.contextual({name!r}): the encoder ({type(encoder).__name__}) takes contexts "
            f"of width in_size={in_size}, but the context of ctx.plate({info.name!r}) has width "
            f"{jnp.shape(c)[-1]} (shape {tuple(jnp.shape(c))}); build the encoder with "
            f"in_size={jnp.shape(c)[-1]}, e.g. ctx.nn.{type(encoder).__name__}(C.shape[-1], ...).")
    # a function, not the module: JAX names what it maps by repr() of a callable without
    # code, and an Equinox module's repr pretty-prints every layer (~5 ms per trace)
    out = jax.vmap(lambda ci: encoder(ci))(c)
    member_shape = tuple(out.shape[1:])
    if event_shape is None and info.size >= 10 and info.size in member_shape:
        warnings.warn(_MSG_MEMBER_SIZED.format(name=name, plate=info.name, size=info.size,
                                               shape=member_shape), stacklevel=2)
    if event_shape is not None and tuple(event_shape) != member_shape:
        raise ValueError(
            f"encoder output for ctx.contextual({name!r}) has per-member shape {member_shape}, "
            f"but `event_shape` is {tuple(event_shape)}; set the encoder's output size to "
            f"{tuple(event_shape)}."
        )
    mean = _align(out, info.dim, len(member_shape))
    if loc is not None:
        mean = mean + loc
    if scale is None:
        # Broadcast across every enclosing ctxppl plate so the site has the full batch shape.
        batch = [1] * max(-f.dim for f in info.outer_frames)
        for f in info.outer_frames:
            batch[f.dim] = f.size
        batch_now = mean.shape[: mean.ndim - len(member_shape)]
        full = jnp.broadcast_shapes(tuple(batch), batch_now) + member_shape
        return _contextual_site(name, jnp.broadcast_to(mean, full))
    d = dist.Normal(mean, scale)
    if member_shape:
        d = d.to_event(len(member_shape))
    return numpyro.sample(name, d)

