"""ctx.fit / ctx.fit_many / Fit: batching, compilation cache, round trips, bad input."""

import contextlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import ctxppl as ctx
from ctxppl.infer._optim import run_opt


def ctx_model(C, X, Y=None):
    enc = ctx.encoder("enc", ctx.nn.MLP(C.shape[-1], X.shape[-1], width=8, depth=1,
                                        activation="swish"))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with ctx.plate("patients", C.shape[0], context=C):
        w = ctx.contextual("w", enc)
        x = numpyro.subsample(X, event_dim=1)
        y = None if Y is None else numpyro.subsample(Y, event_dim=0)
        numpyro.sample("y", dist.Normal(jnp.sum(x * w, -1), sigma), obs=y)


def linear_model(C, X, Y=None):
    enc = ctx.encoder("enc", ctx.nn.Linear(C.shape[-1], X.shape[-1]))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with ctx.plate("patients", C.shape[0], context=C):
        w = ctx.contextual("w", enc)
        numpyro.sample("y", dist.Normal(jnp.sum(X * w, -1), sigma), obs=Y)


def make_data(n=120, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    C = jax.random.uniform(k1, (n, 2), minval=-1, maxval=1)
    X = jax.random.uniform(k2, (n, 2), minval=-1, maxval=1)
    W = jnp.stack([C[:, 0] + C[:, 1] ** 2, C[:, 0] ** 2 + C[:, 1]], -1)
    return C, X, jnp.sum(X * W, -1), W


FAST = dict(progress=False, num_steps=400, tol=0.0, learning_rate=1e-2)


def _zero_width_warning(expected):
    """Posterior fits of a point-estimated encoder warn that `w` has zero-width draws."""
    if not expected:
        return contextlib.nullcontext()
    return pytest.warns(RuntimeWarning, match="'w' carry no posterior uncertainty")


def test_recovers_per_sample_parameters_and_predicts_at_new_contexts():
    C, X, Y, W = make_data(300)
    fit = ctx.fit(ctx_model, C, X, Y, key=0, progress=False, num_steps=2000, tol=0.0)
    w_train = fit.predict()["w"]
    assert w_train.shape == (300, 2)
    C2, X2, _, W2 = make_data(50, seed=1)
    w_new = fit.predict(C2, X2)["w"]
    assert w_new.shape == (50, 2)
    # the varying coefficients have variance ~0.5; a fitted encoder explains nearly all of it
    assert float(jnp.mean((w_new - W2) ** 2)) < 0.05 * float(jnp.var(W2))


def test_fit_many_equals_separate_fits():
    """Same keys and weights: the same program, vmapped or not. A linear encoder keeps the
    problem (nearly) convex, so float32 reduction-order differences between the vmapped and
    unvmapped matmuls stay at rounding level. (With an MLP, trajectories agree to 5e-7 for 200
    steps and then part ways at a saddle: optimisation of a neural net is chaotic, which is
    not a property of vmap.)"""
    C, X, Y, _ = make_data()
    Y = Y + 0.3 * jax.random.normal(jax.random.key(9), Y.shape)
    W = jnp.asarray(np.random.default_rng(0).integers(0, 3, size=(3, C.shape[0])), jnp.float32)
    many = ctx.fit_many(linear_model, C, X, Y, key=5, weights=W, plate="patients", **FAST)
    keys = jax.random.split(jax.random.key(5), 3)
    for i in range(3):
        one = ctx.fit(linear_model, C, X, Y, key=keys[i], weights=W[i], plate="patients",
                      **FAST)
        for a, b in zip(jax.tree_util.tree_leaves(many[i].params),
                        jax.tree_util.tree_leaves(one.params), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    pred = many.predict()
    assert pred["w"].shape == (3, C.shape[0], 2)


def test_fit_many_bootstrap_and_indices():
    C, X, Y, _ = make_data()
    boot = ctx.fit_many(ctx_model, C, X, Y, key=1, num_fits=4, bootstrap=True, plate="patients",
                        **FAST)
    w = boot.diagnostics["weights"]
    assert w.shape == (4, C.shape[0]) and np.all(w.sum(1) == C.shape[0])
    folds = np.arange(C.shape[0]).reshape(4, -1)
    cv = ctx.fit_many(ctx_model, C, X, Y, key=1, indices=folds, plate="patients", **FAST)
    assert cv.diagnostics["weights"].sum() == C.shape[0]
    assert len(cv) == 4 and cv[1].batch_shape == ()


def test_second_fit_does_not_recompile():
    C, X, Y, _ = make_data()
    ctx.fit(ctx_model, C, X, Y, key=0, **FAST)
    before = run_opt._cache_size()
    ctx.fit(ctx_model, C + 0.1, X, Y, key=1, **FAST)  # new values, same shapes and options
    assert run_opt._cache_size() == before


def test_save_load_round_trip(tmp_path):
    C, X, Y, _ = make_data()
    for method in ("map", "laplace"):
        fit = ctx.fit(ctx_model, C, X, Y, key=0, method=method, **FAST)
        path = tmp_path / f"{method}.npz"
        fit.save(str(path))
        back = ctx.load(str(path), model=ctx_model)
        assert back.model is ctx_model and back.saved_model.endswith("test_fit:ctx_model")
        tree = (fit.params, fit.samples, fit.args, fit.diagnostics)
        back_tree = (back.params, back.samples, back.args, back.diagnostics)
        assert jax.tree_util.tree_structure(tree) == jax.tree_util.tree_structure(back_tree)
        for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(back_tree),
                        strict=True):
            np.testing.assert_array_equal(a, b)
            assert np.asarray(a).dtype == np.asarray(b).dtype
        assert back.options == fit.options and back.param_names == fit.param_names
        np.testing.assert_array_equal(jax.random.key_data(back.key), jax.random.key_data(fit.key))
        with _zero_width_warning(method != "map"):  # laplace: `w` of a point encoder
            np.testing.assert_array_equal(fit.predict()["w"], back.predict()["w"])
        assert back.diagnostics["message"] == fit.diagnostics["message"]


def test_load_needs_model_for_closures(tmp_path):
    def local_model(y=None):
        numpyro.sample("y", dist.Normal(numpyro.sample("m", dist.Normal()), 1.0), obs=y)

    fit = ctx.fit(local_model, jnp.array(0.5), key=0, progress=False, num_steps=200)
    fit.save(str(tmp_path / "f.npz"))
    back = ctx.load(str(tmp_path / "f.npz"))
    assert back.model is None and back.saved_model is None  # a closure has no name to show
    with pytest.raises(ValueError, match="`model=`"):
        back.predict()
    with pytest.raises(ValueError, match="`model=`"):
        back.to_arviz()
    assert float(ctx.load(str(tmp_path / "f.npz"), model=local_model).params["m"]) == float(
        fit.params["m"])


def test_to_arviz_dims_named_after_plates():
    C, X, Y, _ = make_data(40)
    fit = ctx.fit(ctx_model, C, X, Y, key=0, method="laplace", num_samples=50, **FAST)
    idata = fit.to_arviz()
    post = idata["posterior"]
    assert tuple(post["w"].dims) == ("chain", "draw", "patients", "w_dim_1")
    assert post["w"].shape == (1, 50, 40, 2)
    assert tuple(idata["observed_data"]["y"].dims) == ("patients",)
    assert tuple(idata["log_likelihood"]["y"].dims) == ("chain", "draw", "patients")


def test_validation_split_early_stopping():
    C, X, Y, _ = make_data()
    fit = ctx.fit(ctx_model, C, X, Y, key=0, progress=False, num_steps=4000, window=50,
                  patience=2, val_split=0.25, plate="patients", learning_rate=0.05)
    vh = fit.diagnostics["val_history"]
    assert np.isfinite(vh).sum() >= 3
    assert "early-stopped" in fit.message or fit.diagnostics["num_steps"] == 4000


def test_nan_loss_is_reported_not_returned():
    def bad(y=None):
        s = numpyro.param("s", 1.0)
        numpyro.sample("y", dist.Normal(0.0, s), obs=y)

    with pytest.raises(ctx.FitError, match="NaN/inf"):
        ctx.fit(bad, jnp.array(1.0), key=0, progress=False, num_steps=300, learning_rate=2.0)
    with pytest.warns(RuntimeWarning, match="NaN/inf"):
        fit = ctx.fit(bad, jnp.array(1.0), key=0, progress=False, num_steps=300,
                      learning_rate=2.0, on_failure="warn")
    assert not fit.converged
    assert np.isfinite(fit.params["s"])  # the last finite parameters, never silent NaN


def test_nuts_holds_encoder_at_map_and_samples_latents():
    """Structure only (the posterior is checked in test_conjugate): a short run may warn
    that it has not converged, which is not what this test is about."""
    C, X, Y, _ = make_data(60)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*has not converged", category=RuntimeWarning)
        fit = ctx.fit(ctx_model, C, X, Y + 0.1 * jax.random.normal(jax.random.key(0), Y.shape),
                      key=0, method="nuts", progress=False, num_warmup=100, num_samples=100,
                      map_options={"num_steps": 300})
    assert fit.samples["sigma"].shape == (2, 100)
    assert "enc$params" in fit.params and fit.diagnostics["map_diagnostics"] is not None
    with _zero_width_warning(True):  # `w` is a function of the MAP encoder alone
        assert fit.predict()["w"].shape == (200, 60, 2)
    assert fit.diagnostics["no_uncertainty"] == ["w"]


@pytest.mark.parametrize("call, err, match", [
    (lambda C, X, Y: ctx.fit(ctx_model, C, X, Y, key=0, method="mcmc"), ValueError, "`method`"),
    (lambda C, X, Y: ctx.fit(ctx_model, C, X, Y, key=0, nsteps=3), TypeError, "unknown option"),
    (lambda C, X, Y: ctx.fit(ctx_model, C, X, Y), ValueError, "`key` is required"),
    (lambda C, X, Y: ctx.fit(ctx_model, C, X, Y.at[3].set(jnp.nan), key=0), ValueError,
     "`Y` contains 1 NaN"),
    (lambda C, X, Y: ctx.fit(ctx_model, C.at[0, 0].set(jnp.inf), X, Y, key=0), ValueError,
     "`C` contains 1 NaN/inf"),
    (lambda C, X, Y: ctx.fit(ctx_model, np.array([["a", "b"]] * 120), X, Y, key=0), TypeError,
     "`C` must be numeric"),
    (lambda C, X, Y: ctx.fit(ctx_model, C[:100], X, Y, key=0), ValueError,
     r"numpyro.plate\(patients, 100.*invalid shape of numpyro.subsample"),
    (lambda C, X, Y: ctx.fit(ctx_model, C[:, 0], X, Y, key=0), ValueError, "ndim >= 2"),
    (lambda C, X, Y: ctx.fit(ctx_model, C, X, Y, key=0, num_steps=0), ValueError, "`num_steps`"),
    (lambda C, X, Y: ctx.fit(ctx_model, C, X, Y, key=0, val_split=0.2), ValueError,
     "`plate` is required"),
    (lambda C, X, Y: ctx.fit(ctx_model, C, X, Y, key=0, weights=jnp.ones(3), plate="patients"),
     ValueError, r"shape \(120,\)"),
    (lambda C, X, Y: ctx.fit(ctx_model, C, X, Y, key=0, batch_size=8, plate="nope"), ValueError,
     "not a plate"),
    (lambda C, X, Y: ctx.fit_many(ctx_model, C, X, Y, key=0, indices=[[0, 500]],
                                  plate="patients"), ValueError, r"must lie in \[0, 120\)"),
    (lambda C, X, Y: ctx.fit_many(ctx_model, C, X, Y, key=0, method="nuts", num_fits=2),
     ValueError, "not supported by fit_many"),
    (lambda C, X, Y: ctx.fit_many(ctx_model, C, X, Y, key=0, num_fits=2, devices=0),
     ValueError, r"`devices` must be between 1 and the \d+ local device\(s\); got 0"),
    (lambda C, X, Y: ctx.fit_many(ctx_model, C, X, Y, key=0, num_fits=2, devices=["cpu"]),
     TypeError, "`devices` must be a non-empty sequence of jax devices"),
    (lambda C, X, Y: ctx.fit_many(ctx_model, C, X, Y, key=0, num_fits=2, devices=1.5),
     TypeError, "`devices` must be None, an int or a sequence"),
])
def test_bad_input_fails_before_work(call, err, match):
    C, X, Y, _ = make_data()
    with pytest.raises(err, match=match):
        call(C, X, Y)


def test_predict_with_context_of_wrong_width():
    C, X, Y, _ = make_data()
    fit = ctx.fit(ctx_model, C, X, Y, key=0, **FAST)
    with pytest.raises(ValueError, match=r"`enc\$params`.*different structure"):
        fit.predict(jnp.ones((5, 3)), jnp.ones((5, 2)))


@pytest.mark.parametrize("guide", ["normal", "lowrank", "diagonal", "delta", "laplace"])
def test_svi_guides_give_draws_per_latent(guide):
    C, X, Y, _ = make_data(40)
    fit = ctx.fit(linear_model, C, X, Y, key=0, method="svi", guide=guide, num_samples=7,
                  **FAST)
    assert fit.samples["sigma"].shape == (1, 7)
    with pytest.warns(RuntimeWarning, match="'w' carry no posterior uncertainty"):
        assert fit.predict()["w"].shape == (7, 40, 2)


def test_progress_bar_reports_steps(capsys):
    C, X, Y, _ = make_data(40)
    ctx.fit(linear_model, C, X, Y, key=0, num_steps=200, tol=0.0, progress=True)
    err = capsys.readouterr().err
    assert "ctxppl map" in err and "200/200" in err


def test_to_arviz_observed_site_with_event_dims():
    """log_likelihood drops the event dims of an observed site; dims must not clash."""

    def model(X, Y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        with ctx.plate("n", X.shape[0]):
            numpyro.sample("y", dist.Normal(w * X, 1.0).to_event(1), obs=Y)

    X = jnp.ones((5, 2))
    idata = ctx.fit(model, X, 2 * X, method="svi", key=0, num_steps=10, num_samples=10,
                    progress=False).to_arviz()
    assert tuple(idata["observed_data"]["y"].dims) == ("n", "y_dim_1")
    assert tuple(idata["log_likelihood"]["y"].dims) == ("chain", "draw", "n")


def test_to_arviz_with_factor_inside_a_plate():
    """numpyro.factor sites carry no data: not in observed_data or log_likelihood."""

    def model():
        with ctx.plate("N", 3):
            m = numpyro.sample("m", dist.Normal(0, 1))
            numpyro.factor("f", -(m**2))

    fit = ctx.fit(model, method="laplace", key=0, num_steps=200, num_samples=20, progress=False)
    idata = fit.to_arviz()
    assert tuple(idata["posterior"]["m"].dims) == ("chain", "draw", "N")
    assert "f" not in idata["posterior"]
    groups = list(idata.children) if hasattr(idata, "children") else idata.groups()
    assert "observed_data" not in groups and "log_likelihood" not in groups


def test_fit_many_val_split_early_stops_each_fit():
    C, X, Y, _ = make_data()
    many = ctx.fit_many(ctx_model, C, X, Y, key=0, num_fits=3, bootstrap=True, plate="patients",
                        progress=False, num_steps=3000, window=50, patience=2, val_split=0.25,
                        learning_rate=0.05)
    V = many.diagnostics["val_weights"]
    assert V.shape == (3, 120) and np.all(V.sum(1) == 30)
    assert not np.array_equal(V[0], V[1])  # each fit holds out its own members
    assert np.all(many.diagnostics["weights"][V > 0] == 0)  # held-out members are not trained on
    assert np.all(np.isfinite(many.diagnostics["val_history"][:, 0]))


def test_non_array_model_kwargs_and_improper_sites():
    """Python values (ints, strings) stay static; improper priors need no sampling."""

    def model(y, K=2, kind="a"):
        loc = numpyro.sample("loc", dist.ImproperUniform(dist.constraints.real, (), (K,)))
        if kind == "a":
            with ctx.plate("n", y.shape[0]):
                numpyro.sample("y", dist.Normal(loc.sum(), 1.0), obs=y)

    fit = ctx.fit(model, jnp.ones(4), key=0, model_kwargs={"K": 3, "kind": "a"}, **FAST)
    assert fit.params["loc"].shape == (3,)
    np.testing.assert_allclose(fit.params["loc"].sum(), 1.0, atol=1e-3)
