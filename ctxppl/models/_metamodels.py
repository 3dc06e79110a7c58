r"""Metamodels: how a context becomes a sample's model parameters.

The four metamodels of contextualized-ml (``naive``, ``subtype``, ``multitask``, ``tasksplit``)
as compositions of :mod:`ctxppl.nn` encoders. Every metamodel is a *body* -- a ctxppl encoder
(MLP, NGAM or linear) mapping the context to a few features -- followed by a linear *head*:

.. math::

    \theta(c) = A\, z(c) \quad (+\, b),\qquad z(c) = \mathrm{body}(c)

* ``naive`` (direct): ``z`` is the last hidden layer of the encoder and ``A, b`` its output
  layer, i.e. the encoder maps the context to the parameters directly.
* ``subtype`` (archetypes): ``z`` holds ``num_archetypes`` weights and the rows of ``A`` are
  archetype parameter vectors (initialised uniform in :math:`\pm 0.01`); weights are
  unconstrained by default (contextualized-ml's default) or a softmax (convex mixtures).
* ``multitask``: the body sees the context *and* a one-hot task vector (an output, or an
  (input, output) pair); archetypes are shared by all tasks.
* ``tasksplit``: one body for the context (softmax weights), one for the task; the head is a
  ``(K_context, K_task)`` grid of archetypes.
* ``gp``: every per-sample parameter is its own Gaussian process of the context plus a linear
  part (:class:`ctxppl.nn.HSGP`, with its own priors): linear in Gaussian weights, which
  ``ctx.fit(..., method="marginal")`` integrates out -- calibrated intervals (the
  estimators' ``uncertainty=True``). Needs ``gp_domain``.

The body is always a point-estimated NumPyro ``param``; the head becomes a random site with a
``Normal(0, prior_scale)`` prior when ``prior_scale`` is given, so posterior methods (SVI,
Laplace, NUTS) return per-sample parameters with uncertainty while the network that
produces the weights is fitted by MAP (a Bayesian last layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, Float, PRNGKeyArray

from ctxppl import _primitives as prim
from ctxppl import nn as cnn

__all__ = ["Metamodel", "METAMODELS", "ENCODERS", "LinearHead", "ArchetypeHead", "Composed"]

METAMODELS = ("naive", "subtype", "multitask", "tasksplit", "gp")
ENCODERS = ("mlp", "ngam", "linear")


def _key(key: PRNGKeyArray | None) -> PRNGKeyArray:
    return jax.random.key(0) if key is None else key


class LinearHead(cnn.Encoder):
    r"""Output layer :math:`\theta = A z + b` (the last layer of a direct encoder).

    Examples:
        >>> import jax.numpy as jnp
        >>> from ctxppl.models import LinearHead
        >>> LinearHead(3, 4)(jnp.ones(3)).shape
        (4,)
    """

    weight: Float[Array, "out in_size"]
    bias: Float[Array, " out"]
    in_size: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)

    def __init__(self, in_size: int, out_size: int, *, key: PRNGKeyArray | None = None):
        self.in_size, self.out_size = int(in_size), int(out_size)
        lin = eqx.nn.Linear(self.in_size, self.out_size, key=_key(key))
        self.weight, self.bias = lin.weight, lin.bias

    def __call__(self, z: Float[Array, " in_size"]) -> Float[Array, " out"]:
        return self.weight @ z + self.bias


class ArchetypeHead(cnn.Encoder):
    r"""Archetype parameter vectors :math:`B` (shape ``(*num_archetypes, out_size)``),
    initialised uniform in :math:`\pm` ``init`` as in contextualized-ml's ``Explainer``.

    Called with one weight vector per archetype axis it returns
    :math:`\sum_{k,l} a_k b_l B_{kl}` (one axis: :math:`a^\top B`).

    Examples:
        >>> import jax.numpy as jnp
        >>> from ctxppl.models import ArchetypeHead
        >>> ArchetypeHead((3,), 4)(jnp.ones(3)).shape
        (4,)
    """

    archetypes: Float[Array, "..."]
    num_archetypes: tuple[int, ...] = eqx.field(static=True)
    out_size: int = eqx.field(static=True)
    init: float = eqx.field(static=True)

    def __init__(self, num_archetypes: tuple[int, ...], out_size: int, init: float = 0.01, *,
                 key: PRNGKeyArray | None = None):
        self.num_archetypes = tuple(int(k) for k in num_archetypes)
        self.out_size, self.init = int(out_size), float(init)
        self.archetypes = jax.random.uniform(_key(key), self.num_archetypes + (self.out_size,),
                                             minval=-self.init, maxval=self.init)

    def __call__(self, *weights: Float[Array, " k"]) -> Float[Array, " out"]:
        b = self.archetypes
        for w in weights:
            b = jnp.tensordot(w, b, axes=1)
        return b


class _Task(eqx.Module):
    """A body evaluated on ``concat(c, task one-hot)`` for every task."""

    body: Any
    tasks: Float[Array, "num_tasks task_dim"]

    def __call__(self, c: Float[Array, " c"]) -> Float[Array, "num_tasks k"]:
        ct = jnp.concatenate([jnp.broadcast_to(c, (self.tasks.shape[0],) + c.shape),
                              self.tasks], axis=-1)
        return jax.vmap(lambda x: self.body(x))(ct)  # a function: cheap for JAX to name


class Composed(eqx.Module):
    r"""The live metamodel: ``body`` (one or two encoders) then ``head``; maps one context row
    to parameters of shape ``out_shape``. Built by :meth:`Metamodel.__call__` inside a model.
    """

    kind: str = eqx.field(static=True)
    out_shape: tuple[int, ...] = eqx.field(static=True)
    body: Any
    head: Any
    task_body: Any = None
    tasks: Any = None

    def weights(self, c: Float[Array, " c"]) -> Any:
        """The body's output ``z(c)`` (archetype weights for subtype models)."""
        if self.kind in ("naive", "subtype"):
            return c if self.body is None else self.body(c)
        if self.kind == "multitask":
            return _Task(self.body, self.tasks)(c)
        return self.body(c), jax.vmap(lambda t: self.task_body(t))(self.tasks)

    def __call__(self, c: Float[Array, " c"]) -> Float[Array, "..."]:
        z = self.weights(c)
        if self.kind in ("naive", "subtype"):
            theta = self.head(z)
        elif self.kind == "multitask":
            theta = jax.vmap(lambda x: self.head(x))(z)
        else:
            zc, zt = z
            theta = jax.vmap(lambda t: self.head(zc, t))(zt)
        return jnp.reshape(theta, self.out_shape)


def _encoder(kind: str, in_size: int, out_size: int, width: int, depth: int,
             activation: str, link: Any) -> cnn.Encoder:
    if kind == "mlp":
        return cnn.MLP(in_size, out_size, width=width, depth=depth, activation=activation,
                       link=link)
    if kind == "ngam":
        return cnn.NGAM(in_size, out_size, width=width, depth=depth, activation=activation,
                        link=link)
    return cnn.Linear(in_size, out_size, link=link)


@dataclass(frozen=True)
class Metamodel:
    r"""Specification of a metamodel (hashable, so fits with equal settings share one
    compiled program).

    Args:
        kind: ``"naive"`` (direct), ``"subtype"`` (archetypes), ``"multitask"`` or
            ``"tasksplit"``.
        encoder: ``"mlp"``, ``"ngam"`` (neural additive) or ``"linear"``.
        num_archetypes: Archetypes (subtype, multitask) or context archetypes (tasksplit).
        num_task_archetypes: Task archetypes (tasksplit).
        width: Hidden units per layer.
        depth: Hidden layers.
        activation: Hidden activation (``"relu"``, ``"tanh"``, ...).
        archetype_weights: ``"identity"`` (unconstrained) or ``"softmax"`` (convex mixture);
            tasksplit always uses a softmax over context archetypes, as contextualized-ml.
        archetype_init: Archetypes start uniform in :math:`\pm` this value.
        gp_domain: ``(center, half_range)`` per context feature (metamodel ``"gp"``).
        gp_basis: Basis functions per context feature (metamodel ``"gp"``).

    Examples:
        >>> import jax, jax.numpy as jnp, numpyro, ctxppl as ctx
        >>> meta = ctx.models.Metamodel("subtype", num_archetypes=4)
        >>> def model(C):
        ...     enc = meta("enc", C.shape[1], (2, 3))
        ...     with ctx.plate("n", C.shape[0], context=C):
        ...         return ctx.contextual("theta", enc)
        >>> numpyro.handlers.seed(model, 0)(jnp.ones((5, 2))).shape
        (5, 2, 3)
    """

    kind: str = "subtype"
    encoder: str = "mlp"
    num_archetypes: int = 10
    num_task_archetypes: int = 10
    width: int = 25
    depth: int = 2
    activation: str = "relu"
    archetype_weights: str = "identity"
    archetype_init: float = 0.01
    gp_domain: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    gp_basis: int = 8

    def __post_init__(self) -> None:
        if self.kind == "gp" and self.gp_domain is None:
            raise ValueError("metamodel 'gp' needs `gp_domain`: the (center, half_range) per "
                             "context feature of the training contexts.")
        if self.kind not in METAMODELS:
            raise ValueError(f"`metamodel_type` must be one of {METAMODELS}; got {self.kind!r}.")
        if self.encoder not in ENCODERS:
            raise ValueError(f"`encoder_type` must be one of {ENCODERS}; got {self.encoder!r}.")
        for name in ("num_archetypes", "num_task_archetypes", "width"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be a positive int; got {v!r}.")
        if not isinstance(self.depth, int) or self.depth < 0:
            raise ValueError(f"`depth` must be a non-negative int; got {self.depth!r}.")
        if self.archetype_weights not in ("identity", "softmax"):
            raise ValueError("`archetype_weights` must be 'identity' or 'softmax'; got "
                             f"{self.archetype_weights!r}.")

    # -- building blocks ---------------------------------------------------------------
    def modules(self, c_dim: int, out_shape: tuple[int, ...],
                tasks: jax.Array | None = None) -> tuple[Any, Any, Any]:
        """Template ``(body, head, task_body)`` modules (no NumPyro sites)."""
        out_size = 1
        for s in out_shape:
            out_size *= int(s)
        link = "softmax" if self.archetype_weights == "softmax" else None
        k = self.num_archetypes
        if self.kind == "naive":
            if self.encoder == "linear" or self.depth == 0:
                return None, LinearHead(c_dim, out_size), None
            if self.encoder == "mlp":  # hidden layers only; the head is the output layer
                body = cnn.MLP(c_dim, self.width, width=self.width, depth=self.depth - 1,
                               activation=self.activation, link=_ACTS[self.activation])
            else:
                body = _encoder("ngam", c_dim, self.width, self.width, self.depth,
                                self.activation, None)
            return body, LinearHead(self.width, out_size), None
        if self.kind == "subtype":
            body = _encoder(self.encoder, c_dim, k, self.width, self.depth, self.activation, link)
            return body, ArchetypeHead((k,), out_size, self.archetype_init), None
        if tasks is None:
            raise ValueError(f"metamodel {self.kind!r} needs task vectors.")
        n_tasks, t_dim = tasks.shape
        task_size = out_size // n_tasks
        if self.kind == "multitask":
            body = _encoder(self.encoder, c_dim + t_dim, k, self.width, self.depth,
                            self.activation, link)
            return body, ArchetypeHead((k,), task_size, self.archetype_init), None
        body = _encoder(self.encoder, c_dim, k, self.width, self.depth, self.activation,
                        "softmax")
        task_body = _encoder(self.encoder, t_dim, self.num_task_archetypes, self.width,
                             self.depth, self.activation, None)
        head = ArchetypeHead((k, self.num_task_archetypes), task_size, self.archetype_init)
        return body, head, task_body

    def __call__(self, name: str, c_dim: int, out_shape: tuple[int, ...], *,
                 tasks: jax.Array | None = None, prior_scale: float | None = None) -> Composed:
        r"""Register the metamodel's NumPyro sites and return the live encoder.

        Sites: ``f"{name}_body$params"`` (and ``f"{name}_task$params"``) as point-estimated
        params; the head as ``f"{name}_head$params"``, or -- with ``prior_scale`` -- as random
        sites ``f"{name}_head..."`` with a ``Normal(0, prior_scale)`` prior.

        Args:
            name: Site-name prefix.
            c_dim: Context features.
            out_shape: Per-sample parameter shape. For multitask/tasksplit the leading axis
                is the task axis (one row of ``tasks`` per task).
            tasks: ``(num_tasks, task_dim)`` task vectors (multitask, tasksplit).
            prior_scale: Optional prior scale of the head (Bayesian last layer).
        """
        out_shape = tuple(int(s) for s in out_shape)
        if self.kind == "gp":
            gp = cnn.HSGP(c_dim, out_shape, num_basis=self.gp_basis, domain=self.gp_domain)
            return prim.encoder(name, gp, prior=gp.prior)
        if self.kind in ("multitask", "tasksplit"):
            if tasks is None or tasks.shape[0] != out_shape[0]:
                raise ValueError(f"metamodel {self.kind!r} needs `tasks` with one row per "
                                 f"task (out_shape[0]={out_shape[0]}).")
        body, head, task_body = self.modules(c_dim, out_shape, tasks)
        live_body = None if body is None else prim.encoder(f"{name}_body", body)
        live_task = None if task_body is None else prim.encoder(f"{name}_task", task_body)
        prior = None if prior_scale is None else dist.Normal(0.0, prior_scale)
        live_head = prim.encoder(f"{name}_head", head, prior=prior)
        if self.kind in ("naive", "subtype"):
            return Composed(self.kind, out_shape, live_body, live_head)
        return Composed(self.kind, out_shape, live_body, live_head, live_task,
                        jnp.asarray(tasks))


_ACTS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "gelu": jax.nn.gelu, "swish": jax.nn.swish,
         "softplus": jax.nn.softplus, "elu": jax.nn.elu}
