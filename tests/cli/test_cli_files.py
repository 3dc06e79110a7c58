"""The command line's files: a failed run leaves --out exactly as it was, a run owns its
folder, `predict` checks everything (manifest, columns, training data) before any model
work, and every documented option of `fit`, `predict` and `mixed` runs at least once."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ctxppl.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, build_parser, main

N = 48


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    rng = np.random.default_rng(7)
    c1 = rng.uniform(-1, 1, N)
    x1, x2 = rng.normal(size=N), rng.normal(size=N)
    g = np.repeat(np.arange(6), N // 6)
    df = pd.DataFrame({"pid": [f"r{i}" for i in range(N)], "c1": c1, "c2": rng.normal(size=N),
                       "x1": x1, "x2": x2, "g": g,
                       "y": (1 + c1) * x1 + 2 * x2 + 0.3 * g + 0.1 * rng.normal(size=N),
                       "count": rng.poisson(np.exp(0.3 * x1 + 0.1 * g)),
                       "label": np.where(x1 * c1 + 0.2 * rng.normal(size=N) > 0, "up", "down")})
    path = tmp_path_factory.mktemp("data") / "d.csv"
    df.to_csv(path, index=False)
    return str(path), df


def _snapshot(folder):
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir())}


# every documented option appears in at least one of these runs (checked below)
FIT_RUNS = [
    ["--context", "c1,c2", "--predictors", "x1,x2", "--outcome", "y", "--encoder", "ngam",
     "--width", "4", "--depth", "1", "--archetypes", "3", "--epochs", "5",
     "--learning-rate", "0.05", "--bootstraps", "3", "--seed", "3", "--id", "pid", "--plots",
     "--posterior"],
    ["--context", "c1", "--predictors", "x1", "--outcome", "label", "--model",
     "classification", "--encoder", "linear", "--method", "nuts", "--num-samples", "8",
     "--epochs", "5", "--no-plots", "--no-posterior"],
    ["--context", "c1", "--predictors", "x1,x2", "--model", "bayesian-network", "--method",
     "svi", "--num-samples", "8", "--epochs", "5", "--no-plots"],
    ["--context", "g", "--predictors", "x1", "--outcome", "y", "--model", "mixed",
     "--random-slopes", "--no-plots"],
    ["--context", "c1", "--predictors", "x1,x2", "--model", "markov", "--uncertainty",
     "--num-samples", "8", "--no-plots"],
]
MIXED_RUNS = [
    ["count ~ x1 + (1 | g)", "--family", "poisson", "--method", "laplace", "--num-samples",
     "20", "--id", "pid", "--seed", "1", "--no-plots", "--posterior"],
    ["y ~ x1 + (1 | g)", "--plots", "--no-posterior"],
]


# the NUTS and SVI runs compile the most: they run under `make test-slow` (markers below);
# map, bootstraps, NGAM, archetypes and mixed run in `make test`
@pytest.mark.parametrize("i", [0, pytest.param(1, marks=pytest.mark.slow),
                               pytest.param(2, marks=pytest.mark.slow), 3,
                               pytest.param(4, marks=pytest.mark.slow)])
def test_every_fit_option_runs(i, csv, tmp_path):
    path, df = csv
    out = tmp_path / "out"
    assert main(["fit", path, *FIT_RUNS[i], "--out", str(out), "--quiet"]) == EXIT_OK
    man = json.loads((out / "manifest.json").read_text())
    assert sorted(os.listdir(out)) == sorted(man["files"])  # the run owns its folder
    params = pd.read_csv(out / "params.csv")
    assert len(params) == N and np.all(np.isfinite(params.select_dtypes("number")))
    posterior = any(f.startswith("posterior") for f in man["files"])
    assert posterior == (i in (0, 2, 4))  # asked for (0), default for svi (2) and
    # --uncertainty (4); nuts said no (1), map (REML) mixed by default no (3)
    if i == 4:  # --uncertainty: per-row 90% intervals of the partial correlations
        assert man["uncertainty"] is True
        assert np.all(params["pcorr_x1__x2_q05"] <= params["pcorr_x1__x2_q95"])
    if i == 0:  # --bootstraps 3 with map: per-row 90% intervals, one loss line per fit
        assert man["bootstraps"] == 3 and "loss.png" in man["files"]
        assert params["pid"].tolist() == df["pid"].tolist()
        assert np.all(params["beta_x1_q05"] <= params["beta_x1_q95"])
        assert json.loads((out / "metrics.json").read_text())["num_steps"] == [5, 5, 5]
        pred = tmp_path / "p.csv"
        assert main(["predict", str(out), path, "--out", str(pred), "--id", "pid", "--seed",
                     "1", "--quiet"]) == EXIT_OK
        assert "beta_x1_q95" in pd.read_csv(pred).columns


@pytest.mark.parametrize("i", range(len(MIXED_RUNS)))
def test_every_mixed_option_runs(i, csv, tmp_path):
    path, _ = csv
    out = tmp_path / "m"
    assert main(["mixed", *MIXED_RUNS[i], path, "--out", str(out), "--quiet"]) == EXIT_OK
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert pd.read_csv(out / "params.csv").columns[0] == ("pid" if i == 0 else "row")
    assert any(f.startswith("posterior") for f in files) == (i == 0)
    assert any(f.endswith(".png") for f in files) == (i == 1)


def test_documented_options_are_all_exercised():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    used = {"fit": {a for run in FIT_RUNS for a in run} | {"--out", "--quiet"},
            "mixed": {a for run in MIXED_RUNS for a in run} | {"--out", "--quiet"},
            "predict": {"--out", "--id", "--seed", "--quiet"}}
    for cmd, opts in used.items():
        documented = {s for a in sub[cmd]._actions for s in a.option_strings
                      if s.startswith("--") and s != "--help"}
        assert documented - opts == set(), cmd
    fit_choices = {a.dest: a.choices for a in sub["fit"]._actions if a.choices}
    runs = [dict(zip(r[::2], r[1::2], strict=False)) for r in FIT_RUNS]
    for opt in ("model", "method", "encoder"):
        seen = {r.get(f"--{opt}") for r in runs} | {"regression", "map", "mlp"}  # defaults
        seen |= {"markov"} if opt == "model" else set()  # test_cli.py's quiet markov run
        assert set(fit_choices[opt]) <= seen, opt


@pytest.fixture(scope="module")
def good_run(csv, tmp_path_factory):
    path, _ = csv
    out = tmp_path_factory.mktemp("good") / "run"
    argv = ["fit", path, "--context", "c1", "--predictors", "x1", "--outcome", "y",
            "--epochs", "5", "--encoder", "linear", "--plots", "--posterior", "--out",
            str(out), "--quiet"]
    assert main(argv) == EXIT_OK
    return argv, out


def test_failed_runs_leave_the_folder_exactly_as_it_was(good_run, csv, tmp_path, monkeypatch,
                                                        capfd):
    argv, out = good_run
    before = _snapshot(out)
    parent = sorted(os.listdir(out.parent))
    # a real NaN loss (the issue's --learning-rate 1e9): exit 1, nothing touched
    assert main(argv[:-3] + ["--learning-rate", "1e9", "--out", str(out), "--quiet"]) == \
        EXIT_FAILURE
    assert "NaN" in capfd.readouterr().err
    # a failure while writing (after the fit): the half-written folder is thrown away
    from ctxppl.cli import _fit

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(_fit, "write_posterior", broken)
    assert main(argv) == EXIT_FAILURE
    assert "disk full" in capfd.readouterr().err
    assert _snapshot(out) == before and sorted(os.listdir(out.parent)) == parent


def test_a_rerun_owns_its_folder(good_run, csv, tmp_path):
    argv, out = good_run
    path, _ = csv
    assert main(["predict", str(out), path, "--quiet"]) == EXIT_OK  # DIR/predictions.csv
    assert any(f.endswith(".png") for f in os.listdir(out))
    assert main(argv[:-3] + ["--no-plots", "--out", str(out), "--quiet"]) == EXIT_OK
    man = json.loads((out / "manifest.json").read_text())
    assert sorted(os.listdir(out)) == sorted(man["files"])
    assert not any(f.endswith(".png") for f in os.listdir(out))
    assert "predictions.csv" not in os.listdir(out)


def test_out_folder_of_other_files_is_refused(csv, tmp_path, capfd):
    path, _ = csv
    mine = tmp_path / "docs"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    assert main(["fit", path, "--context", "c1", "--predictors", "x1", "--outcome", "y",
                 "--out", str(mine), "--quiet"]) == EXIT_USAGE
    assert "not the output of an earlier ctxppl run" in capfd.readouterr().err
    assert os.listdir(mine) == ["thesis.tex"]


@pytest.mark.parametrize("formula, message", [
    ("y ~ x1 + (1 | g", "unclosed '('"),
    ("y ~ x1 + 1 | g)", "without a matching '('"),
    ("y ~ x1 + (1 | nope)", "nope"),
])
def test_failed_mixed_leaves_no_folder(formula, message, csv, tmp_path, capfd):
    path, _ = csv
    out = tmp_path / "never"
    assert main(["mixed", formula, path, "--out", str(out), "--quiet"]) == EXIT_USAGE
    err = capfd.readouterr().err
    assert message in err and "no random-effect term" not in err
    assert os.listdir(tmp_path) == []


def test_mixed_predict_refuses_changed_training_data(csv, tmp_path, capfd):
    path, df = csv
    train = tmp_path / "train.csv"
    df.to_csv(train, index=False)
    out = tmp_path / "mx"
    assert main(["mixed", "y ~ x1 + (1 | g)", str(train), "--out", str(out), "--quiet"]) == \
        EXIT_OK
    new = tmp_path / "new.csv"
    df.iloc[:4].to_csv(new, index=False)
    assert main(["predict", str(out), str(new), "--quiet"]) == EXIT_OK
    first = pd.read_csv(out / "predictions.csv")
    df.assign(y=df["y"] + 100).to_csv(train, index=False)  # the issue's +100 edit
    assert main(["predict", str(out), str(new), "--quiet"]) == EXIT_USAGE
    assert "changed since this mixed model was fitted" in capfd.readouterr().err
    pd.testing.assert_frame_equal(pd.read_csv(out / "predictions.csv"), first)
    df.drop(columns=["x1"]).iloc[:4].to_csv(new, index=False)
    df.to_csv(train, index=False)
    assert main(["predict", str(out), str(new), "--quiet"]) == EXIT_USAGE
    assert "['x1'] not in" in capfd.readouterr().err


def test_predict_checks_before_loading(good_run, csv, tmp_path, monkeypatch, capfd):
    """Bad columns fail before the model file is opened; a damaged manifest or model file
    is a usage error naming the file."""
    import shutil

    from ctxppl.estimators import ContextualizedRegressor

    argv, out = good_run
    path, df = csv
    calls = []
    monkeypatch.setattr(ContextualizedRegressor, "load",
                        classmethod(lambda cls, *a, **k: calls.append(1)))
    new = tmp_path / "new.csv"
    df.drop(columns=["x1"]).to_csv(new, index=False)
    assert main(["predict", str(out), str(new), "--quiet"]) == EXIT_USAGE
    assert "['x1'] not in" in capfd.readouterr().err and calls == []
    monkeypatch.undo()
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "manifest.json").write_text('{"format": "ctxppl-cli/1", "mod')
    assert main(["predict", str(broken), path, "--quiet"]) == EXIT_USAGE
    assert "manifest.json' is damaged (not valid JSON" in capfd.readouterr().err
    shutil.copy(out / "manifest.json", broken / "manifest.json")
    data = (out / "model.npz").read_bytes()
    (broken / "model.npz").write_bytes(data[: len(data) // 2])
    assert main(["predict", str(broken), path, "--quiet"]) == EXIT_USAGE
    assert "model.npz' is not a ctxppl estimator file: it looks truncated" in \
        capfd.readouterr().err


def test_default_fit_writes_the_cheap_files_only(csv, tmp_path):
    """Without --plots / --posterior a MAP fit neither imports matplotlib nor ArviZ/netCDF
    (each costs about a second of a fresh process) and writes the five core files."""
    path, _ = csv
    out = tmp_path / "out"
    code = ("import sys; from ctxppl.cli import main; rc = main(['fit', sys.argv[1], "
            "'--context', 'c1', '--predictors', 'x1', '--outcome', 'y', '--epochs', '5', "
            "'--out', sys.argv[2], '--quiet']); print(rc, sorted(m for m in ('matplotlib', "
            "'arviz', 'h5py', 'h5netcdf') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, path, str(out)], capture_output=True,
                          text=True, timeout=300)
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["manifest.json", "metrics.json", "model.npz",
                                       "params.csv", "summary.csv"]
