"""Per-sample sites of a fitted model at new inputs, for every bootstrap and posterior draw."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import numpy as np
from numpyro import handlers

from ctxppl.handlers import minibatch
from ctxppl.infer._sites import model_structure

__all__ = ["predict_sites", "split_fit"]


def split_fit(fit: Any) -> tuple[dict, dict, int]:
    """``(params, draws, B)``: point-estimated ``param`` sites and latent draws of a
    :class:`ctxppl.Fit`, both with a leading fits axis ``B`` (1 for a single fit); draws
    have a second axis (one draw for MAP)."""
    params = {k: fit.params[k] for k in fit.param_names}
    draws = fit.posterior()
    if fit.samples is not None:
        # NUTS also keeps deterministic sites (the per-sample parameters at the training
        # contexts); substituted at new contexts they would replace the prediction
        structure = model_structure(fit.model, fit.args, fit.kwargs)
        draws = {k: v for k, v in draws.items()
                 if k not in structure.sites or structure.sites[k].type == "sample"}
    if not fit.batch_shape:
        params = jax.tree_util.tree_map(lambda a: np.asarray(a)[None], params)
        draws = jax.tree_util.tree_map(lambda a: np.asarray(a)[None], draws)
        return params, draws, 1
    return params, draws, int(fit.batch_shape[0])


def _predict_impl(model, params, draws, args, sites):  # noqa: ANN001, ANN202
    full = minibatch(model, size=None)

    def one(p, d):  # noqa: ANN001, ANN202
        m = handlers.substitute(handlers.seed(full, jax.random.key(0)), data={**p, **d})
        tr = handlers.trace(m).get_trace(*args)
        return {s: tr[s]["value"] for s in sites}

    def per_fit(p, ds):  # noqa: ANN001, ANN202
        if not ds:
            return jax.tree_util.tree_map(lambda a: a[None], one(p, {}))
        return jax.vmap(lambda d: one(p, d))(ds)

    return jax.vmap(per_fit)(params, draws)


_predict = eqx.filter_jit(_predict_impl)


def predict_sites(model: Any, params: dict, draws: dict, args: tuple,
                  sites: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Sites ``sites`` of ``model(*args)`` for every fit and draw: arrays ``(B * S, ...)``.

    ``params`` have a leading fits axis ``B``; ``draws`` a leading ``(B, S)``. The model runs
    with every plate at full size (no minibatching).
    """
    out = _predict(model, params, draws, tuple(args), tuple(sites))
    return {k: np.asarray(v).reshape((-1,) + v.shape[2:]) for k, v in out.items()}
