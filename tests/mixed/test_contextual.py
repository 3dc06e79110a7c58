"""Contextualized random effects: the prior mean of the group effects is an encoder of the
group's context, so unseen groups are predicted from their context."""

import numpy as np
import pandas as pd
import pytest

import ctxppl as ctx


@pytest.fixture
def groups(rng):
    G, m = 30, 6
    g = np.repeat(np.arange(G), m)
    u = rng.normal(size=G)  # group-level covariate (think county uranium)
    b = 0.7 * u + rng.normal(0, 0.3, G)
    x = rng.normal(size=G * m)
    d = pd.DataFrame({"g": g, "x": x, "u": u[g]})
    d["y"] = 1.0 + 0.5 * x + b[g] + rng.normal(0, 0.5, G * m)
    return d


def test_linear_context_equals_level2_predictor(groups):
    """b_g ~ N(W c_g, s^2) is the same model as the cross-level fixed effect ``u`` with
    b_g ~ N(0, s^2): identical likelihood, so identical REML estimates (the intercept moves
    because the encoder sees the standardized context)."""
    ctx_fit = ctx.mixed("y ~ x + (1 | g)", groups, context="u")
    l2 = ctx.mixed("y ~ x + u + (1 | g)", groups)
    ce = ctx_fit.context_effects
    assert ce.loc["g:u", "Intercept"] == pytest.approx(l2.params["u"], rel=1e-4)
    assert ctx_fit.params["x"] == pytest.approx(l2.params["x"], rel=1e-5)
    mean_u = groups.groupby("g")["u"].first().mean()
    assert ctx_fit.params["Intercept"] == pytest.approx(
        l2.params["Intercept"] + l2.params["u"] * mean_u, rel=1e-4)
    assert ctx_fit.random_effects["sd"][0] == pytest.approx(l2.random_effects["sd"][0],
                                                            rel=1e-4)
    np.testing.assert_allclose(ctx_fit.ranef(), l2.ranef(), atol=1e-4)
    np.testing.assert_allclose(ctx_fit.predict(), l2.predict(), atol=1e-5)


def test_unseen_groups_are_predicted_from_context(groups):
    res = ctx.mixed("y ~ x + (1 | g)", groups, context="u")
    plain = ctx.mixed("y ~ x + (1 | g)", groups)
    new = pd.DataFrame({"g": [100, 101], "x": [0.0, 0.0], "u": [-2.0, 2.0]})
    pred = res.predict(new, allow_new_groups=True)
    w = res.context_effects.loc["g:u", "Intercept"]
    u_mean = groups.groupby("g")["u"].first().mean()
    np.testing.assert_allclose(pred, res.params["Intercept"] + w * (new.u - u_mean), rtol=1e-5)
    # without context, both new groups get the population mean
    p0 = plain.predict(new, allow_new_groups=True)
    assert p0[0] == pytest.approx(p0[1])
    with pytest.raises(ValueError, match="context columns"):
        res.predict(new.drop(columns="u"), allow_new_groups=True)


def test_program_engine_uses_ctx_contextual(groups):
    """The program path (ctx.contextual with scale=sd) agrees with the exact marginal fit
    within 4 standard errors of the context effect, and predicts unseen groups from their
    context through the encoder."""
    exact = ctx.mixed("y ~ x + (1 | g)", groups, context="u")
    se_w = np.sqrt(exact._vcov[-1, -1]) / exact.design.contexts["g"].scale[0]  # raw units
    prog = ctx.mixed("y ~ x + (1 | g)", groups, context="u", method="laplace", key=0,
                     progress=False, num_steps=3000, learning_rate=0.05)
    tr_sites = prog.fit.samples
    assert "enc_g.weight" in tr_sites  # the linear encoder has a prior: sampled
    w_prog = prog.context_effects.loc["g:u", "Intercept"]
    w_exact = exact.context_effects.loc["g:u", "Intercept"]
    assert abs(w_prog - w_exact) < 4 * se_w
    new = pd.DataFrame({"g": [100], "x": [0.0], "u": [1.5]})
    u_mean = groups.groupby("g")["u"].first().mean()
    want = prog.params["Intercept"] + w_prog * (1.5 - u_mean)
    assert prog.predict(new, allow_new_groups=True)[0] == pytest.approx(want, rel=1e-4)


def test_custom_encoder_program(groups):
    """An MLP encoder (point-estimated, as ctx.encoder does without a prior): unseen groups
    with different contexts get different predictions."""
    res = ctx.mixed("y ~ x + (1 | g)", groups, context="u", engine="program",
                    encoder=lambda d, q: ctx.nn.MLP(d, q, width=8, depth=1), key=1,
                    progress=False, num_steps=2000)
    assert res.context_effects is None
    new = pd.DataFrame({"g": [100, 101], "x": [0.0, 0.0], "u": [-2.0, 2.0]})
    pred = res.predict(new, allow_new_groups=True)
    assert np.all(np.isfinite(pred)) and pred[1] > pred[0]  # the true effect is +0.7 per unit
