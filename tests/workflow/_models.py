"""Models shared by the workflow tests (module-level, so worker processes import them)."""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.infer import init_to_uniform

import ctxppl as ctx

TAU = 2.0  # prior sd of the normal mean
OPTS = {"num_steps": 1500, "learning_rate": 0.05, "tol": 1e-9}  # one compiled program


def normal_mean(y=None, *, tau=TAU, fail=False):
    """y_i ~ N(mu, 1), mu ~ N(0, tau): the posterior is N(sum(y) / (n + 1/tau^2), ...).

    ``tau`` and ``fail`` arrive as arrays (traced): every config shares one compiled program.
    """
    mu = numpyro.sample("mu", dist.Normal(0.0, tau))
    numpyro.factor("broken", jnp.where(fail, jnp.nan, 0.0) * mu)  # a NaN loss when `fail`
    with ctx.plate("rows", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def normal_factory(tau=TAU, fail=False, rep=0):
    if tau < 0:
        raise ValueError("tau must be positive")
    return ctx.workflow.ModelSpec(normal_mean, "rows",
                                  kwargs={"y": "y", "tau": np.asarray(tau, np.float32),
                                          "fail": np.asarray(fail)})


def regression(C, X, Y=None, *, width=25, depth=2):
    """The seed tutorial's contextualized regression."""
    enc = ctx.encoder("enc", ctx.nn.MLP(C.shape[-1], X.shape[-1], width=width, depth=depth))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with ctx.plate("patients", C.shape[0], context=C):
        w = ctx.contextual("w", enc)
        numpyro.sample("y", dist.Normal(jnp.sum(X * w, -1), sigma), obs=Y)


def regression_factory(width, depth):
    return ctx.workflow.ModelSpec(regression, "patients", args=("C", "X", "Y"),
                                  constants={"width": width, "depth": depth})


def gmm(X, *, K, covariance="full", eta=2.0):
    """Gaussian mixture for MAP: Dirichlet weights, normal means, half-normal scales and (full)
    an LKJ(eta) prior on each component's correlation Cholesky factor; assignments are
    marginalised, and the most probable one is recorded as the deterministic site "cluster"."""
    n, d = X.shape
    w = numpyro.sample("weights", dist.Dirichlet(jnp.ones(K)))
    locs = numpyro.sample("locs", dist.Normal(0.0, 3.0).expand([K, d]).to_event(2))
    scale = numpyro.sample("scale", dist.HalfNormal(2.0).expand([K, d]).to_event(2))
    if covariance == "full":
        corr = numpyro.param("corr", jnp.broadcast_to(jnp.eye(d), (K, d, d)),
                             constraint=constraints.corr_cholesky)
        # LKJ(eta) log density of a Cholesky factor, up to a constant (numpyro's
        # LKJCholesky is not rank-promotion safe when batched over components)
        order = (2.0 * (eta - 1.0) + d - 1.0 - jnp.arange(1, d))[None]
        diag = jnp.diagonal(corr, axis1=-2, axis2=-1)[:, 1:]
        numpyro.factor("corr_prior", jnp.sum(order * jnp.log(diag)))
        comp = dist.MultivariateNormal(locs[None], scale_tril=(scale[..., None] * corr)[None])
    else:
        comp = dist.Normal(locs[None], scale[None]).to_event(1)
    mix = dist.MixtureSameFamily(dist.Categorical(probs=w[None]), comp)
    with ctx.plate("penguins", n):
        numpyro.sample("x", mix, obs=X)
        logp = comp.log_prob(X[:, None, :]) + jnp.log(w)[None]
        numpyro.deterministic("cluster", jnp.argmax(logp, -1))


FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


def gmm_factory(n_components, covariance_type):
    return ctx.workflow.ModelSpec(
        gmm, "penguins", args=(FEATURES,),
        constants={"K": n_components, "covariance": covariance_type},
        options={"init_strategy": init_to_uniform, "learning_rate": 0.05})


def penguins():
    """Palmer penguins (offline copy), complete rows, features standardised."""
    import palmerpenguins

    df = palmerpenguins.load_penguins().dropna().reset_index(drop=True)
    for f in FEATURES:
        x = df[f].to_numpy(np.float64)
        df[f] = (x - x.mean()) / x.std()
    df["species_code"] = df["species"].astype("category").cat.codes
    return df
