"""Encoders: shapes, links, re-initialisation, NGAM additivity, gradients."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import ctxppl as ctx

ENCODERS = [
    lambda k: ctx.nn.Constant(3, (2,), key=k),
    lambda k: ctx.nn.Linear(3, (2,), key=k),
    lambda k: ctx.nn.MLP(3, (2,), width=8, depth=2, key=k),
    lambda k: ctx.nn.NGAM(3, (2,), width=8, depth=1, key=k),
    lambda k: ctx.nn.Archetype(3, (2,), num_archetypes=4, width=8, depth=1, key=k),
]
IDS = ["constant", "linear", "mlp", "ngam", "archetype"]


@pytest.mark.parametrize("make", ENCODERS, ids=IDS)
@pytest.mark.parametrize("out_shape", [(2,), (2, 3), ()])
def test_output_shapes(make, out_shape, getkey):
    enc = make(getkey())
    enc = type(enc)(**{**_ctor_args(enc), "out_shape": out_shape}, key=getkey())
    assert enc(jnp.ones(3)).shape == out_shape
    assert jax.vmap(enc)(jnp.ones((5, 3))).shape == (5,) + out_shape


def _ctor_args(enc):
    import inspect

    names = [p for p in inspect.signature(type(enc).__init__).parameters if p not in ("self", "key")]
    return {n: getattr(enc, n) for n in names}


@pytest.mark.parametrize("make", ENCODERS[1:], ids=IDS[1:])
def test_reinit_same_architecture_new_values(make, getkey):
    enc = make(getkey())
    new = enc.reinit(getkey())
    a, b = eqx.filter(enc, eqx.is_inexact_array), eqx.filter(new, eqx.is_inexact_array)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    assert any(not np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                                         jax.tree_util.tree_leaves(b), strict=True))


BIG = [  # wide enough that each array holds hundreds of draws
    lambda k: ctx.nn.Linear(30, (20,), key=k),
    lambda k: ctx.nn.MLP(30, (20,), width=40, depth=2, key=k),
    lambda k: ctx.nn.NGAM(4, (20,), width=40, depth=1, key=k),
    lambda k: ctx.nn.Archetype(30, (20,), num_archetypes=30, width=40, depth=1,
                               archetype_init=0.3, key=k),
]


@pytest.mark.parametrize("make", BIG, ids=IDS[1:])
def test_reinit_draws_the_constructors_distribution_in_one_random_call(make, getkey):
    """reinit draws all arrays at once (one random call in the compiled fit, not one per
    array), each from the uniform its constructor draws it from: for every array, a
    two-sample Kolmogorov-Smirnov test of 5 reinits against 5 constructions (thousands of
    draws; alpha = 1e-3 per array), and both reach the same bound."""
    from scipy import stats

    enc = make(getkey())
    jaxpr = str(jax.make_jaxpr(lambda k: eqx.filter(enc.reinit(k), eqx.is_array))(getkey()))
    assert jaxpr.count("random_bits") == 1
    built = [eqx.filter(make(getkey()), eqx.is_array) for _ in range(5)]
    redrawn = [eqx.filter(enc.reinit(getkey()), eqx.is_array) for _ in range(5)]
    for leaves in zip(*map(jax.tree_util.tree_leaves, built + redrawn), strict=True):
        a = np.concatenate([np.ravel(x) for x in leaves[:5]])
        b = np.concatenate([np.ravel(x) for x in leaves[5:]])
        assert stats.ks_2samp(a, b).pvalue > 1e-3, (leaves[0].shape, a.std(), b.std())
        # the same bound: each sample's largest |value| falls short of the half-width w by
        # about w * Exp(1) / n, so the two differ by more than 20 w / n with chance e^-20
        assert abs(np.abs(b).max() - np.abs(a).max()) <= 20 / a.size * np.abs(a).max()


def test_reinit_of_a_subclass_with_its_own_constructor_calls_that_constructor(getkey):
    """A subclass that starts its arrays elsewhere is not described by its parent's
    uniform: reinit calls its constructor (here: a last layer that starts at zero)."""
    class ZeroLast(ctx.nn.MLP):
        def __init__(self, in_size, out_shape, width=8, depth=1, activation="relu", link=None,
                     *, key=None):
            super().__init__(in_size, out_shape, width, depth, activation, link, key=key)
            self.mlp = eqx.tree_at(lambda m: m.layers[-1].weight, self.mlp,
                                   jnp.zeros_like(self.mlp.layers[-1].weight))

    new = ZeroLast(3, 2, key=getkey()).reinit(getkey())
    assert np.all(np.asarray(new.mlp.layers[-1].weight) == 0)
    assert np.any(np.asarray(new.mlp.layers[0].weight) != 0)


@pytest.mark.parametrize("link, check", [
    ("exp", lambda v: np.all(v > 0)),
    ("sigmoid", lambda v: np.all((v > 0) & (v < 1))),
    ("softmax", lambda v: np.allclose(v.sum(), 1.0, atol=1e-6)),
])
def test_links(link, check, getkey):
    enc = ctx.nn.MLP(3, 4, width=8, depth=1, link=link, key=getkey())
    assert check(np.asarray(enc(jax.random.normal(getkey(), (3,)))))


def test_unknown_link_and_activation():
    with pytest.raises(ValueError, match="`link` must be"):
        ctx.nn.Linear(2, 2, link="cube")
    with pytest.raises(ValueError, match="`activation` must be"):
        ctx.nn.MLP(2, 2, activation="cube")


def test_ngam_is_additive_in_features(getkey):
    enc = ctx.nn.NGAM(3, 2, width=8, depth=1, key=getkey())
    c = jax.random.normal(getkey(), (3,))
    eff = enc.feature_effects(c)
    np.testing.assert_allclose(enc(c), eff.sum(0), rtol=1e-6)
    # changing feature 0 changes only the contribution of feature 0
    c2 = c.at[0].set(c[0] + 1.0)
    eff2 = enc.feature_effects(c2)
    np.testing.assert_array_equal(eff[1:], eff2[1:])


def test_archetype_weights(getkey):
    soft = ctx.nn.Archetype(2, 3, num_archetypes=5, weights="softmax", key=getkey())
    a = soft.archetype_weights(jnp.ones(2))
    np.testing.assert_allclose(a.sum(), 1.0, rtol=1e-6)
    ident = ctx.nn.Archetype(2, 3, num_archetypes=5, key=getkey())
    assert np.all(np.abs(np.asarray(ident.archetypes)) <= 0.01)
    c = jnp.ones(2)
    np.testing.assert_allclose(ident(c), ident.archetype_weights(c) @ ident.archetypes, rtol=1e-6)


@pytest.mark.parametrize("make", ENCODERS[1:], ids=IDS[1:])
def test_gradients_match_finite_differences(make, getkey):
    enc = make(getkey())
    params, static = eqx.partition(enc, eqx.is_inexact_array)
    c = jax.random.normal(getkey(), (3,))

    def f(p):
        return jnp.sum(eqx.combine(p, static)(c) ** 2)

    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)
    check_grads(f, (params,), order=1, modes=["rev"], eps=1e-2, atol=5e-2, rtol=5e-2)
