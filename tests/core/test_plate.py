"""ctx.plate is a drop-in numpyro.plate, plus a validated per-member context."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer import MCMC, NUTS, Predictive
from numpyro.infer.reparam import LocScaleReparam
from numpyro.infer.util import log_density

import ctxppl as ctx


def one_level(plate):
    """The seed tutorial's one-level hierarchical model, with a configurable plate."""

    def model(ys=None, N=None):
        if ys is not None:
            N = len(ys)
        mu_global = numpyro.sample("mu_global", dist.Normal(0.0, 0.5))
        with plate("N", N):
            mu_i = numpyro.sample("mu_i", dist.Normal(mu_global, 0.5))
            numpyro.sample("y_i", dist.Normal(mu_i, 0.1), obs=ys)

    return model


def two_level(plate):
    """The seed tutorial's two-level model (global -> group -> member)."""

    def model(ys=None, N_groups=3, N_per_group=3):
        mu_global = numpyro.sample("mu_global", dist.Normal(0.0, 0.5))
        with plate("N_groups", N_groups):
            mu_group = numpyro.sample("mu_group", dist.Normal(mu_global, 2.0))
            with plate("N_per_group", N_per_group):
                mu_i = numpyro.sample("mu_i", dist.Normal(mu_group, 0.2))
                numpyro.sample("y", dist.Normal(mu_i, 0.1), obs=ys)

    return model


def _trace(model, *args, **kwargs):
    return handlers.trace(handlers.seed(model, jax.random.key(3))).get_trace(*args, **kwargs)


@pytest.mark.parametrize("build, kwargs", [(one_level, {"N": 10}), (two_level, {})])
def test_same_trace_and_log_density(build, kwargs):
    tr_np = _trace(build(numpyro.plate), **kwargs)
    tr_cx = _trace(build(ctx.plate), **kwargs)
    assert list(tr_np) == list(tr_cx)
    for name in tr_np:
        a, b = tr_np[name], tr_cx[name]
        assert a["type"] == b["type"]
        np.testing.assert_array_equal(a["value"], b["value"])
        assert [f.name for f in a["cond_indep_stack"]] == [f.name for f in b["cond_indep_stack"]]
        assert [f.dim for f in a["cond_indep_stack"]] == [f.dim for f in b["cond_indep_stack"]]
    values = {n: s["value"] for n, s in tr_np.items() if s["type"] == "sample"}
    lp_np, _ = log_density(build(numpyro.plate), (), kwargs, values)
    lp_cx, _ = log_density(build(ctx.plate), (), kwargs, values)
    assert float(lp_np) == float(lp_cx)


@pytest.mark.parametrize("build, kwargs", [(one_level, {}), (two_level, {})])
def test_same_nuts_posterior(build, kwargs):
    data_kwargs = {"N": 10} if build is one_level else {}
    sim = Predictive(build(numpyro.plate), num_samples=1)(jax.random.key(0), **data_kwargs)
    ys = sim["y_i"][0] if build is one_level else sim["y"][0]
    out = []
    for plate in (numpyro.plate, ctx.plate):
        mcmc = MCMC(NUTS(build(plate)), num_warmup=200, num_samples=200, progress_bar=False)
        mcmc.run(jax.random.key(1), ys=ys, **kwargs)
        out.append(mcmc.get_samples())
    for name in out[0]:
        np.testing.assert_array_equal(out[0][name], out[1][name])


def test_subsample_indices_yielded_like_numpyro():
    def model(plate):
        with plate("n", 50, subsample_size=7) as idx:
            return idx

    a = handlers.seed(model, 0)(numpyro.plate)
    b = handlers.seed(model, 0)(ctx.plate)
    assert a.shape == (7,)
    np.testing.assert_array_equal(a, b)


def test_context_is_subsampled_with_the_plate_and_data():
    C = jnp.arange(20.0).reshape(10, 2)
    X = jnp.arange(10.0)

    def model():
        with ctx.plate("n", 10, subsample_size=4, context=C) as idx:
            c, info = ctx.context()
            x = numpyro.subsample(X, event_dim=0)
            return idx, c, x, info

    idx, c, x, info = handlers.seed(model, 1)()
    np.testing.assert_array_equal(c, C[idx])
    np.testing.assert_array_equal(x, X[idx])
    assert info.name == "n" and info.size == 10 and info.subsample_size == 4


def test_size_defaults_to_context_length():
    with ctx.plate("n", context=jnp.zeros((6, 2))) as idx:
        assert idx.shape == (6,)


def test_pytree_context():
    C = {"a": jnp.zeros((5, 2)), "b": jnp.ones((5, 3))}
    with ctx.plate("n", 5, context=C):
        c, _ = ctx.context()
    assert c["b"].shape == (5, 3)


def test_nested_plates_each_carry_their_own_context():
    Cg, Cm = jnp.ones((3, 2)), jnp.zeros((4, 5))

    def model():
        with ctx.plate("groups", 3, context=Cg):
            with ctx.plate("members", 4, context=Cm):
                inner, info_inner = ctx.context()
                outer, info_outer = ctx.context("groups")
        return inner, outer, info_inner, info_outer

    inner, outer, ii, io = model()
    assert inner.shape == (4, 5) and outer.shape == (3, 2)
    assert ii.dim == -2 and io.dim == -1


@pytest.mark.parametrize(
    "context, err, match",
    [
        (jnp.zeros((4, 2)), ValueError, "leading axis 5"),
        (jnp.zeros(5), ValueError, "ndim >= 2"),
        (jnp.array([[0.0], [1.0], [jnp.nan], [2.0], [3.0]]), ValueError, "NaN/inf"),
        (np.array([["a"], ["b"], ["c"], ["d"], ["e"]]), TypeError, "numeric"),
        ({}, ValueError, "empty"),
    ],
)
def test_bad_context(context, err, match):
    with pytest.raises(err, match=match):
        ctx.plate("patients", 5, context=context)


def test_context_outside_plate_is_a_clear_error():
    with pytest.raises(ValueError, match="found no enclosing `ctx.plate`"):
        ctx.context()
    with ctx.plate("a", 2, context=jnp.zeros((2, 1))):
        with pytest.raises(ValueError, match="named 'b'"):
            ctx.context("b")


# ---------------------------------------------------------------- numpyro handlers
def _model(plate):
    def model(y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with plate("n", 4):
            z = numpyro.sample("z", dist.Normal(mu, 1.0))
            numpyro.sample("y", dist.Normal(z, 0.5), obs=y)
        return z

    return model


Y = jnp.array([0.1, -0.3, 1.2, 0.4])


@pytest.mark.parametrize(
    "wrap",
    [
        lambda m: handlers.seed(m, 5),
        lambda m: handlers.seed(handlers.substitute(m, {"mu": 0.7}), 5),
        lambda m: handlers.seed(handlers.condition(m, {"z": jnp.ones(4)}), 5),
        lambda m: handlers.seed(handlers.block(m, hide=["z"]), 5),
        lambda m: handlers.seed(handlers.scale(m, 3.0), 5),
        lambda m: handlers.seed(handlers.mask(m, mask=jnp.array([True, False, True, True])), 5),
        lambda m: handlers.seed(handlers.reparam(m, {"z": LocScaleReparam(0.0)}), 5),
    ],
    ids=["seed", "substitute", "condition", "block", "scale", "mask", "reparam"],
)
def test_works_under_numpyro_handlers(wrap):
    traces = []
    for plate in (numpyro.plate, ctx.plate):
        tr = handlers.trace(wrap(_model(plate))).get_trace(Y)
        traces.append({n: (s["value"], s["fn"].log_prob(s["value"]) * (s["scale"] or 1.0))
                       for n, s in tr.items() if s["type"] == "sample"})
    assert traces[0].keys() == traces[1].keys()
    for n in traces[0]:
        np.testing.assert_array_equal(traces[0][n][0], traces[1][n][0])
        np.testing.assert_array_equal(traces[0][n][1], traces[1][n][1])


def test_works_under_predictive():
    outs = [Predictive(_model(p), num_samples=3)(jax.random.key(0)) for p in
            (numpyro.plate, ctx.plate)]
    for n in outs[0]:
        np.testing.assert_array_equal(outs[0][n], outs[1][n])
