"""Run LinkedIn's lambda-learner 0.1.0 on an .npz of per-entity minibatches; print JSON.

Run with the peer venv (bash bench/peers/setup_lambda_learner.sh):
    bench/.venv-lambda/bin/python bench/peers/lambda_learner_runner.py IN.npz OUT.json

IN.npz: X (U, K, R, d), y (U, K, R) in {0, 1}, offset (U, K, R), and scalars lam, delta,
trainer ("seq_bayes" | "logistic" | "square"). Entity u absorbs its K minibatches in order,
each with one Trainer*.train() call (the Hessian, HessianType.FULL, is carried for
"seq_bayes"). BLAS is pinned to one thread (12x faster than the default for these tiny
problems). Only training is timed: the IndexedDataset of every minibatch is built first
(the peer's best case). OUT.json: theta (U, d), hessian (U, d, d), seconds (wall), cpu_seconds, updates.
"""

import os
import sys

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
            "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[var] = "1"

import json  # noqa: E402
import time  # noqa: E402
from importlib.metadata import version  # noqa: E402

import numpy as np  # noqa: E402
from linkedin.learner.ds.indexed_dataset import IndexedDataset  # noqa: E402
from linkedin.learner.ds.indexed_model import IndexedModel  # noqa: E402
from linkedin.learner.prediction.hessian_type import HessianType  # noqa: E402
from linkedin.learner.prediction.trainer_logistic_loss_with_l2 import (  # noqa: E402
    TrainerLogisticLossWithL2,
)
from linkedin.learner.prediction.trainer_sequential_bayesian_logistic_loss_with_l2 import (  # noqa: E402,E501
    TrainerSequentialBayesianLogisticLossWithL2,
)
from linkedin.learner.prediction.trainer_square_loss_with_l2 import (  # noqa: E402
    TrainerSquareLossWithL2,
)
from scipy import sparse  # noqa: E402


def main(inp: str, out: str) -> None:
    z = np.load(inp)
    x, y, off = z["X"], z["y"], z["offset"]
    lam, delta, trainer = float(z["lam"]), float(z["delta"]), str(z["trainer"])
    u, k, r, d = x.shape
    # labels: +-1 for the logistic losses (TrainingRecord.label does this mapping), raw for
    # the square loss
    lab = 2 * y - 1 if trainer != "square" else y
    data = [[IndexedDataset(sparse.csc_matrix(x[i, j]), lab[i, j], np.ones(r), off[i, j])
             for j in range(k)] for i in range(u)]
    theta = np.zeros((u, d))
    hess = np.zeros((u, d, d))
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(u):
        model = IndexedModel(np.zeros(d), sparse.diags(np.full(d, lam)).tocsc())
        for j in range(k):
            if trainer == "seq_bayes":
                tr = TrainerSequentialBayesianLogisticLossWithL2(
                    training_data=data[i][j], initial_model=model, penalty=lam, delta=delta,
                    hessian_type=HessianType.FULL)
            elif trainer == "logistic":
                tr = TrainerLogisticLossWithL2(training_data=data[i][j], initial_model=model,
                                               penalty=lam, hessian_type=HessianType.FULL)
            else:
                tr = TrainerSquareLossWithL2(training_data=data[i][j], initial_model=model,
                                             penalty=lam)
            model, _, meta = tr.train()
            if meta["warnflag"] != 0:
                print(f"entity {i} minibatch {j}: L-BFGS warnflag {meta['warnflag']}",
                      file=sys.stderr)
        theta[i] = model.theta
        if model.hessian is not None:
            hess[i] = model.hessian.toarray()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    with open(out, "w") as fh:
        json.dump({"theta": theta.tolist(), "hessian": hess.tolist(), "seconds": seconds,
                   "cpu_seconds": cpu,
                   "updates": u * k, "lambda_learner": version("lambda-learner"),
                   "python": sys.version.split()[0]}, fh)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
