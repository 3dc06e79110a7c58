"""Diagnostics that speak up: R-hat / bulk ESS of the per-sample sites of every NUTS fit (not
of encoder weights), loud warnings when they fail, zero-width intervals refused, a failed
Laplace naming what to use instead."""

import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import init_to_uniform

import ctxppl as ctx
from ctxppl.infer._diagnostics import ESS_MIN, RHAT_MAX, bulk_ess, split_rhat


def _ar1(rng, shape, rho):
    """AR(1) chains with stationary N(0, 1) marginals: known, tunable mixing."""
    x = np.empty(shape)
    x[:, 0] = rng.normal(size=(shape[0],) + shape[2:])
    for t in range(1, shape[1]):
        x[:, t] = rho * x[:, t - 1] + np.sqrt(1 - rho ** 2) * rng.normal(
            size=(shape[0],) + shape[2:])
    return x


@pytest.mark.parametrize("rho", [0.0, 0.9])
def test_rhat_and_bulk_ess_agree_with_arviz(rho):
    """Reference implementation: ArviZ's rank-normalised split R-hat (``z_scale``) exactly;
    its bulk ESS to a few percent (numpyro's and ArviZ's autocorrelation sums end
    differently)."""
    rng = np.random.default_rng(0)
    x = _ar1(rng, (3, 401, 4), rho)
    x[2, :, 0] += 2.0  # one stuck chain in one element
    ours_r, ours_e = split_rhat(x), bulk_ess(x)
    for j in range(x.shape[2]):
        ref_r = float(np.asarray(az.rhat(x[:, :, j], method="z_scale")))
        ref_e = float(np.asarray(az.ess(x[:, :, j], method="bulk")))
        np.testing.assert_allclose(ours_r[j], ref_r, rtol=1e-9)
        np.testing.assert_allclose(ours_e[j], ref_e, rtol=0.05)
    assert ours_r[0] > 1.3  # the stuck chain
    if rho == 0.0:  # independent draws: R-hat within its noise of 1
        assert np.all(ours_r[1:] < RHAT_MAX)
    # slower mixing, fewer effective draws (AR(1): 1,200 (1 - rho) / (1 + rho) = 63 at 0.9)
    assert np.all(ours_e[1:] < 200) if rho else np.all(ours_e[1:] > 600)


def hierarchical(ys=None, N=None):
    """The seed's normal-normal model (dynestyx plate tutorial)."""
    N = ys.shape[0] if ys is not None else N
    mu_global = numpyro.sample("mu_global", dist.Normal(0.0, 0.5))
    with ctx.plate("N", N):
        mu_i = numpyro.sample("mu_i", dist.Normal(mu_global, 0.5))
        numpyro.sample("y_i", dist.Normal(mu_i, 0.1), obs=ys)


def test_well_mixed_nuts_fit_is_quiet_and_reports_its_per_sample_sites():
    ys = jax.random.normal(jax.random.key(0), (10,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not one warning
        fit = ctx.fit(hierarchical, ys, method="nuts", key=0, progress=False)
    d = fit.diagnostics
    assert d["converged"] and d["message"] == "ok"
    assert d["per_sample_sites"] == ["mu_i"] and set(d["r_hat"]) == {"mu_global", "mu_i"}
    assert max(d["r_hat"].values()) <= RHAT_MAX and min(d["ess"].values()) >= ESS_MIN
    # the numbers are those of the draws: the worst element of mu_i
    draws = np.asarray(fit.samples["mu_i"])
    assert d["r_hat"]["mu_i"] == pytest.approx(float(np.max(split_rhat(draws))))
    assert d["ess"]["mu_i"] == pytest.approx(float(np.min(bulk_ess(draws))))
    # ArviZ's summary of the fit has every per-sample element, with its ESS
    summary = az.summary(fit.to_arviz(), kind="diagnostics")
    rows = [r for r in summary.index if str(r).startswith("mu_i")]
    assert len(rows) == 10
    ess_col = "ess_bulk" if "ess_bulk" in summary.columns else "ess"
    np.testing.assert_allclose(float(summary.loc[rows, ess_col].min()), d["ess"]["mu_i"],
                               rtol=0.05)


def two_modes(C, Y):
    """theta_i = +-1 for every member (Y[:, 0] = theta_i^2 + noise): chains started on
    either side of the barrier at 0 never meet -- an unmixed per-sample site by
    construction. The contextual site `w` of a Bayesian linear encoder (Y[:, 1] = w + noise)
    mixes well; the encoder's weights are not checked."""
    enc = ctx.encoder("enc", ctx.nn.Linear(1, 1), prior=dist.Normal(0.0, 1.0))
    with ctx.plate("n", C.shape[0], context=C):
        theta = numpyro.sample("theta", dist.Normal(0.0, 1.0))
        w = ctx.contextual("w", enc)
        numpyro.sample("y", dist.Normal(jnp.stack([theta ** 2, w[:, 0]], -1), 0.05)
                       .to_event(1), obs=Y)


def test_unmixed_per_sample_site_warns_at_the_callers_line_naming_site_and_value(tmp_path):
    n = 16
    C = jnp.linspace(-1, 1, n)[:, None]
    Y = jnp.stack([jnp.ones(n), 0.5 * C[:, 0]], -1)
    opts = dict(method="nuts", key=0, progress=False, num_warmup=100, num_samples=100,
                init_strategy=init_to_uniform(radius=2.0))
    with pytest.warns(RuntimeWarning, match=r"per-sample site 'theta': r_hat \d+\.\d+ > 1.01 "
                                            r"at index \[\d+\]") as rec:
        fit = ctx.fit(two_modes, C, Y, **opts)
    assert [w.filename for w in rec] == [__file__]  # stacklevel: the user's call
    d = fit.diagnostics
    assert not d["converged"] and d["r_hat"]["theta"] > 1.5
    assert "w" in d["r_hat"] and set(d["per_sample_sites"]) == {"theta", "w"}
    assert not any(k.startswith("enc") for k in d["r_hat"])  # weights can swap: not checked
    fit.save(str(tmp_path / "unmixed.npz"))  # the diagnostics survive save / load
    back = ctx.load(str(tmp_path / "unmixed.npz"), model=two_modes)
    assert back.diagnostics["r_hat"] == d["r_hat"] and back.diagnostics["ess"] == d["ess"]
    assert not back.converged and back.message == fit.message
    with pytest.raises(ctx.FitError, match="per-sample site 'theta'"):
        ctx.fit(two_modes, C, Y, **opts, on_failure="raise")


def point_encoder(C, Y=None):
    enc = ctx.encoder("enc", ctx.nn.Linear(1, 1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with ctx.plate("n", C.shape[0], context=C):
        w = ctx.contextual("w", enc)
        numpyro.sample("y", dist.Normal(w[:, 0], sigma), obs=Y)


@pytest.mark.parametrize("method", ["laplace", "svi"])
def test_draws_of_a_point_estimated_per_sample_site_warn_naming_the_routes(method):
    C = jnp.linspace(-1, 1, 20)[:, None]
    fit = ctx.fit(point_encoder, C, 2 * C[:, 0], method=method, key=0, progress=False,
                  num_steps=200, num_samples=20)
    with pytest.warns(RuntimeWarning, match=r"'w' carry no posterior uncertainty.*"
                                            r"HSGP.*method='marginal'.*bootstrap=True") as rec:
        w = fit.predict()["w"]
    assert rec[0].filename == __file__
    assert float(jnp.ptp(w, axis=0).max()) == 0.0  # what the warning is about
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sites with posterior spread: quiet
        assert fit.predict(return_sites=["sigma"])["sigma"].shape == (20,)


def test_bootstrap_refits_of_a_point_encoder_have_spread_and_do_not_warn():
    """fit_many's bootstraps of a point encoder differ between fits: no zero-width claim."""
    C = jnp.linspace(-1, 1, 20)[:, None]
    Y = 2 * C[:, 0] + 0.3 * jax.random.normal(jax.random.key(1), (20,))
    many = ctx.fit_many(point_encoder, C, Y, method="laplace", num_fits=3, bootstrap=True,
                        plate="n", key=0, progress=False, num_steps=200, num_samples=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = many.predict()["w"]
    assert w.shape == (3, 5, 20, 1) and float(jnp.ptp(w[:, :, 0, 0])) > 0


def test_failed_laplace_names_the_routes_to_use_instead():
    def flat(y=None):  # `d` is improper and unconstrained: the Hessian is singular
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.sample("d", dist.ImproperUniform(dist.constraints.real, (), ()))
        with ctx.plate("n", 3):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    with pytest.raises(ctx.FitError, match=r"not positive definite.*Use instead: "
                                           r"method='nuts'.*method='svi'.*HSGP.*"
                                           r"method='marginal'"):
        ctx.fit(flat, jnp.ones(3), method="laplace", key=0, progress=False, num_steps=50)
