"""The host (NumPy float64) Laplace engine of GLMMs with several grouping factors.

Its deviance must equal the jitted Laplace deviance (``_laplace.laplace_deviance``, an
independent implementation: JAX, penalised IRLS from zero) and its closed-form gradient
JAX's reverse-mode autodiff of that deviance (through the implicit derivative of the
conditional mode), for every family and link, random slopes (correlated and not) included.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from ctxppl.models.mixed._api import _design
from ctxppl.models.mixed._glmm_host import LaplaceHost, fit_laplace_host
from ctxppl.models.mixed._laplace import GLMMData, laplace_deviance
from ctxppl.models.mixed._marginal import _dense_cols, choose_structure


def _data(seed=0, n=300):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.integers(0, 15, n), "b": rng.integers(0, 8, n),
                       "x": rng.normal(size=n)})
    eta = (0.3 + 0.5 * df.x + 0.6 * rng.normal(size=15)[df.a] + 0.4 * rng.normal(size=8)[df.b]
           + 0.3 * rng.normal(size=8)[df.b] * df.x)
    p = 1 / (1 + np.exp(-eta))
    df["cnt"] = rng.poisson(np.exp(eta))
    df["bin"] = (rng.random(n) < p).astype(float)
    df["k"] = rng.binomial(5, p)
    df["nbc"] = rng.negative_binomial(3, 3 / (3 + np.exp(eta)))
    return df


CASES = [  # formula, family, link
    ("cnt ~ x + (1 | a) + (1 | b)", "poisson", None),
    ("cnt ~ x + (1 | a) + (x | b)", "poisson", None),
    ("bin ~ x + (1 | a) + (x || b)", "bernoulli", "probit"),
    ("k ~ x + (1 | a) + (1 | b)", "binomial", None),
    ("nbc ~ x + (1 | a) + (x | b)", "negative_binomial", None),
]


def _host(formula, family, link, df):
    n = len(df)
    trials = np.full(n, 5.0) if family == "binomial" else None
    des = _design(formula, df, family, link, None, None, None, trials, "raise")
    s = choose_structure(des)
    Z, cols = _dense_cols(des)
    Q = sum(G * q for G, q in s.sizes)
    args = (des.family, des.y, des.X, Z, cols, np.ones(n), np.zeros(n), des.trials, s, Q)
    return des, s, Q, args


def _points(des, host, family, rng, k=3):
    return [np.concatenate([0.3 * rng.normal(size=des.p), rng.uniform(0.3, 1.0, host.n_theta),
                            [np.log(3.0)] if family == "negative_binomial" else []])
            for _ in range(k)]


def _jax_data(args):
    y, X, Z, cols, w, off, trials = args[1:8]
    return GLMMData(*(jnp.asarray(a) for a in (y, X, Z, cols, w, off)),
                    None if trials is None else jnp.asarray(trials))


IDS = ["poisson", "poisson-slope", "probit", "binomial", "negbin"]


@pytest.mark.parametrize("formula,family,link", CASES, ids=IDS)
def test_laplace_host_matches_jax_deviance_and_differences(formula, family, link):
    """Deviance = the jitted one (forward only); gradient = central differences of the host
    deviance, extrapolated (Richardson) from steps 1e-3 and 5e-4: truncation O(h^4), and
    the deviance's rounding (~1e-10 absolute here) divided by h ~ 2e-7."""
    df = _data()
    des, s, Q, args = _host(formula, family, link, df)
    host = LaplaceHost(*args)
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        data = _jax_data(args)
        dev = jax.jit(lambda p: laplace_deviance(p, data, s, des.family, Q)[0])
        for psi in _points(des, host, family, rng, 2):
            out = host.evaluate(psi)
            # the jitted inner loop stops at |du| < 1e-6: the deviance is stationary in u
            np.testing.assert_allclose(out["dev"], float(dev(jnp.asarray(psi))), rtol=1e-11)
            def central(h):  # noqa: ANN001, ANN202
                return np.array([(host.evaluate(psi + h * e, grad=False)["dev"]
                                  - host.evaluate(psi - h * e, grad=False)["dev"]) / (2 * h)
                                 for e in np.eye(psi.size)])

            fd = (4.0 * central(5e-4) - central(1e-3)) / 3.0  # Richardson: error O(h^4)
            np.testing.assert_allclose(out["grad"], fd, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("formula,family,link", CASES, ids=IDS)
def test_laplace_host_gradient_matches_autodiff(formula, family, link):
    """The closed-form gradient against JAX's reverse-mode autodiff of the jitted deviance
    (through the implicit derivative of the conditional mode); 7-25 s of compilation each."""
    df = _data()
    des, s, Q, args = _host(formula, family, link, df)
    host = LaplaceHost(*args)
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        data = _jax_data(args)
        vg = jax.jit(jax.value_and_grad(
            lambda p: laplace_deviance(p, data, s, des.family, Q)[0]))
        for psi in _points(des, host, family, rng):
            vd, gd = vg(jnp.asarray(psi))
            out = host.evaluate(psi)
            np.testing.assert_allclose(out["dev"], float(vd), rtol=1e-11)
            np.testing.assert_allclose(out["grad"], np.asarray(gd), rtol=1e-7,
                                       atol=1e-8 * np.max(np.abs(np.asarray(gd))))


def test_laplace_host_fit_is_stationary_and_reports_float64():
    """At the fitted optimum the exact gradient vanishes and the Hessian is positive definite
    (the standard errors exist); refitting from another start finds the same optimum."""
    df = _data(seed=2)
    des, s, Q, args = _host("cnt ~ x + (1 | a) + (x | b)", "poisson", None, df)
    psi0 = np.r_[np.zeros(des.p), 1.0, 1.0, 0.0, 1.0]
    a = fit_laplace_host(*args, psi0)
    b = fit_laplace_host(*args, np.r_[0.5, -0.5, 0.3, 0.4, 0.2, 0.5])
    assert a["status"] == 1 and b["status"] == 1
    assert np.max(np.abs(a["grad"])) < 1e-5
    assert np.all(np.linalg.eigvalsh(a["hess"]) > 0)
    np.testing.assert_allclose(a["deviance"], b["deviance"], rtol=1e-10)
    # the sign of a column of Lambda is not identified: compare Lambda Lambda^T
    host = LaplaceHost(*args)
    la = host.lambdas(a["psi"][des.p:des.p + host.n_theta])
    lb = host.lambdas(b["psi"][des.p:des.p + host.n_theta])
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_allclose(x @ x.T, y @ y.T, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(a["psi"][:des.p], b["psi"][:des.p], rtol=1e-5)
