"""Contextualized estimators: recovery, normalisation round trip, bootstraps, posterior
methods, save/load, base predictors, reproducibility, and bad input.

Recovery tolerances follow tests/models/test_families.py: per-sample parameter error below 5%
of the population model's (the variance of the true parameters)."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression

from ctxppl.estimators import (
    ContextualGAMClassifier,
    ContextualGAMRegressor,
    ContextualizedBayesianNetworks,
    ContextualizedClassifier,
    ContextualizedCorrelationNetworks,
    ContextualizedMarkovNetworks,
    ContextualizedRegressor,
    Interval,
)

_spec = importlib.util.spec_from_file_location(
    "_ctx_family_sims", pathlib.Path(__file__).parents[1] / "models" / "sims.py")
sims = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sims)

N = 800


@pytest.fixture(scope="module")
def reg_data():
    return sims.regression(N, 0), sims.regression(400, 1)


@pytest.fixture(scope="module")
def fitted(reg_data):
    (C, X, Y, B, mu), _ = reg_data
    return ContextualizedRegressor(random_state=0).fit(C, X, Y)


# ------------------------------------------------------------------ recovery
def test_regressor_recovers_parameters(fitted, reg_data):
    _, (Ct, Xt, Yt, Bt, mut) = reg_data
    betas, mus = fitted.predict_params(Ct)
    assert betas.shape == (400, 1, 3) and mus.shape == (400, 1)
    assert np.mean((betas[:, 0] - Bt) ** 2) < 0.05 * Bt.var(axis=0).mean()
    assert np.mean((mus[:, 0] - mut) ** 2) < 0.05 * mut.var()
    assert fitted.predict(Ct, Xt).shape == (400,)
    assert fitted.score(Ct, Xt, Yt) > 0.95


def test_normalisation_round_trip(fitted, reg_data):
    """Affine changes of units give exactly transformed parameters and predictions.

    Standardising removes the change of units, so the same seed fits the same normalised
    model; the estimator must map its parameters back: beta' = c beta / a,
    mu' = c mu + d - beta' . b, predictions y' = c y + d."""
    (C, X, Y, _, _), (Ct, Xt, _, _, _) = reg_data
    a, b = np.array([10.0, 0.1, 3.0]), np.array([5.0, -2.0, 100.0])
    c, d = 7.0, -40.0
    s, t = np.array([2.0, 0.5]), np.array([1.0, -3.0])
    est2 = ContextualizedRegressor(random_state=0).fit(C * s + t, X * a + b, Y * c + d)
    b1, m1 = fitted.predict_params(Ct)
    b2, m2 = est2.predict_params(Ct * s + t)
    np.testing.assert_allclose(b2, c * b1 / a, rtol=2e-3, atol=2e-3 * c)
    np.testing.assert_allclose(m2, c * m1 + d - np.einsum("nqp,p->nq", b2, b),
                               rtol=2e-3, atol=2e-2 * c)
    np.testing.assert_allclose(est2.predict(Ct * s + t, Xt * a + b),
                               c * fitted.predict(Ct, Xt) + d, rtol=1e-3, atol=2e-2 * c)


def test_normalize_false_matches_on_standard_data():
    """On data already standardised, normalize=False fits the same model."""
    C, X, Y, _, _ = sims.regression(300, 2)
    X = (X - X.mean(0)) / X.std(0)
    C = (C - C.mean(0)) / C.std(0)
    Y = (Y - Y.mean()) / Y.std()
    kw = {"random_state": 1, "encoder_type": "linear", "max_epochs": 100}
    p1 = ContextualizedRegressor(**kw).fit(C, X, Y).predict_params(C)[0]
    p2 = ContextualizedRegressor(normalize=False, **kw).fit(C, X, Y).predict_params(C)[0]
    np.testing.assert_allclose(p1, p2, atol=1e-3)


def test_reproducible_with_random_state(fitted, reg_data):
    (C, X, Y, _, _), (Ct, *_ ) = reg_data
    again = ContextualizedRegressor(random_state=0).fit(C, X, Y)
    other = ContextualizedRegressor(random_state=1).fit(C, X, Y)
    np.testing.assert_array_equal(again.predict_params(Ct)[0], fitted.predict_params(Ct)[0])
    assert not np.array_equal(other.predict_params(Ct)[0], fitted.predict_params(Ct)[0])


# ------------------------------------------------------------------ bootstraps
def test_bootstraps_resample_rows_in_one_call(reg_data):
    (C, X, Y, B, _), (Ct, Xt, *_ ) = reg_data
    est = ContextualizedRegressor(n_bootstraps=5, random_state=0).fit(C, X, Y)
    W = est.fit_.diagnostics["weights"]  # multinomial counts from ONE fit_many call
    assert W.shape == (5, N) and np.all(W.sum(1) == N) and np.all(W == np.round(W))
    assert np.all((W == 0).mean(1) > 0.3)  # ~1/e of rows left out of every resample
    betas, mus = est.predict_params(Ct, individual_preds=True)
    assert betas.shape == (5, 400, 1, 3) and mus.shape == (5, 400, 1)
    assert np.all(betas.std(axis=0) > 0)
    iv = est.predict_params(Ct, interval=0.9)[0]
    assert isinstance(iv, Interval) and np.all(iv.lower <= iv.upper)
    assert est.predict(Ct, Xt, individual_preds=True).shape == (5, 400)


def test_interval_of_a_single_point_fit_is_refused_naming_the_routes(fitted, reg_data):
    _, (Ct, *_ ) = reg_data
    with pytest.raises(ValueError, match=r"`interval` needs per-sample draws.*a single point "
                                         r"estimate.*uncertainty=True.*n_bootstraps >= 2, "
                                         r"or inference="):
        fitted.predict_params(Ct, interval=0.9)
    assert fitted.predict_params(Ct)[0].shape == (400, 1, 3)  # point estimates still fine


def test_unconverged_nuts_estimator_warns_on_intervals_also_after_loading(tmp_path):
    """20 draws cannot give a bulk ESS of 100: the fit warns at the user's line, and so does
    every interval from it, before and after save/load."""
    C, X, Y, _, _ = sims.regression(40, 2)
    opts = {**SMALL, "inference": "nuts", "num_samples": 20, "max_epochs": 50}
    with pytest.warns(RuntimeWarning, match=r"has not converged.*ESS") as rec:
        est = ContextualizedRegressor(**opts).fit(C, X, Y)
    assert {w.filename for w in rec} == {__file__}
    assert not est.fit_.diagnostics["converged"]
    est.save(str(tmp_path / "nuts.npz"))
    back = ContextualizedRegressor.load(str(tmp_path / "nuts.npz"))
    for e in (est, back):
        with pytest.warns(RuntimeWarning, match=r"NUTS\) has not converged.*ESS \d+ < 100"):
            iv = e.predict_params(C, interval=0.9)[0]
        assert np.all(iv.lower < iv.upper)


def test_nuts_with_bootstraps_is_rejected():
    C, X, Y, _, _ = sims.regression(20, 0)
    with pytest.raises(ValueError, match="nuts"):
        ContextualizedRegressor(inference="nuts", n_bootstraps=3).fit(C, X, Y)


# ------------------------------------------------------------------ posterior methods
SMALL = {"encoder_type": "linear", "metamodel_type": "naive", "max_epochs": 300,
         "random_state": 0, "num_samples": 100}


@pytest.mark.parametrize("inference", ["svi", "laplace", pytest.param(
    "nuts", marks=pytest.mark.slow)])
def test_posterior_intervals_cover_truth(inference):
    """Per-sample coefficients with a posterior: 90% intervals cover most true values.

    Linear encoder = correctly specified here (beta linear in c), so the posterior is
    close to exact and coverage of the 300 per-sample coefficients should be near 90%;
    we require >= 70% (SVI's mean-field guide under-disperses somewhat)."""
    rng = np.random.default_rng(3)
    C = rng.uniform(-1, 1, (300, 1))
    X = rng.normal(size=(300, 2))
    B = np.stack([1 + C[:, 0], -C[:, 0]], 1)
    Y = (X * B).sum(1) + 0.5 * rng.normal(size=300)
    est = ContextualizedRegressor(inference=inference, **SMALL).fit(C, X, Y)
    iv = est.predict_params(C, interval=0.9)[0]
    inside = (iv.lower[:, 0] <= B) & (B <= iv.upper[:, 0])
    assert inside.mean() > 0.7, inside.mean()
    draws = est.predict_params(C, individual_preds=True)[0]
    assert draws.shape == (100, 300, 1, 2)


# ------------------------------------------------------------------ save / load
def test_save_load_round_trip(tmp_path, fitted, reg_data):
    _, (Ct, Xt, *_ ) = reg_data
    path = tmp_path / "reg.npz"
    fitted.save(str(path))
    back = ContextualizedRegressor.load(str(path))
    assert back.get_params() == fitted.get_params()
    np.testing.assert_array_equal(back.predict(Ct, Xt), fitted.predict(Ct, Xt))
    raw = np.load(path, allow_pickle=False)  # no pickle anywhere in the file
    assert "__header__" in raw.files


def test_save_load_bootstrapped_classifier(tmp_path):
    C, X, y, _, _ = sims.logistic(300, 1)
    labels = np.array(["no", "yes"])[y]
    est = ContextualizedClassifier(n_bootstraps=3, **{**SMALL, "num_samples": 10}).fit(
        C, X, labels)
    est.save(str(tmp_path / "clf.npz"))
    back = ContextualizedClassifier.load(str(tmp_path / "clf.npz"))
    np.testing.assert_array_equal(back.classes_, ["no", "yes"])
    np.testing.assert_array_equal(back.predict_proba(C, X), est.predict_proba(C, X))


# ------------------------------------------------------------------ base predictors
def test_base_predictor_learns_the_deviation(reg_data):
    (C, X, Y, B, mu), (Ct, Xt, Yt, Bt, mut) = reg_data
    pop = LinearRegression().fit(X, Y)  # population model
    est = ContextualizedRegressor(base_predictor=pop, random_state=0).fit(C, X, Y)
    betas, _ = est.predict_params(Ct)  # deviation from the population coefficients
    total = betas[:, 0] + pop.coef_
    assert np.mean((total - Bt) ** 2) < 0.05 * Bt.var(axis=0).mean()
    assert est.score(Ct, Xt, Yt) > 0.95
    # a contextualized base: its per-sample parameters are offsets, returned in the total
    base = ContextualizedRegressor(encoder_type="linear", random_state=0).fit(C, X, Y)
    est2 = ContextualizedRegressor(base_predictor=base, random_state=0).fit(C, X, Y)
    assert np.mean((est2.predict_params(Ct)[0][:, 0] - Bt) ** 2) < 0.05 * Bt.var(0).mean()


# ------------------------------------------------------------------ classifiers, GAMs, names
def test_multiclass_classifier_with_pandas_names():
    rng = np.random.default_rng(4)
    C = pd.DataFrame(rng.uniform(-1, 1, (600, 1)), columns=["age"])
    X = pd.DataFrame(rng.normal(size=(600, 2)), columns=["dose", "bmi"])
    logits = np.stack([np.zeros(600), 3 * X["dose"] * C["age"], 2 * X["bmi"]], 1)
    y = np.array(["a", "b", "c"])[np.argmax(logits + rng.gumbel(size=(600, 3)), 1)]
    clf = ContextualizedClassifier(random_state=0).fit(C, X, pd.Series(y, name="kind"))
    assert clf.context_names_ == ["age"] and clf.feature_names_ == ["dose", "bmi"]
    p = clf.predict_proba(C, X)
    assert p.shape == (600, 3)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-6)
    assert clf.score(C, X, y) > 0.6  # Bayes accuracy of this simulation ~0.75
    betas, _ = clf.predict_params(C)
    assert betas.shape == (600, 3, 2) and np.all(betas[:, 0] == 0)


def test_gam_estimators_use_ngam():
    C, X, Y, B, _ = sims.regression(400, 5)
    gam = ContextualGAMRegressor(random_state=0, max_epochs=400).fit(C, X, Y)
    assert gam.model_.metamodel.encoder == "ngam"
    assert np.mean((gam.predict_params(C)[0][:, 0] - B) ** 2) < 0.1 * B.var(0).mean()
    assert ContextualGAMClassifier().get_params()["encoder_type"] == "ngam"


def test_sklearn_api_conventions():
    est = ContextualizedRegressor(width=8, alpha=0.1)
    assert clone(est).get_params() == est.get_params()
    est.set_params(width=4)
    assert est.width == 4
    assert not [k for k in vars(est) if k.endswith("_")]
    C, X, Y, _, _ = sims.regression(30, 0)
    fitted = ContextualizedRegressor(**{**SMALL, "max_epochs": 5}).fit(C, X, Y)
    assert isinstance(fitted, ContextualizedRegressor)  # fit returns self
    assert not hasattr(clone(fitted), "fit_")


# ------------------------------------------------------------------ networks
def test_correlation_networks_within_and_between():
    C, X, R = sims.correlation(1500, 6)
    net = ContextualizedCorrelationNetworks(random_state=0).fit(C, X)
    rho = net.predict_networks(C[:300])
    assert rho.shape == (300, 3, 3)
    assert np.mean((rho[:, 0, 1] - R[:300, 0, 1]) ** 2) < 0.05 * R[:, 0, 1].var()
    assert net.predict_correlation(C[:5]).shape == (1, 5, 3, 3)  # squared, per bootstrap
    assert net.measure_mses(C[:10], X[:10]).shape == (10,)
    xy = ContextualizedCorrelationNetworks(random_state=0).fit(C, X[:, :1], X[:, 1:])
    rho_xy = xy.predict_networks(C[:300])
    assert rho_xy.shape == (300, 1, 2)
    assert np.mean((rho_xy[:, 0, 0] - R[:300, 0, 1]) ** 2) < 0.05 * R[:, 0, 1].var()


def test_markov_networks_precision_and_sparsity():
    C, X, P = sims.markov(2000, 8)
    X = X * np.array([1.0, 2.0, 0.5, 1.0]) + 3.0  # units: precision must map back
    scale = np.array([1.0, 2.0, 0.5, 1.0])
    net = ContextualizedMarkovNetworks(alpha=1e-3, random_state=0).fit(C, X)
    prec = net.predict_precisions(C[:500])
    truth = P[:500] / scale[:, None] / scale[None, :]
    pos = C[:500, 0] > 0.2
    assert abs(prec[pos, 0, 1].mean() - truth[pos, 0, 1].mean()) < 0.1 * abs(
        truth[pos, 0, 1].mean()) + 0.02
    assert abs(prec[:, 2, 3].mean() - truth[:, 2, 3].mean()) < 0.15 * abs(truth[0, 2, 3])
    pc = net.predict_networks(C[:5])
    assert pc.shape == (5, 4, 4) and np.all(np.diagonal(pc, axis1=1, axis2=2) == 0)
    assert net.measure_mses(C[:500], X[:500]).mean() < X.var(0).mean()


def test_bayesian_networks_dags():
    from ctxppl.models import is_dag

    C, X, W = sims.dag(1500, 9)
    net = ContextualizedBayesianNetworks(random_state=0).fit(C, X)
    Wd = net.predict_networks(C[:300])
    assert np.all(is_dag(Wd))
    assert np.mean((Wd - W[:300]) ** 2) < 0.01
    mse = net.measure_mses(C[:300], X[:300])
    assert mse.shape == (300,) and mse.mean() < 0.3  # noise variance 0.25 is the floor


# ------------------------------------------------------------------ bad input (no fitting)
@pytest.mark.parametrize("est", [ContextualizedRegressor(), ContextualizedClassifier()])
def test_bad_inputs_raise_before_work(est):
    rng = np.random.default_rng(0)
    C, X, y = rng.normal(size=(20, 2)), rng.normal(size=(20, 3)), rng.integers(0, 2, 20)
    with pytest.raises(ValueError, match="one row per sample"):
        est.fit(C[:10], X, y)
    with pytest.raises(ValueError, match="one row per sample"):
        est.fit(C, X, y[:10])
    with pytest.raises(ValueError, match="2-D"):
        est.fit(C[:, 0], X, y)
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.fit(C, Xn, y)
    Cc = C.copy()
    Cc[:, 1] = 4.0
    with pytest.raises(ValueError, match="constant column"):
        est.fit(Cc, X, y)
    with pytest.raises(NotFittedError):
        est.predict(C, X)
    with pytest.raises(ValueError, match="`inference`"):
        clone(est).set_params(inference="mcmc").fit(C, X, y)


def test_classifier_rejects_continuous_labels():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="continuous"):
        ContextualizedClassifier().fit(rng.normal(size=(20, 1)), rng.normal(size=(20, 2)),
                                       rng.normal(size=20))


@pytest.mark.parametrize("cls", [ContextualizedCorrelationNetworks,
                                 ContextualizedMarkovNetworks,
                                 ContextualizedBayesianNetworks])
def test_networks_need_two_features(cls):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least 2 features"):
        cls().fit(rng.normal(size=(20, 1)), rng.normal(size=(20, 1)))
    with pytest.raises(NotFittedError):
        cls().predict_networks(rng.normal(size=(5, 1)))


def test_predict_checks_widths(fitted):
    with pytest.raises(ValueError, match="expecting 2 features"):
        fitted.predict_params(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="expecting 3 features"):
        fitted.predict(np.zeros((3, 2)), np.zeros((3, 4)))
