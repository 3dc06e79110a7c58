"""Fit one linear mixed model with statsmodels MixedLM and print the estimates as JSON.

Runs inside bench/.venv-stats (bench/peers/setup_statsmodels.sh). Reads an .npz with
``y``, ``x``, ``g`` (integer groups); ``--slope`` adds a random slope on ``x``.
REML (statsmodels' default, as lme4) with statsmodels' default optimizer chain
(BFGS, then L-BFGS, then CG): L-BFGS alone is faster but lands on a singular boundary
fit on the radon data, so the default is its best reliable setting.

    python statsmodels_runner.py data.npz [--slope]
"""

import argparse
import json
import time
import warnings

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("npz")
    ap.add_argument("--slope", action="store_true")
    ap.add_argument("--method", default=None, help="statsmodels fit method (default: its own)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    import statsmodels
    import statsmodels.api as sm

    t_import = time.perf_counter() - t0
    d = np.load(args.npz)
    y, x, g = d["y"], d["x"], d["g"]
    X = np.column_stack([np.ones_like(x), x])
    Zre = X if args.slope else np.ones((len(x), 1))
    t1 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sm.MixedLM(y, X, groups=g, exog_re=Zre)
        kw = {} if args.method is None else {"method": args.method}
        res = model.fit(reml=True, **kw)
    t_fit = time.perf_counter() - t1
    cov = np.asarray(res.cov_re) * 1.0
    sd = np.sqrt(np.diag(cov))
    out = {"fe": np.asarray(res.fe_params).tolist(), "sd_re": sd.tolist(),
           "corr": float(cov[0, 1] / (sd[0] * sd[1])) if args.slope else None,
           "sigma": float(np.sqrt(res.scale)), "converged": bool(res.converged),
           "fit_seconds": t_fit, "import_seconds": t_import,
           "version": statsmodels.__version__}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
