"""Models of the multi-process tests (importable, so a saved fit finds its model)."""

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

import ctxppl as ctx


def model(C, X, Y=None):
    enc = ctx.encoder("enc", ctx.nn.Linear(C.shape[-1], X.shape[-1]))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with ctx.plate("n", C.shape[0], context=C):
        w = ctx.contextual("w", enc)
        x = numpyro.subsample(X, event_dim=1)
        numpyro.sample("y", dist.Normal(jnp.sum(x * w, -1), sigma),
                       obs=numpyro.subsample(Y, event_dim=0))


def rows_model(X, Y=None):  # one latent per row: a result split like the rows
    b = numpyro.sample("b", dist.Normal(0.0, 5.0))
    with ctx.plate("n", X.shape[0]):
        z = numpyro.sample("z", dist.Normal(b * X, 1.0))
        numpyro.sample("y", dist.Normal(z, 0.5), obs=Y)
