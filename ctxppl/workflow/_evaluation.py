r"""One fit on one split, as a scoring function sees it: :class:`Evaluation`.

Every observed site's values, predictive means and pointwise log-likelihoods, and every
per-member site of the model at the fitted parameters, are computed once for all splits of a
config in one jit-compiled, vmapped pass (:class:`Batch`); an :class:`Evaluation` is one
split's view of that pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.distributions.transforms import biject_to

from ctxppl._handlers import minibatch

__all__ = ["Evaluation", "Batch", "count_free_parameters"]


def _member_axis(site: dict, plate: str) -> int | None:
    dims = {f.name: f.dim for f in site["cond_indep_stack"]}
    if plate not in dims:
        return None
    if site["type"] == "sample":
        return len(site["fn"].batch_shape) + dims[plate]
    # deterministic: assume its leading dims are exactly the enclosing plates' dims
    return max(-d for d in dims.values()) + dims[plate]


def _trace(model: Callable, values: dict, args: tuple, kwargs: dict) -> dict:
    m = minibatch(handlers.substitute(model, data=values), size=None)
    return handlers.trace(handlers.seed(m, jax.random.key(0))).get_trace(*args, **kwargs)


def _evaluate_one(model: Callable, plate: str, values: dict, args: tuple, kwargs: dict) -> dict:
    tr = _trace(model, values, args, kwargs)
    obs, sites = {}, {}
    for name, s in tr.items():
        if name.startswith("_") or s["type"] not in ("sample", "deterministic"):
            continue
        ax = _member_axis(s, plate)
        if ax is None:
            continue
        value = jnp.moveaxis(jnp.asarray(s["value"]), ax, 0)
        if s["type"] == "sample" and s["is_observed"]:
            fn = s["fn"]
            ll = jnp.moveaxis(fn.log_prob(s["value"]), ax, 0)
            ll = jnp.sum(jnp.reshape(ll, (ll.shape[0], -1)), axis=-1)
            try:
                mean = jnp.moveaxis(jnp.broadcast_to(fn.mean, jnp.shape(s["value"])), ax, 0)
            except (NotImplementedError, ValueError, TypeError):
                mean = jnp.full(value.shape, jnp.nan)
            obs[name] = {"value": value, "mean": mean.astype(ll.dtype), "loglik": ll}
        else:
            sites[name] = value
    return {"obs": obs, "sites": sites}


def count_free_parameters(model: Callable, args: tuple, kwargs: dict) -> int:
    """Number of free (unconstrained) dimensions of every latent and ``param`` site."""
    out: dict[str, int] = {}

    def run(key):  # noqa: ANN001, ANN202
        tr = handlers.trace(handlers.seed(minibatch(model, size=None), key)).get_trace(
            *args, **kwargs)
        total = 0
        for s in tr.values():
            if s["type"] == "sample" and not s["is_observed"] and not s["infer"].get(
                    "is_auxiliary", False):
                total += int(np.prod(biject_to(s["fn"].support).inverse_shape(
                    jnp.shape(s["value"]))))
            elif s["type"] == "param":
                c = s["kwargs"].get("constraint")
                for leaf in jax.tree_util.tree_leaves(s["value"]):
                    shape = jnp.shape(leaf)
                    if c is not None:
                        shape = biject_to(c).inverse_shape(shape)
                    total += int(np.prod(shape))
        out["k"] = total
        return 0

    jax.eval_shape(run, jax.random.key(0))
    return out["k"]


class Batch:
    """Lazily evaluated per-member quantities of one config's batched fit (all splits)."""

    def __init__(self, fit: Any, plate: str, keep_draws: bool):
        self.fit, self.plate, self.keep_draws = fit, plate, keep_draws
        self._out: dict | None = None
        self._k: int | None = None

    @property
    def out(self) -> dict:
        if self._out is None:
            fit = self.fit
            if fit.samples is None:
                res = _evaluate(fit.model, self.plate, False, fit.params, False, fit.args,
                                fit.kwargs)
            else:
                fixed = {k: fit.params[k] for k in fit.param_names}
                res = _evaluate(fit.model, self.plate, self.keep_draws,
                                (fit.params, fixed, fit.posterior()), True, fit.args,
                                fit.kwargs)
            self._out = jax.tree_util.tree_map(np.asarray, jax.device_get(res))
        return self._out

    @property
    def num_params(self) -> int:
        if self._k is None:
            self._k = count_free_parameters(self.fit.model, self.fit.args, self.fit.kwargs)
        return self._k


def _posterior_fn(model, plate, keep_draws, args, kwargs):  # noqa: ANN001, ANN202
    def per_fit(pd):  # noqa: ANN001, ANN202
        p_all, p_fixed, d = pd
        point = _evaluate_one(model, plate, p_all, args, kwargs)
        many = jax.vmap(lambda dd: _evaluate_one(model, plate, {**p_fixed, **dd}, args,
                                                 kwargs))(d)
        num = jax.tree_util.tree_leaves(d)[0].shape[0]
        obs = {}
        for k, v in many["obs"].items():
            obs[k] = {"value": point["obs"][k]["value"], "mean": jnp.mean(v["mean"], axis=0),
                      "loglik": jax.nn.logsumexp(v["loglik"], axis=0) - math.log(num)}
            if keep_draws:
                obs[k]["draws"] = v["loglik"]
        return {"obs": obs, "sites": point["sites"]}

    return per_fit


def _evaluate_impl(model, plate, keep_draws, params, posterior, args, kwargs):  # noqa: ANN001, ANN202
    """Per-member quantities of ``B`` fits: ``params`` has a leading ``B`` axis (point fits)
    or is ``(params, param_sites, draws)`` with leading ``B`` axes (``posterior=True``)."""
    if not posterior:
        return jax.vmap(lambda p: _evaluate_one(model, plate, p, args, kwargs))(params)
    return jax.lax.map(_posterior_fn(model, plate, keep_draws, args, kwargs), params)


_evaluate = eqx.filter_jit(_evaluate_impl)


class Evaluation:
    r"""One fit on one split, as seen by a scoring function.

    Attributes:
        fit: The :class:`ctxppl.Fit` of this (config, split).
        config: The config dict.
        split: Index of the split.
        train: Training row indices (repeats allowed: bootstrap).
        test: Held-out row indices (may be empty).
        weights: ``(n,)`` training weight of every row.
        data: The data passed to ``run``.
        plate: Name of the plate whose members are the rows.

    Per-member arrays below have the rows on their leading axis (all ``n`` rows; index them
    with ``ev.test`` or ``ev.train``). For posterior fits (SVI, Laplace) ``mean`` and
    ``log_lik`` are posterior-predictive (averaged over draws), ``site`` is evaluated at the
    posterior mean.

    Examples:
        >>> import numpy as np, jax.numpy as jnp, numpyro, numpyro.distributions as dist
        >>> import ctxppl as ctx
        >>> def model(y=None):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with ctx.plate("rows", 4):
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> def factory():
        ...     return ctx.workflow.ModelSpec(model, plate="rows", kwargs={"y": "y"})
        >>> def heldout_residual(ev):
        ...     return float(np.mean(ev.observed()[ev.test] - ev.mean()[ev.test]))
        >>> df = ctx.workflow.run(factory, None, ctx.workflow.kfold(4, k=2),
        ...                       {"y": np.array([0.0, 1.0, 2.0, 3.0])},
        ...                       scoring=[heldout_residual], progress=False)
        >>> df["heldout_residual"].round(1).tolist()
        [2.0, -2.0]
    """

    def __init__(self, batch: Batch, index: int, fit: Any, config: dict, train: np.ndarray,
                 test: np.ndarray, weights: np.ndarray, data: Any, plate: str):
        self._batch, self._i = batch, index
        self.fit, self.config, self.split = fit, config, index
        self.train, self.test, self.weights = train, test, weights
        self.data, self.plate = data, plate

    def __repr__(self) -> str:
        return (f"Evaluation(config={self.config}, split={self.split}, n_train="
                f"{len(self.train)}, n_test={len(self.test)})")

    def _obs(self, site: str | None) -> dict[str, np.ndarray]:
        obs = self._batch.out["obs"]
        if site is None:
            if len(obs) != 1:
                raise ValueError(f"the model has {len(obs)} observed per-member sites "
                                 f"{sorted(obs)} in plate {self.plate!r}; pass `site=`.")
            site = next(iter(obs))
        if site not in obs:
            raise KeyError(f"`site` {site!r} is not an observed site inside plate "
                           f"{self.plate!r}; observed sites: {sorted(obs)}.")
        return {k: v[self._i] for k, v in obs[site].items()}

    def observed(self, site: str | None = None) -> np.ndarray:
        """Observed values of ``site`` (default: the only observed site), rows first."""
        return self._obs(site)["value"]

    def mean(self, site: str | None = None) -> np.ndarray:
        """Predictive mean of ``site`` (the likelihood's mean at the fitted parameters)."""
        return self._obs(site)["mean"]

    def log_lik(self, site: str | None = None) -> np.ndarray:
        """``(n,)`` pointwise log-likelihood (posterior fits: log predictive density)."""
        return self._obs(site)["loglik"]

    def log_lik_draws(self, site: str | None = None) -> np.ndarray:
        """``(draws, n)`` pointwise log-likelihood per posterior draw (posterior fits only)."""
        obs = self._obs(site)
        if "draws" not in obs:
            raise ValueError("pointwise log-likelihood draws need a posterior fit (method "
                             "'svi' or 'laplace') and a scorer that asks for them "
                             "(needs_draws=True).")
        return obs["draws"]

    def site(self, name: str) -> np.ndarray:
        """Any per-member site of the model (sample or deterministic), rows first; global
        sites come from ``fit.params``."""
        sites = self._batch.out["sites"]
        if name in sites:
            return sites[name][self._i]
        if name in self._batch.out["obs"]:
            return self.observed(name)
        if name in self.fit.params:
            return np.asarray(self.fit.params[name])
        raise KeyError(f"no site {name!r} in the model; per-member sites: {sorted(sites)}, "
                       f"global: {sorted(self.fit.params)}.")

    @property
    def num_params(self) -> int:
        """Free (unconstrained) parameter count of the model (for BIC/AIC)."""
        return self._batch.num_params
