"""Every plot returns a matplotlib Figure with the expected panels, writes a PNG, draws the
right numbers, and rejects bad input with a clear message."""

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.exceptions import NotFittedError

import ctxppl as ctx
from ctxppl import analysis as A
from ctxppl.analysis._effects import one_at_a_time
from ctxppl.estimators import ContextualizedRegressor

P = ctx.plot


def _png(fig, tmp_path, name, n_axes):
    """The figure has ``n_axes`` Axes and writes a readable PNG."""
    assert isinstance(fig, Figure)
    assert len(fig.axes) == n_axes, [a.get_label() for a in fig.axes]
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=40)
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = plt.imread(path)
    assert img.ndim == 3 and img.shape[0] > 10 and img.shape[1] > 10
    return fig


class ToyClassifier:
    """Two contexts, two predictors, 5 draws; a classifier (exponentiated plots)."""

    classes_ = np.array([0, 1])

    def predict_params(self, C, individual_preds=False):
        s = np.linspace(0.8, 1.2, 5)[:, None]
        beta = np.stack([s * C[None, :, 0], 0 * s + C[None, :, 1]], -1)[:, :, None, :]
        mu = (s * C[None, :, 1])[..., None]
        return (beta, mu) if individual_preds else (beta.mean(0), mu.mean(0))


# ---------------------------------------------------------------- per-sample parameters
def test_true_vs_predicted(tmp_path, rng):
    w = rng.normal(size=(80, 3))
    draws = w[None] + 0.1 * rng.normal(size=(20, 80, 3))
    _png(P.true_vs_predicted(w, w + 0.1, observed=w[:20], highlight=[0, 3]), tmp_path,
         "space", 1)
    fig = _png(P.true_vs_predicted(w, draws, kind="diagonal", names=["a", "b", "c"]),
               tmp_path, "diag", 3)
    assert fig.axes[1].get_title().startswith("b")
    # the tutorial's figure: effects plane of two chosen parameters, into an existing Axes
    f2 = Figure()
    ax = f2.add_subplot()
    assert P.true_vs_predicted(w, w, dims=(2, 0), ax=ax) is f2
    assert ax.get_xlabel() == "w2" and ax.get_ylabel() == "w0"


def test_params_vs_context_from_model(null_fit, tmp_path):
    est, C, _, _ = null_fit
    fig = _png(P.params_vs_context(est, C, context="c0", index=[(0, 0), (0, 1)]), tmp_path,
               "pvc", 2)
    # the curve is the mean over bootstraps of beta[y0, x0] along c0 (c1 at its mean)
    line = fig.axes[0].lines[-1]
    grid = one_at_a_time(A.make_c_vis(C, 100), C.mean(0))[0]
    betas = est.predict_params(grid, individual_preds=True)[0]
    np.testing.assert_allclose(line.get_xdata(), grid[:, 0])
    np.testing.assert_allclose(line.get_ydata(), betas[:, :, 0, 0].mean(0), rtol=1e-6,
                               atol=1e-8)
    assert fig.axes[0].get_title() == "beta[y0, x0]"
    _png(P.params_vs_context(est, C, context=1, param="mu", index=0, show_samples=False),
         tmp_path, "pvc_mu", 1)


def test_params_vs_context_from_draws(tmp_path, rng):
    C = pd.DataFrame({"age": np.linspace(0, 1, 30)})
    draws = C.to_numpy()[None] * rng.normal(1, 0.1, (10, 1, 3))
    _png(P.params_vs_context(draws, C, context="age"), tmp_path, "draws", 3)
    _png(P.params_vs_context(draws[0], C, index=[1]), tmp_path, "point", 1)


def test_ngam_effects_match_feature_effects(tmp_path):
    enc = ctx.nn.NGAM(2, 3, width=4, depth=1, key=jax.random.key(1))
    grid = np.stack([np.linspace(-1, 1, 15), np.linspace(0, 2, 15)], 1)
    fig = _png(P.ngam_effects(enc, grid=grid, names=["age", "dose"]), tmp_path, "ngam", 2)
    ref = np.asarray(jax.vmap(enc.feature_effects)(jnp.asarray(grid, jnp.float32)))
    for j, a in enumerate(fig.axes):
        for k, line in enumerate(a.lines):
            np.testing.assert_allclose(line.get_ydata(), ref[:, j, k], rtol=1e-5, atol=1e-6)
    assert fig.axes[1].get_xlabel() == "dose"
    # fitted weights with a leading draws axis -> mean curve of the draws, with bands
    arrays, _ = __import__("equinox").partition(enc, __import__("equinox").is_inexact_array)
    draws = jax.tree_util.tree_map(lambda a: jnp.stack([a, 2 * a]), arrays)
    fig2 = P.ngam_effects(enc, grid=grid, params=draws, outputs=[0])
    assert len(fig2.axes[0].lines) == 1 and len(fig2.axes[0].collections) == 1
    with pytest.raises(ValueError, match="structure"):
        P.ngam_effects(enc, grid=grid, params={"w": jnp.zeros(3)})
    with pytest.raises(ValueError, match="`C`"):
        P.ngam_effects(enc)
    with pytest.raises(TypeError, match="NGAM"):
        P.ngam_effects(object(), grid=grid)


def test_ngam_effects_of_model(null_fit, tmp_path):
    est, C, _, _ = null_fit
    fig = _png(P.ngam_effects(est, C, outputs=["beta[y0, x0]", "beta[y0, x1]"]), tmp_path,
               "ngam_model", 2)
    assert [line.get_label() for line in fig.axes[0].lines] == ["beta[y0, x0]", "beta[y0, x1]"]


# ---------------------------------------------------------------- effects (peer names)
def test_effect_plots(null_fit, tmp_path):
    est, C, X, _ = null_fit
    _png(A.plot_homogeneous_context_effects(est, C, outcome=[0, 1]), tmp_path, "hce", 4)
    _png(P.plot_homogeneous_predictor_effects(est, C, X, outcome="y0"), tmp_path, "hpe", 2)
    _png(P.plot_heterogeneous_predictor_effects(est, C, X, outcome=0), tmp_path, "hete", 4)
    # only c0 x x0 changes for output 0 (true slope 1 over a c0 range of ~5): 1 panel left
    big = P.plot_heterogeneous_predictor_effects(est, C, outcome=0, min_effect_size=1.0)
    assert len(big.axes) == 1 and big.axes[0].get_xlabel() == "c0"


def test_effect_plots_classifier_exponentiate(tmp_path):
    C = np.random.default_rng(0).uniform(-1, 1, (20, 2))
    fig = _png(P.plot_homogeneous_context_effects(ToyClassifier(), C), tmp_path, "or", 2)
    y = fig.axes[1].lines[0].get_ydata()  # relative to the minimum, exponentiated
    assert y.min() == pytest.approx(1.0) and np.all(y >= 1.0 - 1e-12)
    assert "odds ratio" in fig.axes[0].get_ylabel()
    lin = P.plot_homogeneous_context_effects(ToyClassifier(), C, classification=False)
    assert lin.axes[1].lines[0].get_ydata().min() == pytest.approx(0.0, abs=1e-12)


def test_heterogeneity_plot(tmp_path):
    df = pd.DataFrame({"Context": ["age", "age", "dose", "dose"],
                       "Predictor": ["x", "z", "x", "z"], "Target": ["y"] * 4,
                       "Pvals": [0.001, 0.4, 0.2, 0.04]})
    fig = _png(P.heterogeneity(df), tmp_path, "het_df", 2)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["0.001*", "0.4", "0.2", "0.04*"]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["age", "dose"]
    arr = np.array([[[0.5, 0.01], [0.3, 0.2]]])  # (1 context, 2 predictors, 2 outcomes)
    fig2 = _png(P.heterogeneity(arr), tmp_path, "het_arr", 2)
    assert len(fig2.axes[0].get_xticklabels()) == 4
    t = A.effects_table(ToyClassifier(), np.random.default_rng(0).uniform(-1, 1, (20, 2)),
                        method="normal")  # a toy with 5 draws: the count rule would warn
    _png(P.heterogeneity(t), tmp_path, "het_table", 2)


def test_networks(tmp_path, rng):
    W = rng.normal(size=(10, 4, 4))
    fig = _png(P.networks(W, samples=[0, 4, 9], names=list("abcd")), tmp_path, "heat", 4)
    assert fig.axes[1].get_title() == "sample 4"
    g = _png(P.networks(W, kind="graph", max_panels=2, directed=True, threshold=0.5),
             tmp_path, "graph", 2)
    n_edges = int(np.sum((np.abs(W[0]) > 0.5) & ~np.eye(4, dtype=bool)))
    assert len(g.axes[0].patches) == n_edges
    und = P.networks(W[0] + W[0].T, kind="graph")
    assert len(und.axes[0].patches) == int(np.sum(np.triu(np.abs(W[0] + W[0].T) > 0, 1)))


def test_caterpillar(tmp_path, rng):
    g = np.repeat(np.arange(12), 10)
    df = pd.DataFrame({"g": g, "x": rng.normal(size=120)})
    b0, b1 = rng.normal(size=12), 0.5 * rng.normal(size=12)
    df["y"] = b0[g] + (1 + b1[g]) * df.x + 0.3 * rng.normal(size=120)
    res = ctx.mixed("y ~ x + (x | g)", df)
    fig = _png(P.caterpillar(res), tmp_path, "cat", 2)
    re = res.ranef(std_errors=True)
    ax = fig.axes[0]
    # sorted estimates with +-z se bars
    np.testing.assert_allclose(ax.lines[0].get_xdata(), np.sort(re.iloc[:, 0].to_numpy()))
    _png(P.caterpillar(re, coef="x", level=0.9), tmp_path, "cat_df", 1)
    with pytest.raises(ValueError, match="`coef`"):
        P.caterpillar(res, coef="z")
    with pytest.raises(TypeError, match="mixed"):
        P.caterpillar(object())


def test_embedding_plots(null_fit, tmp_path, rng):
    est, C, _, _ = null_fit
    z = rng.normal(size=(40, 2))
    _png(A.plot_lowdim_rep(z, np.arange(40) % 3, cbar_label="group"), tmp_path, "disc", 1)
    _png(P.plot_lowdim_rep(z, np.linspace(0, 1, 40)), tmp_path, "cont", 2)
    cov = pd.DataFrame({"c0": C[:, 0], "half": (C[:, 1] > 0).astype(int)})
    _png(P.embedding(est, C, cov), tmp_path, "emb", 3)  # 2 panels + 1 colour bar
    _png(A.plot_embedding_for_all_covars(z, pd.DataFrame({"s": ["a", "b"] * 20}),
                                         dithering_pct=0.1), tmp_path, "emb2", 1)


# ---------------------------------------------------------------- bad input
def test_bad_input(null_fit, rng):
    est, C, X, _ = null_fit
    w = rng.normal(size=(10, 2))
    with pytest.raises(ValueError, match="`predicted` must match"):
        P.true_vs_predicted(w, w[:, :1])
    with pytest.raises(ValueError, match="`kind`"):
        P.true_vs_predicted(w, w, kind="3d")
    with pytest.raises(ValueError, match="at least 2 parameters"):
        P.true_vs_predicted(w[:, :1], w[:, :1])
    with pytest.raises(ValueError, match="`true` contains NaN"):
        P.true_vs_predicted(np.full((3, 2), np.nan), w[:3])
    with pytest.raises(ValueError, match="`context` 'age' is not a known feature"):
        P.params_vs_context(est, C, context="age")
    with pytest.raises(ValueError, match="`context` index 5"):
        P.params_vs_context(est, C, context=5)
    with pytest.raises(ValueError, match="at most 12 panels"):
        P.params_vs_context(est, C)
    with pytest.raises(ValueError, match="`index` 'x9' matches no parameter"):
        P.params_vs_context(est, C, index="x9")
    with pytest.raises(NotFittedError):
        P.params_vs_context(ContextualizedRegressor(), C)
    with pytest.raises(ValueError, match="`C` must have 2 columns"):
        P.plot_heterogeneous_predictor_effects(est, C[:, :1])
    with pytest.raises(ValueError, match="`X` must have 2 columns"):
        P.plot_homogeneous_predictor_effects(est, C, X[:, :1])
    with pytest.raises(ValueError, match="`ax` holds one panel"):
        P.true_vs_predicted(w, w, kind="diagonal", ax=Figure().add_subplot())
    with pytest.raises(ValueError, match="`adjacency` must be"):
        P.networks(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="`samples`"):
        P.networks(np.zeros((2, 3, 3)), samples=[5])
    with pytest.raises(ValueError, match="Pvals"):
        P.heterogeneity(pd.DataFrame({"a": [1]}))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        P.heterogeneity(np.array([[2.0]]))
    with pytest.raises(ValueError, match="`labels` must hold one value per sample"):
        P.plot_lowdim_rep(w, np.arange(3))


# ---------------------------------------------------------------- ArviZ wrappers
def _model(C, X, Y=None):
    enc = ctx.encoder("enc", ctx.nn.Linear(1, 1), prior=dist.Normal(0.0, 2.0))
    with ctx.plate("n", C.shape[0], context=C):
        beta = ctx.contextual("beta", enc)
        numpyro.sample("y", dist.Normal(jnp.sum(X * beta, -1), 1.0), obs=Y)


def test_arviz_wrappers(tmp_path, rng):
    post = {"a": rng.normal(size=(2, 50)), "b": rng.normal(size=(2, 50, 3))}
    d = P.from_draws(post)
    for name, fn, at_least in [("trace", P.trace, 4), ("forest", P.forest, 1),
                               ("pair", P.pair, 3)]:
        fig = fn(d, var_names=["a", "b"])
        try:
            assert isinstance(fig, Figure) and len(fig.axes) >= at_least, name
            fig.savefig(tmp_path / f"{name}.png", dpi=30)
            assert (tmp_path / f"{name}.png").exists()
        finally:
            plt.close(fig)
    # a real posterior fit: its ArviZ export, dims named after plates
    C, X = rng.uniform(-1, 1, (30, 1)), rng.normal(size=(30, 1))
    fit = ctx.fit(_model, C, X, X[:, 0] * (1 + C[:, 0]), method="laplace", key=0,
                  num_samples=100, progress=False)
    fig = P.trace(fit, var_names=["enc.weight", "enc.bias"])
    try:
        assert len(fig.axes) >= 4
    finally:
        plt.close(fig)
    with pytest.raises(TypeError, match="ArviZ data"):
        P.trace(object())
    with pytest.raises(ValueError, match="several bootstrap fits"):
        batched = type("F", (), {"batch_shape": (2,), "to_arviz": lambda self: None})()
        P.forest(type("E", (), {"fit_": batched})())
    with pytest.raises(ValueError, match=r"\(chains, draws"):
        P.from_draws({"a": np.zeros(3)})
