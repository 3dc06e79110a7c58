"""Data-parallel fits sharded over 4 CPU devices equal one-device fits (run in a subprocess:
XLA_FLAGS must be set before JAX initialises)."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import ctxppl as ctx

SCRIPT = pathlib.Path(__file__).with_name("_sharding_script.py")


def test_sharded_fit_equals_one_device_fit():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    assert out["sharded_over"] == [4, 4]  # rows really were split over 4 devices
    # float32 sums in another order: a loss of n = 220 terms differs by ~ n * eps (2.6e-5)
    traj = out["trajectory_220"]
    assert traj["loss_rel"] < 3e-5, traj
    opt = out["optimum_221"]  # 221 rows, padded with zero-weight rows: the same optimum
    assert opt["rel_four"] < 1e-5 and opt["abs_w"] < 1e-5, opt
    assert opt["w_shape"] == [221, 2] and opt["n_args"] == 221  # padding cut off again
    many = out["fit_many"]  # fit axis over 4 devices: the same fits, padding cut off
    assert many["sharded_over"] == [1, 4], many
    assert many["batch"] == [5, 5] and many["loss_shape"][0] == 5, many
    # per-fit computation is unchanged; only XLA's fusion differs: float32 rounding, as above
    assert many["loss_rel"] < 3e-5 and many["rel"] < 1e-5, many


def test_shard_fit_on_one_device_and_bad_input():
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    def model(x, y=None):
        b = numpyro.sample("b", dist.Normal(0.0, 10.0))
        with ctx.plate("rows", x.shape[0]):
            numpyro.sample("y", dist.Normal(b * x, 1.0), obs=y)

    x = np.linspace(-1, 1, 11).astype(np.float32)
    fit = ctx.workflow.shard_fit(model, x, 3 * x, plate="rows", key=0, progress=False)
    ref = ctx.fit(model, x, 3 * x, key=0, progress=False)
    assert float(fit.params["b"]) == float(ref.params["b"])
    with pytest.raises(ValueError, match="`plate` 'cols' is not a plate"):
        ctx.workflow.shard_fit(model, x, 3 * x, plate="cols", key=0)
    with pytest.raises(ValueError, match="`method` must be 'map', 'laplace' or 'svi'"):
        ctx.workflow.shard_fit(model, x, 3 * x, plate="rows", method="nuts", key=0)
    assert jax.device_count() >= 1 and jnp.ndim(fit.params["b"]) == 0
