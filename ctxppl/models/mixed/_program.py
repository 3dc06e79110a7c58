r"""Mixed models as ordinary ctxppl/NumPyro programs.

For every random-effect term ``(z | g)`` the program opens ``ctx.plate(g, G)`` (the plate is
named after the grouping factor, so traces and ArviZ dims are too) and draws one
coefficient vector per group; observations gather their group's vector by integer code,
so ragged groups cost nothing special. Observations live in ``ctx.plate("obs", n)``, which
``ctx.fit(..., batch_size=B, plate="obs")`` subsamples for minibatch SVI.

.. math::

    \beta \sim N(m_\beta, s_\beta^2),\quad \sigma_{k} \sim \pi_\sigma,\quad
    \Omega_k \sim \mathrm{LKJ}(\eta),\quad
    b_{kg} \sim N\big(f_k(c_g),\ \mathrm{diag}(\sigma_k)\,\Omega_k\,\mathrm{diag}(\sigma_k)\big),

    y_i \sim \mathcal{F}\big(\mathrm{link}^{-1}(x_i^T\beta + \textstyle\sum_k z_{ik}^T
        b_{k g_k(i)} + \mathrm{offset}_i)\big).

:math:`f_k \equiv 0` for classic random effects; with ``context=`` it is an encoder of the
group's covariates (``ctx.contextual(..., scale=sigma_k)``), so unseen groups get
context-informed effects. Non-centered (default) uses numpyro's ``LocScaleReparam``
(independent coefficients) or ``TransformReparam`` of a ``LowerCholeskyAffine`` (correlated).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jaxtyping import Array, Float, PRNGKeyArray
from numpyro.distributions.transforms import LowerCholeskyAffine
from numpyro.infer.reparam import LocScaleReparam, TransformReparam

from ctxppl import _primitives as ctx
from ctxppl.models.mixed._formula import Design
from ctxppl.models.mixed._marginal import context_columns
from ctxppl.nn import Encoder

__all__ = ["ContextLinear", "MixedProgram", "build_program", "resolve_priors"]


class ContextLinear(Encoder):
    r"""Linear map of (standardized) group context without intercept: :math:`f(c) = W c`.

    The default encoder of contextualized random effects; the fixed effects keep the
    intercept, so :math:`W` are the cross-level ("level-2 predictor") effects.

    Examples:
        >>> import jax.numpy as jnp
        >>> from ctxppl.models.mixed import ContextLinear
        >>> ContextLinear(3, 2)(jnp.ones(3)).shape
        (2,)
    """

    weight: Float[Array, "out in_size"]
    in_size: int = eqx.field(static=True)
    out_shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, in_size: int, out_shape: int | tuple[int, ...], *,
                 key: PRNGKeyArray | None = None):
        self.in_size = int(in_size)
        self.out_shape = (out_shape,) if isinstance(out_shape, int) else tuple(out_shape)
        size = int(np.prod(self.out_shape))
        self.weight = (jnp.zeros((size, self.in_size)) if key is None else
                       0.01 * jax.random.normal(key, (size, self.in_size)))

    def __call__(self, c: Float[Array, " in_size"]) -> Float[Array, "..."]:
        return jnp.reshape(self.weight @ c, self.out_shape)


class TermSpec(NamedTuple):
    name: str
    group: str
    size: int
    q: int
    correlated: bool
    context_dim: int


class MixedProgram(NamedTuple):
    r"""A mixed model as a NumPyro program plus its data.

    ``ctx.fit(prog.model, prog.data, prog.y, method=...)`` fits it; ``prog.design`` holds the
    arrays and level labels; ``prog.encoders`` the encoder templates (by term name).
    """

    model: Any
    data: dict[str, Any]
    y: Any
    design: Design
    terms: tuple[TermSpec, ...]
    encoders: dict[str, Any]
    priors: dict[str, Any]
    centered: bool


def _sd(x: np.ndarray) -> np.ndarray:
    s = np.std(x, axis=0)
    return np.where(s > 1e-12, s, 1.0)


def resolve_priors(design: Design, priors: dict[str, Any] | None) -> dict[str, Any]:
    r"""Default weakly-informative priors (scaled to the data, as rstanarm/bambi), overridden
    by ``priors``.

    Keys: ``"Intercept"`` or any fixed-effect name (a ``dist.Normal``), ``"beta"`` (Normal for
    every non-intercept fixed effect), ``"sd"`` / ``"sd_<term>"`` (positive scalar
    distribution per coefficient SD), ``"corr"`` / ``"corr_<term>"`` (LKJ concentration or
    ``dist.LKJCholesky``), ``"sigma"``, ``"phi"`` and ``"encoder"`` (prior of every context
    encoder array; without it custom encoders are point-estimated).
    """
    priors = dict(priors or {})
    fam = design.family
    Xc, cnames, _ = context_columns(design)
    names = list(design.x_names) + cnames
    valid = set(names) | {"beta", "sd", "corr", "sigma", "phi", "encoder"}
    for b in design.blocks:
        valid |= {f"sd_{b.name}", f"corr_{b.name}"}
    unknown = sorted(set(priors) - valid)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in `priors`; valid keys are {sorted(valid)}.")
    y = design.y - (0 if design.offset is None else design.offset)
    gauss = fam.name == "gaussian"
    s_y = float(np.std(y)) if gauss else 1.0
    s_y = s_y if s_y > 0 else 1.0
    X = np.concatenate([design.X, Xc], 1) if Xc.shape[1] else design.X
    sx = _sd(X)
    loc = np.zeros(len(names))
    scale = 2.5 * s_y / sx
    for j, n in enumerate(names):
        if n == "Intercept":
            scale[j] = 2.5 * s_y if gauss else 2.5
            if gauss:
                loc[j] = float(np.mean(y))
            elif fam.name in ("poisson", "negative_binomial"):
                loc[j] = float(np.log(max(np.mean(design.y), 1e-3)))
    for j, n in enumerate(names):
        pr = priors.get(n, priors.get("beta") if n != "Intercept" else None)
        if pr is None:
            continue
        if not isinstance(pr, dist.Normal) or jnp.shape(pr.loc) != ():
            raise TypeError(f"`priors[{n!r}]` must be a scalar dist.Normal (fixed effects share "
                            f"one vector site 'beta'); got {pr!r}.")
        loc[j], scale[j] = float(pr.loc), float(pr.scale)
    out: dict[str, Any] = {"beta_loc": loc, "beta_scale": scale, "names": names}
    for b in design.blocks:
        sz = np.where(np.ptp(b.Z, axis=0) > 1e-12, _sd(b.Z), 1.0)
        default = dist.HalfNormal(jnp.asarray(s_y / sz))
        pr = priors.get(f"sd_{b.name}", priors.get("sd"))
        if pr is None:
            pr = default
        elif not isinstance(pr, dist.Distribution):
            raise TypeError(f"`priors['sd_{b.name}']` must be a numpyro distribution; got "
                            f"{type(pr).__name__}.")
        elif pr.batch_shape == ():
            pr = pr.expand((b.q,))
        out[f"sd_{b.name}"] = pr.to_event(1)
        c = priors.get(f"corr_{b.name}", priors.get("corr", 1.0))
        if isinstance(c, dist.LKJCholesky):
            c = float(c.concentration)
        out[f"corr_{b.name}"] = float(c)
    out["sigma"] = priors.get("sigma", dist.HalfNormal(s_y))
    out["phi"] = priors.get("phi", dist.Gamma(2.0, 0.1))
    out["encoder"] = priors.get("encoder")
    return out


def _program_data(design: Design, dtype: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"X": jnp.asarray(design.X, dtype)}
    if design.offset is not None:
        data["offset"] = jnp.asarray(design.offset, dtype)
    if design.weights is not None:
        data["weights"] = jnp.asarray(design.weights, dtype)
    if design.trials is not None:
        data["trials"] = jnp.asarray(design.trials, dtype)
    for k, b in enumerate(design.blocks):
        data[f"Z_{k}"] = jnp.asarray(b.Z, dtype)
        data[f"g_{k}"] = jnp.asarray(b.factor.codes)
        info = design.contexts.get(b.factor.name)
        if info is not None:
            data[f"C_{k}"] = jnp.asarray(info.standardize(info.values), dtype)
    return data


def build_program(design: Design, priors: dict[str, Any] | None = None, *,
                  centered: bool = False, encoder: Any = None) -> MixedProgram:
    """Build the NumPyro program of a mixed model from its :class:`Design`."""
    dtype = jnp.result_type(float)
    pri = resolve_priors(design, priors)
    fam = design.family
    p = design.X.shape[1]
    terms, encoders = [], {}
    for b in design.blocks:
        info = design.contexts.get(b.factor.name)
        d = 0 if info is None else len(info.names)
        terms.append(TermSpec(b.name, b.factor.name, b.factor.size, b.q,
                              bool(b.term.correlated) and b.q > 1, d))
        if d:
            if encoder is None:
                encoders[b.name] = ContextLinear(d, b.q)
            elif isinstance(encoder, eqx.Module):
                encoders[b.name] = encoder
            elif callable(encoder):
                encoders[b.name] = encoder(d, b.q)
            else:
                raise TypeError("`encoder` must be an eqx.Module or a callable "
                                f"(in_size, out_size) -> module; got {type(encoder).__name__}.")
    terms = tuple(terms)
    beta_loc = jnp.asarray(pri["beta_loc"][:p], dtype)
    beta_scale = jnp.asarray(pri["beta_scale"][:p], dtype)
    enc_prior = pri["encoder"]
    if enc_prior is None and encoder is None:
        enc_prior = dist.Normal(0.0, float(np.max(pri["beta_scale"])))
    n = design.n

    def model(data: dict[str, Any], y: Any = None) -> None:
        # fixed effects in prior-standardized units (beta = loc + scale * beta_decentered):
        # optimisers and samplers start at the prior mean on a well-scaled problem
        with numpyro.handlers.reparam(config={"beta": LocScaleReparam(centered=0)}):
            beta = numpyro.sample("beta", dist.Normal(beta_loc, beta_scale).to_event(1))
        disp = None
        if fam.name == "gaussian":
            disp = numpyro.sample("sigma", pri["sigma"])
        elif fam.name == "negative_binomial":
            disp = numpyro.sample("phi", pri["phi"])
        effects = []
        for k, t in enumerate(terms):
            sd = numpyro.sample(f"sd_{t.name}", pri[f"sd_{t.name}"])
            chol_corr = None
            if t.correlated:
                chol_corr = numpyro.sample(f"corr_{t.name}",
                                           dist.LKJCholesky(t.q, pri[f"corr_{t.name}"]))
            C = data.get(f"C_{k}")
            site = f"b_{t.name}"
            enc = None  # encoder arrays are global: registered outside the group plate
            if C is not None:
                enc = ctx.encoder(f"enc_{t.name}", encoders[t.name], prior=enc_prior)
            with ctx.plate(t.group, t.size, context=C):
                if chol_corr is None:
                    config = {} if centered else {site: LocScaleReparam(centered=0)}
                    with numpyro.handlers.reparam(config=config):
                        if enc is not None:
                            b = ctx.contextual(site, enc, scale=sd, event_shape=(t.q,))
                        else:
                            b = numpyro.sample(site, dist.Normal(
                                jnp.zeros(t.q, dtype), sd).to_event(1))
                else:
                    loc = (ctx.contextual(f"mu_{t.name}", enc, event_shape=(t.q,))
                           if enc is not None else jnp.zeros(t.q, dtype))
                    tril = sd[..., None] * chol_corr
                    if centered:
                        b = numpyro.sample(site, dist.MultivariateNormal(loc, scale_tril=tril))
                    else:
                        base = dist.Normal(jnp.zeros(t.q, dtype), 1.0).to_event(1)
                        d = dist.TransformedDistribution(base, LowerCholeskyAffine(loc, tril))
                        with numpyro.handlers.reparam(config={site: TransformReparam()}):
                            b = numpyro.sample(site, d)
            effects.append(b)
        with ctx.plate("obs", n):
            X = numpyro.subsample(data["X"], event_dim=1)
            eta = X @ beta
            if "offset" in data:
                eta = eta + numpyro.subsample(data["offset"], event_dim=0)
            for k, b in enumerate(effects):
                codes = numpyro.subsample(data[f"g_{k}"], event_dim=0)
                Z = numpyro.subsample(data[f"Z_{k}"], event_dim=1)
                eta = eta + jnp.sum(Z * b[codes], -1)
            w = numpyro.subsample(data["weights"], event_dim=0) if "weights" in data else None
            tr = numpyro.subsample(data["trials"], event_dim=0) if "trials" in data else None
            obs = None if y is None else numpyro.subsample(y, event_dim=0)
            fam.observe("y", eta, obs, disp, tr, w)

    data = _program_data(design, dtype)
    return MixedProgram(model, data, jnp.asarray(design.y, dtype), design, terms, encoders,
                        {**pri, "encoder": enc_prior}, centered)
