"""Update rules against closed forms, float64 references and Lambda Learner's objective."""

import numpy as np
import pytest
import scipy.optimize

import ctxppl as ctx
from ctxppl.online import _updates

from ._ref import laplace_step

D = 3
EPS32 = float(np.finfo(np.float32).eps)


def f32_tol(h, scale=1.0):
    """Float32 error bound of a Cholesky solve: c * d * eps * cond(H) * scale (c = 20)."""
    return 20 * h.shape[-1] * EPS32 * np.linalg.cond(h) * scale


def design(rng, n, d=D):
    x = rng.normal(size=(n, d))
    x[:, 0] = 1.0
    return x


def logistic_data(rng, n, theta):
    x = design(rng, n, theta.size)
    y = (rng.random(n) < 1 / (1 + np.exp(-x @ theta))).astype(float)
    return x, y


def test_gaussian_sequential_equals_batch(rng):
    """Gaussian likelihood (Bayesian linear regression with known noise variance): the log
    posterior is quadratic, so each Laplace step is exact and k sequential updates with
    delta=1 must equal the one-shot posterior on all records -- mean and full precision."""
    sigma2, p0 = 0.5, 2.0
    re = ctx.online.RandomEffects(ctx.online.bayes_linear(p0, noise_variance=sigma2), D)
    ents = np.array([3, 7, 9])
    xs, ys, es, os_ = [], [], [], []
    for step in range(4):  # ragged: entities get different numbers of records per batch
        e = rng.permutation(np.repeat(ents, rng.integers(9, 17, size=3)))
        x = design(rng, e.size)
        y = x @ np.array([0.5, -1.0, 2.0]) + rng.normal(size=e.size)
        o = rng.normal(size=e.size)
        re.update(e, x, y, offset=o, step=step)
        xs.append(x), ys.append(y), es.append(e), os_.append(o)
    x, y, e, o = map(np.concatenate, (xs, ys, es, os_))
    for ent in ents:
        sel = e == ent
        prec = p0 * np.eye(D) + x[sel].T @ x[sel] / sigma2
        mean = np.linalg.solve(prec, x[sel].T @ (y[sel] - o[sel]) / sigma2)
        m, P = re.lookup([ent])
        tol = f32_tol(prec, 4)  # four sequential updates
        np.testing.assert_allclose(m[0], mean, atol=tol * (1 + np.abs(mean).max()))
        np.testing.assert_allclose(P[0], prec, atol=tol * np.abs(prec).max())


def test_ridge_equals_closed_form(rng):
    """ridge(alpha) with delta=1 over several minibatches equals the closed-form ridge
    solution (alpha I + X'X)^-1 X'(y - o) on every record seen, for every entity."""
    alpha = 0.7
    re = ctx.online.RandomEffects(ctx.online.ridge(alpha), D, threads=1)
    keys = np.array(["a", "b", "c", "d"])
    e = np.concatenate([rng.permutation(np.repeat(keys, [10, 12, 14, 16])) for _ in range(3)])
    x = design(rng, e.size)
    y = rng.normal(size=e.size)
    o = rng.normal(size=e.size)
    for lo in range(0, e.size, 52):
        re.update(e[lo:lo + 52], x[lo:lo + 52], y[lo:lo + 52], offset=o[lo:lo + 52])
    assert re.step == 2
    for k in keys:
        s = e == k
        h = alpha * np.eye(D) + x[s].T @ x[s]
        want = np.linalg.solve(h, x[s].T @ (y[s] - o[s]))
        got = re.coefficients([k])[0]
        np.testing.assert_allclose(got, want, atol=f32_tol(h, 3) * (1 + np.abs(want).max()))
        assert re.state.count[re._index.rows([k])[0]] == s.sum()


@pytest.mark.parametrize("family", ["bernoulli", "poisson"])
def test_one_minibatch_is_the_laplace_fit(family, rng):
    """With one minibatch the sequential rule *is* the Laplace fit of prior x likelihood:
    the posterior mode and the Hessian of the negative log posterior there (float64 Newton
    reference), for several entities with different record counts at once."""
    r = ctx.online.rule(family, prior_precision=1.5)
    re = ctx.online.RandomEffects(r, D)
    e = np.repeat([0, 1, 2, 3], [9, 13, 16, 11])
    x = design(rng, e.size)
    eta = x @ np.array([0.3, 0.5, -0.4])
    y = (rng.random(e.size) < 1 / (1 + np.exp(-eta))).astype(float) if family == "bernoulli" \
        else rng.poisson(np.exp(eta)).astype(float)
    re.update(e, x, y)
    for ent in range(4):
        s = e == ent
        m_ref, h_ref = laplace_step(family, np.zeros(D), 1.5 * np.eye(D), np.zeros(D),
                                    np.full(D, 1.5), 1.0, x[s], y[s], np.zeros(s.sum()),
                                    np.ones(s.sum()))
        m, P = re.lookup([ent])
        tol = f32_tol(h_ref) + float(np.sqrt(EPS32)) ** 2 * 10  # solve + Newton stop
        np.testing.assert_allclose(m[0], m_ref, atol=tol * (1 + np.abs(m_ref).max()))
        np.testing.assert_allclose(P[0], h_ref, atol=tol * np.abs(h_ref).max())


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_logistic_sequential_follows_the_laplace_recursion(covariance, rng):
    """k > 1 minibatches of a logistic likelihood: sequential Laplace is NOT the batch
    Laplace fit (each earlier batch enters only through its quadratic expansion at the mean
    of its own step, which is exact only for Gaussian likelihoods -- see
    test_gaussian_sequential_equals_batch and the k = 1 case above). What must hold exactly
    is the recursion m_j = argmin nll_j + (1/2)|theta - m_{j-1}|^2_{P_{j-1}},
    P_j = P_{j-1} + H_j(m_j): compared here with a float64 reference, carrying the full (or
    diagonal) precision across 3 minibatches, with forgetting delta = 0.9."""
    delta, p0 = 0.9, 1.0
    r = ctx.online.bayes_logistic(p0, delta=delta, covariance=covariance)
    re = ctx.online.RandomEffects(r, D)
    theta = np.array([0.2, 1.0, -0.5])
    m, P = np.zeros(D), p0 * np.eye(D)
    for step in range(3):
        x, y = logistic_data(rng, 16, theta)
        re.update(np.zeros(16, int), x, y, step=step)
        m, h = laplace_step("bernoulli", m, P, np.zeros(D), np.full(D, p0), delta, x, y,
                            np.zeros(16), np.ones(16))
        P = h if covariance == "full" else np.diag(np.diag(h))
    got_m, got_p = re.lookup([0])
    tol = 3 * (f32_tol(P) + 10 * EPS32)
    np.testing.assert_allclose(got_m[0], m, atol=tol * (1 + np.abs(m).max()))
    want_p = P if covariance == "full" else np.diag(P)
    np.testing.assert_allclose(got_p[0], want_p, atol=tol * np.abs(P).max())


# ---------------------------------------------------------------- Lambda Learner objective
def _ll_minimize(loss, grad, theta0):
    """Lambda Learner's TrainerLBGFS.train: scipy fmin_l_bfgs_b with its defaults."""
    th, _, info = scipy.optimize.fmin_l_bfgs_b(loss, theta0, fprime=grad, m=10, factr=1e7,
                                               maxiter=15000)
    assert info["warnflag"] == 0
    return th


def _ll_seq_bayes(x, ypm, w, off, theta0, h0, lam, delta):
    """linkedin.learner.prediction.TrainerSequentialBayesianLogisticLossWithL2 (0.1.0):
    loss, gradient and _update_full_hessian, transcribed from its source."""

    def exp_aff(th):
        return np.exp(-ypm * (x @ th + off))

    def loss(th):
        penalty = th @ th * lam * (1 - delta) / 2.0
        loglik = -(w * np.log(exp_aff(th) + 1)).sum() - penalty
        dev = th - theta0
        return -loglik + dev @ (h0 @ dev) * delta * 0.5

    def grad(th):
        denom = 1 / exp_aff(th) + 1
        loglik_prime = (ypm * w / denom) @ x - th * lam * (1 - delta)
        return -loglik_prime + h0 @ (th - theta0) * delta

    th = _ll_minimize(loss, grad, theta0)
    s = 1.0 / (1 + exp_aff(th))
    hess = h0 * delta + (x * (s * (1 - s))[:, None]).T @ x + (1 - delta) * lam * np.eye(len(th))
    return th, hess


def test_matches_lambda_learner_sequential_bayes_objective(rng):
    """bayes_logistic(lam, delta) is Lambda Learner's TrainerSequentialBayesianLogisticLossWithL2
    (penalty=lam, delta, HessianType.FULL): over two minibatches (the Hessian carried), the
    coefficients agree within 1e-3 (the peer's L-BFGS stops at factr=1e7, pgtol=1e-5; our
    Newton solve is exact to float32) and the Hessians within 1e-3 relative. The real
    package is run side by side in bench/online.py."""
    lam, delta = 2.0, 0.8
    re = ctx.online.RandomEffects(ctx.online.bayes_logistic(lam, delta=delta), D)
    theta_ll, h_ll = np.zeros(D), lam * np.eye(D)  # LL's default initial model
    for step in range(2):
        x, y = logistic_data(rng, 16, np.array([-0.3, 1.2, 0.7]))
        off = 0.3 * rng.normal(size=16)
        re.update(np.ones(16, int), x, y, offset=off, step=step)
        theta_ll, h_ll = _ll_seq_bayes(x, 2 * y - 1, np.ones(16), off, theta_ll, h_ll, lam,
                                       delta)
        m, P = re.lookup([1])
        np.testing.assert_allclose(m[0], theta_ll, atol=1e-3)
        np.testing.assert_allclose(P[0], h_ll, rtol=1e-3, atol=1e-3)


def test_matches_lambda_learner_l2_objectives(rng):
    """logistic(lam) is TrainerLogisticLossWithL2 and ridge(lam, delta=0) is
    TrainerSquareLossWithL2: each minibatch fitted alone with an L2 penalty (objectives
    transcribed from linkedin.learner 0.1.0); coefficients within 1e-3."""
    lam = 3.0
    n = 16
    x, y = logistic_data(rng, n, np.array([0.5, -1.0, 1.0]))
    off = 0.2 * rng.normal(size=n)
    ypm = 2 * y - 1

    def loss(th):
        return (np.log(np.exp(-ypm * (x @ th + off)) + 1)).sum() + th @ th * lam / 2.0

    def grad(th):
        denom = 1 / np.exp(-ypm * (x @ th + off)) + 1
        return -((ypm / denom) @ x - th * lam)

    want = _ll_minimize(loss, grad, np.zeros(D))
    re = ctx.online.RandomEffects(ctx.online.logistic(lam), D)
    re.update(np.zeros(n, int), x, np.ones(n), offset=off)  # first batch: all ones
    re.update(np.zeros(n, int), x, y, offset=off)  # no memory: only this batch counts
    np.testing.assert_allclose(re.coefficients([0])[0], want, atol=1e-3)

    yr = x @ np.array([1.0, 2.0, -1.0]) + rng.normal(size=n)

    def sq_loss(th):
        res = x @ th + off - yr
        return 0.5 * res @ res + 0.5 * lam * th @ th

    def sq_grad(th):
        return x.T @ (x @ th + off - yr) + lam * th

    want = _ll_minimize(sq_loss, sq_grad, np.zeros(D))
    re = ctx.online.RandomEffects(ctx.online.ridge(lam, delta=0.0), D)
    re.update(np.zeros(n, int), x, 5 + yr, offset=off)
    re.update(np.zeros(n, int), x, yr, offset=off)
    np.testing.assert_allclose(re.coefficients([0])[0], want, atol=1e-3)


# ---------------------------------------------------------------- the jitted core itself
def test_entity_result_does_not_depend_on_batchmates(rng):
    """Converged entities are frozen and Hessians are per entity, so an entity's update is
    the same alone and inside a batch of 80 (two 64-entity chunks) -- what makes sharded
    (Dask) runs equal single-process runs."""
    r = ctx.online.bayes_logistic(1.0)
    e = np.repeat(np.arange(80), 12)
    x = design(rng, e.size)
    y = (rng.random(e.size) < 0.5).astype(float)
    both = ctx.online.RandomEffects(r, D)
    both.update(e, x, y)
    for ent in (0, 79):
        alone = ctx.online.RandomEffects(r, D)
        s = e == ent
        alone.update(e[s], x[s], y[s])
        np.testing.assert_allclose(alone.coefficients([ent]), both.coefficients([ent]),
                                   rtol=1e-6, atol=1e-7)


def test_update_entities_compiles_once(rng):
    """Same rule and shapes: the second call reuses the compiled function."""
    r = ctx.online.bayes_logistic(1.0)
    U, n = 5, 16
    args = lambda: (np.zeros((U, D), np.float32), np.tile(np.eye(D, dtype=np.float32), (U, 1, 1)),
                    np.zeros((U, D), np.float32), rng.normal(size=(U, n, D)).astype(np.float32),
                    (rng.random((U, n)) < 0.5).astype(np.float32),
                    np.zeros((U, n), np.float32), np.ones((U, n), np.float32))
    ctx.online.update_entities(r, *args())
    before = _updates._update_chunk._cache_size()
    out = ctx.online.update_entities(r, *args())
    assert _updates._update_chunk._cache_size() == before
    assert out.mean.shape == (U, D) and np.all(np.asarray(out.status) == 0)


def test_rule_and_shape_errors():
    with pytest.raises(ValueError, match="`delta`"):
        ctx.online.rule("bernoulli", delta=1.5)
    with pytest.raises(ValueError, match="`family`"):
        ctx.online.rule("gamma")
    with pytest.raises(ValueError, match="`prior_precision`"):
        ctx.online.ridge(-1.0)
    with pytest.raises(ValueError, match="`covariance`"):
        ctx.online.rule(covariance="lowrank")
    with pytest.raises(ValueError, match="`precision` must have shape"):
        ctx.online.update_entities(ctx.online.ridge(), np.zeros((2, D)), np.zeros((2, D)),
                                   np.zeros((2, D)), np.zeros((2, 4, D)), np.zeros((2, 4)),
                                   np.zeros((2, 4)), np.ones((2, 4)))


def test_backtracking_rescues_an_overshooting_newton_step():
    """Poisson counts near 1000 seen from theta = 0: the first Newton step (+999) overflows
    float32 (exp(999) = inf); backtracking must shorten it and the solve still reach the
    exact mode of n e^theta - sum(y) + p0 theta = 0 (scipy root, float64)."""
    y = np.tile([990.0, 1000.0, 1010.0, 1003.0, 997.0, 1000.0, 995.0, 1005.0], 2)
    x = np.zeros((y.size, D))
    x[:, 0] = 1.0  # intercept only (the other coefficients stay at the prior)
    re = ctx.online.RandomEffects(ctx.online.bayes_poisson(0.5), D)
    rep = re.update(np.zeros(y.size, int), x, y)
    assert rep.max_iter > 3
    want = scipy.optimize.brentq(lambda t: y.size * np.exp(t) - y.sum() + 0.5 * t, 0, 20)
    np.testing.assert_allclose(re.coefficients([0])[0], [want, 0, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(re.lookup([0])[1][0, 0, 0], y.size * np.exp(want) + 0.5,
                               rtol=1e-4)
