"""Fits over two real ``jax.distributed`` processes on loopback, started by ``ctxppl launch``.

Each process passes only its own rows; both must end with the same ``Fit`` as one process
on all the data. float64, so the tolerances (1e-5 relative, from the issue) hold with a wide
margin: the runs differ only in summation order (~1e-16 measured).
"""

import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import ctxppl as ctx

from ._distributed_models import model

SCRIPT = pathlib.Path(__file__).with_name("_distributed_script.py")
TIMEOUT = 600  # seconds; the launcher stops every process by itself at TIMEOUT - 30


def _launch(out: pathlib.Path, mode: str, grace: float = 60.0, n: int = 2):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "ctxppl.cli", "launch", "-n", str(n), "--cpu-devices",
           str(4 // n),
           "--timeout", str(TIMEOUT - 30), "--grace", str(grace), str(SCRIPT), str(out), mode]
    t0 = time.monotonic()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    return res, time.monotonic() - t0


def _rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.nanmax(np.abs(a - b)) / max(np.nanmax(np.abs(b)), 1e-300))


def _check_run(out: pathlib.Path, methods: tuple[str, ...], ref: dict | None = None) -> None:
    """``ref``: reference arrays from another run (else this run's ``*_ref_*`` arrays)."""
    s = [json.loads((out / f"summary_p{i}.json").read_text()) for i in (0, 1)]
    assert [x["nproc"] for x in s] == [2, 2] and [x["devices"] for x in s] == [4, 4]
    # the same Fit on both processes, bit for bit
    assert s[0]["digest"] == s[1]["digest"]
    r0, r1 = (np.load(out / f"result_p{i}.npz") for i in (0, 1))
    for k in r0.files:
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=k)
    r0 = {**dict(r0), **(ref or {})}
    assert int(r0["padding"]) == 20  # 110 + 130 rows on 4 devices of 65 rows
    # two processes equal one process on all the data (1e-5 relative: the bound)
    for m in methods:
        assert _rel(r0[f"{m}_params"], r0[f"{m}_ref_params"]) < 1e-5, m
        assert _rel(r0[f"{m}_loss"], r0[f"{m}_ref_loss"]) < 1e-5, m
    if "many" in methods:
        assert int(r0["many_processes"]) == 2
    if "w_shape" in r0:
        assert r0["w_shape"].tolist() == [260, 3]  # per-row sites stay split like the rows
        assert r0["rows_params"].size == 1 + 240
        assert _rel(r0["rows_params"], r0["rows_ref_params"]) < 1e-5
    if "map" not in methods:
        return
    assert int(r0["map_processes"]) == 2
    assert "method='nuts' does not take rows split over several processes" in \
        str(r0["nuts_refused"])
    # save writes once: process 0's file exists, process 1 wrote nothing
    assert (out / "map_from_p0.npz").exists() and not (out / "map_from_p1.npz").exists()
    back = ctx.load(str(out / "map_from_p0.npz"), model=model)
    assert back.args[0].shape == (260, 2)  # the gathered global rows
    leaves = jax.tree_util.tree_leaves(back.params)
    np.testing.assert_array_equal(np.concatenate([np.ravel(v) for v in leaves]),
                                  r0["map_params"])


@pytest.mark.parametrize("mode,methods", [("map", ("map",)), ("svi", ("svi_mb",)),
                                          ("many", ("many",))])
def test_two_processes_fit_like_one(tmp_path, mode, methods):
    """One launch per method, so that each test stays under a minute."""
    ref = None
    if mode == "svi":  # the reference: the same 4 row shards on one process's 4 devices
        (tmp_path / "one").mkdir()
        res, _ = _launch(tmp_path / "one", mode, n=1)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
        one = np.load(tmp_path / "one" / "result_p0.npz")
        assert int(one["svi_mb_processes"]) == 1
        ref = {f"svi_mb_ref_{k}": one[f"svi_mb_{k}"] for k in ("params", "loss")}
    res, _ = _launch(tmp_path, mode)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    if mode == "svi":
        assert int(np.load(tmp_path / "result_p0.npz")["svi_mb_processes"]) == 2
    _check_run(tmp_path, methods, ref)


@pytest.mark.slow
def test_two_processes_laplace_and_full_batch_svi(tmp_path):
    res, _ = _launch(tmp_path, "full")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    _check_run(tmp_path, ("map", "laplace", "svi", "many"))


def test_dead_process_fails_the_other_in_bounded_time(tmp_path):
    """Process 1 exits inside a long fit. Process 0 must stop by itself with a clear error:
    ctxppl's DistributedError when its collective sees the broken connection, or JAX's
    fatal error when the coordinator misses process 1's heartbeats (10 s)."""
    res, seconds = _launch(tmp_path, "die", grace=120.0)
    err = res.stderr
    assert res.returncode == 7, err[-3000:]  # the launcher reports the first failure
    assert "ctxppl launch: process 1 exited with code 7" in err
    assert "still running after --grace" not in err  # not stopped by the launcher
    ours = "another process of this jax.distributed run most likely died" in err
    jax_s = "Terminating process because the JAX distributed service detected fatal " \
        "errors. This most likely indicates that another task died" in err
    assert ours or jax_s, err[-3000:]
    assert seconds < 120 + 60, seconds  # bounded: far below the 120 s grace + startup


def test_initialize_alone_and_bad_settings(monkeypatch):
    for name in ("CTXPPL_COORDINATOR", "CTXPPL_NUM_PROCESSES", "CTXPPL_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    cache_on = jax.config.jax_enable_compilation_cache
    assert ctx.distributed.initialize() == (0, 1)
    assert jax.config.jax_enable_compilation_cache == cache_on  # only off with 2+ processes
    assert ctx.distributed.initialize(num_processes=1) == (0, 1)
    with pytest.raises(ValueError, match=r"`process_id` must be in \[0, 2\); got 2"):
        ctx.distributed.initialize("127.0.0.1:1", 2, 2)
    monkeypatch.setenv("CTXPPL_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="CTXPPL_NUM_PROCESSES must be an integer"):
        ctx.distributed.initialize()
    monkeypatch.delenv("CTXPPL_NUM_PROCESSES")
    # JAX already runs in this process: fine alone, a clear error inside a 2-task job
    jax.devices()
    assert ctx.distributed.initialize() == (0, 1)
    monkeypatch.setenv("SLURM_NTASKS", "2")
    with pytest.raises(RuntimeError, match=r"must run before any JAX .*SLURM_NTASKS=2"):
        ctx.distributed.initialize()
    assert jax.config.jax_enable_compilation_cache == cache_on


def test_global_arrays_on_one_process_and_bad_input():
    x, y = ctx.distributed.global_arrays(np.arange(6.0).reshape(3, 2), np.zeros(3))
    assert x.shape == (3, 2) and y.shape == (3,)
    np.testing.assert_array_equal(np.asarray(x), np.arange(6.0).reshape(3, 2))
    with pytest.raises(ValueError, match="same number of rows"):
        ctx.distributed.global_arrays(np.ones((3, 2)), np.ones(4))
    with pytest.raises(ValueError, match=r"array 1 of global_arrays holds 1 NaN/inf"):
        ctx.distributed.global_arrays(np.ones(3), np.array([0.0, np.nan, 1.0]))
    with pytest.raises(TypeError, match="must be numeric"):
        ctx.distributed.global_arrays(np.array(["a", "b"]))
    with pytest.raises(ValueError, match="at least one array"):
        ctx.distributed.global_arrays()


def test_different_hash_seeds_are_refused(monkeypatch):
    """Processes hashing strings differently would trace different programs: refused."""
    from jax.experimental import multihost_utils

    from ctxppl.infer import _distributed

    monkeypatch.setattr(multihost_utils, "process_allgather",
                        lambda x: np.stack([x, x + 1]))
    with pytest.raises(ValueError, match="different string-hash seeds"):
        _distributed._check_same_hashing()
    monkeypatch.setattr(multihost_utils, "process_allgather", lambda x: np.stack([x, x]))
    _distributed._check_same_hashing()


def test_launcher_usage_errors(tmp_path, capsys):
    from ctxppl.cli import main

    assert main(["launch", "-n", "2", str(tmp_path / "missing.py")]) == 2
    assert "no such file" in capsys.readouterr().err
    script = tmp_path / "ok.py"
    script.write_text("import os, sys\nsys.exit(int(os.environ['CTXPPL_PROCESS_ID']))\n")
    assert main(["launch", "-n", "0", str(script)]) == 2
    assert "`-n` must be a positive number of processes; got 0" in capsys.readouterr().err
    # process 1 exits 1: the launcher returns it; nothing else runs (no JAX in the script)
    assert main(["launch", "-n", "2", "--timeout", "60", str(script)]) == 1
    assert "process 1 exited with code 1" in capsys.readouterr().err
