"""GAME: several entity types by back-fitting; fixed effect and priors from ctx.fit models."""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import sklearn.metrics

import ctxppl as ctx

D = 3


def two_type_batch(rng, n=48):
    """Balanced users x items: every user and every item has 16 records."""
    user = np.arange(n) % 3
    item = (np.arange(n) // 3) % 3
    xu = rng.normal(size=(n, D))
    xu[:, 0] = 1.0
    xi = rng.normal(size=(n, D))
    return user, item, xu, xi


def test_backfitting_converges_to_the_joint_posterior(rng):
    """Gaussian likelihood, users and items: the exact joint posterior mode solves
    (p0 I + Z'Z) theta = Z'(y - f) with Z = [user blocks | item blocks]. Back-fitting is
    Gauss-Seidel on that system, so after k passes its error is at most about rho^k times
    the solution's size, rho = spectral radius of A22^-1 A21 A11^-1 A12 (computed below);
    each pass restarts from the pre-batch prior, so the data count once. Each type's
    stored precision is its conditional block p0 I + X_e'X_e."""
    user, item, xu, xi = two_type_batch(rng)
    f = 0.3 * rng.normal(size=user.size)
    y = f + np.sum(xu * rng.normal(size=(3, D))[user], 1) + \
        np.sum(xi * rng.normal(size=(3, D))[item], 1) + 0.3 * rng.normal(size=user.size)
    rule = ctx.online.bayes_linear(1.0)
    passes = 40
    game = ctx.online.GAME({"user": ctx.online.RandomEffects(rule, D),
                            "item": ctx.online.RandomEffects(rule, D)},
                           fixed=lambda z: z, passes=passes)
    game.partial_fit(y, ids={"user": user, "item": item}, X={"user": xu, "item": xi},
                     fixed_args=(f,), step=0)
    n = user.size
    zu = np.zeros((n, 3 * D))
    zi = np.zeros((n, 3 * D))
    for e in range(3):
        zu[user == e, e * D:(e + 1) * D] = xu[user == e]
        zi[item == e, e * D:(e + 1) * D] = xi[item == e]
    z = np.hstack([zu, zi])
    a = np.eye(6 * D) + z.T @ z
    theta = np.linalg.solve(a, z.T @ (y - f))
    a11, a12, a21, a22 = a[:9, :9], a[:9, 9:], a[9:, :9], a[9:, 9:]
    rho = max(abs(np.linalg.eigvals(np.linalg.solve(a22, a21 @ np.linalg.solve(a11, a12)))))
    tol = 10 * rho ** passes * np.abs(theta).max() + 1e-4 * (1 + np.abs(theta).max())
    got_u = game.effects["user"].coefficients([0, 1, 2]).reshape(-1)
    got_i = game.effects["item"].coefficients([0, 1, 2]).reshape(-1)
    np.testing.assert_allclose(np.concatenate([got_u, got_i]), theta, atol=tol)
    _, pu = game.effects["user"].lookup([1])
    np.testing.assert_allclose(pu[0], a[D:2 * D, D:2 * D], rtol=1e-5)
    assert game.step == 0
    # the joint score is the fixed effect plus both random effects
    s = game.score({"user": user, "item": item}, {"user": xu, "item": xi}, fixed_args=(f,))
    np.testing.assert_allclose(s, f + z @ np.concatenate([got_u, got_i]), rtol=1e-5, atol=1e-5)


def contextual_model(C, X=None, y=None):
    enc = ctx.encoder("enc", ctx.nn.Linear(C.shape[-1], D))
    with ctx.plate("n", C.shape[0], context=C):
        w = ctx.contextual("w", enc)
        if X is not None:
            eta = numpyro.deterministic("eta", jnp.sum(X * w, -1))
            numpyro.sample("y", dist.Normal(eta, 0.5), obs=y)


@pytest.fixture(scope="module")
def context_fit():
    rng = np.random.default_rng(7)
    c = rng.normal(size=(200, 2)).astype(np.float32)
    x = rng.normal(size=(200, D)).astype(np.float32)
    w = np.stack([c[:, 0], -c[:, 1], c[:, 0] + c[:, 1]], -1)
    y = np.sum(x * w, -1) + 0.5 * rng.normal(size=200)
    return ctx.fit(contextual_model, jnp.asarray(c), jnp.asarray(x),
                   jnp.asarray(y, jnp.float32), key=0, progress=False, num_steps=600)


def test_context_encoded_prior_for_new_entities(context_fit, rng):
    """prior_mean = a contextualized ctx.fit: an unseen entity starts at what its context
    predicts, and its first (exact, Gaussian) update is the conjugate posterior around that
    prior mean: (P0 + X'X)^-1 (P0 m0 + X'(y - o))."""
    prior = ctx.online.from_fit(context_fit, "w")
    re = ctx.online.RandomEffects(ctx.online.bayes_linear(4.0), D, prior_mean=prior)
    c_new = np.array([[1.0, -0.5]], np.float32)
    m0 = np.asarray(context_fit.predict(jnp.asarray(c_new), return_sites=["w"])["w"])[0]
    mean, _ = re.lookup(["zed"], context=c_new)
    np.testing.assert_allclose(mean[0], m0, rtol=1e-6)
    with pytest.raises(ValueError, match="pass `context=`"):
        re.update(["zed"] * 12, rng.normal(size=(12, D)), rng.normal(size=12))
    x, y = rng.normal(size=(12, D)), rng.normal(size=12)
    re.update(["zed"] * 12, x, y, context=np.repeat(c_new, 12, 0))
    want = np.linalg.solve(4 * np.eye(D) + x.T @ x, 4 * m0 + x.T @ y)
    np.testing.assert_allclose(re.coefficients(["zed"])[0], want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(re.state.prior_mean[0], m0, rtol=1e-6)


def test_fixed_effect_from_a_fit_and_metrics(context_fit, rng, tmp_path):
    """The fixed effect is any fitted ctxppl model: its `eta` site is every record's offset;
    GAME scores add the random effects; save/load round-trips; metrics are sklearn's."""
    fixed = ctx.online.from_fit(context_fit, "eta")
    game = ctx.online.GAME({"user": ctx.online.RandomEffects(ctx.online.bayes_logistic(1.0), D)},
                           fixed=fixed)
    n = 48
    user = np.arange(n) % 4
    c = rng.normal(size=(n, 2)).astype(np.float32)
    x = rng.normal(size=(n, D)).astype(np.float32)
    y = (rng.random(n) < 0.5).astype(float)
    args = (jnp.asarray(c), jnp.asarray(x))
    rep = game.partial_fit(y, ids={"user": user}, X=x, fixed_args=args, step=4)
    assert rep["user"].num_entities == 4
    eta = np.asarray(context_fit.predict(*args, return_sites=["eta"])["eta"])
    want = eta + game.effects["user"].score(user, x)
    np.testing.assert_allclose(game.score({"user": user}, x, fixed_args=args), want,
                               rtol=1e-5, atol=1e-5)
    # the update used the fixed effect as offset: same as updating the table directly
    direct = ctx.online.RandomEffects(ctx.online.bayes_logistic(1.0), D)
    direct.update(user, x, y, offset=eta)
    np.testing.assert_allclose(game.effects["user"].state.mean, direct.state.mean, rtol=1e-6)

    game.save(tmp_path / "g.npz")
    back = ctx.online.GAME.load(tmp_path / "g.npz", fixed=fixed)
    assert back.step == 4 and back.types == ("user",)
    np.testing.assert_array_equal(back.effects["user"].state.precision,
                                  game.effects["user"].state.precision)
    assert back.partial_fit(y, ids={"user": user}, X=x, fixed_args=args,
                            step=4)["user"].num_entities == 0  # replay skipped

    p = game.predict({"user": user}, x, fixed_args=args)
    m = game.evaluate(y, {"user": user}, x, fixed_args=args)
    assert m["auc"] == sklearn.metrics.roc_auc_score(y, p)
    assert m["log_loss"] == pytest.approx(sklearn.metrics.log_loss(y, p))
    cal = m["calibration"]
    assert cal["count"].sum() == n and 0 <= cal["ece"] <= 1


def test_game_rejects_mixed_families_and_bare_fits(context_fit):
    a = ctx.online.RandomEffects(ctx.online.ridge(), D)
    b = ctx.online.RandomEffects(ctx.online.bayes_logistic(), D)
    with pytest.raises(ValueError, match="share one likelihood family"):
        ctx.online.GAME({"a": a, "b": b})
    with pytest.raises(TypeError, match="from_fit"):
        ctx.online.GAME({"a": a}, fixed=context_fit)
    with pytest.raises(TypeError, match="from_fit"):
        ctx.online.RandomEffects(ctx.online.ridge(), D, prior_mean=context_fit)
