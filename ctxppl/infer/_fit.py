r"""``ctx.fit`` and ``ctx.fit_many``: one entry point for MAP, Laplace, SVI and NUTS."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.initialization import init_to_median

from ctxppl._warnings import find_stack_level
from ctxppl.infer._devices import FitSharding, fit_devices
from ctxppl.infer._diagnostics import checked_sites, mixing_problems, site_diagnostics
from ctxppl.infer._distributed import (
    collective_failure,
    mesh_of,
    place_replicated,
    row_shards,
    to_host,
)
from ctxppl.infer._loop import NONFINITE, STATUS, LoopOptions, progress_bar
from ctxppl.infer._nuts import run_nuts
from ctxppl.infer._optim import GUIDES, OPTIMIZERS, OptSpec, fit_many_draws, run_opt, run_opt_many
from ctxppl.infer._result import Fit, FitError
from ctxppl.infer._sites import model_structure
from ctxppl.infer._validate import (
    check_broadcasting,
    check_nonempty,
    normalize_inputs,
    normalize_key,
)

__all__ = ["fit", "fit_many", "METHODS", "DEFAULTS"]

METHODS = ("map", "laplace", "svi", "nuts", "marginal")

_OPT = {"num_steps": 5000, "learning_rate": 1e-2, "optimizer": "adam", "tol": 1e-6,
        "window": 100, "patience": 5, "clip_norm": None, "batch_size": None,
        "init_strategy": init_to_median, "progress": True, "plate": None, "weights": None,
        "val_split": None, "val_weights": None, "on_failure": "raise",
        "check_broadcast": True}
DEFAULTS: dict[str, dict[str, Any]] = {
    "map": dict(_OPT),
    "laplace": {**_OPT, "num_samples": 1000},
    "svi": {**_OPT, "tol": 0.0, "guide": "normal", "num_particles": 1, "num_samples": 1000},
    "marginal": {"num_steps": 200, "tol": 1e-7, "num_samples": 1000, "hyper": "laplace",
                 "num_hyper_samples": 20, "newton_steps": 20, "init_strategy": init_to_median,
                 "progress": True, "plate": None, "weights": None, "on_failure": "raise",
                 "check_broadcast": True},
    "nuts": {"num_warmup": 500, "num_samples": 500, "num_chains": 2, "chain_method": "auto",
             "target_accept_prob": 0.8, "max_tree_depth": 10, "dense_mass": False,
             "thinning": 1, "init_strategy": init_to_median, "progress": True, "plate": None,
             "weights": None, "map_options": None, "on_failure": "warn",
             "check_broadcast": True},
}


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_)


_MSG_NUTS_GLOBAL = (
    "method='nuts' does not take rows split over several processes: every leapfrog step "
    "would be a cross-process all-reduce, and NUTS takes hundreds of them per draw (see "
    "docs/distributed.md). Fit by 'map', 'laplace' or 'svi' across processes, or gather "
    "the rows and run NUTS on one process (ctx.fit_many spreads independent fits).")


def _options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}; got {method!r}.")
    unknown = sorted(set(options) - set(DEFAULTS[method]))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for method={method!r}; valid options: "
                        f"{sorted(DEFAULTS[method])}.")
    opts = {**DEFAULTS[method], **options}
    for name in ("num_steps", "num_samples", "num_warmup", "num_chains", "window", "patience",
                 "num_particles", "thinning"):
        if name in opts and (not _is_int(opts[name]) or opts[name] < 1):
            raise ValueError(f"`{name}` must be a positive int; got {opts[name]!r}.")
    if opts.get("batch_size") is not None and (
            not _is_int(opts["batch_size"]) or opts["batch_size"] < 1):
        raise ValueError(f"`batch_size` must be a positive int or None; got "
                         f"{opts['batch_size']!r}.")
    if method == "marginal":
        if opts["hyper"] not in ("laplace", "map"):
            raise ValueError(f"`hyper` must be 'laplace' or 'map'; got {opts['hyper']!r}.")
        for name in ("num_hyper_samples", "newton_steps"):
            if not isinstance(opts[name], int | np.integer) or opts[name] < 1:
                raise ValueError(f"`{name}` must be a positive int; got {opts[name]!r}.")
    if "optimizer" in opts and isinstance(opts["optimizer"], str) and \
            opts["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"`optimizer` must be an optax GradientTransformation or one of "
                         f"{sorted(OPTIMIZERS)}; got {opts['optimizer']!r}.")
    if "guide" in opts and isinstance(opts["guide"], str) and opts["guide"] not in GUIDES:
        raise ValueError(f"`guide` must be a callable model -> guide or one of "
                         f"{sorted(GUIDES)}; got {opts['guide']!r}.")
    if opts["on_failure"] not in ("raise", "warn"):
        raise ValueError(f"`on_failure` must be 'raise' or 'warn'; got {opts['on_failure']!r}.")
    if opts.get("val_split") is not None and not 0 < opts["val_split"] < 1:
        raise ValueError(f"`val_split` must be in (0, 1); got {opts['val_split']!r}.")
    if opts.get("learning_rate") is not None and not opts.get("learning_rate", 1) > 0:
        raise ValueError(f"`learning_rate` must be > 0; got {opts['learning_rate']!r}.")
    return opts


def _plate_size(structure: Any, plate: str | None, need: str) -> int:
    if plate is None:
        raise ValueError(f"`plate` is required with `{need}` (the ctx.plate whose members "
                         "are weighted/held out).")
    if plate not in structure.plates:
        raise ValueError(f"`plate` {plate!r} is not a plate of the model; its plates are "
                         f"{sorted(structure.plates)}.")
    return structure.plates[plate]


def _check_weights(w: Any, size: int, name: str, batched: bool = False) -> jax.Array:
    w = jnp.asarray(w, dtype=jnp.result_type(float))
    want = (w.shape[0], size) if batched and w.ndim == 2 else (size,)
    if w.shape != want:
        raise ValueError(f"`{name}` must have shape {want} (one weight per plate member); got "
                         f"{w.shape}.")
    wn = np.asarray(w)
    if not (np.all(np.isfinite(wn)) and np.all(wn >= 0)):
        raise ValueError(f"`{name}` must be finite and non-negative.")
    return w


def _spec(method: str, opts: dict[str, Any], shards: dict | None = None) -> OptSpec:
    loop = LoopOptions(int(opts["num_steps"]), float(opts["tol"]), int(opts["window"]),
                       int(opts["patience"]), bool(opts["progress"]))
    return OptSpec(method, opts["optimizer"], float(opts["learning_rate"]), loop, opts["plate"],
                   None if opts["batch_size"] is None else int(opts["batch_size"]),
                   opts["init_strategy"], opts.get("guide"), int(opts.get("num_particles", 1)),
                   int(opts.get("num_samples", 1)), opts["clip_norm"],
                   tuple(sorted((shards or {}).items())))


def _describe(opts: dict[str, Any]) -> dict[str, Any]:
    """Options as plain, picklable values (for Fit.options and save)."""
    out = {}
    for k, v in opts.items():
        if v is None or isinstance(v, bool | int | float | str):
            out[k] = v
        elif isinstance(v, np.ndarray | jax.Array):
            out[k] = f"array{tuple(v.shape)}"
        else:
            out[k] = repr(v)
    return out


# What to use when Laplace fails (named in its error message).
LAPLACE_ROUTES = ("method='nuts' (exact, slower) or method='svi' for the same model; for "
                  "calibrated per-sample intervals, an encoder linear in Gaussian weights -- "
                  "`gp = ctx.nn.HSGP(...); ctx.encoder(name, gp, prior=gp.prior)` -- with "
                  "method='marginal' (weights integrated out, so no indefinite Hessian over "
                  "network weights)")


def _status_message(code: int, info: dict[str, Any], method: str) -> str:
    msg = STATUS.get(int(code), f"status {int(code)}")
    if int(code) == NONFINITE:
        hist = np.asarray(info["loss_history"])
        finite = np.flatnonzero(np.isfinite(hist))
        last = f"; last finite loss {hist[finite[-1]]:.6g} at step {finite[-1]}" if len(
            finite) else "; the initial loss was already non-finite (check priors/inits)"
        msg += last
    if method == "marginal" and "hessian_ok" in info and not bool(info["hessian_ok"]):
        msg = "marginal failed: the Hessian of -log p over the Gaussian weights is not " \
              "positive definite (a likelihood that is not log-concave in them?)"
    if method == "laplace" and "hessian_ok" in info and not bool(info["hessian_ok"]):
        msg = ("Laplace failed: the Hessian at the mode is not positive definite (the mode "
               "may be a saddle, or the posterior improper or flat in some direction, as for "
               f"the weights of a Bayesian network encoder). Use instead: {LAPLACE_ROUTES}")
    return msg


def _inputs(model, args, model_kwargs, method, key, options):  # noqa: ANN001, ANN202
    if not callable(model):
        raise TypeError(f"`model` must be a callable NumPyro model; got {type(model).__name__}.")
    opts = _options(method, options)
    key = normalize_key(key)
    args, kwargs = normalize_inputs(model, tuple(args), dict(model_kwargs or {}))
    return opts, key, args, kwargs


def _structure(model, args, kwargs, opts):  # noqa: ANN001, ANN202
    try:
        structure = model_structure(model, args, kwargs, full=True)  # predict's, reused by it
    except (AssertionError, ValueError, IndexError) as e:  # e.g. numpyro on a 0-size plate
        check_nonempty(model, args, kwargs, e)
        raise
    if opts["check_broadcast"]:
        check_broadcasting(structure)
    if opts.get("plate") is not None:
        _plate_size(structure, opts["plate"], "plate")
    return structure


def _prepare(model, args, model_kwargs, method, key, options):  # noqa: ANN001, ANN202
    opts, key, args, kwargs = _inputs(model, args, model_kwargs, method, key, options)
    return opts, key, args, kwargs, _structure(model, args, kwargs, opts)


def _prefetch(model, method, opts, key, args, kwargs):  # noqa: ANN001, ANN202
    """Start loading the stored optimiser program that this fit most likely runs (the common
    case: one device, no member weights), so that the model's checks overlap the load."""
    if method in ("nuts", "marginal") or opts["weights"] is not None or \
            opts.get("val_weights") is not None or opts.get("val_split") or \
            mesh_of((args, kwargs)) is not None:
        return
    run_opt.prefetch(model, _spec(method, opts), key, args, kwargs, None, None, np.int32(0))


def _val_weights(opts, structure, key):  # noqa: ANN001, ANN202
    """Train/validation member weights from ``weights``, ``val_split`` or ``val_weights``."""
    weights, val = opts["weights"], opts.get("val_weights")
    need = "weights" if weights is not None else ("val_split" if opts.get("val_split")
                                                   else "val_weights")
    if weights is None and val is None and not opts.get("val_split"):
        return None, None
    size = _plate_size(structure, opts["plate"], need)
    w = _check_weights(weights, size, "weights") if weights is not None else None
    if opts.get("val_split"):
        n_val = max(1, int(round(opts["val_split"] * size)))
        perm = jax.random.permutation(jax.random.fold_in(key, 11), size)
        val = jnp.zeros(size).at[perm[:n_val]].set(1.0)
    if val is not None:
        val = _check_weights(val, size, "val_weights")
        w = (jnp.ones(size) if w is None else w) * (1.0 - (val > 0))
    return w, val


def fit(model: Callable, *args: Any, method: str = "map", key: Any = None,
        model_kwargs: dict[str, Any] | None = None, **options: Any) -> Fit:
    r"""Fit a NumPyro model (with or without ctxppl primitives) by MAP, Laplace, SVI or NUTS.

    * ``"map"``: maximise :math:`\log p(\mathrm{data}, z)` over every ``param`` and latent
      site (in unconstrained space, no Jacobian), the whole optax loop inside one ``jit``
      (``while_loop`` over windows of ``lax.scan``), stopping at ``num_steps``, at relative
      change ``tol`` of the windowed mean loss, or early on a validation split.
    * ``"laplace"``: MAP in unconstrained space, then a Gaussian with the Hessian of
      :math:`-\log p` as precision over the latent sites; ``num_samples`` draws.
    * ``"svi"``: numpyro SVI with an autoguide (``guide="normal"|"mvn"|"lowrank"|"diagonal"|
      "laplace"|"delta"`` or a callable ``model -> guide``); minibatches through plate
      subsampling (``batch_size`` with ``plate``, or ``subsample_size`` in the model).
    * ``"nuts"``: numpyro NUTS over the latent sites, ``num_chains`` chains (vectorized on
      one device). ``param`` sites (point-estimated encoders) are first fitted by MAP and
      held there (empirical Bayes); give the encoder a ``prior`` to sample it too.
    * ``"marginal"``: calibrated per-sample intervals for encoders that are linear in
      Gaussian weights (:class:`ctxppl.nn.HSGP` with ``prior=gp.prior``, any
      ``ctx.nn.Linear`` / custom encoder with a Normal prior): the weights are integrated out
      (exactly for a Gaussian likelihood, by Laplace otherwise), the hyperparameters fitted
      by their marginal likelihood (L-BFGS-B, ``num_steps`` iterations, ``tol``), then a
      Laplace approximation over them (``hyper="laplace"``, ``num_hyper_samples`` draws; or
      ``hyper="map"``); ``num_samples`` posterior draws. See ``docs/uncertainty.md``::

          gp = ctx.nn.HSGP(C.shape[1], X.shape[1], domain=C)
          def model(C, X, Y=None):
              enc = ctx.encoder("enc", gp, prior=gp.prior)
              sigma = 0.01 + numpyro.sample("sigma", dist.HalfNormal(1.0))  # noise floor
              with ctx.plate("n", C.shape[0], context=C):
                  w = ctx.contextual("w", enc)
                  numpyro.sample("y", dist.Normal(jnp.sum(X * w, -1), sigma), obs=Y)
          fit = ctx.fit(model, C, X, Y, method="marginal", key=0)
          w = fit.predict(C_new, X_new)["w"]   # (draws, n, d): quantiles are the intervals

    Args:
        model: A NumPyro model function.
        *args: Positional arguments of the model (arrays are traced, not baked in).
        method: ``"map"``, ``"laplace"``, ``"svi"``, ``"nuts"`` or ``"marginal"``.
        key: ``jax.random.key`` or int seed (required).
        model_kwargs: Keyword arguments of the model.
        **options: Method options; see ``ctx.infer.DEFAULTS[method]``. Common ones:
            ``num_steps``, ``learning_rate``, ``optimizer``, ``tol``, ``batch_size`` +
            ``plate``, ``weights`` + ``plate`` (per-member weights), ``val_split`` +
            ``plate`` (early stopping), ``progress``, ``on_failure`` (``"raise"``/``"warn"``),
            ``check_broadcast`` (default ``True``: an observed value whose shape broadcasts
            its distribution to more terms, e.g. ``Y`` of shape ``(N, 1)`` in a plate of
            ``N``, raises a ``ValueError`` before any work; ``False`` for a model that means
            it).

    Returns:
        A :class:`Fit`.

    Raises:
        FitError: if the loss becomes NaN/inf (MAP/SVI/Laplace, with ``on_failure="raise"``).

    Examples:
        >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, ctxppl as ctx
        >>> def model(C, X, Y=None):
        ...     enc = ctx.encoder("enc", ctx.nn.Linear(C.shape[-1], X.shape[-1]))
        ...     with ctx.plate("n", C.shape[0], context=C):
        ...         w = ctx.contextual("w", enc)
        ...         numpyro.sample("y", dist.Normal(jnp.sum(X * w, -1), 0.1), obs=Y)
        >>> C = jax.random.normal(jax.random.key(1), (200, 1))
        >>> X = jax.random.normal(jax.random.key(2), (200, 2))
        >>> Y = jnp.sum(X * jnp.hstack([C, -C]), -1)
        >>> fit = ctx.fit(model, C, X, Y, key=0, progress=False)
        >>> fit.predict(jnp.array([[1.0]]), jnp.ones((1, 2)))["w"].round(1)
        Array([[ 1., -1.]], dtype=float32)
    """
    t0 = time.perf_counter()
    opts, key, args, kwargs = _inputs(model, args, model_kwargs, method, key, options)
    _prefetch(model, method, opts, key, args, kwargs)
    structure = _structure(model, args, kwargs, opts)
    param_names = tuple(n for n, s in structure.sites.items() if s.type == "param")
    if method == "nuts":
        if mesh_of((args, kwargs)) is not None:
            raise ValueError(_MSG_NUTS_GLOBAL)
        return _fit_nuts(model, args, kwargs, key, opts, structure, param_names, t0)
    if method == "marginal":
        return _fit_marginal(model, args, kwargs, key, opts, structure, param_names, t0)
    weights, val = _val_weights(opts, structure, key)
    # data split over devices (global_arrays, shard_fit): minibatches are drawn per shard
    spec = _spec(method, opts, row_shards((args, kwargs), structure.plates))
    mesh = mesh_of((args, kwargs))
    run_args, run_kwargs, run_key = args, kwargs, key
    if mesh is not None:  # several processes: every other input is replicated on the mesh
        run_args, run_kwargs, weights, val, run_key = place_replicated(
            (args, kwargs, weights, val, key), mesh)
    show = opts["progress"] and jax.process_index() == 0  # one bar, on process 0
    with progress_bar(spec.loop.num_steps, f"ctxppl {method}", show) as token:
        try:
            out = run_opt(model, spec, run_key, run_args, run_kwargs, weights, val,
                          np.int32(token))
            out = to_host(out)  # per-member sites gathered: every process holds all values
        except jax.errors.JaxRuntimeError as e:
            if mesh is None:
                raise
            raise collective_failure(e, f"ctx.fit(method={method!r})") from e
    info = out["info"]
    code = int(info["status"])
    ok = code != NONFINITE and bool(info.get("hessian_ok", True))
    diagnostics = {"loss_history": info["loss_history"], "num_steps": int(info["num_steps"]),
                   "val_history": info["val_history"], "status": code, "converged": ok,
                   "message": _status_message(code, info, method),
                   "seconds": time.perf_counter() - t0,
                   "num_processes": jax.process_count() if mesh is not None else 1}
    if not ok:
        text = f"ctx.fit(method={method!r}) failed: {diagnostics['message']}."
        if opts["on_failure"] == "raise":
            raise FitError(text)
        warnings.warn(text, RuntimeWarning, stacklevel=2)
    samples = out["samples"]
    if samples is not None:
        samples = {k: v[None] for k, v in samples.items()}  # (chain=1, draws, ...)
    return Fit(model=model, args=args, kwargs=kwargs, method=method, params=out["values"],
               samples=samples, diagnostics=diagnostics, options=_describe(opts), key=key,
               param_names=param_names, guide_params=out["guide_params"])


def _fit_marginal(model, args, kwargs, key, opts, structure, param_names, t0):  # noqa: ANN001, ANN202
    from ctxppl.infer._marginal import run_marginal

    w = None
    if opts["weights"] is not None:
        w = _check_weights(opts["weights"], _plate_size(structure, opts["plate"], "weights"),
                           "weights")
    values, samples, info = run_marginal(model, key, args, kwargs, opts, w)
    code = int(info["status"])
    ok = code != NONFINITE and info["hessian_ok"]
    diagnostics = {**info, "converged": ok, "message": _status_message(code, info, "marginal"),
                   "seconds": time.perf_counter() - t0}
    if not ok:
        text = f"ctx.fit(method='marginal') failed: {diagnostics['message']}."
        if opts["on_failure"] == "raise":
            raise FitError(text)
        warnings.warn(text, RuntimeWarning, stacklevel=3)
    elif not info["hyper_hessian_ok"]:
        warnings.warn("ctx.fit(method='marginal'): the Hessian of the negative log marginal "
                      "over the hyperparameters is not positive definite, so they are held "
                      "at their type-II MAP and the intervals ignore their uncertainty. Give "
                      "the hyperparameters proper priors, or pass hyper='map' to silence "
                      "this.", RuntimeWarning, stacklevel=3)
    samples = {k: np.asarray(v)[None] for k, v in samples.items()}  # (chain=1, draws, ...)
    return Fit(model=model, args=args, kwargs=kwargs, method="marginal",
               params=jax.device_get(values), samples=samples, diagnostics=diagnostics,
               options=_describe(opts), key=key, param_names=param_names)


def _fit_nuts(model, args, kwargs, key, opts, structure, param_names, t0):  # noqa: ANN001, ANN202
    fixed: dict[str, Any] = {}
    w = None
    if opts["weights"] is not None:
        size = _plate_size(structure, opts["plate"], "weights")
        w = _check_weights(opts["weights"], size, "weights")
    map_fit = None
    if param_names:
        map_opts = {"progress": opts["progress"], "check_broadcast": opts["check_broadcast"],
                    **(opts["map_options"] or {})}
        if opts["weights"] is not None:
            map_opts.update(weights=opts["weights"], plate=opts["plate"])
        map_fit = fit(model, *args, method="map", key=jax.random.split(key)[0],
                      model_kwargs=kwargs, **map_opts)
        fixed = {k: map_fit.params[k] for k in param_names}
    samples, diag = run_nuts(model, key, args, kwargs, opts, fixed, w)  # chains: split(key)[1]
    samples = jax.device_get(samples)
    params = {**fixed, **{k: np.mean(np.asarray(v), axis=(0, 1)) for k, v in samples.items()}}
    checked, per_sample = checked_sites(structure, samples)
    diag = {**diag, **site_diagnostics(samples, checked), "per_sample_sites": per_sample}
    problems = []
    if diag["divergences"]:
        problems.append(f"{diag['divergences']} divergent transition(s)")
    problems.extend(mixing_problems(diag))
    nonfinite = [k for k, v in samples.items() if not np.all(np.isfinite(np.asarray(v)))]
    if nonfinite:
        problems.append(f"non-finite draws at {nonfinite}")
    diagnostics = {**diag, "converged": not problems,
                   "message": "; ".join(problems) if problems else "ok",
                   "seconds": time.perf_counter() - t0,
                   "map_diagnostics": None if map_fit is None else map_fit.diagnostics}
    if problems:
        text = (f"ctx.fit(method='nuts') has not converged: {diagnostics['message']}. Draws "
                "and intervals from this fit are not to be trusted: run longer chains "
                "(num_warmup/num_samples), more chains, or reparameterise.")
        if opts["on_failure"] == "raise" or nonfinite:
            raise FitError(text)
        warnings.warn(text, RuntimeWarning, stacklevel=find_stack_level())
    return Fit(model=model, args=args, kwargs=kwargs, method="nuts", params=params,
               samples=samples, diagnostics=diagnostics, options=_describe(opts), key=key,
               param_names=param_names)


def fit_many(model: Callable, *args: Any, method: str = "map", key: Any = None,
             num_fits: int | None = None, weights: Any = None, indices: Any = None,
             bootstrap: bool = False, plate: str | None = None,
             model_kwargs: dict[str, Any] | None = None, devices: Any = None,
             **options: Any) -> Fit:
    r"""``B`` independent fits of one model in one jit-compiled, vmapped call.

    Each fit gets its own key (different initialisation and minibatches) and, optionally,
    its own member weights on ``plate``: bootstrap resamples (``bootstrap=True``), folds or
    resamples given as index arrays (``indices``, shape ``(B, m)``: member ``j`` gets
    weight = number of times it appears), or weights directly (``weights``, ``(B, size)``).
    Weights keep array shapes fixed, which is what lets one compiled program run all fits.

    Args:
        model: A NumPyro model function.
        *args: Model arguments (shared by all fits).
        method: ``"map"``, ``"laplace"`` or ``"svi"``.
        key: PRNG key or int seed.
        num_fits: ``B`` (required for seeds-only or ``bootstrap=True``).
        weights: ``(B, size)`` non-negative member weights.
        indices: ``(B, m)`` integer member indices (folds, resamples).
        bootstrap: Draw ``num_fits`` multinomial bootstrap resamples of the members.
        plate: The ``ctx.plate`` that weights refer to.
        model_kwargs: Model keyword arguments.
        devices: Where the fits run: ``None`` (default) spreads them over all local devices
            (the fit axis is sharded, the data replicated; with one device nothing changes),
            an int uses the first that many, or give a sequence of ``jax.Device``. On CPU,
            ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (set before JAX starts)
            exposes N cores as devices, so the fits use them all.
        **options: As for :func:`fit`.

    Returns:
        A batched :class:`Fit` (``batch_shape == (B,)``); ``fit[i]`` is the i-th fit.

    Examples:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist, ctxppl as ctx
        >>> def model(y=None):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with ctx.plate("n", 4):
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> y = jnp.array([0.0, 1.0, 2.0, 3.0])
        >>> folds = jnp.array([[0, 1], [2, 3]])
        >>> many = ctx.fit_many(model, y, key=0, indices=folds, plate="n", progress=False)
        >>> many.params["mu"].round(2)
        array([0.5 , 2.49], dtype=float32)
    """
    t0 = time.perf_counter()
    if method == "marginal":
        raise ValueError("`method='marginal'` is not supported by fit_many (its optimiser runs "
                         "on the host); use ctx.fit per data set, or 'map'/'laplace'/'svi'.")
    if method == "nuts":
        raise ValueError("`method='nuts'` is not supported by fit_many (NUTS runs its own "
                         "vectorized chains); use ctx.fit per resample, or 'map'/'laplace'/"
                         "'svi'.")
    for name in ("weights", "val_weights"):
        if name in options:
            raise TypeError(f"pass per-fit `{name}` to fit_many as a (B, size) array via "
                            "`weights=`; for early stopping use `val_split=` (each fit holds "
                            "out its own random members).")
    opts, key, args, kwargs, structure = _prepare(model, args, model_kwargs, method, key,
                                                  options)
    devs = fit_devices(devices)
    given = sum(x is not None for x in (weights, indices)) + bool(bootstrap)
    if given > 1:
        raise ValueError("give at most one of `weights`, `indices`, `bootstrap=True`.")
    W, size = None, 0  # member weights and the plate's size (when weights are drawn)
    if given:
        size = _plate_size(structure, plate, "weights" if weights is not None else
                           "indices" if indices is not None else "bootstrap")
        if weights is not None:
            W = _check_weights(weights, size, "weights", batched=True)
            if W.ndim != 2:
                raise ValueError(f"`weights` must have shape (B, {size}); got {W.shape}.")
        elif indices is not None:
            idx = np.asarray(indices)
            if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(f"`indices` must be a (B, m) integer array; got shape "
                                 f"{idx.shape}, dtype {idx.dtype}.")
            if idx.size and (idx.min() < 0 or idx.max() >= size):
                raise ValueError(f"`indices` must lie in [0, {size}) (plate {plate!r}); got "
                                 f"range [{idx.min()}, {idx.max()}].")
            W = jnp.asarray(np.stack([np.bincount(r, minlength=size) for r in idx]),
                            dtype=jnp.result_type(float))
        elif num_fits is None:
            raise ValueError("`num_fits` is required with bootstrap=True.")
    B = W.shape[0] if W is not None else num_fits
    if B is None or B < 1:
        raise ValueError(f"`num_fits` must be a positive int (or give weights/indices); got "
                         f"{num_fits!r}.")
    if num_fits is not None and W is not None and num_fits != W.shape[0]:
        raise ValueError(f"`num_fits`={num_fits} disagrees with {W.shape[0]} weight rows.")
    opts["plate"] = plate
    spec = _spec(method, opts)
    n_val = 0
    if opts.get("val_split"):
        size = _plate_size(structure, plate, "val_split")
        n_val = max(1, int(round(opts["val_split"] * size)))
    key_data, W, V = fit_many_draws(key, W, B, size, bool(bootstrap), n_val)
    keys = jax.random.wrap_key_data(key_data, impl=jax.random.key_impl(key))
    place = FitSharding(devs, B)
    show = opts["progress"] and jax.process_index() == 0  # one bar, on process 0
    with progress_bar(spec.loop.num_steps, f"ctxppl {method} x{B}", show) as token:
        try:
            out = run_opt_many(model, spec, place.per_fit(keys), *place.shared((args, kwargs)),
                               place.per_fit(W), place.per_fit(V), np.int32(token))
            out = place.unpad(to_host(out))  # fits of other processes gathered
        except jax.errors.JaxRuntimeError as e:
            if jax.process_count() == 1:
                raise
            raise collective_failure(e, f"ctx.fit_many(method={method!r})") from e
    info = out["info"]
    codes = np.asarray(info["status"])
    hess = np.asarray(info.get("hessian_ok", np.ones(B, bool)))
    ok = (codes != NONFINITE) & hess
    messages = [_status_message(c, {k: (v[i] if k != "status" else v[i])
                                    for k, v in info.items()}, method)
                for i, c in enumerate(codes)]
    if not ok.all():
        warnings.warn(f"ctx.fit_many: {int((~ok).sum())} of {B} fits failed: "
                      f"{sorted(set(m for m, o in zip(messages, ok, strict=True) if not o))}",
                      RuntimeWarning, stacklevel=2)
    diagnostics = {"loss_history": info["loss_history"], "num_steps": info["num_steps"],
                   "status": codes, "converged": ok, "message": messages,
                   "weights": None if W is None else np.asarray(W),
                   "val_weights": None if V is None else np.asarray(V),
                   "val_history": info["val_history"], "seconds": time.perf_counter() - t0,
                   "num_processes": len({d.process_index for d in devs})}
    samples = out["samples"]
    if samples is not None:
        samples = {k: v[:, None] for k, v in samples.items()}  # (B, chain=1, draws, ...)
    param_names = tuple(n for n, s in structure.sites.items() if s.type == "param")
    return Fit(model=model, args=args, kwargs=kwargs, method=method, params=out["values"],
               samples=samples, diagnostics=diagnostics, options=_describe(opts), key=key,
               param_names=param_names, guide_params=out["guide_params"], batch_shape=(B,))
