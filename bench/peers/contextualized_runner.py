"""Fit the peer contextualized-ml 0.2.9 (PyTorch) on an .npz and print one JSON line.

Run with the peer venv (see setup_contextualized.sh):
    bench/.venv-contextualized/bin/python contextualized_runner.py IN.npz \
        --setting tutorial|best|batch64|default --seed S --threads 1

IN.npz holds float64 arrays C_train, X_train, Y_train (n, 1), C_test, X_test,
Y_test, W_test (n_test, p). Only the JSON line goes to stdout; library chatter
goes to stderr.
"""

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

SETTINGS = ("tutorial", "best", "batch64", "default")

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("npz")
parser.add_argument("--setting", choices=SETTINGS, default="tutorial")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()

from _threads import pin_threads  # noqa: E402

torch = pin_threads(args.threads)  # before numpy loads its BLAS

import logging
import random
import warnings

import numpy as np

warnings.filterwarnings("ignore")

from contextualized.easy import ContextualizedRegressor
from contextualized.regression import ContextualizedRegression, RegressionTrainer

# Lightning sets its loggers to INFO on import, so quiet them afterwards.
for name in (
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "pytorch_lightning",
    "lightning_fabric",
):
    logging.getLogger(name).setLevel(logging.ERROR)

QUIET_TRAINER = {
    "accelerator": "cpu",
    "enable_progress_bar": False,
    "logger": False,
    "enable_checkpointing": False,
    "enable_model_summary": False,
}


def fit_lightning(d, model_kwargs):
    """Low-level API, as in the seed tutorial: returns (fit_s, predict_s, epochs, betas, mus)."""
    C, X, Y = d["C_train"], d["X_train"], d["Y_train"]
    t0 = time.perf_counter()
    model = ContextualizedRegression(
        C.shape[-1], X.shape[-1], Y.shape[-1], **model_kwargs
    )
    trainer = RegressionTrainer(max_epochs=50, **QUIET_TRAINER)
    trainer.fit(model, model.dataloader(C, X, Y, batch_size=1))
    t1 = time.perf_counter()
    test_dl = model.dataloader(d["C_test"], d["X_test"], d["Y_test"], batch_size=100)
    betas, mus = trainer.predict_params(model, test_dl)  # (n, y_dim, x_dim), (n, y_dim)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, trainer.current_epoch, betas, mus


def fit_easy(d, ctor_kwargs):
    """sklearn-style API (early-stops on a 20% val split): same return as fit_lightning."""
    t0 = time.perf_counter()
    est = ContextualizedRegressor(**ctor_kwargs)
    est.fit(d["C_train"], d["X_train"], d["Y_train"])
    t1 = time.perf_counter()
    betas, mus = est.predict_params(d["C_test"])  # (n, y_dim, x_dim), (n, y_dim)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, est.trainers[0].current_epoch, betas, mus


def main():
    data = np.load(args.npz)
    d = {k: np.asarray(data[k], dtype=np.float64) for k in data.files}
    random.seed(args.seed)
    np.random.seed(args.seed)  # easy API's train/val split uses the global numpy RNG
    torch.manual_seed(args.seed)

    # Keep library prints off stdout; the easy API writes lightning_logs/ and
    # checkpoints under the working directory, so run inside a temp dir.
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        os.chdir(tmp)
        try:
            if args.setting == "tutorial":
                res = fit_lightning(d, {"encoder_kwargs": {"width": 25, "layers": 2}})
            elif args.setting == "best":
                res = fit_lightning(
                    d,
                    {
                        "metamodel_type": "subtype",
                        "num_archetypes": 10,
                        "encoder_kwargs": {"width": 25, "layers": 2},
                    },
                )
            elif args.setting == "default":
                res = fit_easy(d, {})
            else:  # batch64
                res = fit_easy(d, {"train_batch_size": 64})
        finally:
            os.chdir(cwd)
    fit_s, pred_s, epochs, betas, mus = res

    w_hat = betas[:, 0, :]  # y_dim == 1
    y_hat = (w_hat * d["X_test"]).sum(axis=1) + mus[:, 0]
    out = {
        "setting": args.setting,
        "seed": args.seed,
        "fit_seconds": round(fit_s, 4),
        "predict_seconds": round(pred_s, 4),
        "effect_mse": float(np.mean((d["W_test"] - w_hat) ** 2)),
        "response_mse": float(np.mean((d["Y_test"][:, 0] - y_hat) ** 2)),
        "n_train": int(d["C_train"].shape[0]),
        "n_test": int(d["C_test"].shape[0]),
        "epochs": int(epochs),
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
