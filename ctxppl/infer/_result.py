"""The one result object of every ctxppl fit."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.infer import Predictive

from ctxppl._programs import stored_jit
from ctxppl._warnings import find_stack_level
from ctxppl.infer._arviz import make_arviz
from ctxppl.infer._diagnostics import no_uncertainty_message
from ctxppl.infer._format import save_fit
from ctxppl.infer._sites import model_structure, wrap_model
from ctxppl.infer._validate import normalize_inputs, normalize_key

__all__ = ["Fit", "FitError"]


class FitError(RuntimeError):
    """A fit broke down (NaN/inf loss, indefinite Hessian, ...). The message says where."""


def _predict_impl(model, key, fold, posterior, params, args, kwargs, sites, batched,  # noqa: ANN001, ANN202
                  squeeze):
    # the default key (fold_in of the fit's key) and the squeeze of point fits' draw axis are
    # inside the one compiled program: no extra small programs per call
    if fold:
        key = jax.random.fold_in(key, 7)

    def one(key, posterior, params):  # noqa: ANN001, ANN202
        if posterior:
            pred = Predictive(wrap_model(model, full=True), posterior, params=params,
                              return_sites=list(sites), batch_ndims=1)
        else:  # no latent sites: one draw of the model with its params
            pred = Predictive(wrap_model(model, full=True), params=params, num_samples=1,
                              return_sites=list(sites))
        return pred(key, *args, **kwargs)

    if not batched:
        out = one(key, posterior, params)
    else:
        n = jax.tree_util.tree_leaves((posterior, params))[0].shape[0]
        out = jax.vmap(one)(jax.random.split(key, n), posterior, params)
    if squeeze:
        out = {k: jnp.squeeze(v, axis=int(batched)) for k, v in out.items()}
    return out


_predict = stored_jit(_predict_impl, "predict")


class Fit:
    r"""Result of :func:`ctxppl.fit` / :func:`ctxppl.fit_many`.

    Attributes:
        method: ``"map"``, ``"laplace"``, ``"svi"`` or ``"nuts"``.
        params: Point estimates: every NumPyro ``param`` site (e.g. encoder weights) and every
            latent site (MAP value, or posterior mean for SVI/Laplace/NUTS).
        samples: Posterior draws of latent sites, shape ``(chains, draws, ...)``, or ``None``.
        diagnostics: ``loss_history``, ``num_steps``, ``converged``, ``message``,
            ``seconds`` of wall time; for NUTS ``divergences``, ``r_hat`` and ``ess`` (bulk
            R-hat, max over elements, and bulk ESS, min; ``r_hat_at`` / ``ess_at`` the
            element) of the latent and per-sample sites -- not of Bayesian encoder weights,
            whose hidden units can swap labels -- ``per_sample_sites`` and
            ``no_uncertainty`` (sites whose draws are all identical). R-hat > 1.01, ESS < 100
            or a divergence makes the fit warn and ``converged`` False.
        batch_shape: ``()`` for one fit, ``(B,)`` for ``fit_many`` (every array gets a leading
            ``B`` axis; index with ``fit[i]``).
        saved_model: For a loaded fit, the ``module:qualname`` of the model it was saved
            with (informational: ``ctx.load`` never imports it), else ``None``.

    Examples:
        >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, ctxppl as ctx
        >>> def model(y=None):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with ctx.plate("n", 3):
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> fit = ctx.fit(model, jnp.array([1.0, 2.0, 3.0]), key=0, progress=False)
        >>> round(float(fit.params["mu"]), 2)  # posterior mode 6 / (3 + 1/100)
        1.99
    """

    saved_model: str | None = None

    def __init__(self, *, model: Callable, args: tuple, kwargs: dict, method: str,
                 params: dict[str, Any], samples: dict[str, Any] | None,
                 diagnostics: dict[str, Any], options: dict[str, Any], key: jax.Array,
                 param_names: Sequence[str], guide_params: dict[str, Any] | None = None,
                 batch_shape: tuple[int, ...] = ()):
        self.model = model
        self.args = args
        self.kwargs = kwargs
        self.method = method
        self.params = params
        self.samples = samples
        self.diagnostics = diagnostics
        self.options = options
        self.key = key
        self.param_names = tuple(param_names)
        self.guide_params = guide_params
        self.batch_shape = tuple(batch_shape)

    # ------------------------------------------------------------------ status
    @property
    def converged(self) -> Any:
        """``True`` when the fit finished cleanly (array of bools for ``fit_many``)."""
        return self.diagnostics["converged"]

    @property
    def message(self) -> Any:
        """Why the fit stopped (one string, or a list for ``fit_many``)."""
        return self.diagnostics["message"]

    def __repr__(self) -> str:
        batch = f", batch_shape={self.batch_shape}" if self.batch_shape else ""
        sites = ", ".join(sorted(self.params))
        return f"Fit(method={self.method!r}{batch}, sites=[{sites}])"

    def __len__(self) -> int:
        if not self.batch_shape:
            raise TypeError("len() of a single Fit; only fit_many results are batched.")
        return self.batch_shape[0]

    def __getitem__(self, i: int) -> Fit:
        """The ``i``-th fit of a ``fit_many`` result."""
        if not self.batch_shape:
            raise TypeError("indexing a single Fit; only fit_many results are batched.")
        n = self.batch_shape[0]
        if not -n <= i < n:
            raise IndexError(f"fit index {i} out of range for {n} fits.")

        def take(tree):  # noqa: ANN001, ANN202
            return None if tree is None else jax.tree_util.tree_map(lambda a: a[i], tree)

        diag = {k: (v[i] if isinstance(v, list | np.ndarray | jax.Array) and len(v) == n else v)
                for k, v in self.diagnostics.items()}
        return Fit(model=self.model, args=self.args, kwargs=self.kwargs, method=self.method,
                   params=take(self.params), samples=take(self.samples), diagnostics=diag,
                   options=self.options, key=jax.random.split(self.key, n)[i],
                   param_names=self.param_names, guide_params=take(self.guide_params))

    # ------------------------------------------------------------------ posterior
    def posterior(self) -> dict[str, Any]:
        """Draws of every latent site flattened to ``(num_draws, ...)`` (chains merged).

        For point fits (MAP) this is the point estimate with one draw.
        """
        return self._draws(jnp)

    def _draws(self, xp: Any) -> dict[str, Any]:
        # ``xp=np`` in predict: host arrays, no small eager programs compiled per site
        nb = len(self.batch_shape)
        if self.samples is None:
            lat = {k: v for k, v in self.params.items() if k not in self.param_names}
            return jax.tree_util.tree_map(lambda a: xp.expand_dims(xp.asarray(a), nb), lat)
        return jax.tree_util.tree_map(
            lambda a: xp.reshape(xp.asarray(a), a.shape[:nb] + (-1,) + a.shape[nb + 2:]),
            self.samples)

    def _need_model(self, what: str) -> None:
        if self.model is None:
            saved = f" (it was saved with `{self.saved_model}`)" if self.saved_model else ""
            raise ValueError(f"{what}() needs the model, and this Fit has none: it was loaded "
                             f"without one{saved}. Pass `model=` to ctx.load (ctxppl never "
                             "imports or runs code named by a file).")

    def _check_param_structure(self, now: dict[str, Any]) -> None:
        """The fitted ``param`` values must fit the model's ``param`` sites ``now``."""
        nb = len(self.batch_shape)
        for name in self.param_names:
            fitted = self.params.get(name)
            ok = name in now
            if ok:
                a_leaves, a_def = jax.tree_util.tree_flatten(fitted)
                b_leaves, b_def = jax.tree_util.tree_flatten(now[name])
                ok = a_def == b_def and all(
                    tuple(np.shape(a))[nb:] == tuple(b.shape)
                    for a, b in zip(a_leaves, b_leaves, strict=True))
            if not ok:
                raise ValueError(
                    f"param site `{name}` has a different structure at these arguments than at "
                    "fit time -- e.g. a context or predictor array with another number of "
                    "features than the training data. Pass arrays with the training widths.")

    def predict(self, *args: Any, key: Any = None, return_sites: Sequence[str] | None = None,
                **kwargs: Any) -> dict[str, jax.Array]:
        r"""Run the model at new (or the training) arguments with the fitted parameters.

        Returns every sample and deterministic site -- per-member parameters from
        ``ctx.contextual`` included -- with all plates at full size (no subsampling). Point
        fits return one value per site; posterior fits stack draws on a leading axis
        (``(draws, ...)``); ``fit_many`` results add a leading ``B`` axis. A posterior fit
        warns (``RuntimeWarning``) when a per-sample site it returns has identical draws -- a
        function of a point-estimated encoder, whose intervals would have zero width.

        Args:
            *args: Model arguments (default: the training arguments).
            key: PRNG key for sampled sites (default: derived from the fit's key).
            return_sites: Site names to return (default: all sample/deterministic sites).
            **kwargs: Model keyword arguments.

        Examples:
            >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist, ctxppl as ctx
            >>> def model(x, y=None):
            ...     b = numpyro.sample("b", dist.Normal(0.0, 10.0))
            ...     with ctx.plate("n", x.shape[0]):
            ...         numpyro.deterministic("mean", b * x)
            ...         numpyro.sample("y", dist.Normal(b * x, 0.1), obs=y)
            >>> fit = ctx.fit(model, jnp.arange(3.0), 2 * jnp.arange(3.0), key=0, progress=False)
            >>> fit.predict(jnp.array([10.0]))["mean"].round(1)
            Array([20.], dtype=float32)
        """
        return self._predict(args, kwargs, key, return_sites, check=True)

    def _predict(self, args: tuple, kwargs: dict, key: Any, return_sites: Any,
                 check: bool) -> dict[str, jax.Array]:
        self._need_model("predict")
        if not args and not kwargs:
            args, kwargs = self.args, self.kwargs
        args, kwargs = normalize_inputs(self.model, args, kwargs)
        fold = key is None
        key = self.key if fold else normalize_key(key)
        structure = model_structure(self.model, args, kwargs, full=True)
        self._check_param_structure(structure.params)
        if return_sites is not None:
            sites = tuple(return_sites)
        else:
            sites = tuple(n for n, s in structure.sites.items()
                          if s.type in ("sample", "deterministic") and not n.startswith("_"))
        nb = len(self.batch_shape)
        posterior = self._draws(np)
        params = {k: self.params[k] for k in self.param_names}
        out = _predict(self.model, key, fold, posterior, params, args, kwargs, sites,
                       bool(nb), self.samples is None)
        if check and self.samples is not None:
            self._warn_zero_width(out, structure, sites, nb)
        return out

    def _warn_zero_width(self, out: dict, structure: Any, sites: tuple, nb: int) -> None:
        """Per-sample sites whose posterior draws are all identical: say so, loudly."""
        plated = [n for n in sites if n in structure.sites and structure.sites[n].plates
                  and not structure.sites[n].observed and not structure.sites[n].encoder]
        # draws of every fit of a fit_many result together: bootstraps give spread too
        still = [n for n in plated if np.prod(out[n].shape[:nb + 1]) > 1 and not bool(
            jnp.any(jnp.ptp(jnp.reshape(out[n], (-1,) + out[n].shape[nb + 1:]), axis=0) > 0))]
        if still:
            warnings.warn(no_uncertainty_message(still, f"Fit.predict ({self.method} fit)"),
                          RuntimeWarning, stacklevel=find_stack_level())

    # ------------------------------------------------------------------ export
    def to_arviz(self) -> Any:
        r"""ArviZ ``InferenceData`` (arviz 0.x) or ``DataTree`` (arviz 1.x).

        Groups: ``posterior`` (latent and deterministic sites, ``(chain, draw, ...)``; point
        fits have one chain and one draw), ``observed_data`` and, for posterior fits,
        ``log_likelihood``. Dims are named after plates; coordinates are member indices.

        Examples:
            >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist, ctxppl as ctx
            >>> def model(y=None):
            ...     with ctx.plate("groups", 2):
            ...         m = numpyro.sample("m", dist.Normal(0.0, 1.0))
            ...         numpyro.sample("y", dist.Normal(m, 1.0), obs=y)
            >>> fit = ctx.fit(model, jnp.zeros(2), key=0, progress=False)
            >>> idata = fit.to_arviz()
            >>> tuple(idata["posterior"]["m"].dims)
            ('chain', 'draw', 'groups')
        """
        self._need_model("to_arviz")
        if self.batch_shape:
            raise ValueError("to_arviz() needs a single fit; use fit[i].to_arviz() on a "
                             "fit_many result.")
        host = self._on_host()  # rows of several processes: gathered (call on every one)
        if host is not self:
            return host.to_arviz()
        full = wrap_model(self.model, full=True)
        structure = model_structure(self.model, self.args, self.kwargs, full=True)
        samples = self.samples
        if samples is None:
            lat = {k: v for k, v in self.params.items() if k not in self.param_names}
            samples = jax.tree_util.tree_map(lambda a: a[None, None], lat)
        chains, draws = next(iter(jax.tree_util.tree_leaves(samples) or [np.zeros((1, 1))])
                             ).shape[:2]
        det_names = tuple(n for n, s in structure.sites.items() if s.type == "deterministic")
        posterior = {k: np.asarray(v) for k, v in samples.items()}
        if det_names:
            pred = self._predict((), {}, None, det_names, check=False)
            for n in det_names:
                v = np.asarray(pred[n])
                if self.samples is None:
                    v = v[None]
                posterior[n] = v.reshape((chains, draws) + v.shape[1:])
        tr = handlers.trace(handlers.seed(handlers.substitute(
            full, data={**self.params}), self.key)).get_trace(*self.args, **self.kwargs)
        # observed data sites; numpyro.factor sites (Unit distributions) hold no data
        observed = {n: np.asarray(s["value"]) for n, s in tr.items()
                    if s["type"] == "sample" and s["is_observed"] and not n.startswith("_")
                    and not isinstance(s["fn"], dist.Unit)}
        groups = {"posterior": posterior, "observed_data": observed}
        if self.samples is not None and observed:
            from numpyro.infer import log_likelihood

            flat = self.posterior()
            params = {k: self.params[k] for k in self.param_names}
            ll = log_likelihood(handlers.substitute(full, data=params), flat, *self.args,
                                **self.kwargs)
            groups["log_likelihood"] = {
                k: np.asarray(v).reshape((chains, draws) + v.shape[1:]) for k, v in ll.items()
                if k in observed}
        return make_arviz(groups, structure)

    def save(self, path: str) -> None:
        """Save to ``path`` (a ``.npz`` file); :func:`ctxppl.load` restores it exactly.

        The file holds a JSON header and arrays (no pickle). The write is atomic: a failed
        save (e.g. a model keyword argument that is a function, which cannot be saved)
        raises before the file is touched, so an existing file at ``path`` stays intact.

        A fit computed by several processes together (global arrays from
        :func:`ctxppl.distributed.global_arrays`, or ``fit_many`` over their devices) is
        written once, by process 0; call ``save`` on every process like the rest of the
        program (arguments split over processes are gathered first).

        Examples:
            >>> import os, tempfile, jax.numpy as jnp, numpyro, numpyro.distributions as dist
            >>> import ctxppl as ctx
            >>> def model(y=None):
            ...     numpyro.sample("y", dist.Normal(numpyro.sample("m", dist.Normal()), 1), obs=y)
            >>> fit = ctx.fit(model, jnp.array(1.0), key=0, progress=False)
            >>> p = os.path.join(tempfile.mkdtemp(), "fit.npz"); fit.save(p)
            >>> float(ctx.load(p, model=model).params["m"]) == float(fit.params["m"])
            True
        """
        fit = self._on_host()  # a collective when the arguments span several processes
        if self.diagnostics.get("num_processes", 1) > 1 and jax.process_index() != 0:
            return  # a fit shared by several processes is written once, by process 0
        save_fit(fit, path)

    def _on_host(self) -> Fit:
        """This fit with every array on this host (global arrays gathered: call it on every
        process of a multi-process fit)."""
        from ctxppl.infer._distributed import has_global, to_host

        if not has_global((self.args, self.kwargs)):
            return self
        args, kwargs = to_host((self.args, self.kwargs))
        return Fit(model=self.model, args=args, kwargs=kwargs, method=self.method,
                   params=self.params, samples=self.samples, diagnostics=self.diagnostics,
                   options=self.options, key=self.key, param_names=self.param_names,
                   guide_params=self.guide_params, batch_shape=self.batch_shape)
