"""ctxppl.handlers: at_context, contextualize, weight, minibatch."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer.util import log_density

import ctxppl as ctx


def ctx_model(C):
    enc = ctx.encoder("enc", ctx.nn.Linear(C.shape[1], 2))
    with ctx.plate("n", C.shape[0], context=C):
        return ctx.contextual("w", enc), enc


def test_at_context_evaluates_at_new_contexts():
    C, C_new = jnp.zeros((3, 2)), jax.random.normal(jax.random.key(0), (7, 2))
    w, enc = handlers.seed(ctx.handlers.at_context(ctx_model, plate="n", context=C_new), 0)(C)
    assert w.shape == (7, 2)
    np.testing.assert_allclose(w, jax.vmap(enc)(C_new), rtol=1e-6)
    # other plates are untouched
    w2, _ = handlers.seed(ctx.handlers.at_context(ctx_model, plate="other", context=C_new), 0)(C)
    assert w2.shape == (3, 2)


def test_at_context_bad_input():
    with pytest.raises(ValueError, match="`plate` is required"):
        ctx.handlers.at_context(ctx_model, context=jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        ctx.handlers.at_context(ctx_model, plate="n", context=jnp.full((2, 2), jnp.nan))


def seed_model(N):
    mu_global = numpyro.sample("mu_global", dist.Normal(0.0, 0.5))
    with numpyro.plate("N", N):
        return numpyro.sample("mu_i", dist.Normal(mu_global, 0.5))


def test_contextualize_replaces_loc_keeps_scale():
    C = jax.random.normal(jax.random.key(1), (6, 2))
    m = ctx.handlers.contextualize(seed_model, site="mu_i", plate="N",
                                   encoder=ctx.nn.Linear(2, ()), context=C)
    tr = handlers.trace(handlers.seed(m, 0)).get_trace(6)
    fn = tr["mu_i"]["fn"]
    enc_params = tr["mu_i_encoder$params"]["value"]
    expected_loc = C @ enc_params.weight.reshape(-1) + enc_params.bias.reshape(())
    value = tr["mu_i"]["value"]
    np.testing.assert_allclose(fn.log_prob(value), dist.Normal(expected_loc, 0.5).log_prob(value),
                               rtol=1e-5)


def test_contextualize_add_mode_and_scale():
    C = jnp.ones((4, 1))
    enc = ctx.nn.Constant(1, ())
    m = ctx.handlers.contextualize(seed_model, site="mu_i", plate="N", encoder=enc, context=C,
                                   mode="add", scale=2.0)
    tr = handlers.trace(handlers.seed(m, 0)).get_trace(4)
    loc = tr["mu_global"]["value"]  # constant encoder starts at 0: loc = mu_global + 0
    v = tr["mu_i"]["value"]
    np.testing.assert_allclose(tr["mu_i"]["fn"].log_prob(v), dist.Normal(loc, 2.0).log_prob(v),
                               rtol=1e-5)


def test_contextualize_under_subsampling_uses_the_plate_indices():
    C = jnp.arange(10.0)[:, None]

    def model():
        with numpyro.plate("N", 10, subsample_size=3) as idx:
            return numpyro.sample("mu_i", dist.Normal(0.0, 1e-4)), idx

    enc = ctx.nn.Linear(1, (), key=jax.random.key(2))
    m = ctx.handlers.contextualize(model, site="mu_i", plate="N", encoder=enc, context=C)
    tr = handlers.trace(handlers.seed(m, 4)).get_trace()
    (mu, idx) = handlers.seed(m, 4)()
    p = tr["mu_i_encoder$params"]["value"]
    np.testing.assert_allclose(mu, C[idx, 0] * p.weight.reshape(()) + p.bias.reshape(()),
                               atol=1e-3)


def test_contextualize_shape_mismatch_and_missing_plate():
    m = ctx.handlers.contextualize(seed_model, site="mu_i", plate="N",
                                   encoder=ctx.nn.Linear(2, 3), context=jnp.ones((4, 2)))
    with pytest.raises(ValueError, match=r"per-member shape \(3,\)"):
        handlers.seed(m, 0)(4)
    m = ctx.handlers.contextualize(seed_model, site="mu_i", plate="M",
                                   encoder=ctx.nn.Linear(2, ()), context=jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="not inside a plate named 'M'"):
        handlers.seed(m, 0)(4)


def _obs_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with ctx.plate("n", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_weight_scales_member_log_densities():
    y = jnp.array([0.5, -1.0, 2.0])
    w = jnp.array([2.0, 0.0, 1.0])
    lp, _ = log_density(ctx.handlers.weight(_obs_model, plate="n", weights=w), (y,), {},
                        {"mu": 0.3})
    expected = dist.Normal(0.0, 1.0).log_prob(0.3) + jnp.sum(w * dist.Normal(0.3, 1).log_prob(y))
    np.testing.assert_allclose(lp, expected, rtol=1e-6)


def test_weight_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        ctx.handlers.weight(_obs_model, plate="n", weights=jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="non-negative"):
        ctx.handlers.weight(_obs_model, plate="n", weights=jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        handlers.seed(ctx.handlers.weight(_obs_model, plate="n", weights=jnp.ones(2)), 0)(
            jnp.zeros(3))


def test_minibatch_sets_and_unsets_subsampling():
    def model():
        with numpyro.plate("n", 100, subsample_size=10) as a:
            with ctx.plate("m", 50) as b:
                return a, b

    a, b = handlers.seed(ctx.handlers.minibatch(model), 0)()
    assert a.shape == (100,) and b.shape == (50,)
    a, b = handlers.seed(ctx.handlers.minibatch(model, plate="m", size=5), 0)()
    assert a.shape == (10,) and b.shape == (5,)
    with pytest.raises(ValueError, match="positive int"):
        ctx.handlers.minibatch(model, size=0)
