r"""Context encoders: Equinox modules mapping one member's context to its parameters.

Every encoder acts on a single context vector ``c`` of shape ``(in_size,)`` and returns an
array of shape ``out_shape`` (``ctx.contextual`` vmaps it over members). Each stores its
constructor arguments as static fields, so :meth:`Encoder.reinit` can draw fresh initial
values from a key -- ``ctx.encoder`` uses that to start every seed somewhere else.

``reinit`` runs inside every compiled fit. The constructors draw each array with its own
random call (``eqx.nn.MLP`` makes ten, each a loop in the compiled program: over a quarter
of the seed MAP program's instructions, and of the time a fresh process takes to load
it). So the encoders here also say which uniform each array starts from
(``_init_widths``) and ``reinit`` draws all of them with one call: the same distribution
as the constructor's, other values.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

__all__ = ["Encoder", "Constant", "Linear", "MLP", "NGAM", "Archetype", "get_link"]

def _identity(x: jax.Array) -> jax.Array:
    return x


_LINKS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "identity": _identity,
    "exp": jnp.exp,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "softmax": jax.nn.softmax,
}


def get_link(link: str | Callable[[jax.Array], jax.Array] | None) -> Callable:
    """Resolve a link function given by name (``identity``, ``exp``, ``softplus``,
    ``sigmoid``, ``tanh``, ``softmax``) or as a callable.

    Examples:
        >>> import jax.numpy as jnp
        >>> from ctxppl.nn import get_link
        >>> float(get_link("exp")(jnp.array(0.0)))
        1.0
    """
    if link is None or link == "identity":
        return _identity
    if callable(link):
        return link
    if isinstance(link, str) and link in _LINKS:
        return _LINKS[link]
    raise ValueError(f"`link` must be a callable or one of {sorted(_LINKS)}; got {link!r}.")


_ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "gelu": jax.nn.gelu,
                "swish": jax.nn.swish, "softplus": jax.nn.softplus, "elu": jax.nn.elu}


def _activation(act: str | Callable) -> Callable:
    if callable(act):
        return act
    if act in _ACTIVATIONS:
        return _ACTIVATIONS[act]
    raise ValueError(f"`activation` must be a callable or one of {sorted(_ACTIVATIONS)}; "
                     f"got {act!r}.")


def _shape(out_shape: int | tuple[int, ...]) -> tuple[int, ...]:
    shape = (out_shape,) if isinstance(out_shape, int) else tuple(int(s) for s in out_shape)
    if any(s <= 0 for s in shape):
        raise ValueError(f"`out_shape` must hold positive sizes; got {out_shape!r}.")
    return shape


def _size(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _key(key: PRNGKeyArray | None) -> PRNGKeyArray:
    # A template key: ctx.encoder re-initialises from the model's PRNG stream when seeded.
    return jax.random.key(0) if key is None else key


def _linear_half_width(in_features: int) -> float:
    """The half-width of the uniform ``eqx.nn.Linear`` draws its weight and bias from."""
    return 1.0 / math.sqrt(in_features) if in_features else 1.0


def _linear_widths(module: Any) -> Any:
    """``module`` with the arrays of every ``eqx.nn.Linear`` in it (stacked ones too)
    replaced by the half-width Equinox draws them from, uniform on ``[-w, w]`` with
    ``w = 1/sqrt(in_features)``; every other array by ``_UNKNOWN``."""
    def widths(node: Any) -> Any:
        if isinstance(node, eqx.nn.Linear):
            w = _linear_half_width(1 if node.in_features == "scalar" else node.in_features)
            return jax.tree_util.tree_map(lambda x: w if eqx.is_array(x) else x, node)
        return _UNKNOWN if eqx.is_array(node) else node

    return jax.tree_util.tree_map(widths, module,
                                  is_leaf=lambda x: isinstance(x, eqx.nn.Linear))


class _Unknown:
    """Marks an array whose initial distribution an encoder does not describe."""


_UNKNOWN = _Unknown()


class Encoder(eqx.Module):
    """Base class of ctxppl encoders: ``__call__(c) -> params`` on one context vector.

    ``linear_fields`` names the fields whose arrays the output is linear in (before the
    link): with a Normal prior they are Gaussian weights, which ``ctx.fit(...,
    method="marginal")`` integrates out.
    """

    linear_fields: ClassVar[tuple[str, ...]] = ()

    def reinit(self, key: PRNGKeyArray) -> Encoder:
        """The same architecture with fresh initial values drawn from ``key``.

        When the class says which uniform its constructor draws each array from
        (``_init_widths``, declared beside that constructor), all arrays are drawn with one
        random call; otherwise (a subclass with its own ``__init__``, complex arrays) the
        constructor is called with ``key``.

        Examples:
            >>> import jax, ctxppl as ctx
            >>> enc = ctx.nn.MLP(3, 2, width=8, depth=2)
            >>> new = enc.reinit(jax.random.key(1))
            >>> bool((abs(new.mlp.layers[1].weight) <= 8 ** -0.5).all())
            True
        """
        leaves, treedef = jax.tree_util.tree_flatten(self)
        widths = self._declared_widths()
        if widths is not None:
            widths = treedef.flatten_up_to(widths)
            arrays = [i for i, x in enumerate(leaves) if eqx.is_array(x)]
            if all(isinstance(widths[i], float) and jnp.issubdtype(leaves[i].dtype, jnp.floating)
                   for i in arrays):
                return jax.tree_util.tree_unflatten(treedef, _uniform_like(
                    key, leaves, arrays, [widths[i] for i in arrays]))
        names = [p for p in inspect.signature(type(self).__init__).parameters
                 if p not in ("self", "key")]
        return type(self)(**{n: getattr(self, n) for n in names}, key=key)

    def _declared_widths(self) -> Any:
        """``_init_widths()`` if the class that defines it also defines the constructor in
        use (a subclass that draws its arrays otherwise is not described by it)."""
        cls = type(self)
        owner = next((c for c in cls.__mro__ if "_init_widths" in c.__dict__), None)
        if owner is None or owner is Encoder or cls.__init__ is not owner.__dict__.get("__init__"):
            return None
        return self._init_widths()

    def _init_widths(self) -> Any:
        """``self`` with each array replaced by the half-width ``w`` of the uniform on
        ``[-w, w]`` its constructor draws it from (``0.0``: it starts at zero)."""
        return None


def _uniform_like(key: PRNGKeyArray, leaves: list, arrays: list[int],
                  widths: list[float]) -> list:
    """``leaves`` with ``leaves[i]`` for ``i`` in ``arrays`` redrawn uniform on ``[-w, w]``,
    all from one draw."""
    sizes = [leaves[i].size for i in arrays]
    dtype = jnp.result_type(*[leaves[i].dtype for i in arrays]) if arrays else jnp.float32
    u = jax.random.uniform(key, (sum(sizes),), dtype, minval=-1.0, maxval=1.0)
    out, start = list(leaves), 0
    for i, w, n in zip(arrays, widths, sizes, strict=True):
        x = leaves[i]
        out[i] = (w * u[start:start + n]).reshape(x.shape).astype(x.dtype)
        start += n
    return out


class Constant(Encoder):
    r"""Ignores the context: one shared parameter vector (population / fixed effect).

    Examples:
        >>> import jax.numpy as jnp, ctxppl as ctx
        >>> ctx.nn.Constant(3, 2)(jnp.ones(3)).shape
        (2,)
    """

    value: Float[Array, "..."]
    linear_fields: ClassVar[tuple[str, ...]] = ("value",)
    in_size: int = eqx.field(static=True)
    out_shape: tuple[int, ...] = eqx.field(static=True)
    link: str | Callable | None = eqx.field(static=True)

    def __init__(self, in_size: int, out_shape: int | tuple[int, ...], link=None, *,
                 key: PRNGKeyArray | None = None):
        del key
        self.in_size = int(in_size)
        self.out_shape = _shape(out_shape)
        self.link = link
        get_link(link)
        self.value = jnp.zeros(self.out_shape)

    def __call__(self, c: Float[Array, " in_size"]) -> Float[Array, "..."]:
        del c
        return get_link(self.link)(self.value)


class Linear(Encoder):
    r"""Affine map of the context, :math:`\theta = g(A c + b)`.

    Examples:
        >>> import jax, jax.numpy as jnp, ctxppl as ctx
        >>> ctx.nn.Linear(3, (2, 2), key=jax.random.key(1))(jnp.ones(3)).shape
        (2, 2)
    """

    weight: Float[Array, "out in_size"]
    bias: Float[Array, " out"]
    linear_fields: ClassVar[tuple[str, ...]] = ("weight", "bias")
    in_size: int = eqx.field(static=True)
    out_shape: tuple[int, ...] = eqx.field(static=True)
    link: str | Callable | None = eqx.field(static=True)

    def __init__(self, in_size: int, out_shape: int | tuple[int, ...], link=None, *,
                 key: PRNGKeyArray | None = None):
        self.in_size = int(in_size)
        self.out_shape = _shape(out_shape)
        self.link = link
        get_link(link)
        lin = eqx.nn.Linear(self.in_size, _size(self.out_shape), key=_key(key))
        self.weight, self.bias = lin.weight, lin.bias

    def _init_widths(self) -> Linear:
        w = _linear_half_width(self.in_size)
        return eqx.tree_at(lambda e: (e.weight, e.bias), self, (w, w))

    def __call__(self, c: Float[Array, " in_size"]) -> Float[Array, "..."]:
        return get_link(self.link)(jnp.reshape(self.weight @ c + self.bias, self.out_shape))


class _HiddenLayers(Encoder):
    """Encoders built of MLPs: the architecture as static fields, checked in one place."""

    in_size: int = eqx.field(static=True)
    out_shape: tuple[int, ...] = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    activation: str | Callable = eqx.field(static=True)
    link: str | Callable | None = eqx.field(static=True)

    def _set_architecture(self, in_size: int, out_shape: int | tuple[int, ...], width: int,
                          depth: int, activation: str | Callable, link: Any) -> None:
        self.in_size = int(in_size)
        self.out_shape = _shape(out_shape)
        self.width, self.depth = int(width), int(depth)
        if self.width < 1 or self.depth < 0:
            raise ValueError(f"`width` must be >= 1 and `depth` >= 0; got width={width}, "
                             f"depth={depth}.")
        self.activation, self.link = activation, link
        _activation(activation)
        get_link(link)


class MLP(_HiddenLayers):
    r"""Multi-layer perceptron of the context: ``depth`` hidden layers of ``width`` units.

    Examples:
        >>> import jax, jax.numpy as jnp, ctxppl as ctx
        >>> ctx.nn.MLP(2, 2, width=25, depth=2)(jnp.ones(2)).shape
        (2,)
    """

    mlp: eqx.nn.MLP

    def __init__(self, in_size: int, out_shape: int | tuple[int, ...], width: int = 25,
                 depth: int = 2, activation: str | Callable = "relu", link=None, *,
                 key: PRNGKeyArray | None = None):
        self._set_architecture(in_size, out_shape, width, depth, activation, link)
        self.mlp = eqx.nn.MLP(self.in_size, _size(self.out_shape), self.width, self.depth,
                              activation=_activation(self.activation), key=_key(key))

    def _init_widths(self) -> MLP:
        return _linear_widths(self)

    def __call__(self, c: Float[Array, " in_size"]) -> Float[Array, "..."]:
        return get_link(self.link)(jnp.reshape(self.mlp(c), self.out_shape))


class NGAM(_HiddenLayers):
    r"""Neural additive model: :math:`\theta = g(\sum_j f_j(c_j))`, one small MLP per feature.

    :meth:`feature_effects` returns each feature's additive contribution, for plotting.

    Examples:
        >>> import jax, jax.numpy as jnp, ctxppl as ctx
        >>> enc = ctx.nn.NGAM(3, 2, width=8, depth=1)
        >>> enc(jnp.ones(3)).shape, enc.feature_effects(jnp.ones(3)).shape
        ((2,), (3, 2))
    """

    mlps: eqx.nn.MLP  # stacked: every array has a leading axis of length in_size

    def __init__(self, in_size: int, out_shape: int | tuple[int, ...], width: int = 25,
                 depth: int = 2, activation: str | Callable = "relu", link=None, *,
                 key: PRNGKeyArray | None = None):
        self._set_architecture(in_size, out_shape, width, depth, activation, link)
        keys = jax.random.split(_key(key), self.in_size)
        act, out = _activation(self.activation), _size(self.out_shape)
        w, d = self.width, self.depth
        self.mlps = eqx.filter_vmap(
            lambda k: eqx.nn.MLP(1, out, w, d, activation=act, key=k))(keys)

    def _init_widths(self) -> NGAM:
        return _linear_widths(self)

    def feature_effects(self, c: Float[Array, " in_size"]) -> Float[Array, "in_size ..."]:
        """Per-feature contributions ``f_j(c_j)``, shape ``(in_size, *out_shape)``."""
        eff = eqx.filter_vmap(lambda m, x: m(x[None]))(self.mlps, c)
        return jnp.reshape(eff, (self.in_size,) + self.out_shape)

    def __call__(self, c: Float[Array, " in_size"]) -> Float[Array, "..."]:
        return get_link(self.link)(jnp.sum(self.feature_effects(c), axis=0))


class Archetype(Encoder):
    r"""Mixture of ``num_archetypes`` learned parameter vectors, weighted by an MLP of context.

    .. math:: \theta = g\big(\textstyle\sum_k a_k(c)\, B_k\big),\qquad a(c) = h(\mathrm{MLP}(c))

    ``weights="softmax"`` gives convex combinations (NOTMAD-style archetypes);
    ``weights="identity"`` gives unconstrained weights, as in contextualized-ml's default
    ``SubtypeMetamodel``. Archetypes start uniform in :math:`\pm` ``archetype_init``.

    Examples:
        >>> import jax, jax.numpy as jnp, ctxppl as ctx
        >>> ctx.nn.Archetype(2, 2, num_archetypes=10)(jnp.ones(2)).shape
        (2,)
    """

    mlp: eqx.nn.MLP
    archetypes: Float[Array, "num_archetypes out"]
    in_size: int = eqx.field(static=True)
    out_shape: tuple[int, ...] = eqx.field(static=True)
    num_archetypes: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)
    weights: str = eqx.field(static=True)
    archetype_init: float = eqx.field(static=True)
    link: str | Callable | None = eqx.field(static=True)

    def __init__(self, in_size: int, out_shape: int | tuple[int, ...], num_archetypes: int = 10,
                 width: int = 25, depth: int = 2, activation: str | Callable = "relu",
                 weights: str = "identity", archetype_init: float = 0.01, link=None, *,
                 key: PRNGKeyArray | None = None):
        if weights not in ("identity", "softmax"):
            raise ValueError(f"`weights` must be 'identity' or 'softmax'; got {weights!r}.")
        if num_archetypes < 1:
            raise ValueError(f"`num_archetypes` must be >= 1; got {num_archetypes}.")
        self.in_size = int(in_size)
        self.out_shape = _shape(out_shape)
        self.num_archetypes = int(num_archetypes)
        self.width, self.depth = int(width), int(depth)
        self.activation = activation
        self.weights = weights
        self.archetype_init = float(archetype_init)
        self.link = link
        get_link(link)
        k1, k2 = jax.random.split(_key(key))
        self.mlp = eqx.nn.MLP(self.in_size, self.num_archetypes, self.width, self.depth,
                              activation=_activation(self.activation), key=k1)
        self.archetypes = jax.random.uniform(
            k2, (self.num_archetypes, _size(self.out_shape)),
            minval=-self.archetype_init, maxval=self.archetype_init)

    def _init_widths(self) -> Archetype:
        return eqx.tree_at(lambda e: e.archetypes, _linear_widths(self), self.archetype_init)

    def archetype_weights(self, c: Float[Array, " in_size"]) -> Float[Array, " num_archetypes"]:
        """The weights :math:`a(c)` over archetypes."""
        a = self.mlp(c)
        return jax.nn.softmax(a) if self.weights == "softmax" else a

    def __call__(self, c: Float[Array, " in_size"]) -> Float[Array, "..."]:
        theta = self.archetype_weights(c) @ self.archetypes
        return get_link(self.link)(jnp.reshape(theta, self.out_shape))
