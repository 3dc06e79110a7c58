"""Estimators with ``uncertainty=True``: a Gaussian-process metamodel fitted by
``ctx.fit(method="marginal")``. Coverage of 90% intervals on data with known per-sample
coefficients (tolerance from the binomial error of the number of intervals checked),
intervals that widen away from the data, an exact save/load round trip (pickle-free), and
options that cannot be combined with it named.

Every regressor here is fitted on contexts spanning exactly [-1, 1] with ``normalize=False``:
the basis box is then the same for every data set, so the fits share one compiled program.
"""

import math
import os

import numpy as np
import pytest

from ctxppl.estimators import (
    ContextualGAMClassifier,
    ContextualGAMRegressor,
    ContextualizedBayesianNetworks,
    ContextualizedClassifier,
    ContextualizedCorrelationNetworks,
    ContextualizedMarkovNetworks,
    ContextualizedRegressor,
)

N, LEVEL, NOISE = 100, 0.9, 0.3


def gp_function(rng, lengthscale=1.0, features=200):
    """A draw from a zero-mean GP with the squared-exponential kernel (unit variance) by
    random Fourier features: the truth lies in the model class."""
    w = rng.normal(0.0, 1.0 / lengthscale, features)
    phase = rng.uniform(0.0, 2 * np.pi, features)
    a = rng.normal(size=features)
    return lambda c: math.sqrt(2.0 / features) * np.cos(np.outer(c, w) + phase) @ a


def simulate(seed, n=N):
    """``y = beta_1(c) x_1 + beta_2(c) x_2 + noise`` with GP-drawn coefficients; the
    contexts span exactly [-1, 1]."""
    rng = np.random.default_rng(seed)
    betas = [gp_function(rng) for _ in range(2)]
    C = rng.uniform(-1, 1, (n, 1))
    C[:2, 0] = (-1.0, 1.0)
    X = rng.normal(size=(n, 2))
    B = np.stack([f(C[:, 0]) for f in betas], axis=1)
    Y = np.sum(B * X, axis=1) + NOISE * rng.normal(size=n)
    return C, X, Y, betas


def fit_regressor(seed, **kwargs):
    C, X, Y, betas = simulate(seed)
    est = ContextualizedRegressor(uncertainty=True, normalize=False, random_state=seed,
                                  num_samples=200, **kwargs)
    return est.fit(C, X, Y), betas


@pytest.fixture(scope="module")
def fitted():
    return fit_regressor(0)


def coverage_counts(seeds, rng):
    """One held-out context per data set (uniform on [-1, 1], as the training contexts):
    whether each coefficient's 90% interval covers the truth there, and the widths."""
    hits, widths = [], []
    for seed in seeds:
        est, betas = fit_regressor(seed)
        c = rng.uniform(-1, 1, (1, 1))
        b, _ = est.predict_params(c, interval=LEVEL)
        truth = np.array([f(c[:, 0])[0] for f in betas])
        hits.append((b.lower[0, 0] <= truth) & (truth <= b.upper[0, 0]))
        widths.append(b.upper[0, 0] - b.lower[0, 0])
    return np.asarray(hits).ravel(), np.asarray(widths).ravel()


def assert_binomial(hits, level, z):
    n, k = hits.size, int(hits.sum())
    sd = math.sqrt(n * level * (1 - level))
    assert abs(k - n * level) <= z * sd, (f"{k}/{n} = {k / n:.3f} intervals cover the truth; "
                                          f"nominal {level}, binomial SD {sd / n:.3f}")


def test_coverage_at_small_size():
    """12 independent data sets, one held-out interval per coefficient each: the number of
    covering intervals is Binomial(24, 0.9) when the intervals are calibrated; 3 SD."""
    hits, widths = coverage_counts(range(100, 112), np.random.default_rng(7))
    assert_binomial(hits, LEVEL, 3.0)
    assert np.all(widths > 0)


@pytest.mark.slow
def test_coverage_over_200_data_sets():
    """200 data sets, 400 intervals: coverage within 3 binomial SDs (1.5%) of 90%."""
    hits, widths = coverage_counts(range(1000, 1200), np.random.default_rng(11))
    assert_binomial(hits, LEVEL, 3.0)


def test_intervals_widen_away_from_the_data(fitted):
    est, betas = fitted
    assert est.fit_.method == "marginal" and est.fit_.converged
    inside = np.array([[-0.5], [0.0], [0.5]])
    outside = np.array([[-2.2], [2.2]])  # within the basis box (2.5 half-ranges), no data
    b_in, _ = est.predict_params(inside, interval=LEVEL)
    b_out, _ = est.predict_params(outside, interval=LEVEL)
    w_in, w_out = ((b.upper - b.lower)[:, 0] for b in (b_in, b_out))
    assert np.all(w_out.min(axis=0) > 2 * w_in.max(axis=0)), (w_in, w_out)


def test_predict_interval_is_the_interval_of_the_regression_function(fitted):
    """At x = 0 the expected outcome is the intercept: the same draws, the same interval;
    at x = e_1 it is beta_1 + mu, draw by draw."""
    est, _ = fitted
    C = np.linspace(-1, 1, 7)[:, None]
    X0 = np.zeros((7, 2))
    y = est.predict(C, X0, interval=LEVEL)
    _, mu = est.predict_params(C, interval=LEVEL)
    np.testing.assert_allclose(y.lower, mu.lower[:, 0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(y.upper, mu.upper[:, 0], rtol=1e-6, atol=1e-7)
    X1 = np.tile([1.0, 0.0], (7, 1))
    draws = est.predict(C, X1, individual_preds=True)
    b, m = est.predict_params(C, individual_preds=True)
    np.testing.assert_allclose(draws, b[:, :, 0, 0] + m[:, :, 0], rtol=1e-6, atol=1e-7)
    y1 = est.predict(C, X1, interval=LEVEL)
    assert np.all(y1.lower < y1.estimate) and np.all(y1.estimate < y1.upper)


def test_save_load_round_trips_exactly(fitted, tmp_path):
    est, _ = fitted
    assert est.get_params()["uncertainty"] is True
    path = os.path.join(tmp_path, "est.npz")
    est.save(path)
    back = ContextualizedRegressor.load(path)
    assert back.uncertainty is True and back.fit_.method == "marginal"
    assert back.gp_domain_ == est.gp_domain_
    C = np.linspace(-2, 2, 9)[:, None]
    X = np.random.default_rng(0).normal(size=(9, 2))
    for a, b in zip(est.predict_params(C, individual_preds=True),
                    back.predict_params(C, individual_preds=True), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(est.predict(C, X, interval=LEVEL), back.predict(C, X, interval=LEVEL),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_contexts_outside_the_basis_box_warn(fitted):
    est, _ = fitted
    with pytest.warns(RuntimeWarning, match="outside the box of the Gaussian-process basis"):
        est.predict_params(np.array([[5.0]]), interval=LEVEL)


@pytest.mark.parametrize("kwargs, name", [
    ({"n_bootstraps": 3}, "n_bootstraps"),
    ({"inference": "svi"}, "inference"),
    ({"val_split": 0.2}, "val_split"),
])
def test_options_that_do_not_combine_are_named(kwargs, name):
    C, X, Y, _ = simulate(0, n=20)
    with pytest.raises(ValueError, match=f"leave `{name}`"):
        ContextualizedRegressor(uncertainty=True, **kwargs).fit(C, X, Y)


def test_uncertainty_must_be_a_bool():
    C, X, Y, _ = simulate(0, n=20)
    with pytest.raises(TypeError, match="`uncertainty` must be True or False; got 'yes'"):
        ContextualizedRegressor(uncertainty="yes").fit(C, X, Y)


def _net_data():
    C, X, _, _ = simulate(1, n=60)
    return C, X + 0.5 * C


def _intervals(out):
    """The Interval tuples in an estimator's output (one, or a tuple of them)."""
    return [out] if hasattr(out, "lower") else list(out)


def _round_trip(est, out, tmp_path):
    """``out(est)``: intervals of the fitted estimator; the loaded one gives the same, bit
    for bit, and they have width."""
    assert est.fit_.method == "marginal"
    path = os.path.join(tmp_path, "est.npz")
    est.save(path)
    back = type(est).load(path)
    assert back.uncertainty is True and back.fit_.method == "marginal"
    first, again = _intervals(out(est)), _intervals(out(back))
    assert len(first) == len(again)
    for a, b in zip(first, again, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    lo, hi = first[0].lower, first[0].upper
    assert np.all(lo <= hi) and np.any(lo < hi)


@pytest.mark.parametrize("cls", [ContextualizedClassifier, pytest.param(
    ContextualGAMClassifier, marks=pytest.mark.slow)], ids=["classifier", "gam-classifier"])
def test_classifier_round_trips(cls, tmp_path):
    C, X, Y, _ = simulate(2, n=60)
    labels = np.random.default_rng(2).random(60) < 1 / (1 + np.exp(-Y))  # logistic, not separable
    est = cls(uncertainty=True, normalize=False, random_state=0, num_samples=50)
    est.fit(C, X, labels)
    _round_trip(est, lambda e: e.predict_proba(C[:7], X[:7], interval=LEVEL), tmp_path)


@pytest.mark.slow
def test_gam_regressor_round_trips(tmp_path):
    C, X, Y, _ = simulate(3, n=60)
    est = ContextualGAMRegressor(uncertainty=True, random_state=0, num_samples=50)
    _round_trip(est.fit(C, X, Y), lambda e: e.predict(C[:7], X[:7], interval=LEVEL),
                tmp_path)


# a network's Gaussian-process program compiles for ~25-90 s on 2 cores: make test-slow
@pytest.mark.parametrize("cls", [
    pytest.param(ContextualizedMarkovNetworks, marks=pytest.mark.slow),
    pytest.param(ContextualizedCorrelationNetworks, marks=pytest.mark.slow),
    pytest.param(ContextualizedBayesianNetworks, marks=pytest.mark.slow),
], ids=["markov", "correlation", "bayesian"])
def test_network_estimators_round_trip(cls, tmp_path):
    C, X = _net_data()
    est = cls(uncertainty=True, random_state=0, num_samples=50).fit(C, X)
    _round_trip(est, lambda e: e.predict_params(C[:7], interval=LEVEL), tmp_path)
