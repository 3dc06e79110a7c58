"""Run by test_distributed.py under ``ctxppl launch -n 2 --cpu-devices 2``.

``_distributed_script.py OUT MODE``. Every process fits the same data twice: split over
both processes (each passes only its own rows) and alone, on its own devices, with the whole
data (the one-process reference). It writes ``OUT/result_p{i}.npz`` and a summary.

* MODE ``map``: MAP with uneven row counts (padding rows of weight 0), ``save`` (written by
  process 0 only), and NUTS refused on rows split over processes (its stated reason).
* MODE ``svi``: SVI with minibatches drawn per shard over all devices (the test's reference
  is this mode run as one process with as many devices: the same shards, the same draws).
* MODE ``many``: ``fit_many`` over all four devices of both processes.
* MODE ``full``: all of these, plus Laplace, full-batch SVI, ``predict`` at the training rows
  and a per-row latent (MAP values split like the rows, gathered).
* MODE ``die``: process 1 exits while both are inside a long ``ctx.fit``; process 0 must stop
  with a clear error, not hang.

float64 throughout: a difference between the runs is then a real one, not float32
summation order.
"""

import hashlib
import json
import os
import pathlib
import sys
import threading
import time

import ctxppl as ctx

T0 = time.time()
import faulthandler  # noqa: E402

faulthandler.dump_traceback_later(300)  # stacks, should a run ever hang
# a short heartbeat where a peer is meant to die; under load a busy peer can miss beats
pid, nproc = ctx.distributed.initialize(heartbeat_timeout=10 if sys.argv[2] == "die" else 60,
                                        shutdown_timeout=10)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from _distributed_models import model, rows_model  # noqa: E402

out_dir = pathlib.Path(sys.argv[1])
mode = sys.argv[2]
parts = {"map": {"map"}, "svi": {"svi_mb"}, "many": {"many"}, "die": set(),
         "full": {"map", "svi_mb", "many", "full"}}[mode]


rng = np.random.default_rng(0)
N = 240
C = rng.normal(size=(N, 2))
X = rng.normal(size=(N, 3))
Y = np.sum(X * (C @ rng.normal(size=(2, 3))), -1) + 0.3 * rng.normal(size=N)
uneven = [0, 110, N]  # process 0 has 110 rows, process 1 130: padding rows of weight 0
even = [N * i // nproc for i in range(nproc + 1)]


def mine(cut, *arrays):
    return tuple(a[cut[pid]:cut[pid + 1]] for a in arrays)


def say(*a):
    print(f"[{time.time() - T0:.1f}]", *a, file=sys.stderr, flush=True)


def flat(tree):
    leaves = jax.tree_util.tree_leaves(tree)
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in leaves])


res = {}
opts = {"progress": False, "num_steps": 100, "tol": 0.0, "learning_rate": 0.02}

if mode == "die":  # process 1 leaves while both run a long fit
    data = ctx.distributed.global_arrays(*mine(even, C, X, Y))
    if pid == 1:  # exit 3 s after the last compilation: inside the running fit

        class Killer:
            timer = None

            def __call__(self, event, duration, **kwargs):
                if event == "/jax/core/compile/backend_compile_duration":
                    if self.timer is not None:
                        self.timer.cancel()
                    self.timer = threading.Timer(3.0, os._exit, (7,))
                    self.timer.start()

        jax.monitoring.register_event_duration_secs_listener(Killer())
    t = time.time()
    try:
        ctx.fit(model, *data, key=1, progress=False, num_steps=10**7, tol=0.0)
    except ctx.distributed.DistributedError as e:
        print(f"process {pid}: DistributedError after {time.time() - t:.1f} s: {e}",
              file=sys.stderr, flush=True)
        raise
    sys.exit(0)

# MAP: uneven rows, padding rows weighted 0; reference: one device, plain arrays
data = ctx.distributed.global_arrays(*mine(uneven if nproc == 2 else even, C, X, Y))
res["padding"] = np.asarray(data.weights is not None and (data.weights == 0).sum())
methods = ((("map", {}),) if "map" in parts else ()) + (
    (("laplace", {"num_samples": 50}), ("svi", {})) if "full" in parts else ())
for method, extra in methods:
    say("fit", method)
    fit = ctx.fit(model, *data, method=method, key=1, weights=data.weights, plate="n",
                  **opts, **extra)
    say("ref", method)
    ref = ctx.fit(model, C, X, Y, method=method, key=1, **opts, **extra)
    for name, f in (("", fit), ("ref_", ref)):
        res[f"{method}_{name}params"] = flat(f.params)
        res[f"{method}_{name}loss"] = np.asarray(f.diagnostics["loss_history"])
    if method == "map":
        fit.save(str(out_dir / f"map_from_p{pid}.npz"))  # only process 0 writes
        res["map_processes"] = np.asarray(fit.diagnostics["num_processes"])
    if method == "map" and "full" in parts:
        res["w_shape"] = np.asarray(fit.predict()["w"].shape)  # per-row: split like rows

if "svi_mb" in parts:
    # SVI minibatches drawn per shard: 4 row shards (2 per process); the test compares with
    # this mode run as ONE process with 4 devices (the same 4 shards, the same draws)
    say("svi mb")
    svi = {"method": "svi", "key": 2, "batch_size": 40, "plate": "n", **opts}
    fit = ctx.fit(model, *ctx.distributed.global_arrays(*mine(even, C, X, Y)), **svi)
    res["svi_mb_params"] = flat(fit.params)
    res["svi_mb_loss"] = np.asarray(fit.diagnostics["loss_history"])
    res["svi_mb_processes"] = np.asarray(fit.diagnostics["num_processes"])

if "full" in parts:  # a per-row latent: its MAP values are gathered from both processes
    say("rows")
    xr, yr = ctx.distributed.global_arrays(*mine(even, X[:, 0], Y))
    fit = ctx.fit(rows_model, xr, yr, method="map", key=3, **opts)
    ref = ctx.fit(rows_model, X[:, 0], Y, method="map", key=3, **opts)
    res["rows_params"], res["rows_ref_params"] = flat(fit.params), flat(ref.params)

if "many" in parts:
    say("many")
    # fit_many: the same full data on every process, the 5 fits spread over all 4 devices
    many = {"method": "map", "key": 4, "bootstrap": True, "num_fits": 5, "plate": "n",
            "progress": False, "num_steps": 100, "tol": 0.0}
    fit = ctx.fit_many(model, C, X, Y, **many)
    ref = ctx.fit_many(model, C, X, Y, devices=1, **many)
    for name, f in (("", fit), ("ref_", ref)):
        res[f"many_{name}params"] = flat(f.params)
        res[f"many_{name}loss"] = np.asarray(f.diagnostics["loss_history"])
    res["many_processes"] = np.asarray(fit.diagnostics["num_processes"])

# NUTS refuses rows split over processes, before any work, saying why
if "map" in parts:
    try:
        ctx.fit(model, *data, method="nuts", key=1, progress=False)
        res["nuts_refused"] = np.asarray("")
    except ValueError as e:
        res["nuts_refused"] = np.asarray(str(e)[:200])

digest = hashlib.sha256(b"".join(np.ascontiguousarray(v).tobytes()
                                 for _, v in sorted(res.items()))).hexdigest()
np.savez(out_dir / f"result_p{pid}.npz", **res)
with open(out_dir / f"summary_p{pid}.json", "w") as f:
    json.dump({"pid": pid, "nproc": nproc, "devices": jax.device_count(),
               "local_devices": jax.local_device_count(), "digest": digest,
               "seconds": time.time() - T0}, f)
print(f"process {pid}: done in {time.time() - T0:.1f} s", flush=True)
