r"""A Gaussian-process encoder: Hilbert-space basis functions (``numpyro.contrib.hsgp``).

Each output :math:`k` of the encoder is a Gaussian process over the context plus an optional
linear part,

.. math::

    \theta_k(c) = b_k + a_k^\top c + f_k(c),\qquad
    f_k(c) \approx \sum_j \phi_j(c)\, \sqrt{S(\sqrt{\lambda_j})}\ \alpha_k\, w_{jk},
    \qquad w_{jk} \sim \mathcal{N}(0, 1),

with the eigenfunctions :math:`\phi_j`, square-root eigenvalues :math:`\sqrt{\lambda_j}` of the
Laplacian on a box :math:`[-L, L]` and the kernel's spectral density :math:`S` taken from
:mod:`numpyro.contrib.hsgp` (Solin & Särkkä 2020; Riutort-Mayol et al. 2023). The outputs are
*linear* in the Gaussian weights ``weights`` and ``linear``, so for fixed hyperparameters the
weights' posterior under a Gaussian likelihood is exactly Gaussian: ``ctx.fit(...,
method="marginal")`` integrates them out and fits the hyperparameters (lengthscales,
amplitudes) by their marginal likelihood; NUTS and Laplace work as well.

The box grows with the lengthscale, :math:`L_d = \max(c\,S_d,\ \kappa\,\ell_d)` (``box`` =
:math:`c`, ``box_lengthscales`` = :math:`\kappa`), where :math:`S_d` is the half-range of the
contexts given as ``domain``: a long lengthscale never meets the box's boundary (where every
basis function vanishes), and the shortest lengthscale the basis can resolve,
:math:`\ell_{\min} = 1.75\, c\, S_d / m` (Riutort-Mayol et al. 2023, eq. 14), is a floor:
:math:`\ell_d = \ell_{\min,d} + e^{u_d}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array, Float, PRNGKeyArray
from numpyro.contrib.hsgp.laplacian import eigenfunctions
from numpyro.contrib.hsgp.spectral_densities import (
    diag_spectral_density_matern,
    diag_spectral_density_squared_exponential,
)

from ctxppl.nn._encoders import Encoder, _shape, _size, get_link

__all__ = ["HSGP", "KERNELS"]

KERNELS = ("se", "matern52", "matern32")
_NU = {"matern52": 2.5, "matern32": 1.5}


def _spd(kernel: str, lengthscale: jax.Array, ell: jax.Array, m: int, dim: int) -> jax.Array:
    """Square root of the unit-variance spectral density at the box's eigenvalues."""
    if kernel == "se":
        s = diag_spectral_density_squared_exponential(1.0, lengthscale, ell, m, dim)
    else:
        s = diag_spectral_density_matern(_NU[kernel], 1.0, lengthscale, ell, m, dim)
    return jnp.sqrt(s)


def _domain(domain: Any, in_size: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if domain is None:
        raise ValueError(
            "`domain` of ctx.nn.HSGP is required: the training contexts (an (n, in_size) "
            "array, e.g. `domain=C`) or their `(center, half_range)` per feature. The basis "
            "functions live on a box around them.")
    if isinstance(domain, tuple) and len(domain) == 2 and np.ndim(domain[0]) == 1:
        center = np.asarray(domain[0], dtype=float)
        half = np.asarray(domain[1], dtype=float)
    else:
        c = np.asarray(domain, dtype=float)
        if c.ndim != 2 or c.shape[1] != in_size or c.shape[0] < 1:
            raise ValueError(f"`domain` of ctx.nn.HSGP must be an (n, {in_size}) array of "
                             f"contexts or a (center, half_range) pair; got shape {c.shape}.")
        if not np.all(np.isfinite(c)):
            raise ValueError("`domain` of ctx.nn.HSGP contains NaN/inf values.")
        lo, hi = c.min(axis=0), c.max(axis=0)
        center, half = (lo + hi) / 2, (hi - lo) / 2
    if center.shape != (in_size,) or half.shape != (in_size,):
        raise ValueError(f"`domain` (center, half_range) must each have {in_size} entries; got "
                         f"{center.shape} and {half.shape}.")
    if not np.all(np.isfinite(half)) or np.any(half < 0):
        raise ValueError(f"`domain` half-ranges must be finite and >= 0; got {half.tolist()}.")
    half = np.maximum(half, 1e-3 * np.maximum(1.0, np.abs(center)))  # a constant feature
    return tuple(float(x) for x in center), tuple(float(x) for x in half)


class HSGP(Encoder):
    r"""Gaussian-process encoder of the context (Hilbert-space approximation).

    Use it with its own priors, ``ctx.encoder(name, gp, prior=gp.prior)``: the basis weights
    (``weights``, and ``linear`` for the linear part) get :math:`\mathcal{N}(0, 1)` and
    :math:`\mathcal{N}(0, \text{linear\_scale}^2)` priors and are marked as Gaussian
    weights, which ``ctx.fit(..., method="marginal")`` integrates out; the hyperparameters
    ``raw_lengthscale`` :math:`u` (:math:`\ell = \ell_{\min} + e^u`, prior
    :math:`\mathcal{N}(\log S, 1.5^2)`) and ``raw_amplitude`` :math:`v` (:math:`\alpha = e^v`,
    prior :math:`\mathcal{N}(\log \text{amplitude}, 1.5^2)`) are fitted by their marginal
    likelihood.

    Args:
        in_size: Context features.
        out_shape: Shape of one member's parameters (every entry its own GP).
        num_basis: Basis functions per context feature (``m``). A joint GP uses
            ``num_basis ** in_size`` of them, an additive one ``in_size * num_basis``.
        domain: The training contexts (``(n, in_size)``), or ``(center, half_range)`` per
            feature. Predictions are reliable within about ``box`` half-ranges of the center.
        kernel: ``"se"`` (squared exponential), ``"matern52"`` or ``"matern32"``.
        additive: ``True``: a sum of one-dimensional GPs, one per context feature (each with
            its own lengthscale and amplitude per output); ``False``: one joint GP with one
            lengthscale per feature (ARD). ``None`` = joint for up to 2 features, else
            additive.
        linear: Add a linear part :math:`b + a^\top c` with Gaussian weights.
        linear_scale: Prior scale of the linear part's weights.
        amplitude: Prior median of the GP amplitudes.
        box: :math:`c`: the box reaches at least ``box`` half-ranges from the center.
        box_lengthscales: :math:`\kappa`: the box reaches at least this many lengthscales.
        link: Output link (``"identity"`` keeps the outputs linear in the weights; a
            non-linear link makes ``method="marginal"`` a Laplace approximation).

    Examples:
        >>> import jax, jax.numpy as jnp, ctxppl as ctx
        >>> C = jax.random.normal(jax.random.key(0), (50, 2))
        >>> gp = ctx.nn.HSGP(2, 3, num_basis=6, domain=C)
        >>> gp(C[0]).shape, gp.weights.shape
        ((3,), (36, 3))
        >>> gp.prior("enc.weights", (36, 3)).scale
        1.0
    """

    weights: Float[Array, "basis out"]
    linear: Float[Array, "in_plus_one out"] | None
    raw_lengthscale: Float[Array, " in_size"]
    raw_amplitude: Float[Array, "..."]
    in_size: int = eqx.field(static=True)
    out_shape: tuple[int, ...] = eqx.field(static=True)
    num_basis: int = eqx.field(static=True)
    center: tuple[float, ...] = eqx.field(static=True)
    half_range: tuple[float, ...] = eqx.field(static=True)
    kernel: str = eqx.field(static=True)
    additive: bool = eqx.field(static=True)
    use_linear: bool = eqx.field(static=True)
    linear_scale: float = eqx.field(static=True)
    amplitude: float = eqx.field(static=True)
    box: float = eqx.field(static=True)
    box_lengthscales: float = eqx.field(static=True)
    link: str | Callable | None = eqx.field(static=True)

    #: fields the output is linear in (Gaussian weights; see ``ctx.encoder``)
    linear_fields: ClassVar[tuple[str, ...]] = ("weights", "linear")

    def __init__(self, in_size: int, out_shape: int | tuple[int, ...], num_basis: int = 12,
                 *, domain: Any = None, kernel: str = "se", additive: bool | None = None,
                 linear: bool = True, linear_scale: float = 1.0, amplitude: float = 1.0,
                 box: float = 3.0, box_lengthscales: float = 3.0, link=None,
                 key: PRNGKeyArray | None = None):
        del key  # the weights start at zero; their prior is N(0, 1)
        self.in_size = int(in_size)
        if self.in_size < 1:
            raise ValueError(f"`in_size` must be >= 1; got {in_size}.")
        self.out_shape = _shape(out_shape)
        if not isinstance(num_basis, int | np.integer) or num_basis < 2:
            raise ValueError(f"`num_basis` must be an int >= 2; got {num_basis!r}.")
        self.num_basis = int(num_basis)
        if kernel not in KERNELS:
            raise ValueError(f"`kernel` must be one of {KERNELS}; got {kernel!r}.")
        self.kernel = kernel
        self.additive = self.in_size > 2 if additive is None else bool(additive)
        n_joint = self.num_basis ** self.in_size
        if not self.additive and n_joint > 4096:
            raise ValueError(
                f"a joint HSGP over {self.in_size} features with num_basis={num_basis} needs "
                f"{n_joint} basis functions; use additive=True (or fewer basis functions).")
        for name, v in (("linear_scale", linear_scale), ("amplitude", amplitude), ("box", box),
                        ("box_lengthscales", box_lengthscales)):
            if not (isinstance(v, int | float) and np.isfinite(v) and v > 0):
                raise ValueError(f"`{name}` must be a positive number; got {v!r}.")
        if box < 1.2:
            raise ValueError(f"`box` must be >= 1.2 (the basis functions vanish at the box's "
                             f"edge); got {box!r}.")
        self.center, self.half_range = _domain(domain, self.in_size)
        self.use_linear = bool(linear)
        self.linear_scale, self.amplitude = float(linear_scale), float(amplitude)
        self.box, self.box_lengthscales = float(box), float(box_lengthscales)
        self.link = link
        get_link(link)
        out = _size(self.out_shape)
        n_basis = self.in_size * self.num_basis if self.additive else n_joint
        self.weights = jnp.zeros((n_basis, out))
        self.linear = jnp.zeros((self.in_size + 1, out)) if self.use_linear else None
        self.raw_lengthscale = jnp.log(jnp.asarray(self.half_range))
        amp_shape = (self.in_size, out) if self.additive else (out,)
        self.raw_amplitude = jnp.full(amp_shape, float(np.log(self.amplitude)))

    # ------------------------------------------------------------------ hyperparameters
    def min_lengthscale(self) -> jax.Array:
        r""":math:`\ell_{\min} = 1.75\, c\, S / m` per feature: the shortest lengthscale the
        basis resolves (Riutort-Mayol et al. 2023)."""
        return 1.75 * self.box * jnp.asarray(self.half_range) / self.num_basis

    def lengthscale(self) -> jax.Array:
        """Lengthscale per context feature, ``min_lengthscale() + exp(raw_lengthscale)``."""
        return self.min_lengthscale() + jnp.exp(self.raw_lengthscale)

    def amplitudes(self) -> jax.Array:
        """GP standard deviation per output (joint) or per (feature, output) (additive)."""
        return jnp.exp(self.raw_amplitude)

    def half_widths(self) -> jax.Array:
        r"""The box half-widths :math:`L_d = \max(c\,S_d,\ \kappa\,\ell_d)`."""
        return jnp.maximum(self.box * jnp.asarray(self.half_range),
                           self.box_lengthscales * self.lengthscale())

    def valid_half_range(self) -> np.ndarray:
        """Half-range around ``center`` (per feature) within which predictions are reliable:
        the smallest box divided by 1.2 (the basis functions vanish at the box's edge)."""
        return self.box * np.asarray(self.half_range) / 1.2

    def prior(self, site: str, shape: tuple[int, ...]) -> dist.Distribution:
        """The default prior of the array at ``site`` (pass ``prior=gp.prior`` to
        ``ctx.encoder``)."""
        field = site.rsplit(".", 1)[-1].split("[", 1)[0]
        if field == "weights":
            return dist.Normal(0.0, 1.0)
        if field == "linear":
            return dist.Normal(0.0, self.linear_scale)
        if field == "raw_lengthscale":
            return dist.Normal(jnp.log(jnp.asarray(self.half_range)), 1.5)
        if field == "raw_amplitude":
            return dist.Normal(float(np.log(self.amplitude)), 1.5)
        raise ValueError(f"ctx.nn.HSGP has no array for site {site!r}; its arrays are weights, "
                         "linear, raw_lengthscale and raw_amplitude.")

    # ------------------------------------------------------------------ evaluation
    def features(self, c: Float[Array, " in_size"]) -> Float[Array, "basis out"]:
        r"""Scaled basis functions :math:`\phi_j(c) \sqrt{S_j}\, \alpha_k` (one column per
        output): the GP part is ``sum(features(c) * weights, 0)``."""
        z = c - jnp.asarray(self.center)
        ls, ell = self.lengthscale(), self.half_widths()
        m = self.num_basis
        if self.additive:
            def one(zd, l, L):  # noqa: ANN001, ANN202, E741
                box = jnp.reshape(L, (1, 1))
                phi = eigenfunctions(zd[None], box, m)[0]  # (m,)
                return phi * _spd(self.kernel, l, box, m, 1)
            f = jax.vmap(one)(z, ls, ell)  # (in_size, m)
            f = f[:, :, None] * self.amplitudes()[:, None, :]  # (in_size, m, out)
            return jnp.reshape(f, (-1, f.shape[-1]))
        phi = eigenfunctions(z[None], ell[:, None], m)[0]  # (m ** in_size,)
        f = phi * _spd(self.kernel, ls, ell[:, None], m, self.in_size)
        return f[:, None] * self.amplitudes()[None, :]

    def __call__(self, c: Float[Array, " in_size"]) -> Float[Array, "..."]:
        theta = jnp.einsum("mk,mk->k", self.features(c), self.weights)
        if self.use_linear:
            z = (c - jnp.asarray(self.center)) / jnp.asarray(self.half_range)
            theta = theta + jnp.concatenate([jnp.ones((1,), z.dtype), z]) @ self.linear
        return get_link(self.link)(jnp.reshape(theta, self.out_shape))

    def reinit(self, key: PRNGKeyArray) -> HSGP:
        """The same encoder (its weights start at zero, the prior mean)."""
        del key
        return self
