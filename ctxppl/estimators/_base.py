"""Shared machinery of the contextualized estimators: validation, normalisation, fitting
(one ``ctx.fit`` or one ``ctx.fit_many`` call), prediction of per-sample parameters,
save/load."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import warnings
from typing import Any, ClassVar, NamedTuple

import jax.numpy as jnp
import numpy as np
import optax
from numpyro.infer.initialization import init_to_uniform
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state

from ctxppl import infer
from ctxppl._warnings import find_stack_level
from ctxppl.estimators._predict import predict_sites, split_fit
from ctxppl.models import Metamodel

__all__ = ["ContextualizedBase", "Interval", "INFERENCE", "estimator_options"]

INFERENCE = ("map", "svi", "laplace", "nuts")
# uncertainty=True: basis functions per context feature and box (in half-ranges) of the GP
_GP_BASIS = 8
_GP_BOX = 3.0
PLATE = "samples"

# A module-level init strategy keeps its identity across fits, so the fit's compiled
# program (keyed on its static options) is reused. Latent heads start near zero, as the
# archetypes of contextualized-ml do (uniform +-0.01).
_INIT = init_to_uniform(radius=0.01)


class Interval(NamedTuple):
    """A per-sample estimate with an equal-tailed interval over bootstraps / draws."""

    estimate: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


@functools.lru_cache(maxsize=64)
def _adam(learning_rate: float, num_steps: int) -> optax.GradientTransformation:
    """Adam with a cosine decay to 1% of the learning rate (cached: one object per setting,
    so repeated fits hit the compilation cache)."""
    sched = optax.cosine_decay_schedule(learning_rate, max(num_steps, 1), alpha=0.01)
    return optax.adam(sched)


def _is_pandas(x: Any) -> bool:
    return hasattr(x, "columns") and hasattr(x, "to_numpy")


def _names(x: Any) -> list[str] | None:
    if _is_pandas(x):
        return [str(c) for c in x.columns]
    if hasattr(x, "to_numpy") and getattr(x, "name", None) is not None:  # Series
        return [str(x.name)]
    return None


def as_2d(name: str, x: Any, *, allow_1d: bool = False, dtype: Any = np.float64
          ) -> np.ndarray:
    """Validate one input: numeric, finite, 2-D (or 1-D when allowed), non-empty."""
    if x is None:
        what = "the target y" if name in ("Y", "y") else f"`{name}`"
        raise ValueError(f"this estimator requires y to be passed, but {what} is None"
                         if name in ("Y", "y") else f"{what} is required; got None.")
    if hasattr(x, "toarray") or type(x).__module__.startswith("scipy.sparse"):
        raise TypeError(f"`{name}` is a sparse matrix; pass a dense array (x.toarray()).")
    if hasattr(x, "to_numpy"):
        x = x.to_numpy()
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                   or np.issubdtype(arr.dtype, np.bool_)):
        try:
            arr = arr.astype(dtype)
        except (TypeError, ValueError) as e:
            raise TypeError(f"`{name}` must be numeric; got dtype {arr.dtype} ({e}).") from e
    if np.iscomplexobj(arr):
        raise ValueError(f"`{name}`: Complex data not supported; got dtype {arr.dtype}.")
    if arr.ndim == 1 and allow_1d:
        pass
    elif arr.ndim != 2:
        hint = (f" Reshape your data: for one feature write `{name}.reshape(-1, 1)`."
                if arr.ndim == 1 else "")
        raise ValueError(f"`{name}` must be 2-D (samples, features); got shape "
                         f"{arr.shape}.{hint}")
    if arr.shape[0] == 0:
        raise ValueError(f"`{name}` has 0 sample(s) (shape={arr.shape}) while a minimum of 1 "
                         "is required.")
    if arr.ndim == 2 and arr.shape[1] == 0:
        raise ValueError(f"`{name}` has 0 feature(s) (shape={arr.shape}) while a minimum of 1 "
                         "is required.")
    arr = arr.astype(dtype)
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise ValueError(f"`{name}` contains {bad} NaN/inf value(s); drop or impute them "
                         "before fitting.")
    return arr


def same_rows(min_samples: int = 1, **arrays: np.ndarray | None) -> int:
    """Check that every given array has the same number of rows (at least
    ``min_samples``); return it."""
    rows = {k: v.shape[0] for k, v in arrays.items() if v is not None}
    if len(set(rows.values())) > 1:
        desc = ", ".join(f"`{k}` has {n}" for k, n in rows.items())
        raise ValueError(f"inputs must have one row per sample; {desc} rows.")
    n = next(iter(rows.values()))
    if n < min_samples:
        raise ValueError(f"fitting needs at least {min_samples} samples; got n_samples = {n}.")
    return n


class Scaler(NamedTuple):
    mean: np.ndarray
    std: np.ndarray

    @staticmethod
    def fit(name: str, x: np.ndarray, normalize: bool) -> Scaler:
        d = x.shape[1]
        if not normalize:
            return Scaler(np.zeros(d), np.ones(d))
        mean, std = x.mean(axis=0), x.std(axis=0)
        const = np.flatnonzero(std <= 1e-12 * np.maximum(1.0, np.abs(mean)))
        if const.size:
            raise ValueError(
                f"`{name}` has constant column(s) {const.tolist()}; they cannot be "
                "standardised (normalize=True). Drop them, or pass normalize=False.")
        return Scaler(mean, std)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


def _to_jax(x: np.ndarray | None) -> Any:
    return None if x is None else jnp.asarray(x, dtype=jnp.result_type(float))


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
    except TypeError:
        return False
    return True


def estimator_options(cls: type) -> type:
    """Class decorator of the estimators: the annotated attributes of the class body, with
    their defaults, become keyword-only constructor parameters.

    The generated ``__init__`` (a dataclass's, without ``__eq__`` / ``__repr__``) only stores
    them, as scikit-learn requires, and has an explicit signature, which ``get_params`` and
    ``clone`` read. A decorated subclass inherits the parameters and adds its own, or changes
    a default by declaring the parameter again: each parameter is declared once.

    Examples:
        >>> from ctxppl.estimators import ContextualGAMRegressor
        >>> est = ContextualGAMRegressor(width=8)
        >>> est.encoder_type, est.width, est.get_params()["link_fn"]
        ('ngam', 8, 'identity')
    """
    return dataclasses.dataclass(cls, eq=False, repr=False, kw_only=True)


@estimator_options
class ContextualizedBase(BaseEstimator):
    """Base class: see :class:`ctxppl.estimators.ContextualizedRegressor` for the options."""

    # Sites whose per-sample values `predict_params` returns (subclasses set them).
    _sites: ClassVar[tuple[str, ...]] = ()
    # Adam steps when `max_epochs` is None, and the learning rate when `learning_rate` is
    # None (docs/benchmarks.md, families section).
    _default_steps: ClassVar[int] = 1000
    _default_lr: ClassVar[float] = 1e-2

    # the options every estimator has (documented in ContextualizedRegressor)
    inference: str = "map"
    n_bootstraps: int = 1
    encoder_type: str = "mlp"
    metamodel_type: str = "subtype"
    num_archetypes: int = 10
    width: int = 25
    depth: int = 2
    alpha: float = 0.0
    l1_ratio: float = 1.0
    mu_ratio: float = 0.5
    fit_intercept: bool = True
    normalize: bool = True
    val_split: float | None = None
    es_patience: int = 5
    learning_rate: float | None = None
    max_epochs: int | None = None
    batch_size: int | None = None
    random_state: Any = None
    prior_scale: float = 1.0
    num_samples: int = 200
    uncertainty: bool = False

    # ------------------------------------------------------------------ options
    def _check_options(self) -> None:
        if self.inference not in INFERENCE:
            raise ValueError(f"`inference` must be one of {INFERENCE}; got {self.inference!r}.")
        if not isinstance(self.n_bootstraps, numbers.Integral) or self.n_bootstraps < 1:
            raise ValueError(f"`n_bootstraps` must be a positive int; got {self.n_bootstraps!r}.")
        if self.inference == "nuts" and self.n_bootstraps > 1:
            raise ValueError("`inference='nuts'` cannot be combined with n_bootstraps > 1 (NUTS "
                             "already gives a posterior); use 'svi' or 'laplace' with "
                             "bootstraps, or n_bootstraps=1.")
        if self.val_split is not None and not 0 < self.val_split < 1:
            raise ValueError(f"`val_split` must be in (0, 1) or None; got {self.val_split!r}.")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"`learning_rate` must be > 0 or None; got {self.learning_rate!r}.")
        if self.max_epochs is not None and (not isinstance(self.max_epochs, numbers.Integral)
                                            or self.max_epochs < 1):
            raise ValueError(f"`max_epochs` must be a positive int or None; got "
                             f"{self.max_epochs!r}.")
        if self.batch_size is not None and (not isinstance(self.batch_size, numbers.Integral)
                                            or self.batch_size < 1):
            raise ValueError(f"`batch_size` must be a positive int or None; got "
                             f"{self.batch_size!r}.")
        if self.prior_scale is not None and not self.prior_scale > 0:
            raise ValueError(f"`prior_scale` must be > 0; got {self.prior_scale!r}.")
        unc = self.uncertainty
        if not isinstance(unc, bool | np.bool_):
            raise TypeError(f"`uncertainty` must be True or False; got {unc!r}.")
        if unc:
            for name, value, default in (("n_bootstraps", self.n_bootstraps, 1),
                                         ("inference", self.inference, "map"),
                                         ("val_split", self.val_split, None)):
                if value != default:
                    raise ValueError(
                        f"`uncertainty=True` fits one Gaussian-process metamodel by "
                        f"ctx.fit(method='marginal'), whose intervals are calibrated on their "
                        f"own; leave `{name}` at {default!r} (got {value!r}).")

    def _uncertain(self) -> bool:
        return bool(self.uncertainty)

    def _metamodel(self) -> Metamodel:
        if self._uncertain():
            center, half = self.gp_domain_
            return Metamodel(kind="gp", gp_domain=(tuple(center), tuple(half)),
                             gp_basis=_GP_BASIS)
        kind = self.metamodel_type
        return Metamodel(kind=kind, encoder=self.encoder_type,
                         num_archetypes=int(self.num_archetypes), width=int(self.width),
                         depth=int(self.depth))

    def _set_gp_domain(self, C_scaled: np.ndarray) -> None:
        """The box of the GP metamodel (``uncertainty=True``): the standardised training
        contexts' center and half-range per feature."""
        if self._uncertain():
            lo, hi = C_scaled.min(axis=0), C_scaled.max(axis=0)
            self.gp_domain_ = [((lo + hi) / 2).tolist(), ((hi - lo) / 2).tolist()]

    def _bayesian(self) -> bool:
        return self.inference != "map" or self._uncertain()

    # ------------------------------------------------------------------ training plan
    def _batch(self, n: int) -> int | None:
        bs = self.batch_size if self.batch_size is not None else _auto_batch(n)
        return None if bs is None or bs >= n else int(bs)

    def _num_steps(self, n_train: int, bs: int | None) -> int:
        if self.max_epochs is None:
            return int(self._default_steps)
        per_epoch = 1 if bs is None else math.ceil(n_train / bs)
        return int(self.max_epochs) * per_epoch

    def _fit_options(self, n: int) -> tuple[str, dict[str, Any]]:
        if self._uncertain():
            return "marginal", {"num_samples": int(self.num_samples), "progress": False,
                                "plate": PLATE}
        bs = self._batch(n)
        n_train = n if self.val_split is None else int(round(n * (1 - self.val_split)))
        steps = self._num_steps(n_train, bs)
        lr = float(self._default_lr if self.learning_rate is None else self.learning_rate)
        opt = {"num_steps": steps, "optimizer": _adam(lr, steps),
               "learning_rate": lr, "batch_size": bs,
               "plate": PLATE, "progress": False, "init_strategy": _INIT,
               "tol": 0.0, "window": max(1, min(100, steps // 10))}
        if self.val_split is not None:
            if self.n_bootstraps > 1:
                warnings.warn("`val_split` is ignored with n_bootstraps > 1: every bootstrap "
                              "trains for the full step budget (ctx.fit_many has no early "
                              "stopping).", UserWarning, stacklevel=4)
            else:
                opt.update(val_split=float(self.val_split), patience=int(self.es_patience))
        method = self.inference
        if method in ("svi", "laplace"):
            opt["num_samples"] = int(self.num_samples)
        if method == "nuts":
            map_opts = {k: v for k, v in opt.items() if k not in ("plate", "progress")}
            map_opts["plate"] = PLATE
            opt = {"num_samples": int(self.num_samples), "num_warmup": int(self.num_samples),
                   "num_chains": 1, "progress": False, "map_options": map_opts,
                   "init_strategy": _INIT}
        return method, opt

    # ------------------------------------------------------------------ fitting
    def _key(self) -> int:
        # an int seed: ctx.fit makes the key on the host (no small programs compiled)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _run(self, model: Any, args: tuple) -> None:
        """Fit ``model(*args)``: one ``ctx.fit`` or ``ctx.fit_many`` (bootstrap rows)."""
        method, opts = self._fit_options(args[0].shape[0])
        key = self._key()
        if self.n_bootstraps == 1:
            fit = infer.fit(model, *args, method=method, key=key, **opts)
        else:
            opts.pop("plate", None)
            fit = infer.fit_many(model, *args, method=method, key=key,
                                 num_fits=int(self.n_bootstraps), bootstrap=True, plate=PLATE,
                                 **opts)
            bad = ~np.asarray(fit.converged)
            if bad.all():
                raise infer.FitError(f"every bootstrap fit failed: {fit.message}")
        self.fit_ = fit
        self.model_ = model
        self.params_, self.draws_, _ = split_fit(fit)

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self) -> None:
        if not hasattr(self, "fit_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. Call "
                                 "'fit' with appropriate arguments before using this "
                                 "estimator.")

    def _check_context(self, C: Any) -> np.ndarray:
        C = as_2d("C", C)
        if C.shape[1] != self.n_context_features_:
            raise ValueError(f"C has {C.shape[1]} features, but {type(self).__name__} is "
                             f"expecting {self.n_context_features_} features as input (the "
                             "context columns seen in fit).")
        if self._uncertain() and hasattr(self, "gp_domain_"):
            center, half = (np.asarray(v) for v in self.gp_domain_)
            z = np.abs(self.c_scaler_(C) - center) / np.maximum(half, 1e-12)
            far = z > _GP_BOX / 1.2
            if far.any():
                warnings.warn(
                    f"{int(far.any(axis=1).sum())} of {C.shape[0]} contexts lie more than "
                    f"{_GP_BOX / 1.2:.1f} half-ranges of the training contexts from their "
                    "center, outside the box of the Gaussian-process basis (uncertainty=True): "
                    "there the intervals shrink towards the prior's edge and are not to be "
                    "trusted.", RuntimeWarning, stacklevel=find_stack_level())
        return C

    def _check_features(self, X: Any, name: str = "X") -> np.ndarray:
        X = as_2d(name, X)
        if X.shape[1] != self.n_features_:
            raise ValueError(f"{name} has {X.shape[1]} features, but {type(self).__name__} is "
                             f"expecting {self.n_features_} features as input (the `{name}` "
                             "columns seen in fit).")
        return X

    def _site_draws(self, args: tuple, sites: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Per-sample sites for every bootstrap and draw: ``(S, n, ...)`` (normalised scale)."""
        args = tuple(_to_jax(a) if isinstance(a, np.ndarray) else a for a in args)
        return predict_sites(self.model_, self.params_, self.draws_, args, sites)

    def _summarise(self, values: np.ndarray, individual_preds: bool, interval: float | None
                   ) -> Any:
        if interval is not None:
            if not 0 < interval < 1:
                raise ValueError(f"`interval` must be in (0, 1); got {interval!r}.")
            self._check_interval_draws(values)
            q = (1 - interval) / 2
            lo, hi = np.quantile(values, [q, 1 - q], axis=0)
            est = values if individual_preds else values.mean(axis=0)
            return Interval(est, lo, hi)
        return values if individual_preds else values.mean(axis=0)

    def _check_interval_draws(self, values: np.ndarray) -> None:
        """Intervals need draws that differ; a NUTS fit that has not mixed is reported."""
        name = type(self).__name__
        if values.shape[0] < 2 or not np.any(np.ptp(values, axis=0) > 0):
            why = ("a single point estimate" if values.shape[0] < 2 else
                   f"{values.shape[0]} identical draws")
            raise ValueError(
                f"`interval` needs per-sample draws that differ, but this {name} "
                f"(inference={self.inference!r}, n_bootstraps={self.n_bootstraps}) has {why}: "
                "every interval would have zero width. For calibrated per-sample intervals "
                "refit with uncertainty=True (or n_bootstraps >= 2, or inference='svi' | "
                "'laplace' | 'nuts').")
        fit = getattr(self, "fit_", None)
        diag = {} if fit is None else fit.diagnostics
        if fit is not None and fit.method == "nuts" and not diag.get("converged", True):
            warnings.warn(f"{name}.fit_ (NUTS) has not converged: {diag['message']}; these "
                          "intervals are not to be trusted. Refit with more num_samples "
                          "(also the warm-up length).", RuntimeWarning,
                          stacklevel=find_stack_level())

    # ------------------------------------------------------------------ save / load
    def save(self, path: str) -> None:
        """Save the fitted estimator to ``path`` (one ``.npz``: arrays + a JSON header).

        No pickle anywhere: the header holds the constructor arguments and fitted metadata
        as JSON; the arrays are stored by their pytree paths, so files load with later
        versions of JAX/Equinox/NumPyro. A ``base_predictor`` is not saved (refit it and
        pass it to :meth:`load`).

        Examples:
            >>> import os, tempfile, numpy as np
            >>> from ctxppl.estimators import ContextualizedRegressor
            >>> rng = np.random.default_rng(0)
            >>> C, X = rng.normal(size=(50, 1)), rng.normal(size=(50, 2))
            >>> est = ContextualizedRegressor(max_epochs=2, random_state=0).fit(C, X, X[:, 0])
            >>> p = os.path.join(tempfile.mkdtemp(), "est.npz"); est.save(p)
            >>> np.allclose(type(est).load(p).predict(C, X), est.predict(C, X))
            True
        """
        from ctxppl.estimators._io import save_estimator

        self._check_fitted()
        save_estimator(self, path)

    @classmethod
    def load(cls, path: str, base_predictor: Any = None) -> ContextualizedBase:
        """Load an estimator saved with :meth:`save`."""
        from ctxppl.estimators._io import load_estimator

        return load_estimator(path, ContextualizedBase, cls, base_predictor)

    # metadata (besides params) that save/load must round-trip; subclasses extend
    def _fitted_meta(self) -> dict[str, Any]:
        meta = {}
        for k, v in vars(self).items():
            if not k.endswith("_") or k in ("fit_", "model_", "params_", "draws_"):
                continue
            if isinstance(v, Scaler):
                meta[k] = {"__scaler__": [v.mean.tolist(), v.std.tolist()]}
            elif isinstance(v, np.ndarray):
                meta[k] = {"__array__": v.tolist(), "dtype": str(v.dtype)}
            elif _jsonable(v):
                meta[k] = v
        return meta

    def _restore_meta(self, meta: dict[str, Any]) -> None:
        for k, v in meta.items():
            if isinstance(v, dict) and "__scaler__" in v:
                v = Scaler(np.asarray(v["__scaler__"][0]), np.asarray(v["__scaler__"][1]))
            elif isinstance(v, dict) and "__array__" in v:
                v = np.asarray(v["__array__"], dtype=v["dtype"])
            setattr(self, k, v)

    def _template_args(self) -> tuple:
        """Model arguments of one dummy sample (to rebuild parameter structures)."""
        raise NotImplementedError

    def _build_model(self) -> Any:
        raise NotImplementedError

    def __sklearn_tags__(self):  # noqa: ANN204
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


def _auto_batch(n: int) -> int | None:
    """Full batch up to 1,024 samples, else minibatches of 128 (see docs/benchmarks.md:
    at N = 5,000 and 20,000 this matched or beat larger batches in accuracy, and each step is
    cheap)."""
    return None if n <= 1024 else 128
