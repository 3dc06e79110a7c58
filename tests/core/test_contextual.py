"""ctx.encoder and ctx.contextual: sites, shapes under nesting/subsampling, priors, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers

import ctxppl as ctx


def _trace(model, *args, seed=0):
    return handlers.trace(handlers.seed(model, seed)).get_trace(*args)


def test_encoder_registers_one_param_and_reinitialises_per_seed():
    def model():
        ctx.encoder("enc", ctx.nn.MLP(2, 3, width=4, depth=1))

    a, b = _trace(model, seed=0), _trace(model, seed=1)
    assert list(a) == ["enc$params"] and a["enc$params"]["type"] == "param"
    la = jax.tree_util.tree_leaves(a["enc$params"]["value"])
    lb = jax.tree_util.tree_leaves(b["enc$params"]["value"])
    assert not np.array_equal(la[0], lb[0])


def test_encoder_with_prior_makes_sample_sites():
    def model():
        return ctx.encoder("enc", ctx.nn.Linear(2, 3), prior=dist.Normal(0.0, 1.0))

    tr = _trace(model)
    assert sorted(tr) == ["enc.bias", "enc.weight"]
    assert tr["enc.weight"]["fn"].event_shape == (3, 2)
    assert tr["enc.weight"]["value"].shape == (3, 2)


def test_encoder_prior_callable_and_bad_prior():
    def model():
        ctx.encoder("enc", ctx.nn.Linear(2, 1), prior=lambda name, shape: dist.Laplace(0, 2))

    assert _trace(model)["enc.weight"]["fn"].base_dist.base_dist.scale == 2
    with pytest.raises(TypeError, match="Distribution"):
        _trace(lambda: ctx.encoder("e", ctx.nn.Linear(2, 1), prior=lambda n, s: 3.0))
    with pytest.raises(TypeError, match="eqx.Module"):
        ctx.encoder("e", lambda c: c)


@pytest.mark.parametrize("subsample", [None, 3])
def test_contextual_deterministic_shape_and_values(subsample, strict_ranks):
    C = jax.random.normal(jax.random.key(0), (8, 2))

    def model():
        enc = ctx.encoder("enc", ctx.nn.Linear(2, 4))
        with ctx.plate("n", 8, subsample_size=subsample, context=C) as idx:
            return ctx.contextual("w", enc), idx, enc

    tr = _trace(model)
    w, idx, enc = handlers.seed(model, 0)()
    n = 8 if subsample is None else subsample
    assert tr["w"]["type"] == "deterministic" and w.shape == (n, 4)
    np.testing.assert_allclose(w, jax.vmap(enc)(C[idx]), rtol=1e-6)
    assert [f.name for f in tr["w"]["cond_indep_stack"]] == ["n"]


def test_contextual_with_scale_is_a_random_effect():
    C = jnp.zeros((5, 1))

    def model():
        enc = ctx.encoder("enc", ctx.nn.Constant(1, 2))
        with ctx.plate("n", 5, context=C):
            return ctx.contextual("b", enc, scale=0.3)

    tr = _trace(model)
    site = tr["b"]
    assert site["type"] == "sample" and site["value"].shape == (5, 2)
    assert site["fn"].batch_shape == (5,) and site["fn"].event_shape == (2,)
    lp = site["fn"].log_prob(site["value"])
    expected = dist.Normal(0.0, 0.3).log_prob(site["value"]).sum(-1)
    np.testing.assert_allclose(lp, expected, rtol=1e-6)


def test_contextual_nested_plates_full_batch_shape():
    Cg, Cm = jnp.ones((3, 2)), jnp.zeros((4, 2))

    def model():
        eg = ctx.encoder("eg", ctx.nn.Linear(2, 5))
        em = ctx.encoder("em", ctx.nn.Linear(2, 5))
        with ctx.plate("groups", 3, context=Cg):
            wg = ctx.contextual("wg", eg)
            with ctx.plate("members", 4, context=Cm):
                wm = ctx.contextual("wm", em)
                wg2 = ctx.contextual("wg2", eg, plate="groups")
                r = ctx.contextual("r", em, scale=1.0)
        return wg, wm, wg2, r

    wg, wm, wg2, r = handlers.seed(model, 0)()
    assert wg.shape == (3, 5)
    assert wm.shape == (4, 3, 5)     # members at dim -2, groups at dim -1
    assert wg2.shape == (4, 3, 5)
    np.testing.assert_allclose(wg2[0], wg, rtol=1e-6)
    assert r.shape == (4, 3, 5)


def test_contextual_loc_offset():
    C = jnp.ones((4, 1))

    def model():
        enc = ctx.encoder("e", ctx.nn.Constant(1, ()))
        with ctx.plate("n", 4, context=C):
            return ctx.contextual("m", enc, loc=2.5)

    np.testing.assert_allclose(handlers.seed(model, 0)(), 2.5 * jnp.ones(4))


def test_event_shape_mismatch_is_reported():
    def model():
        enc = ctx.encoder("e", ctx.nn.Linear(2, 3))
        with ctx.plate("n", 4, context=jnp.ones((4, 2))):
            ctx.contextual("w", enc, event_shape=(2,))

    with pytest.raises(ValueError, match=r"per-member shape \(3,\).*`event_shape` is \(2,\)"):
        handlers.seed(model, 0)()


def test_contextual_without_context_plate():
    def model():
        enc = ctx.encoder("e", ctx.nn.Linear(2, 3))
        with numpyro.plate("n", 4):
            ctx.contextual("w", enc)

    with pytest.raises(ValueError, match="no enclosing `ctx.plate`"):
        handlers.seed(model, 0)()
