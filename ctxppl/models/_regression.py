r"""Contextualized (generalized) linear models: regression and classification.

Each family is a frozen dataclass whose instances are NumPyro model functions
``model(C, X, Y=None, beta_offset=None, mu_offset=None, y_offset=None)``. Equal settings hash
equal, so repeated fits share one compiled program. Every sample ``i`` gets coefficients
:math:`\beta_i` and an intercept :math:`\mu_i` from its context :math:`c_i` through a
:class:`Metamodel`; offsets (from a base predictor) are added before the likelihood.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from ctxppl import _primitives as prim
from ctxppl.models._common import elastic_net, output_link, penalize, sample_plate, take
from ctxppl.models._metamodels import Metamodel

__all__ = ["Regression", "UnivariateRegression", "Classification"]


def _check_2d(name: str, x: jax.Array | None, n: int | None = None) -> None:
    if x is None:
        return
    if jnp.ndim(x) != 2:
        raise ValueError(f"`{name}` must be 2-D (samples, features); got shape {jnp.shape(x)}.")
    if n is not None and jnp.shape(x)[0] != n:
        raise ValueError(f"`{name}` must have {n} rows (one per sample of `C`); got "
                         f"{jnp.shape(x)[0]}.")


@dataclass(frozen=True)
class _LinearFamily:
    metamodel: Metamodel = field(default_factory=Metamodel)
    fit_intercept: bool = True
    alpha: float = 0.0
    l1_ratio: float = 1.0
    mu_ratio: float = 0.5
    prior_scale: float | None = None
    plate: str = "samples"
    name: str = "meta"

    def __post_init__(self) -> None:
        if not isinstance(self.metamodel, Metamodel):
            raise TypeError(f"`metamodel` must be a ctx.models.Metamodel; got "
                            f"{type(self.metamodel).__name__}.")
        if self.alpha < 0 or not 0 <= self.l1_ratio <= 1 or not 0 <= self.mu_ratio <= 1:
            raise ValueError(f"need `alpha` >= 0 and `l1_ratio`, `mu_ratio` in [0, 1]; got "
                             f"alpha={self.alpha}, l1_ratio={self.l1_ratio}, "
                             f"mu_ratio={self.mu_ratio}.")
        if self.prior_scale is not None and not self.prior_scale > 0:
            raise ValueError(f"`prior_scale` must be > 0 or None; got {self.prior_scale!r}.")

    def _encoder(self, C: jax.Array, shape: tuple[int, ...], tasks: jax.Array | None = None
                 ) -> Any:
        """Register the metamodel's sites and return the live encoder (call it *outside* the
        samples plate: a Bayesian head's prior sites are global, not per sample).

        For multitask/tasksplit metamodels the leading axis of ``shape`` is the task axis;
        tasks default to one-hot rows.
        """
        if self.metamodel.kind in ("multitask", "tasksplit") and tasks is None:
            tasks = jnp.eye(shape[0])
        return self.metamodel(self.name, C.shape[1], shape, tasks=tasks,
                              prior_scale=self.prior_scale)

    def _param_encoder(self, C: jax.Array, groups: int, x_dim: int, univariate: bool) -> Any:
        """The encoder of per-sample (beta, mu) for ``groups`` outputs."""
        kind = self.metamodel.kind
        per = 2 if univariate else x_dim + 1
        if kind in ("naive", "subtype", "gp"):
            shape = (groups, x_dim, 2) if univariate else (groups, per)
            tasks = None
        elif univariate:  # one task per (output, input) pair, as contextualized-ml
            shape = (groups * x_dim, per)
            ty = jnp.repeat(jnp.eye(groups), x_dim, axis=0)
            tx = jnp.tile(jnp.eye(x_dim), (groups, 1))
            tasks = jnp.concatenate([tx, ty], axis=1)
        else:
            shape = (groups, per)
            tasks = jnp.eye(groups)
        return self._encoder(C, shape, tasks)

    def _params(self, enc: Any, groups: int, x_dim: int, univariate: bool
                ) -> tuple[jax.Array, jax.Array]:
        """Inside the plate: per-sample ``beta`` (b, groups, x_dim) and ``mu``
        (b, groups[, x_dim])."""
        theta = prim.contextual("theta", enc)
        b = theta.shape[0]
        if univariate:
            theta = jnp.reshape(theta, (b, groups, x_dim, 2))
            beta, mu = theta[..., 0], theta[..., 1]
        else:
            beta, mu = theta[..., :x_dim], theta[..., x_dim]
        if not self.fit_intercept:
            mu = jnp.zeros_like(mu)
        return beta, mu

    def _beta_mu(self, enc, X, groups, univariate, beta_offset, mu_offset):  # noqa: ANN001, ANN202
        x_dim = X.shape[1]
        beta, mu = self._params(enc, groups, x_dim, univariate)
        pen_ndim = 2
        if self.alpha > 0:
            penalize("penalty", elastic_net(beta, mu, self.alpha, self.l1_ratio,
                                            self.mu_ratio, pen_ndim))
        if beta_offset is not None:
            beta = beta + take(beta_offset, beta.ndim - 1)
        if mu_offset is not None:
            mu = mu + take(mu_offset, mu.ndim - 1)
        beta = numpyro.deterministic("beta", beta)
        mu = numpyro.deterministic("mu", mu)
        return beta, mu


@dataclass(frozen=True)
class Regression(_LinearFamily):
    r"""Contextualized linear regression, one or several outputs.

    .. math::

        y_{ik} \sim \mathcal{N}\big(g(\beta_k(c_i)^\top x_i + \mu_k(c_i)),\ \sigma_k^2\big)

    Args:
        y_dim: Number of outputs (inferred from ``Y`` when ``None``; needed to predict).
        metamodel: How context becomes parameters (:class:`Metamodel`).
        link: Output link ``g`` (``"identity"``, ``"exp"``, ``"softplus"``, ``"sigmoid"``,
            ``"tanh"``).
        fit_intercept: Learn the context-dependent intercept :math:`\mu(c)`.
        noise_scale: Fixed :math:`\sigma` (MAP then minimises squared error), or ``None`` to
            learn it (site ``sigma``, ``HalfNormal(1)`` prior).
        noise_floor: With a learned noise scale, :math:`\sigma` = ``noise_floor`` + ``sigma``:
            noise below the floor is not resolved, which keeps noise-free data from driving
            :math:`\sigma` to 0 (the estimators' ``uncertainty=True`` uses 0.01, in units of
            the standardised outcome).
        alpha, l1_ratio, mu_ratio: Elastic-net penalty on every sample's parameters (see
            :func:`ctxppl.models.elastic_net`).
        prior_scale: ``Normal(0, prior_scale)`` prior on the metamodel head (a Bayesian last
            layer for SVI/Laplace/NUTS); ``None`` = point estimate.
        plate: Name of the samples plate.
        name: Prefix of the metamodel's sites.

    Sites: ``theta`` (raw metamodel output), ``beta`` ``(n, y_dim, x_dim)``, ``mu``
    ``(n, y_dim)``, observed ``y``.

    Examples:
        >>> import jax, jax.numpy as jnp, numpyro, ctxppl as ctx
        >>> C = jax.random.uniform(jax.random.key(0), (300, 1), minval=-1, maxval=1)
        >>> X = jax.random.normal(jax.random.key(1), (300, 2))
        >>> Y = (X[:, :1] * C + X[:, 1:] * 2.0)
        >>> meta = ctx.models.Metamodel("naive", "linear")
        >>> model = ctx.models.Regression(y_dim=1, metamodel=meta)
        >>> fit = ctx.fit(model, C, X, Y, key=0, progress=False, num_steps=1500)
        >>> run = numpyro.handlers.substitute(numpyro.handlers.seed(model, 0), data=fit.params)
        >>> beta = numpyro.handlers.trace(run).get_trace(C[:2], X[:2])["beta"]["value"]
        >>> bool(jnp.allclose(beta[:, 0], jnp.hstack([C[:2], 2 * jnp.ones((2, 1))]), atol=0.05))
        True
    """

    y_dim: int | None = None
    link: str = "identity"
    noise_scale: float | None = 1.0
    noise_floor: float = 0.0
    univariate = False

    def __post_init__(self) -> None:
        super().__post_init__()
        output_link(self.link)
        if self.noise_scale is not None and not self.noise_scale > 0:
            raise ValueError(f"`noise_scale` must be > 0 or None; got {self.noise_scale!r}.")
        if not self.noise_floor >= 0:
            raise ValueError(f"`noise_floor` must be >= 0; got {self.noise_floor!r}.")

    def _groups(self, Y: jax.Array | None) -> int:
        if Y is not None:
            _check_2d("Y", Y)
            if self.y_dim is not None and Y.shape[1] != self.y_dim:
                raise ValueError(f"`Y` must have {self.y_dim} columns (y_dim); got "
                                 f"{Y.shape[1]}.")
            return int(Y.shape[1])
        if self.y_dim is None:
            raise ValueError("give `Y` or set `y_dim` on the model to predict without `Y`.")
        return int(self.y_dim)

    def __call__(self, C: jax.Array, X: jax.Array, Y: jax.Array | None = None,
                 beta_offset: jax.Array | None = None, mu_offset: jax.Array | None = None,
                 y_offset: jax.Array | None = None) -> None:
        _check_2d("C", C)
        n = C.shape[0]
        _check_2d("X", X, n)
        groups = self._groups(Y)
        if Y is not None and Y.shape[0] != n:
            raise ValueError(f"`Y` must have {n} rows (one per sample of `C`); got {Y.shape[0]}.")
        sigma = self.noise_scale
        if sigma is None:
            sigma = self.noise_floor + numpyro.sample(
                "sigma", dist.HalfNormal(1.0).expand([groups]).to_event(1))
        g = output_link(self.link)
        enc = self._param_encoder(C, groups, X.shape[1], self.univariate)
        with sample_plate(self.plate, C):
            beta, mu = self._beta_mu(enc, X, groups, self.univariate, beta_offset, mu_offset)
            x = take(X, 1)
            y = take(Y, 1)
            if self.univariate:
                eta = beta * x[:, None, :] + mu  # (b, y, x)
                if y_offset is not None:
                    eta = eta + take(y_offset, 1)[..., None]
                if y is not None:
                    y = jnp.broadcast_to(y[:, :, None], eta.shape)
                scale = sigma if jnp.ndim(sigma) == 0 else sigma[:, None]
                numpyro.sample("y", dist.Normal(g(eta), scale).to_event(2), obs=y)
            else:
                eta = jnp.sum(beta * x[:, None, :], axis=-1) + mu
                if y_offset is not None:
                    eta = eta + take(y_offset, 1)
                numpyro.sample("y", dist.Normal(g(eta), sigma).to_event(1), obs=y)


@dataclass(frozen=True)
class UnivariateRegression(Regression):
    r"""Every (input, output) pair its own contextualized simple regression.

    .. math:: y_{ik} \sim \mathcal{N}\big(g(\beta_{kj}(c_i)\, x_{ij} + \mu_{kj}(c_i)),\
              \sigma_k^2\big) \quad\text{for all } j, k

    Same arguments as :class:`Regression`; ``beta`` and ``mu`` have shape
    ``(n, y_dim, x_dim)``. With ``metamodel.kind="multitask"`` each pair is a task (one-hot
    of its input and its output), as in contextualized-ml.

    Examples:
        >>> import jax, jax.numpy as jnp, numpyro, ctxppl as ctx
        >>> model = ctx.models.UnivariateRegression(y_dim=2)
        >>> tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(
        ...     jnp.ones((4, 1)), jnp.ones((4, 3)))
        >>> tr["beta"]["value"].shape, tr["mu"]["value"].shape
        ((4, 2, 3), (4, 2, 3))
    """

    univariate = True


@dataclass(frozen=True)
class Classification(_LinearFamily):
    r"""Contextualized logistic regression: binary (one or several labels) or multiclass.

    Binary (``num_classes=2``): ``Y`` is ``(n, y_dim)`` of 0/1 and

    .. math:: y_{ik} \sim \mathrm{Bernoulli}\big(\sigma(\beta_k(c_i)^\top x_i + \mu_k(c_i))\big)

    Multiclass (``num_classes=K>2``): ``Y`` is ``(n,)`` of class indices and

    .. math:: y_i \sim \mathrm{Categorical}\big(\mathrm{softmax}(B(c_i) x_i + \mu(c_i))\big)

    with class 0 as reference (its row of ``B`` and ``mu`` is zero, so the per-sample
    parameters are identifiable). Sites ``beta`` ``(n, y_dim or K, x_dim)``, ``mu``.

    Args:
        num_classes: 2 for binary labels, ``K > 2`` for one multiclass label.
        y_dim: Number of binary labels (binary case; inferred from ``Y``).
        Other arguments as :class:`Regression`.

    Examples:
        >>> import jax.numpy as jnp, numpyro, ctxppl as ctx
        >>> model = ctx.models.Classification(num_classes=3)
        >>> tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(
        ...     jnp.ones((4, 1)), jnp.ones((4, 2)), jnp.array([0, 1, 2, 1]))
        >>> tr["beta"]["value"].shape
        (4, 3, 2)
    """

    num_classes: int = 2
    y_dim: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ValueError(f"`num_classes` must be an int >= 2; got {self.num_classes!r}.")

    def __call__(self, C: jax.Array, X: jax.Array, Y: jax.Array | None = None,
                 beta_offset: jax.Array | None = None, mu_offset: jax.Array | None = None,
                 y_offset: jax.Array | None = None) -> None:
        _check_2d("C", C)
        n = C.shape[0]
        _check_2d("X", X, n)
        multi = self.num_classes > 2
        if multi:
            if Y is not None and (jnp.ndim(Y) != 1 or Y.shape[0] != n):
                raise ValueError(f"`Y` must be 1-D class indices of length {n} for "
                                 f"num_classes={self.num_classes}; got shape {jnp.shape(Y)}.")
            groups = self.num_classes - 1
        else:
            if Y is not None:
                _check_2d("Y", Y, n)
            groups = Y.shape[1] if Y is not None else self.y_dim
            if groups is None:
                raise ValueError("give `Y` or set `y_dim` on the model to predict without `Y`.")
        enc = self._param_encoder(C, groups, X.shape[1], False)
        with sample_plate(self.plate, C):
            beta, mu = self._params(enc, groups, X.shape[1], False)
            if self.alpha > 0:
                penalize("penalty", elastic_net(beta, mu, self.alpha, self.l1_ratio,
                                                self.mu_ratio, 2))
            if multi:  # reference class 0
                beta = jnp.concatenate([jnp.zeros_like(beta[:, :1]), beta], axis=1)
                mu = jnp.concatenate([jnp.zeros_like(mu[:, :1]), mu], axis=1)
            if beta_offset is not None:
                beta = beta + take(beta_offset, 2)
            if mu_offset is not None:
                mu = mu + take(mu_offset, 1)
            beta = numpyro.deterministic("beta", beta)
            mu = numpyro.deterministic("mu", mu)
            x = take(X, 1)
            eta = jnp.sum(beta * x[:, None, :], axis=-1) + mu
            if y_offset is not None:
                eta = eta + take(y_offset, 1)
            if multi:
                y = take(Y, 0)
                numpyro.sample("y", dist.Categorical(logits=eta), obs=y)
            else:
                y = take(Y, 1)
                numpyro.sample("y", dist.Bernoulli(logits=eta).to_event(1), obs=y)
