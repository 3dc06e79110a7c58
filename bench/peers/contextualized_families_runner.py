"""Fit one contextualized-ml 0.2.9 easy-API estimator on an .npz; print one JSON line.

Run with the peer venv (see setup_contextualized.sh):
    bench/.venv-contextualized/bin/python contextualized_families_runner.py IN.npz OUT.npz \
        --family regressor|classifier|correlation|markov|bayesian \
        --setting default|best [--bootstraps B] [--max-epochs E] [--seed S] [--threads 1]

IN.npz: C_train, X_train, (Y_train), C_test. OUT.npz receives the per-sample parameters at
C_test: ``params`` (regressor/classifier: betas (n, y, x) and ``mus``; correlation:
correlations (n, p, p); markov: precisions; bayesian: DAG-projected W). ``best`` is
``train_batch_size=64`` (5x faster and more accurate than the default batch size 1 at
N=20,000). Only the JSON line goes to stdout.
"""

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

FAMILIES = ("regressor", "classifier", "correlation", "markov", "bayesian")

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("npz")
parser.add_argument("out")
parser.add_argument("--family", choices=FAMILIES, required=True)
parser.add_argument("--setting", choices=("default", "best"), default="best")
parser.add_argument("--bootstraps", type=int, default=1)
parser.add_argument("--max-epochs", type=int, default=None)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()

from _threads import pin_threads  # noqa: E402

torch = pin_threads(args.threads)  # before numpy loads its BLAS

import logging  # noqa: E402
import random  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

warnings.filterwarnings("ignore")

from contextualized import easy  # noqa: E402

for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning",
             "lightning_fabric"):
    logging.getLogger(name).setLevel(logging.ERROR)

CLASSES = {
    "regressor": easy.ContextualizedRegressor,
    "classifier": easy.ContextualizedClassifier,
    "correlation": easy.ContextualizedCorrelationNetworks,
    "markov": easy.ContextualizedMarkovNetworks,
    "bayesian": easy.ContextualizedBayesianNetworks,
}


def main():
    data = np.load(args.npz)
    d = {k: np.asarray(data[k], dtype=np.float64) for k in data.files}
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    kwargs = {"n_bootstraps": args.bootstraps}
    if args.setting == "best":
        kwargs["train_batch_size"] = 64
    fit_kwargs = {} if args.max_epochs is None else {"max_epochs": args.max_epochs}
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        os.chdir(tmp)  # the easy API writes lightning_logs/ and checkpoints here
        try:
            est = CLASSES[args.family](**kwargs)
            t0 = time.perf_counter()
            if "Y_train" in d:
                est.fit(d["C_train"], d["X_train"], d["Y_train"], **fit_kwargs)
            else:
                est.fit(d["C_train"], d["X_train"], **fit_kwargs)
            fit_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            C = d["C_test"]
            if args.family in ("regressor", "classifier"):
                betas, mus = est.predict_params(C)
                out = {"params": betas, "mus": mus}
            elif args.family == "correlation":
                out = {"params": est.predict_correlation(C, individual_preds=False,
                                                         squared=False)}
            elif args.family == "markov":
                out = {"params": est.predict_precisions(C, individual_preds=False)}
            else:
                out = {"params": est.predict_networks(C, individual_preds=False)}
            pred_s = time.perf_counter() - t1
            epochs = [int(t.current_epoch) for t in est.trainers]
        finally:
            os.chdir(cwd)
    np.savez(args.out, **{k: np.asarray(v) for k, v in out.items()})
    print(json.dumps({"family": args.family, "setting": args.setting,
                      "bootstraps": args.bootstraps, "seed": args.seed,
                      "fit_seconds": round(fit_s, 4), "predict_seconds": round(pred_s, 4),
                      "epochs": epochs, "n_train": int(d["C_train"].shape[0])}), flush=True)


if __name__ == "__main__":
    main()
