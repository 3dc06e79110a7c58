"""Caching (rerun, resume after a crash) and parallel backends (loky, Dask) agree with serial."""

import numpy as np
import pytest

import ctxppl as ctx

from . import _models as m

N = 12
DATA = {"y": np.linspace(-1.0, 3.0, N)}
OPTS = m.OPTS
CRASH = {"on": False}


def flaky(ev):
    """A score that 'crashes the session' (KeyboardInterrupt) on tau == 3 when switched on."""
    if CRASH["on"] and ev.config["tau"] == 3.0:
        raise KeyboardInterrupt
    return float(np.mean(ev.observed()[ev.test]))


def _spy(monkeypatch):
    calls = []
    real = ctx.fit_many
    monkeypatch.setattr(ctx, "fit_many", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def _same(a, b):
    assert len(a) == len(b)
    for (_, ra), (_, rb) in zip(a.iterrows(), b.iterrows(), strict=True):
        assert float(ra["fit"].params["mu"]) == pytest.approx(float(rb["fit"].params["mu"]),
                                                              rel=1e-5, abs=1e-6)
        assert ra["mse"] == pytest.approx(rb["mse"], rel=1e-5)


def test_rerun_and_resume_from_cache(tmp_path, monkeypatch):
    calls = _spy(monkeypatch)
    splits = ctx.workflow.kfold(N, k=3)
    scoring = [ctx.workflow.mse(), flaky]
    grid = ctx.workflow.grid(tau=[1.0, 2.0, 3.0])
    CRASH["on"] = True
    try:
        with pytest.raises(KeyboardInterrupt):
            ctx.workflow.run(m.normal_factory, grid, splits, DATA, scoring=scoring,
                             cache=tmp_path, progress=False, **OPTS)
    finally:
        CRASH["on"] = False
    assert len(calls) == 3  # tau=1, 2 done and stored; tau=3 fitted, crashed while scoring
    calls.clear()
    df = ctx.workflow.run(m.normal_factory, grid, splits, DATA, scoring=scoring,
                          cache=tmp_path, progress=False, **OPTS)
    assert calls == []  # every fit came from the cache
    assert df.groupby("tau")["cached"].all().tolist() == [True, True, False]  # tau=3 rescored
    again = ctx.workflow.run(m.normal_factory, grid, splits, DATA, scoring=scoring,
                             cache=tmp_path, progress=False, **OPTS)
    assert calls == [] and again["cached"].all()
    _same(df, again)
    # a different seed, split or option is a different fit
    ctx.workflow.run(m.normal_factory, grid, splits, DATA, scoring=scoring, cache=tmp_path,
                     progress=False, key=1, **OPTS)
    assert len(calls) == 3


def test_loky_matches_serial_and_fills_the_same_cache(tmp_path, monkeypatch):
    splits = ctx.workflow.kfold(N, k=3)
    grid = ctx.workflow.grid(tau=[1.0, 2.0])
    scoring = [ctx.workflow.mse()]
    serial = ctx.workflow.run(m.normal_factory, grid, splits, DATA, scoring=scoring,
                              progress=False, **OPTS)
    par = ctx.workflow.run(m.normal_factory, grid, splits, DATA, scoring=scoring,
                           backend="loky", n_jobs=2, cache=tmp_path, progress=False, **OPTS)
    assert not par["cached"].any()
    _same(serial, par)
    calls = _spy(monkeypatch)
    reread = ctx.workflow.run(m.normal_factory, grid, splits, DATA, scoring=scoring,
                              cache=tmp_path, progress=False, **OPTS)
    assert calls == [] and reread["cached"].all()  # written by the workers, read here
    _same(serial, reread)


def test_dask_local_cluster_matches_serial(tmp_path):
    distributed = pytest.importorskip("distributed")
    splits = ctx.workflow.kfold(N, k=3)
    grid = ctx.workflow.grid(tau=[1.0, 2.0])
    scoring = [ctx.workflow.mse()]
    serial = ctx.workflow.run(m.normal_factory, grid, splits, DATA, scoring=scoring,
                              progress=False, **OPTS)
    with pytest.raises(RuntimeError, match="backend='dask' needs a Dask cluster"):
        ctx.workflow.run(m.normal_factory, grid, splits, DATA, backend="dask", progress=False)
    # one in-process worker talking TCP over loopback: tasks and results are serialised
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  protocol="tcp", host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster) as client:
        par = ctx.workflow.run(m.normal_factory, grid, splits, DATA, scoring=scoring,
                               backend="dask", client=client, cache=tmp_path, progress=False,
                               **OPTS)
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    _same(serial, par)
    assert not par["cached"].any()


KEYS_SCRIPT = """
import sys, json, optax
from numpyro.infer import init_to_uniform
sys.path.insert(0, {tests!r})
from workflow import _models as m
from ctxppl.workflow._cache import fingerprint_callable
from ctxppl.workflow._units import options_fingerprint as _options_fingerprint
opt = optax.adam(optax.cosine_decay_schedule(1e-2, 3000, alpha=0.01))
if {used}:  # optax's schedule rewrites its closure (int -> float) when first called
    opt.update({{"a": 0.0}}, opt.init({{"a": 0.0}}))
spec = m.gmm_factory(3, "full")
print(json.dumps([fingerprint_callable(spec.bound_model()), fingerprint_callable(m.gmm_factory),
                  _options_fingerprint({{"optimizer": opt, **spec.options}})]))
"""


def test_cache_keys_are_stable_across_processes():
    """A rerun after a kernel restart must find the cache: no ids, no state in the keys."""
    import json
    import pathlib
    import subprocess
    import sys

    import optax
    from numpyro.infer import init_to_uniform  # noqa: F401 - used via the factory's options

    from ctxppl.workflow._cache import fingerprint_callable
    from ctxppl.workflow._units import options_fingerprint as _options_fingerprint

    tests = str(pathlib.Path(__file__).parent.parent)
    out = subprocess.run([sys.executable, "-c", KEYS_SCRIPT.format(tests=tests, used=True)],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    theirs = json.loads(out.strip().splitlines()[-1])
    opt = optax.adam(optax.cosine_decay_schedule(1e-2, 3000, alpha=0.01))  # never used here
    spec = m.gmm_factory(3, "full")
    ours = [fingerprint_callable(spec.bound_model()), fingerprint_callable(m.gmm_factory),
            _options_fingerprint({"optimizer": opt, **spec.options})]
    assert theirs == ours


def test_cache_entries_are_plain_files_and_rebuild_encoders(tmp_path, monkeypatch):
    """Entries hold JSON + arrays (no pickle), encoder params come back as modules, and a
    damaged entry is recomputed with a warning instead of failing or being trusted."""
    import glob

    from ctxppl._files import read_npz

    rng = np.random.default_rng(0)
    data = {"C": rng.normal(size=(16, 1)), "X": rng.normal(size=(16, 2))}
    data["Y"] = data["X"][:, 0] * data["C"][:, 0]
    splits = ctx.workflow.kfold(16, k=2)
    grid = ctx.workflow.grid(width=[4], depth=[1])
    opts = {"num_steps": 30}
    first = ctx.workflow.run(m.regression_factory, grid, splits, data, cache=tmp_path,
                             progress=False, **opts)
    (entry,) = glob.glob(str(tmp_path / "fits" / "*.npz"))
    read_npz(entry, expect="ctxppl-cache")  # allow_pickle=False inside
    calls = _spy(monkeypatch)
    again = ctx.workflow.run(m.regression_factory, grid, splits, data, cache=tmp_path,
                             progress=False, **opts)
    assert calls == [] and again["cached"].all()
    for a, b in zip(first["fit"], again["fit"], strict=True):
        np.testing.assert_array_equal(a.predict()["w"], b.predict()["w"])
    with open(entry, "r+b") as f:  # truncate the entry: a crash of an old writer, a bad disk
        f.truncate(100)
    with pytest.warns(RuntimeWarning, match="truncated or damaged.*recomputed"):
        third = ctx.workflow.run(m.regression_factory, grid, splits, data, cache=tmp_path,
                                 progress=False, **opts)
    assert len(calls) == 1 and not third["cached"].any()
    read_npz(entry, expect="ctxppl-cache")  # rewritten whole
