"""Formula syntax, design building and the marginal engine on small exact references."""

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, special, stats

import ctxppl as ctx
from ctxppl.models.mixed import parse_formula


@pytest.mark.parametrize("formula,fixed,groups,correlated", [
    ("y ~ x + (x | g)", "x", ["g"], [True]),
    ("y ~ x + (x || g)", "x", ["g"], [False]),
    ("y ~ 0 + x * C(f) + (1 | a/b)", "0 + x * C(f)", ["a", "a:b"], [True, True]),
    ("y ~ -1 + x + (1 | a) + (0 + x | b)", "- 1 + x", ["a", "b"], [True, True]),
    ("y ~ (1 | g)", "1", ["g"], [True]),
    ("log(y) ~ `odd name` + (1 | `odd g`) + offset(log(n))", "`odd name`", ["odd g"], [True]),
])
def test_parse(formula, fixed, groups, correlated):
    p = parse_formula(formula)
    assert p.fixed == fixed
    assert [t.group for t in p.random] == groups
    assert [t.correlated for t in p.random] == correlated


def test_parse_offsets_and_cbind():
    p = parse_formula("cbind(s, n - s) ~ x + offset(log(t)) + (1 | g)")
    assert p.cbind == ("s", "n - s") and p.offsets == ("log(t)",) and p.fixed == "x"


@pytest.fixture
def data(rng):
    G, m = 12, 8
    g = np.repeat(np.arange(G), m)
    d = pd.DataFrame({"g": g, "x": rng.normal(size=G * m),
                      "f": rng.choice(["lo", "mid", "hi"], size=G * m)})
    b = rng.normal(size=(G, 2)) * [1.0, 0.4]
    d["y"] = 0.5 + 1.5 * d.x + (d.f == "hi") + b[g, 0] + b[g, 1] * d.x + rng.normal(size=G * m)
    d["count"] = rng.poisson(np.exp(0.3 + 0.2 * d.x + 0.5 * b[g, 0]))
    return d


def test_ml_loglik_equals_dense_multivariate_normal(data):
    """The profiled deviance is the exact marginal likelihood: check it against
    y ~ N(X beta, sigma^2 I + Z Sigma Z^T) evaluated densely with scipy."""
    res = ctx.mixed("y ~ x + C(f) + (x | g)", data, reml=False)
    des = res.design
    blk = des.blocks[0]
    Z = np.zeros((des.n, blk.factor.size * 2))
    for a in range(2):
        Z[np.arange(des.n), blk.factor.codes * 2 + a] = blk.Z[:, a]
    S = res.random_effects["sd"].to_numpy()[:2]
    r = res.correlations["g"].iloc[0, 1]
    cov_b = np.array([[S[0] ** 2, r * S[0] * S[1]], [r * S[0] * S[1], S[1] ** 2]])
    V = res.sigma ** 2 * np.eye(des.n) + Z @ np.kron(np.eye(blk.factor.size), cov_b) @ Z.T
    ll = stats.multivariate_normal(des.X @ res.params.to_numpy(), V).logpdf(des.y)
    assert res.loglik == pytest.approx(ll, abs=2e-3)
    assert list(res.params.index) == ["Intercept", "x", "C(f)[T.lo]", "C(f)[T.mid]"]


def test_uncorrelated_bars_equal_separate_terms(data):
    a = ctx.mixed("y ~ x + (x || g)", data)
    b = ctx.mixed("y ~ x + (1 | g) + (0 + x | g)", data)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-5)
    np.testing.assert_allclose(a.random_effects["sd"], b.random_effects["sd"], rtol=1e-4)
    assert "g" not in a.correlations or np.allclose(a.correlations["g"], np.eye(2))


def test_nested_equals_explicit_interaction_labels(data):
    d = data.assign(a=data.g // 3, b=data.g % 3)
    d["y"] += np.array([-2.0, 0.5, 1.0, 2.5])[d.a]  # a between-`a` component
    nested = ctx.mixed("y ~ x + (1 | a/b)", d)
    explicit = ctx.mixed("y ~ x + (1 | a) + (1 | ab)", d.assign(ab=d.a * 10 + d.b))
    np.testing.assert_allclose(nested.params, explicit.params, rtol=1e-5)
    np.testing.assert_allclose(nested.random_effects["sd"], explicit.random_effects["sd"],
                               rtol=1e-3)
    assert list(nested.ngroups) == ["a", "a:b"] and nested.ngroups["a:b"] == 12


def test_poisson_weights_equal_duplicated_rows(data):
    w = ctx.mixed("count ~ x + (1 | g)", data, family="poisson", weights=np.full(len(data), 2.0))
    dup = ctx.mixed("count ~ x + (1 | g)", pd.concat([data, data]), family="poisson")
    np.testing.assert_allclose(w.params, dup.params, rtol=1e-4)
    np.testing.assert_allclose(w.random_effects["sd"], dup.random_effects["sd"], rtol=1e-3)


def test_gaussian_precision_weights(data):
    """Var(y_i) = sigma^2 / w_i: constant weights c leave beta and the random-effect SDs
    unchanged and multiply sigma by sqrt(c)."""
    base = ctx.mixed("y ~ x + (1 | g)", data)
    w = ctx.mixed("y ~ x + (1 | g)", data, weights=np.full(len(data), 4.0))
    np.testing.assert_allclose(w.params, base.params, rtol=1e-5)
    assert w.random_effects["sd"][0] == pytest.approx(base.random_effects["sd"][0], rel=1e-4)
    assert w.sigma == pytest.approx(2.0 * base.sigma, rel=1e-5)


def test_offset_shifts_intercept(data):
    a = ctx.mixed("count ~ x + (1 | g)", data, family="poisson")
    b = ctx.mixed("count ~ x + offset(log(t)) + (1 | g)", data.assign(t=np.e ** 0.7),
                  family="poisson")
    assert b.params["Intercept"] == pytest.approx(a.params["Intercept"] - 0.7, abs=1e-4)
    assert b.params["x"] == pytest.approx(a.params["x"], abs=1e-4)
    pred = b.predict(data.assign(t=np.e ** 0.7).head(5))
    np.testing.assert_allclose(pred, a.predict(data.head(5)), rtol=1e-4)


def test_poisson_laplace_matches_scipy_reference(data):
    """Independent Laplace approximation (scipy: 1-D conditional modes per group) at the
    fitted parameters gives the same deviance, and the fit is its minimum."""
    res = ctx.mixed("count ~ x + (1 | g)", data, family="poisson")
    y, x, g = data["count"].to_numpy(), data["x"].to_numpy(), data["g"].to_numpy()

    def laplace_dev(psi):
        b0, b1, s = psi
        total = 0.0
        for j in np.unique(g):
            yj, xj = y[g == j], x[g == j]

            def negh(u):
                eta = b0 + b1 * xj + s * u
                return -(np.sum(yj * eta - np.exp(eta) - special.gammaln(yj + 1)) - 0.5 * u * u)

            u = optimize.minimize_scalar(negh, bounds=(-10, 10), method="bounded",
                                         options={"xatol": 1e-10}).x
            hess = s * s * np.sum(np.exp(b0 + b1 * xj + s * u)) + 1.0
            total += 2 * negh(u) + np.log(hess)
        return total

    psi = np.array([res.params["Intercept"], res.params["x"], res.random_effects["sd"][0]])
    assert laplace_dev(psi) == pytest.approx(res.deviance, abs=1e-3)
    h = 1e-3
    for i in range(3):
        e = np.eye(3)[i] * h
        grad = (laplace_dev(psi + e) - laplace_dev(psi - e)) / (2 * h)
        assert abs(grad) < 0.05, (i, grad)


def test_categorical_prediction_and_tables(data):
    res = ctx.mixed("y ~ x * C(f) + (1 | g)", data)
    new = pd.DataFrame({"x": [0.5], "f": ["hi"], "g": [3]})
    beta = res.params
    want = beta["Intercept"] + 0.5 * beta["x"] + res.ranef().loc[3, "Intercept"]
    assert res.predict(new)[0] == pytest.approx(want, rel=1e-6)
    assert res.predict(new, include_random=False)[0] == pytest.approx(
        beta["Intercept"] + 0.5 * beta["x"], rel=1e-6)
    assert set(res.fixed_effects.columns) == {"estimate", "std_error", "t_value", "2.5%",
                                              "97.5%"}
    text = res.summary()
    assert "Random effects" in text and "x:C(f)[T.lo]" in text
