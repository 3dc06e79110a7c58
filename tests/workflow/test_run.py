"""ctx.workflow.run: closed forms, scores against references, failures, bad input, compiles."""


import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import ctxppl as ctx

from . import _models as m

N = 12
Y = np.linspace(-1.0, 3.0, N)
DATA = {"y": Y}
FAST = m.OPTS


def closed_form_mode(w, tau=m.TAU):
    return np.sum(w * Y) / (np.sum(w) + 1.0 / tau**2)


def test_map_grid_matches_closed_form_and_scores():
    splits = ctx.workflow.kfold(N, k=3)
    grid = ctx.workflow.grid(tau=[0.5, 2.0])
    df = ctx.workflow.run(m.normal_factory, grid, splits, DATA, progress=False,
                          scoring=[ctx.workflow.mse(), ctx.workflow.log_likelihood(),
                                   ctx.workflow.elpd(), ctx.workflow.bic()], **FAST)
    assert len(df) == 6 and df["error"].isna().all() and df["converged"].all()
    assert list(df.columns[:2]) == ["tau", "split"]
    W = splits.weights()
    for _, row in df.iterrows():
        i, tau = row["split"], row["tau"]
        mu = closed_form_mode(W[i], tau)
        assert row["fit"].params["mu"] == pytest.approx(mu, abs=2e-4)
        assert row["fit"].batch_shape == ()
        test = splits.test[i]
        mu_hat = float(row["fit"].params["mu"])
        assert row["mse"] == pytest.approx(np.mean((Y[test] - mu_hat) ** 2), rel=1e-5)
        ll = stats.norm.logpdf(Y, mu_hat, 1.0)
        assert row["log_lik"] == pytest.approx(np.mean(ll[test]), rel=1e-5)
        assert row["elpd"] == pytest.approx(np.sum(ll[test]), rel=1e-5)
        # one free parameter (mu), n_train = 8 rows
        bic = -2 * np.sum(W[i] * ll) + 1 * np.log(W[i].sum())
        assert row["bic"] == pytest.approx(bic, rel=1e-5)
    assert (df["seconds"] > 0).all() and not df["cached"].any()


def test_laplace_scores_match_arviz_and_scipy_on_the_fit_draws():
    splits = ctx.workflow.kfold(N, k=3)
    df = ctx.workflow.run(m.normal_factory, None, splits, DATA, method="laplace", progress=False,
                          scoring=[ctx.workflow.elpd(), ctx.workflow.loo(), ctx.workflow.waic()],
                          num_samples=400, **FAST)
    import arviz as az

    from ctxppl.infer._arviz import from_groups

    for _, row in df.iterrows():
        draws = np.asarray(row["fit"].posterior()["mu"], np.float64)  # (400,)
        ll = stats.norm.logpdf(Y[None, :], draws[:, None], 1.0)  # (draws, n)
        test = splits.test[row["split"]]
        train = np.setdiff1d(np.arange(N), test)
        ref_elpd = np.sum(special.logsumexp(ll[:, test], axis=0) - np.log(len(draws)))
        assert row["elpd"] == pytest.approx(ref_elpd, rel=1e-4)
        idata = from_groups({"posterior": {"mu": draws[None]},
                             "log_likelihood": {"y": ll[None][:, :, train]}})
        ref = az.loo(idata, var_name="y")  # arviz 1.x: elpd, p; arviz 0.x: elpd_loo, p_loo
        ref_elpd, ref_p = (ref.elpd, ref.p) if hasattr(ref, "elpd") else (ref["elpd_loo"],
                                                                          ref["p_loo"])
        assert row["loo_elpd"] == pytest.approx(float(ref_elpd), rel=1e-4)
        assert row["loo_p"] == pytest.approx(float(ref_p), rel=1e-3, abs=1e-4)
        lt = ll[:, train]
        waic = np.sum(special.logsumexp(lt, 0) - np.log(len(draws)) - np.var(lt, 0, ddof=1))
        assert row["waic_elpd"] == pytest.approx(waic, rel=1e-4)


def test_failures_become_rows_and_a_summary():
    grid = ctx.workflow.grid(tau=[-1.0, 2.0], fail=[False, True])
    splits = ctx.workflow.kfold(N, k=3)
    with pytest.warns(RuntimeWarning, match=r"9 of 12 fits failed"):
        df = ctx.workflow.run(m.normal_factory, grid, splits, DATA, progress=False,
                              scoring=[ctx.workflow.mse()], **FAST)
    bad_factory = df["tau"] < 0
    assert df.loc[bad_factory, "error"].str.contains("ValueError: tau must be positive").all()
    assert df.loc[bad_factory, "fit"].isna().all()
    nan_fit = (df["tau"] > 0) & df["fail"]
    assert df.loc[nan_fit, "error"].str.contains("FitError: stopped: the loss became NaN").all()
    assert df.loc[nan_fit, "mse"].isna().all() and not df.loc[nan_fit, "converged"].any()
    good = (df["tau"] > 0) & ~df["fail"]
    assert df.loc[good, "error"].isna().all() and np.isfinite(df.loc[good, "mse"]).all()
    f = ctx.workflow.failures(df)
    assert f["count"].sum() == 9 and "9 of 12 fits failed" in df.attrs["summary"]


def test_a_failing_score_is_an_error_cell_not_an_abort():
    def boom(ev):
        raise ZeroDivisionError("no")

    with pytest.warns(RuntimeWarning, match="3 of 3 fits failed"):
        df = ctx.workflow.run(m.normal_factory, None, ctx.workflow.kfold(N, k=3), DATA,
                              scoring={"mse": ctx.workflow.mse(), "boom": boom},
                              progress=False, **FAST)
    assert df["error"].str.contains("score 'boom': ZeroDivisionError").all()
    assert np.isfinite(df["mse"]).all() and df["boom"].isna().all()
    assert df["converged"].all()  # the fits themselves are fine


def test_configs_with_one_signature_compile_once():
    from ctxppl.infer._optim import run_opt_many

    # programs compiled in this process, stored or not (one device or sharded over several)
    before = run_opt_many._cache_size()
    grid = ctx.workflow.grid(rep=[0, 1, 2])  # `rep` does not reach the model
    df = ctx.workflow.run(m.normal_factory, grid, ctx.workflow.kfold(N, k=3), DATA,
                          scoring=[ctx.workflow.mse()], progress=False, num_steps=50,
                          learning_rate=0.0113)  # a learning rate no other test uses
    assert run_opt_many._cache_size() - before == 1
    assert len(df) == 9


def _spy_fit_many(monkeypatch):
    calls = []
    real = ctx.fit_many

    def spy(*a, **k):
        calls.append(k.get("weights").shape)
        return real(*a, **k)

    monkeypatch.setattr(ctx, "fit_many", spy)
    return calls


def test_one_fit_many_call_per_config_with_split_weights(monkeypatch):
    calls = _spy_fit_many(monkeypatch)
    ctx.workflow.run(m.normal_factory, ctx.workflow.grid(tau=[1.0, 2.0]),
                     ctx.workflow.bootstrap(N, num=3), DATA, progress=False, **FAST)
    assert calls == [(3, N), (3, N)]


def test_bad_input_fails_before_any_fit(monkeypatch):
    calls = _spy_fit_many(monkeypatch)
    splits = ctx.workflow.kfold(N, k=3)
    with pytest.raises(ValueError, match="`grid` is empty"):
        ctx.workflow.run(m.normal_factory, [], splits, DATA)

    def not_a_model(tau):
        return m.normal_mean if tau > 1 else ctx.workflow.ModelSpec(m.normal_mean, "rows",
                                                                    kwargs={"y": "y"})

    with pytest.raises(TypeError, match="must return a ctx.workflow.ModelSpec"):
        ctx.workflow.run(not_a_model, ctx.workflow.grid(tau=[1.0, 2.0]), splits, DATA)
    with pytest.raises(ValueError, match=r"must lie in \[0, 12\)"):
        ctx.workflow.run(m.normal_factory, None, [(np.arange(6), np.arange(6, 13))], DATA)
    with pytest.raises(ValueError, match="made for 20 rows but the data"):
        ctx.workflow.run(m.normal_factory, None, ctx.workflow.kfold(20), DATA)

    def three_args(fit, X, y):
        return 0.0

    with pytest.raises(TypeError, match="scoring function `three_args` must take exactly one"):
        ctx.workflow.run(m.normal_factory, None, splits, DATA, scoring=[three_args])
    with pytest.raises(TypeError, match=r"unknown fit option\(s\) \['num_step'\]"):
        ctx.workflow.run(m.normal_factory, None, splits, DATA, num_step=10)
    with pytest.raises(TypeError, match="controls itself"):
        ctx.workflow.run(m.normal_factory, None, splits, DATA, weights=np.ones(N))
    with pytest.raises(TypeError, match="cannot take config"):
        ctx.workflow.run(m.normal_factory, ctx.workflow.grid(K=[2]), splits, DATA)
    with pytest.raises(KeyError, match=r"refers to \['z'\], which is not in `data`"):
        ctx.workflow.run(lambda: ctx.workflow.ModelSpec(m.normal_mean, "rows",
                                                        kwargs={"y": "z"}), None, splits, DATA)
    with pytest.raises(ValueError, match="`plate` 'cols' is not a plate"):
        ctx.workflow.run(lambda: ctx.workflow.ModelSpec(m.normal_mean, "cols",
                                                        kwargs={"y": "y"}), None, splits, DATA)
    with pytest.raises(KeyError, match="`labels` 'species'"):
        ctx.workflow.run(m.normal_factory, None, splits, DATA,
                         scoring=[ctx.workflow.adjusted_rand("species")])
    with pytest.raises(ValueError, match="needs posterior draws"):
        ctx.workflow.run(m.normal_factory, None, splits, DATA, scoring=[ctx.workflow.loo()])
    with pytest.raises(ValueError, match="`method` must be one of"):
        ctx.workflow.run(m.normal_factory, None, splits, DATA, method="nuts")
    with pytest.raises(ValueError, match="`backend` must be one of"):
        ctx.workflow.run(m.normal_factory, None, splits, DATA, backend="ray")
    with pytest.raises(TypeError, match="`data` must be a dict of arrays or a pandas"):
        ctx.workflow.run(m.normal_factory, None, splits, Y)
    with pytest.raises(TypeError, match="`constants` of ModelSpec must be hashable|constant `a`"):
        ctx.workflow.ModelSpec(m.normal_mean, "rows", constants={"a": np.ones(2)})
    assert calls == []  # no fit was started by any of the above


def test_dataframe_data_and_column_lists():
    df_in = pd.DataFrame({"y": Y, "other": np.zeros(N)})
    out = ctx.workflow.run(m.normal_factory, None, None, df_in, progress=False,
                           scoring=[ctx.workflow.mse(rows="train")], **FAST)
    assert len(out) == 1 and out["split"].tolist() == [0]  # splits=None: one in-sample fit
    mu = closed_form_mode(np.ones(N))
    assert float(out["fit"][0].params["mu"]) == pytest.approx(mu, abs=1e-3)


def test_max_batch_splits_the_vmapped_call_and_keeps_results(monkeypatch):
    calls = _spy_fit_many(monkeypatch)
    splits = ctx.workflow.kfold(N, k=3)
    df = ctx.workflow.run(m.normal_factory, ctx.workflow.grid(tau=[2.0]), splits, DATA,
                          progress=False, max_batch=2, scoring=[ctx.workflow.mse()], **FAST)
    assert calls == [(2, N), (2, N)]  # 2 + 1 padded with a copy: one compiled shape
    assert len(df) == 3 and df["error"].isna().all()
    W = splits.weights()
    for _, row in df.iterrows():
        mu = closed_form_mode(W[row["split"]])
        assert row["fit"].params["mu"] == pytest.approx(mu, abs=2e-4)
        np.testing.assert_array_equal(row["fit"].diagnostics["weights"], W[row["split"]])
    with pytest.raises(ValueError, match="`max_batch` must be a positive int"):
        ctx.workflow.run(m.normal_factory, None, splits, DATA, max_batch=0)
