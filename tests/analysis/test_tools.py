"""Effects arrays, bootstrap selection, embeddings and accuracy by covariate groups."""

import os

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
import pytest
from sklearn.decomposition import PCA
from sklearn.metrics import mean_squared_error, roc_auc_score

import ctxppl as ctx
from ctxppl import analysis as A
from ctxppl.analysis._effects import one_at_a_time
from ctxppl.analysis._embeddings import model_matrix
from ctxppl.analysis._source import draw_source
from ctxppl.estimators import ContextualizedRegressor

from ._fits import Q_NULL, B


class Toy:
    """beta(c) = (a_s c_0, 2) for 3 draws a_s, mu(c) = c_1 + s; names as a fitted estimator."""

    context_names_ = ["age", "dose"]
    feature_names_ = ["x", "z"]
    target_names_ = ["y"]

    def predict_params(self, C, individual_preds=False):
        a = np.array([0.5, 1.0, 1.5])[:, None]
        beta = np.stack(np.broadcast_arrays(a * C[None, :, 0], 2.0), -1)[:, :, None, :]
        mu = (C[None, :, 1] + np.arange(3.0)[:, None])[..., None]
        if not individual_preds:
            return beta.mean(0), mu.mean(0)
        return beta, mu


def test_effects_shapes_and_values():
    C = np.array([[0.0, -1.0], [2.0, 3.0], [1.0, 1.0]])
    c_vis, eff = A.get_homogeneous_context_effects(Toy(), C, n_vis=5)
    np.testing.assert_allclose(c_vis, np.linspace([0.0, -1.0], [2.0, 3.0], 5))
    assert eff.shape == (2, 3, 5, 1)
    # along c_1 (c_0 held at its mean 1): mu = c_1 + s; along c_0: mu = mean(c_1) + s = 1 + s
    np.testing.assert_allclose(eff[1, :, :, 0], c_vis[None, :, 1] + np.arange(3.0)[:, None])
    np.testing.assert_allclose(eff[0, :, :, 0], 1.0 + np.arange(3.0)[:, None] + 0 * c_vis[:, 0])
    _, eff0 = A.get_homogeneous_context_effects(Toy(), C, n_vis=5, reference="zero")
    np.testing.assert_allclose(eff0[0, :, :, 0], np.arange(3.0)[:, None] + 0 * c_vis[:, 0])
    _, mean_only = A.get_homogeneous_context_effects(Toy(), C, n_vis=5, individual_preds=False)
    assert mean_only.shape == (2, 5, 1)

    _, hom = A.get_homogeneous_predictor_effects(Toy(), C)
    assert hom.shape == (2, 3, 1)  # (predictors, draws, outcomes)
    np.testing.assert_allclose(hom[:, :, 0], [[0.5, 1.0, 1.5], [2.0, 2.0, 2.0]])

    _, het = A.get_heterogeneous_predictor_effects(Toy(), C, n_vis=5)
    assert het.shape == (2, 2, 3, 5, 1)  # (contexts, predictors, draws, grid, outcomes)
    centred = c_vis[:, 0] - c_vis[:, 0].mean()
    np.testing.assert_allclose(het[0, 0, :, :, 0], np.array([0.5, 1.0, 1.5])[:, None] * centred)
    np.testing.assert_allclose(het[1], 0.0, atol=1e-12)  # nothing varies along c_1
    np.testing.assert_allclose(het[:, 1], 0.0, atol=1e-12)  # predictor z is homogeneous


def test_effects_table_names():
    C = np.array([[0.0, -1.0], [2.0, 3.0], [1.0, 1.0]])
    t = A.effects_table(Toy(), C, "heterogeneous", method="normal")
    assert t.context.tolist() == ["age", "age", "dose", "dose"]
    assert t.predictor.tolist() == ["x", "z", "x", "z"] and set(t.outcome) == {"y"}
    assert set(t.source) == {"unknown"}
    with pytest.warns(UserWarning, match="smallest two-sided p-value"):  # 3 draws: >= 0.5
        p = A.effects_table(Toy(), C, "homogeneous_context")
    # mu along age: flat -> p = 1; along dose: every draw increases -> (1 + 0) / (3 + 1) * 2
    np.testing.assert_allclose(p.pvalue, [1.0, 0.5])


def test_one_at_a_time_and_grid():
    g = one_at_a_time(np.array([[0.0, 10.0], [1.0, 20.0]]), np.array([5.0, 6.0]))
    np.testing.assert_array_equal(g, [[[0.0, 6.0], [1.0, 6.0]], [[5.0, 10.0], [5.0, 20.0]]])
    assert A.maybe_make_c_vis(np.zeros((3, 2)) + [[0], [1], [2]], n_vis=3).shape == (3, 2)
    with pytest.raises(ValueError, match="`n_vis`"):
        A.make_grid_mat(np.zeros((3, 2)), 1)


# ---------------------------------------------------------------- select_good_bootstraps
def test_select_good_bootstraps(null_fit, tmp_path):
    est, C, X, Y = null_fit
    resid = (Y[None] - est.predict(C, X, individual_preds=True)) ** 2  # (B, n, q)
    assert resid.shape == (B, len(C), 1 + Q_NULL)
    errs = np.ones_like(resid)
    errs[::2] *= 3.0  # every other bootstrap is "bad": 3x the error of the best
    errs[1] = np.nan  # a diverged bootstrap
    good = A.select_good_bootstraps(est, errs, tol=2.0)
    kept = good.bootstraps_kept_
    np.testing.assert_array_equal(kept, np.arange(3, B, 2))
    assert est.fit_.batch_shape == (B,) and good.fit_.batch_shape == (len(kept),)
    assert good.n_bootstraps == est.n_bootstraps  # constructor argument untouched
    full = est.predict_params(C[:5], individual_preds=True)[0]
    sub = good.predict_params(C[:5], individual_preds=True)[0]
    np.testing.assert_allclose(sub, full[kept], rtol=1e-6, atol=1e-8)
    # the pruned estimator saves and loads like any other
    path = os.path.join(tmp_path, "pruned.npz")
    good.save(path)
    back = ContextualizedRegressor.load(path)
    np.testing.assert_allclose(back.predict_params(C[:5], individual_preds=True)[0], sub,
                               rtol=1e-6, atol=1e-8)
    # everything kept with a huge tol
    assert A.select_good_bootstraps(est, np.abs(resid), tol=1e9).fit_.batch_shape == (B,)
    with pytest.raises(ValueError, match="multiple"):
        A.select_good_bootstraps(est, errs[:-1])
    with pytest.raises(ValueError, match="every bootstrap"):
        A.select_good_bootstraps(est, np.full_like(errs, np.nan))
    with pytest.raises(ValueError, match="`tol`"):
        A.select_good_bootstraps(est, errs, tol=0.5)


def _linear_model(C, X, Y=None):
    enc = ctx.encoder("enc", ctx.nn.Linear(1, 1))
    with ctx.plate("n", C.shape[0], context=C):
        beta = ctx.contextual("beta", enc)
        numpyro.sample("y", dist.Normal(jnp.sum(X * beta, -1), 1.0), obs=Y)


def test_fitparams_fit_many_and_selection():
    rng = np.random.default_rng(5)
    C, X = rng.uniform(-1, 1, (60, 1)), rng.normal(size=(60, 1))
    Y = X[:, 0] * (1 + C[:, 0]) + 0.3 * rng.normal(size=60)
    fits = ctx.fit_many(_linear_model, C, X, Y, key=0, num_fits=4, bootstrap=True, plate="n",
                        num_steps=300, progress=False)
    P = A.FitParams(fits, lambda C: (C, np.ones((len(C), 1))), beta="beta")
    assert draw_source(P) == "bootstrap"
    betas, mus = P.predict_params(C[:3], individual_preds=True)
    assert betas.shape == (4, 3, 1) and mus is None
    good = A.select_good_bootstraps(P, np.array([[1.0], [5.0], [1.5], [1.2]]))
    assert good.bootstraps_kept_.tolist() == [0, 2, 3]
    np.testing.assert_allclose(good.predict_params(C[:3], individual_preds=True)[0],
                               betas[[0, 2, 3]], rtol=1e-6)
    with pytest.raises(ValueError, match="no site"):
        A.FitParams(fits, lambda C: (C, np.ones((len(C), 1))), beta="w").predict_params(C)
    with pytest.raises(TypeError, match="ctxppl.Fit"):
        A.FitParams(object(), lambda C: ())
    with pytest.raises(ValueError, match="n_bootstraps >= 2"):
        A.select_good_bootstraps(A.FitParams(fits[0], lambda C: ()), np.ones((1, 3)))


# ---------------------------------------------------------------- embeddings
def test_embeddings(null_fit):
    est, C, _, _ = null_fit
    M = model_matrix(est, C)
    assert M.shape == (len(C), (1 + Q_NULL) * 3)  # betas (q, 2) and mus (q,) per sample
    Z = A.embed_models(est, C, method="pca")
    # PCA of the standardised model matrix, as scikit-learn computes it
    Ms = (M - M.mean(0)) / M.std(0)
    ref = PCA(2, random_state=0).fit_transform(Ms)
    np.testing.assert_allclose(np.abs(Z), np.abs(ref), rtol=1e-6, atol=1e-8)
    T = A.embed_models(M[:60], method="tsne", random_state=0, max_iter=250)
    assert T.shape == (60, 2) and np.all(np.isfinite(T))
    # the linear model's parameters are an affine map of the 2 context features
    assert PCA(3).fit(Ms).explained_variance_ratio_[:2].sum() > 1 - 1e-6
    with pytest.raises(ValueError, match="`method`"):
        A.embed_models(M, method="umap")
    with pytest.raises(ValueError, match="more samples"):
        A.embed_models(M[:2], n_components=2)
    with pytest.raises(ValueError, match="at least 2-D"):
        A.embed_models(np.zeros(5))
    codes, vals = A.convert_to_one_hot(["b", "a", "c", "a"])
    assert codes.tolist() == [1, 0, 2, 0] and vals == ["a", "b", "c"]


# ---------------------------------------------------------------- accuracy by covariate
def test_acc_by_covars(capsys):
    rng = np.random.default_rng(2)
    n = 300
    g = rng.integers(0, 3, n)
    y = rng.integers(0, 2, n)
    s = y * (g + 0.5) + rng.normal(size=n)  # group 2 is easiest
    cov = pd.DataFrame({"g": g, "cont": rng.normal(size=n)})  # "cont": too many values
    t = A.acc_by_covars(y, s, cov)
    assert t.covariate.tolist() == ["g"] * 3 and t.group.tolist() == [0, 1, 2]
    for k in range(3):
        assert t.score[k] == pytest.approx(roc_auc_score(y[g == k], s[g == k]))
        assert t.n[k] == int(np.sum(g == k))
    train = np.arange(n) < 200
    ts = A.acc_by_covars(y, s, cov, train_idx=train, test_idx=~train, metric=mean_squared_error)
    m = (g == 1) & ~train
    assert ts.test[1] == pytest.approx(mean_squared_error(y[m], s[m]))
    out = A.print_acc_by_covars(y, s, cov)
    assert "Train" not in capsys.readouterr().out and len(out) == 3
    assert np.isnan(A.get_roc([1, 1, 1], [0.1, 0.2, 0.3]))
    # standardised covariates mapped back before grouping (input left unchanged)
    z = pd.DataFrame({"g": (g - 1.0) / 2.0})
    t2 = A.acc_by_covars(y, s, z, covar_stds=[2.0], covar_means=[1.0])
    assert t2.group.tolist() == [0.0, 1.0, 2.0] and z.g.min() == -0.5
    with pytest.raises(ValueError, match="one row per sample"):
        A.acc_by_covars(y[:-1], s, cov)
    with pytest.raises(TypeError, match="`metric`"):
        A.acc_by_covars(y, s, cov, metric="auc")
