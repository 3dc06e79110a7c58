"""NUTS through numpyro's MCMC; point-estimated encoders are held at their MAP values."""

from __future__ import annotations

import warnings
from typing import Any

import jax
import numpy as np
from numpyro import handlers
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.infer import MCMC, NUTS

__all__ = ["run_nuts"]


def run_nuts(model, key, args, kwargs, opts: dict[str, Any], fixed: dict[str, Any]):  # noqa: ANN001, ANN201
    """Sample the latent sites of ``model`` with NUTS (``fixed`` param sites substituted).

    Returns ``(samples grouped by chain, diagnostics)``.
    """
    if fixed:
        model = handlers.substitute(model, data=fixed)
    num_chains = int(opts["num_chains"])
    method = opts["chain_method"]
    if method == "auto":
        method = "parallel" if jax.local_device_count() >= num_chains else "vectorized"
    kernel = NUTS(model, target_accept_prob=opts["target_accept_prob"],
                  max_tree_depth=opts["max_tree_depth"], dense_mass=opts["dense_mass"],
                  init_strategy=opts["init_strategy"])
    mcmc = MCMC(kernel, num_warmup=opts["num_warmup"], num_samples=opts["num_samples"],
                num_chains=num_chains, chain_method=method, thinning=opts["thinning"],
                progress_bar=opts["progress"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*CPU.*devices.*")
        mcmc.run(key, *args, extra_fields=("diverging",), **kwargs)
    samples = mcmc.get_samples(group_by_chain=True)
    diverging = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["diverging"])
    r_hat, ess = {}, {}
    for name, value in samples.items():
        v = np.asarray(value)
        if v.size == 0:
            continue
        with np.errstate(invalid="ignore", divide="ignore"):  # constant draws: nan, reported
            ess[name] = (float(np.min(effective_sample_size(v))) if v.shape[1] > 1
                         else float("nan"))
            r_hat[name] = (float(np.max(split_gelman_rubin(v)))
                           if v.shape[0] > 1 and v.shape[1] > 3 else float("nan"))
    diagnostics = {"divergences": int(diverging.sum()),
                   "divergences_per_chain": diverging.sum(axis=1),
                   "r_hat": r_hat, "ess": ess}
    return samples, diagnostics
