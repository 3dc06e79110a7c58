r"""Simulation-based calibration (Talts, Betancourt, Simpson, Vehtari and Gelman 2018,
"Validating Bayesian inference algorithms with simulation-based calibration",
arXiv:1804.06788): draw parameters and data from the prior predictive, fit every simulated
data set, and rank each true parameter among its posterior draws. When the inference is
right, every rank is uniform on :math:`\{0, \dots, L\}`.

All replications run as one compiled program: the fits are ``jax.vmap``-ed over the
simulated data (the data are arguments, never constants), NUTS chains inside each
replication are vectorised too.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.infer import MCMC, NUTS, Predictive

from ctxppl.infer._diagnostics import checked_sites
from ctxppl.infer._fit import _options, _spec, fit
from ctxppl.infer._loop import NONFINITE, _update_bar, progress_bar
from ctxppl.infer._optim import _run_opt_impl
from ctxppl.infer._sites import model_structure, wrap_model
from ctxppl.infer._validate import normalize_inputs, normalize_key

__all__ = ["sbc", "SBCResult", "rank_pvalues"]

_METHODS = ("nuts", "laplace", "svi", "marginal")
_NUTS_BATCH = 1  # replications vectorised together inside the compiled NUTS loop


class SBCResult(NamedTuple):
    """Ranks and their uniformity tests from :func:`sbc`.

    Attributes:
        ranks: ``site -> (num_replications, *site_shape)`` integer ranks in
            ``[0, num_draws]``: how many posterior draws lie below the true value.
        num_draws: Posterior draws per replication (``L``).
        bins: Number of equal-width rank bins of the chi-square test.
        pvalues: ``site -> site_shape`` chi-square p-values of uniform rank histograms,
            one per element.
        failures: Replications whose fit reported a failure (non-finite loss, a Hessian that
            is not positive definite); their ranks are still counted.
        seconds: Wall time (compilation included).
    """

    ranks: dict[str, np.ndarray]
    num_draws: int
    bins: int
    pvalues: dict[str, np.ndarray]
    failures: int
    seconds: float

    @property
    def num_tests(self) -> int:
        """Number of rank histograms tested (elements over all sites)."""
        return int(sum(np.size(p) for p in self.pvalues.values()))

    @property
    def pvalue(self) -> float:
        """Family-wise p-value: the smallest p-value times the number of histograms
        (Bonferroni), capped at 1. Above ``alpha`` means no histogram is non-uniform at
        family-wise level ``alpha``."""
        p = min(float(np.min(v)) for v in self.pvalues.values())
        return min(1.0, p * self.num_tests)


def rank_pvalues(ranks: Any, num_draws: int, bins: int) -> np.ndarray:
    r"""Chi-square p-values of "ranks are uniform on ``0..num_draws``", per element.

    Ranks are grouped into ``bins`` bins of ``(num_draws + 1) / bins`` consecutive values
    (which must divide evenly), and Pearson's statistic is compared with
    :math:`\chi^2_{\mathrm{bins} - 1}`.

    Args:
        ranks: ``(num_replications, ...)`` integer ranks.
        num_draws: Posterior draws per replication (ranks lie in ``[0, num_draws]``).
        bins: Number of bins; ``(num_draws + 1) % bins == 0``.

    Returns:
        P-values with the replication axis removed.

    Examples:
        >>> import numpy as np
        >>> from ctxppl.infer import rank_pvalues
        >>> rng = np.random.default_rng(0)
        >>> uniform = rng.integers(0, 100, size=(1000, 2))  # 99 draws: ranks 0..99
        >>> bool(np.all(rank_pvalues(uniform, 99, 10) > 0.01))
        True
        >>> too_narrow = rng.choice([0, 99], size=(1000, 1))  # truth outside every draw
        >>> float(rank_pvalues(too_narrow, 99, 10)[0]) < 1e-10
        True
    """
    r = np.asarray(ranks)
    if (num_draws + 1) % bins:
        raise ValueError(f"`bins` must divide num_draws + 1 = {num_draws + 1}; got {bins}.")
    if r.size and (r.min() < 0 or r.max() > num_draws):
        raise ValueError(f"`ranks` must lie in [0, {num_draws}]; got [{r.min()}, {r.max()}].")
    b = r // ((num_draws + 1) // bins)
    counts = np.stack([np.sum(b == k, axis=0) for k in range(bins)])
    expected = r.shape[0] / bins
    chi2 = np.sum((counts - expected) ** 2, axis=0) / expected
    from scipy import stats  # here, not at import: scipy.stats costs ~0.7 s of every process

    return np.asarray(stats.chi2.sf(chi2, bins - 1))


class _Conditioned:
    """``model`` (every plate at full size) with the ``observed`` sites set from the first
    argument. Equal for equal models, so a second ``sbc`` call reuses the compiled program."""

    def __init__(self, model: Callable):
        self.model = model

    def __call__(self, obs: dict, *args: Any, **kwargs: Any) -> Any:
        full = wrap_model(self.model, full=True)
        return handlers.condition(full, data=obs)(*args, **kwargs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Conditioned) and other.model is self.model

    def __hash__(self) -> int:
        return hash((_Conditioned, self.model))


@eqx.filter_jit
def _opt_many(model, spec, keys, obs, args, kwargs, token):  # noqa: ANN001, ANN202
    def one(k, o):  # noqa: ANN001, ANN202
        out = _run_opt_impl(model, spec, k, (o,) + args, kwargs, None, None, token)
        ok = out["info"]["status"] != NONFINITE
        if "hessian_ok" in out["info"]:
            ok = ok & out["info"]["hessian_ok"]
        return out["samples"], ok

    return jax.vmap(one)(keys, obs)


@eqx.filter_jit
def _nuts_many(model, nuts_opts, keys, obs, args, kwargs, batch, token):  # noqa: ANN001, ANN202
    def program(o):  # noqa: ANN001, ANN202
        return model(o, *args, **kwargs)  # static arguments stay Python values

    def one(k, o, i):  # noqa: ANN001, ANN202
        kernel = NUTS(program, target_accept_prob=nuts_opts["target_accept_prob"],
                      max_tree_depth=nuts_opts["max_tree_depth"],
                      dense_mass=nuts_opts["dense_mass"],
                      init_strategy=nuts_opts["init_strategy"])
        mcmc = MCMC(kernel, num_warmup=nuts_opts["num_warmup"],
                    num_samples=nuts_opts["num_samples"], num_chains=nuts_opts["num_chains"],
                    chain_method="vectorized", progress_bar=False, jit_model_args=True)
        mcmc.run(k, o, extra_fields=("diverging",))
        div = mcmc.get_extra_fields()["diverging"]
        samples = mcmc.get_samples()
        # the progress bar counts finished replications (after their draws exist)
        jax.debug.callback(_update_bar, token, i + 1 + 0 * div.sum(), jnp.full((), jnp.nan))
        return samples, ~jnp.any(div)

    # lax.map, not one vmap over every replication: vmapped NUTS chains advance in lockstep,
    # each step costing the longest trajectory among them
    idx = jnp.arange(keys.shape[0])
    return jax.lax.map(lambda kio: one(*kio), (keys, obs, idx), batch_size=batch)


def _marginal_loop(cond, keys, obs, args, kwargs, num_draws, progress, options):  # noqa: ANN001, ANN202
    """``method="marginal"`` runs its optimiser from the host (L-BFGS-B), so its replications
    are a loop of ``ctx.fit`` calls, each reusing the compiled value-and-gradient."""
    from tqdm.auto import tqdm

    R = keys.shape[0]
    draws, ok = [], []
    for r in tqdm(range(R), desc=f"ctxppl sbc marginal x{R}", disable=not progress,
                  leave=False):
        o = jax.tree_util.tree_map(lambda a: a[r], obs)  # noqa: B023
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            f = fit(cond, o, *args, method="marginal", key=keys[r], model_kwargs=kwargs,
                    num_samples=num_draws, progress=False, on_failure="warn", **options)
        draws.append(f.posterior())
        ok.append(bool(f.converged) and not any(issubclass(w.category, RuntimeWarning)
                                                for w in rec))
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *draws), np.asarray(ok)


@eqx.filter_jit
def _prior_draws(cond, key, R, args, kwargs):  # noqa: ANN001, ANN202
    """Every site from the prior predictive, one compiled program (a second call reuses it)."""
    return Predictive(lambda *a, **k: cond({}, *a, **k), num_samples=R)(key, *args, **kwargs)


@eqx.filter_jit
def _draws_of_sites(model, keys, posterior, obs, args, kwargs, sites):  # noqa: ANN001, ANN202
    def one(k, post, o):  # noqa: ANN001, ANN202
        return Predictive(model, post, return_sites=list(sites), batch_ndims=1)(
            k, o, *args, **kwargs)

    return jax.vmap(one)(keys, posterior, obs)


def sbc(model: Callable, *args: Any, observed: Sequence[str], method: str = "nuts",
        num_replications: int = 200, num_draws: int = 99, bins: int = 10, key: Any = None,
        sites: Sequence[str] | None = None, model_kwargs: dict[str, Any] | None = None,
        progress: bool = True, **options: Any) -> SBCResult:
    r"""Simulation-based calibration of ``ctx.fit(model, method=...)`` on ``model``'s prior.

    For each of ``num_replications`` draws :math:`(\theta, y)` from the prior predictive of
    ``model(*args)`` (called *without* data), the model conditioned on the simulated
    ``observed`` sites is fitted and each true :math:`\theta` is ranked among ``num_draws``
    posterior draws (NUTS draws are thinned evenly to that number). Ranks are uniform when
    the posterior is right; :attr:`SBCResult.pvalues` test each element's histogram, and
    :attr:`SBCResult.pvalue` all of them at once (Bonferroni).

    Args:
        model: A NumPyro model whose observed sites are sampled when their data are ``None``.
        *args: Model arguments of the generative call (data arguments ``None``).
        observed: Names of the sites that are data.
        method: ``"nuts"``, ``"laplace"``, ``"svi"`` or ``"marginal"`` (a loop of fits: its
            optimiser runs from the host).
        num_replications: Simulated data sets.
        num_draws: Posterior draws per data set ``L``; ranks lie in ``0..L``.
        bins: Rank-histogram bins for the chi-square test; must divide ``L + 1``.
        key: ``jax.random.key`` or int seed (required).
        sites: Sites to rank (default: every latent site and per-sample deterministic site
            except Bayesian encoder weights, whose labels can swap).
        model_kwargs: Model keyword arguments.
        progress: Show a progress bar (steps of the optimisers; replications of NUTS).
        **options: Options of ``ctx.fit`` for the method (e.g. ``num_warmup``,
            ``num_samples``, ``num_chains``; ``num_steps``, ``learning_rate``). ``weights``,
            ``batch_size`` and validation splits are not available here.

    Returns:
        An :class:`SBCResult`.

    Examples:
        >>> import numpyro, numpyro.distributions as dist, ctxppl as ctx
        >>> def model(y=None):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with ctx.plate("n", 5):
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> res = ctx.infer.sbc(model, None, observed=["y"], method="laplace", key=0,
        ...                     num_replications=100, num_draws=19, bins=5, num_steps=300,
        ...                     progress=False)
        >>> res.ranks["mu"].shape, res.pvalue > 0.01
        ((100,), True)

    References:
        Talts, Betancourt, Simpson, Vehtari, Gelman (2018). Validating Bayesian inference
        algorithms with simulation-based calibration. arXiv:1804.06788.
    """
    t0 = time.perf_counter()
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS} (SBC needs posterior draws); "
                         f"got {method!r}.")
    for name, v in (("num_replications", num_replications), ("num_draws", num_draws),
                    ("bins", bins)):
        if not isinstance(v, int | np.integer) or v < 2:
            raise ValueError(f"`{name}` must be an int >= 2; got {v!r}.")
    if (num_draws + 1) % bins:
        raise ValueError(f"`bins` must divide num_draws + 1 = {num_draws + 1}; got {bins}.")
    unsupported = sorted(set(options) & {"weights", "plate", "batch_size", "val_split",
                                         "val_weights", "map_options"})
    if unsupported:
        raise TypeError(f"option(s) {unsupported} are not available in sbc().")
    if isinstance(observed, str) or not len(observed):
        raise ValueError(f"`observed` must be a non-empty sequence of site names; got "
                         f"{observed!r}.")
    key = normalize_key(key)
    args, kwargs = normalize_inputs(model, tuple(args), dict(model_kwargs or {}))
    structure = model_structure(model, args, kwargs, full=True)
    missing = [s for s in observed if s not in structure.sites]
    if missing:
        raise ValueError(f"`observed` site(s) {missing} are not sites of the model; its sites "
                         f"are {sorted(structure.sites)}.")
    params = [n for n, s in structure.sites.items() if s.type == "param"]
    if params:
        raise ValueError(f"SBC needs a prior over everything that is inferred, but the model "
                         f"has point-estimated param site(s) {params} (e.g. an encoder without "
                         "`prior`).")
    latent = [n for n, s in structure.sites.items() if s.type == "sample" and n not in observed
              and not s.observed]
    if sites is None:
        sites, _ = checked_sites(structure, [n for n in structure.sites if n not in observed])
    sites = tuple(sites)
    unknown = [s for s in sites if s not in structure.sites or s in observed]
    if unknown:
        raise ValueError(f"`sites` {unknown} are not unobserved sites of the model.")

    k_prior, k_fit, k_pred = jax.random.split(key, 3)
    R = int(num_replications)
    cond = _Conditioned(model)
    prior = _prior_draws(cond, k_prior, R, args, kwargs)
    obs = {n: prior[n] for n in observed}
    keys = jax.random.split(k_fit, R)
    if method == "nuts":
        opts = _options("nuts", {**options, "progress": False})
        total = int(opts["num_chains"]) * int(opts["num_samples"])
        if total < num_draws:
            raise ValueError(f"num_chains * num_samples = {total} NUTS draws per replication; "
                             f"need at least `num_draws` = {num_draws}.")
        nuts_opts = {k: opts[k] for k in ("num_warmup", "num_samples", "num_chains",
                                          "target_accept_prob", "max_tree_depth",
                                          "dense_mass", "init_strategy")}
        nuts_opts["num_chains"] = int(nuts_opts["num_chains"])
        with progress_bar(R, f"ctxppl sbc nuts x{R}", progress) as token:
            samples, ok = _nuts_many(cond, nuts_opts, keys, obs, args, kwargs, _NUTS_BATCH,
                                     jnp.asarray(token))
        take = np.round(np.linspace(0, total - 1, num_draws)).astype(int)
        draws = {n: v[:, take] for n, v in samples.items() if n in latent}
    elif method == "marginal":
        draws, ok = _marginal_loop(cond, keys, obs, args, kwargs, int(num_draws), progress,
                                   options)
    else:
        opts = _options(method, {**options, "num_samples": int(num_draws),
                                 "progress": progress})
        spec = _spec(method, opts)
        with progress_bar(spec.loop.num_steps, f"ctxppl sbc {method} x{R}",
                          opts["progress"]) as token:
            draws, ok = _opt_many(cond, spec, keys, obs, args, kwargs, jnp.asarray(token))
    values = _draws_of_sites(cond, jax.random.split(k_pred, R), draws, obs, args, kwargs,
                             sites)
    ranks = {n: np.sum(np.asarray(values[n]) < np.asarray(prior[n])[:, None], axis=1)
             for n in sites}
    pvals = {n: rank_pvalues(r, num_draws, bins) for n, r in ranks.items()}
    return SBCResult(ranks, int(num_draws), int(bins), pvals, int(np.sum(~np.asarray(ok))),
                     time.perf_counter() - t0)
