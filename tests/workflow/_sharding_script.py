"""Run by test_sharding.py in a subprocess with 4 host devices (XLA_FLAGS set before jax).

Prints one JSON line comparing 4-device sharded fits with one-device fits:
* "trajectory": the seed model (MLP encoder), 50 Adam steps on 220 rows (55 per device): the
  same computation, so the losses agree to float32 rounding (over longer runs Adam on a
  non-convex net amplifies rounding differences into different local optima);
* "optimum": a linear-encoder model (a well-posed optimum) run to convergence on 221 rows
  (padded with zero-weight rows to 224);
* "fit_many": 5 bootstrap fits of the MLP model (50 Adam steps) with the fit axis sharded
  over the devices (padded to 8) against the same fits on one device.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import ctxppl as ctx
from ctxppl.datasets import cluster_tutorial


def mlp_model(C, X, Y=None):
    enc = ctx.encoder("enc", ctx.nn.MLP(C.shape[-1], X.shape[-1], width=16, depth=2))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with ctx.plate("patients", C.shape[0], context=C):
        w = ctx.contextual("w", enc)
        numpyro.sample("y", dist.Normal(jnp.sum(X * w, -1), sigma), obs=Y)


def linear_model(C, X, Y=None):
    enc = ctx.encoder("enc", ctx.nn.Linear(C.shape[-1], X.shape[-1]))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with ctx.plate("patients", C.shape[0], context=C):
        w = ctx.contextual("w", enc)
        numpyro.sample("y", dist.Normal(jnp.sum(X * w, -1), sigma), obs=Y)


def flat(fit):
    leaves = jax.tree_util.tree_leaves(fit.params)
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in leaves])


seen = []
real_fit = ctx.fit


def spy(model, *args, **kw):
    seen.append(len(args[0].sharding.device_set))
    return real_fit(model, *args, **kw)


d = cluster_tutorial()
C, X, Y = (np.asarray(a, np.float32) for a in (d.C_train, d.X_train, d.Y_train))
Y = Y + 0.1 * np.random.default_rng(0).normal(size=Y.shape).astype(np.float32)
cases = {"trajectory": (mlp_model, {"num_steps": 50, "tol": 0.0}, (220,)),
         "optimum": (linear_model, {"num_steps": 4000, "tol": 1e-7}, (221,))}
out = {"devices": jax.device_count()}
for case, (model, extra, sizes) in cases.items():
    opts = {"learning_rate": 1e-2, "progress": False, **extra}
    for n in sizes:
        one = ctx.fit(model, C[:n], X[:n], Y[:n], key=0, **opts)  # plain fit, one device
        ctx.fit = spy
        four = ctx.workflow.shard_fit(model, C[:n], X[:n], Y[:n], plate="patients", key=0,
                                      **opts)
        ctx.fit = real_fit
        ref = flat(one)
        w_four = np.asarray(four.predict()["w"])
        w_one = np.asarray(one.predict()["w"]) if case == "optimum" else w_four
        out[f"{case}_{n}"] = {
            "rel_four": float(np.max(np.abs(flat(four) - ref)) / np.max(np.abs(ref))),
            "abs_w": float(np.max(np.abs(w_four - w_one))),
            "w_shape": list(w_four.shape), "n_args": len(four.args[0]),
            "loss_rel": float(np.nanmax(np.abs(four.diagnostics["loss_history"][:50]
                                               - one.diagnostics["loss_history"][:50]))
                              / np.nanmax(np.abs(one.diagnostics["loss_history"][:50]))),
            "steps": [int(one.diagnostics["num_steps"]), int(four.diagnostics["num_steps"])]}
out["sharded_over"] = seen

# fit_many: the fit axis (5 bootstrap fits, padded to 8) split over the devices
import ctxppl.infer._fit as fit_module  # noqa: E402

real_many, many_devices = fit_module.run_opt_many, []


def spy_many(model, spec, keys, *rest):
    many_devices.append(len(keys.sharding.device_set))
    return real_many(model, spec, keys, *rest)


fit_module.run_opt_many = spy_many
opts = {"learning_rate": 1e-2, "progress": False, "num_steps": 50, "tol": 0.0}
many = {d: ctx.fit_many(mlp_model, C, X, Y, key=0, num_fits=5, bootstrap=True,
                        plate="patients", devices=d, **opts) for d in (1, None)}
fit_module.run_opt_many = real_many
ref, got = flat(many[1]), flat(many[None])
hist = [m.diagnostics["loss_history"][:, :50] for m in (many[1], many[None])]
# relative to each fit's largest |loss| (as "trajectory"): rounding scales with the terms
# summed, and a loss passing near zero on its way down has no relative precision of its own
scale = np.nanmax(np.abs(hist[0]), axis=1, keepdims=True)
out["fit_many"] = {"rel": float(np.max(np.abs(got - ref)) / np.max(np.abs(ref))),
                   "loss_rel": float(np.max(np.abs(hist[1] - hist[0]) / scale)),
                   "batch": [many[1].batch_shape[0], many[None].batch_shape[0]],
                   "loss_shape": list(many[None].diagnostics["loss_history"].shape),
                   "sharded_over": many_devices}
print(json.dumps(out))
