"""Bad input to ctx.fit / ctx.fit_many is a clear exception before any compilation (issue 10):
silent broadcasting of a (N, 1) outcome, empty data, lists, encoder widths, keys, bools."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import ctxppl as ctx


def model(C, X, Y=None):
    enc = ctx.encoder("enc", ctx.nn.Linear(C.shape[-1], X.shape[-1]))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with ctx.plate("patients", C.shape[0], context=C):
        w = ctx.contextual("w", enc)
        numpyro.sample("y", dist.Normal(jnp.sum(X * w, -1), sigma), obs=Y)


def wide_encoder(C, X, Y=None):
    enc = ctx.encoder("enc", ctx.nn.MLP(3, X.shape[-1], width=4, depth=1))
    with ctx.plate("patients", C.shape[0], context=C):
        w = ctx.contextual("w", enc)
        numpyro.sample("y", dist.Normal(jnp.sum(X * w, -1), 1.0), obs=Y)


def plain_normal(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("rows", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


rng = np.random.default_rng(0)
C, X = rng.normal(size=(60, 2)), rng.normal(size=(60, 3))
Y = np.sum(X * C[:, :1], -1) + 0.05 * rng.normal(size=60)
QUICK = dict(progress=False, num_steps=3)


@pytest.mark.parametrize("call, err, match", [
    # the (N, 1) outcome: 3600 likelihood terms instead of 60
    (lambda: ctx.fit(model, C, X, Y[:, None], key=0, **QUICK), ValueError,
     r"observed site `y` of shape \(60, 1\) broadcasts .* to \(60, 60\) inside "
     r"ctx.plate\('patients', 60\).*3600 terms instead of 60.*Y\[:, 0\].*check_broadcast"),
    (lambda: ctx.fit(plain_normal, Y[:, None], key=0, **QUICK), ValueError,
     r"`y` of shape \(60, 1\).*\(60, 60\) inside ctx.plate\('rows', 60\)"),
    (lambda: ctx.fit(model, C, X, Y[:, None], key=0, method="nuts", progress=False),
     ValueError, "broadcasts"),
    (lambda: ctx.fit_many(model, C, X, Y[:, None], key=0, num_fits=2, **QUICK), ValueError,
     "broadcasts"),
    (lambda: ctx.fit(model, C[:0], X[:0], Y[:0], key=0, **QUICK), ValueError,
     r"`C` has 0 rows \(shape \(0, 2\)\)"),
    (lambda: ctx.fit(plain_normal, np.zeros(0), key=0, **QUICK), ValueError, "`y` has 0 rows"),
    (lambda: ctx.fit(model, [[1.0, 2.0], [3.0]], X, Y, key=0, **QUICK), TypeError,
     "`C` is a Python list that is not a rectangular array"),
    (lambda: ctx.fit(wide_encoder, C, X, Y, key=0, **QUICK), ValueError,
     r"encoder \(MLP\) takes contexts of width in_size=3, but the context of "
     r"ctx.plate\('patients'\) has width 2"),
    (lambda: ctx.fit(model, C, X, Y, key=2**70, **QUICK), ValueError,
     r"int seed must lie in \[-2\*\*63, 2\*\*63\); got 1180591620717411303424"),
    (lambda: ctx.fit(model, C, X, Y, key=True, **QUICK), TypeError, "got the bool True"),
    (lambda: ctx.fit(model, C, X, Y, key=0, progress=False, num_steps=True), ValueError,
     "`num_steps` must be a positive int; got True"),
    (lambda: ctx.fit(model, C, X, Y, key=0, progress=False, batch_size=np.True_,
                     plate="patients"), ValueError, "`batch_size`"),
    (lambda: ctx.fit(model, C, X, Y, key=0, method="nuts", num_chains=False), ValueError,
     "`num_chains`"),
])
def test_bad_input_is_a_clear_error_before_compiling(call, err, match):
    counter = []
    handler = logging.Handler()
    handler.emit = lambda r: counter.append(r.getMessage())
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(), pytest.raises(err, match=match):
            call()
    finally:
        logger.removeHandler(handler)
    # only tiny helpers (key creation, a dtype cast) may compile: no fit program
    programs = [m.split(" with ")[0] for m in counter if m.startswith("Compiling ") and any(
        w in m.split(" with ")[0] for w in ("run", "scan", "while", "loop", "collect"))]
    assert programs == [], programs


def test_broadcast_check_can_be_turned_off_and_lists_are_arrays():
    """A model that means the broadcast opts out; a list-of-lists context fits like the
    array it holds (same result, same compiled program)."""
    fit = ctx.fit(model, C, X, Y[:, None], key=0, check_broadcast=False, **QUICK)
    assert fit.options["check_broadcast"] is False
    a = ctx.fit(model, C, X, Y, key=0, **QUICK)
    b = ctx.fit(model, C.tolist(), X.tolist(), Y.tolist(), key=0, **QUICK)
    np.testing.assert_allclose(b.params["sigma"], a.params["sigma"], rtol=1e-5)
    assert isinstance(b.args[0], np.ndarray) and b.args[0].shape == (60, 2)


def test_online_prediction_rejects_nan_features():
    re = ctx.online.RandomEffects(ctx.online.ridge(1.0), 2)
    re.update(["a", "b"], np.ones((2, 2)), np.ones(2))
    bad = np.array([[1.0, 1.0], [np.nan, 1.0]])
    for method in (re.predict, re.score, re.ucb):
        with pytest.raises(ValueError, match=r"`X` has NaN/inf in 1 record\(s\) \(first: "
                                             r"record 1, entity 'b'\)"):
            method(["a", "b"], bad)
    with pytest.raises(ValueError, match="`offset` has NaN/inf"):
        re.predict(["a"], np.ones((1, 2)), offset=[np.inf])
    game = ctx.online.GAME({"u": re}, fixed=lambda z: z)
    with pytest.raises(ValueError, match="`X` has NaN/inf"):
        game.predict({"u": ["a", "b"]}, bad, fixed_args=(np.zeros(2),))
    assert np.isfinite(re.predict(["a", "new"], np.ones((2, 2)))).all()


def test_plain_numpyro_vector_observation_still_fits():
    """No plate, a scalar distribution observed at N values: N likelihood terms, as numpyro
    means it; the broadcast check must not fire."""
    def no_plate(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    fit = ctx.fit(no_plate, Y, key=0, progress=False, num_steps=500, learning_rate=0.1)
    np.testing.assert_allclose(fit.params["mu"], Y.sum() / (len(Y) + 0.01), rtol=1e-3)


def test_one_dimensional_predictors_warn_about_member_sized_parameters():
    """The issue's X of shape (N,): the encoder's output size X.shape[-1] is N, so every
    member got N coefficients without a word; now a warning names the site and the fix."""
    with pytest.warns(UserWarning, match=r"ctx.contextual\('w'\).*shape \(60,\).*"
                                         r"members \(60\).*X\[:, None\]"):
        ctx.fit(model, C, X[:, 0], Y, key=0, **QUICK)

    def meant(C, Y=None):  # a parameter per member that really is plate-sized: no warning
        enc = ctx.encoder("enc", ctx.nn.Linear(C.shape[-1], C.shape[0]))
        with ctx.plate("patients", C.shape[0], context=C):
            w = ctx.contextual("w", enc, event_shape=(C.shape[0],))
            numpyro.sample("y", dist.Normal(w.mean(-1), 1.0), obs=Y)

    ctx.fit(meant, C, Y, key=0, **QUICK)


def test_square_outcome_inside_a_plate_is_refused():
    """Y of shape (N, N) broadcasts to no larger shape, but the plate would meet Y's last
    axis: member j would get column j. A dimension no plate declares is refused too."""
    def square(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with ctx.plate("rows", y.shape[0]):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    with pytest.raises(ValueError, match=r"`y` of shape \(4, 4\)"):
        ctx.fit(square, np.zeros((4, 4)), key=0, **QUICK)

    def repeated(y):  # the plate at dim -2 declares the rows; columns are repeats: fine
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with ctx.plate("rows", y.shape[0], dim=-2):
            numpyro.sample("y", dist.Normal(mu, 1.0).expand([y.shape[0], 1]), obs=y)

    ctx.fit(repeated, np.zeros((4, 3)), key=0, **QUICK)
