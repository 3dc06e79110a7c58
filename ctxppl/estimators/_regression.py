"""scikit-learn-style contextualized regressors and classifiers."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import DataConversionWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils.multiclass import check_classification_targets

from ctxppl.estimators._base import (
    PLATE,
    ContextualizedBase,
    Scaler,
    _names,
    as_2d,
    estimator_options,
    same_rows,
)
from ctxppl.models import Classification, Regression, UnivariateRegression

# uncertainty=True: the noise scale never goes below 1% of the standardised outcome's SD
# (noise-free data would drive it to 0; see ctxppl.models.Regression.noise_floor)
_NOISE_FLOOR = 0.01

__all__ = ["ContextualizedRegressor", "ContextualizedClassifier", "ContextualGAMRegressor",
           "ContextualGAMClassifier"]

_DOC_OPTIONS = r"""
    Args:
        inference: ``"map"`` (point estimates, fastest), ``"svi"`` (variational posterior),
            ``"laplace"`` or ``"nuts"``. With a posterior method the metamodel's head (the
            archetypes, or the output layer of a direct encoder) gets a
            ``Normal(0, prior_scale)`` prior and the noise scale is learned, so per-sample
            parameters come with posterior draws.
        n_bootstraps: Number of bootstrap fits (rows resampled with replacement), all fitted
            together in one compiled ``ctx.fit_many`` call.
        encoder_type: ``"mlp"``, ``"ngam"`` (neural additive) or ``"linear"``.
        metamodel_type: ``"subtype"`` (archetypes, default), ``"naive"`` (direct),
            ``"multitask"`` or ``"tasksplit"``.
        num_archetypes: Archetypes of the subtype/multitask/tasksplit metamodels.
        width, depth: Hidden units per layer and hidden layers of the encoder.
        alpha, l1_ratio, mu_ratio: Elastic net on every sample's parameters:
            ``alpha * (l1_ratio * L1 + (1 - l1_ratio) * L2^2)``, with ``mu_ratio`` of it on
            the intercepts and ``1 - mu_ratio`` on the coefficients.
        fit_intercept: Learn a context-dependent intercept.
        normalize: Standardise ``C``, ``X`` (and ``Y`` for regression) before fitting;
            parameters and predictions are returned on the original scale.
        val_split: Fraction of samples held out for early stopping (``None``: no hold-out).
        es_patience: Evaluations (every ~``num_steps/10`` steps) without improvement before
            stopping.
        learning_rate: Adam's initial learning rate (cosine decay to 1% of it); ``None`` =
            1e-2, or 5e-3 for classifiers and correlation networks (noisier targets).
        max_epochs: Passes over the data; ``None`` = a fixed budget of Adam steps (1,000;
            300 for Bayesian networks), which suits the default network at any N.
        batch_size: Minibatch size; ``None`` = full batch up to 1,024 samples, else 128.
        random_state: Seed (int) for reproducible fits; ``None`` = fresh randomness.
        base_predictor: Learn only the deviation from another model: a fitted contextualized
            estimator (its per-sample parameters become offsets), a fitted scikit-learn model
            of ``X``, ``[C, X]`` or ``C`` (its predictions become an offset), or a callable
            ``f(C, X) -> predictions``.
        prior_scale: Prior scale of the head for posterior methods.
        num_samples: Posterior draws kept (SVI, Laplace; NUTS also uses it for warm-up).
        uncertainty: Calibrated per-sample intervals: every per-sample parameter becomes a
            Gaussian process of the (standardised) context plus a linear part
            (:class:`ctxppl.nn.HSGP`; joint for up to two context features, additive
            beyond), fitted by ``ctx.fit(method="marginal")`` -- weights integrated out,
            hyperparameters by their marginal likelihood with a Laplace approximation over
            them. ``predict_params(C, interval=0.9)`` and ``predict(..., interval=0.9)`` then
            give intervals that are narrow where the data say something and widen away from
            them (docs/uncertainty.md). The noise scale has a floor of 0.01 standardised
            units. Slower than MAP; leave ``inference``, ``n_bootstraps`` and ``val_split``
            at their defaults.
"""


def _base_offsets(base: Any, C: np.ndarray, X: np.ndarray, kind: str) -> dict[str, Any]:
    """Offsets from a base predictor, on the original scale."""
    if base is None:
        return {}
    if hasattr(base, "predict_params") and isinstance(base, ContextualizedBase):
        beta, mu = base.predict_params(C)
        return {"beta": np.asarray(beta), "mu": np.asarray(mu)}
    if hasattr(base, "predict") or hasattr(base, "predict_proba"):
        n_in = getattr(base, "n_features_in_", None)
        if n_in == X.shape[1]:
            inp = X
        elif n_in == C.shape[1] + X.shape[1]:
            inp = np.hstack([C, X])
        elif n_in == C.shape[1]:
            inp = C
        else:
            raise ValueError(f"`base_predictor` takes {n_in} features, but X has "
                             f"{X.shape[1]}, C has {C.shape[1]} and [C, X] has "
                             f"{C.shape[1] + X.shape[1]}; pass a callable f(C, X) instead.")
        if kind == "regression":
            f = np.asarray(base.predict(inp), dtype=float)
        elif hasattr(base, "decision_function"):
            f = np.asarray(base.decision_function(inp), dtype=float)
        else:
            p = np.clip(np.asarray(base.predict_proba(inp), dtype=float), 1e-9, 1.0)
            f = np.log(p[:, 1:]) - np.log(p[:, :1]) if p.shape[1] > 2 else \
                np.log(p[:, 1]) - np.log(p[:, 0])
    elif callable(base):
        f = np.asarray(base(C, X), dtype=float)
    else:
        raise TypeError("`base_predictor` must be a fitted contextualized estimator, a fitted "
                        "scikit-learn model, or a callable f(C, X); got "
                        f"{type(base).__name__}.")
    if f.shape[0] != C.shape[0]:
        raise ValueError(f"`base_predictor` returned {f.shape[0]} predictions for "
                         f"{C.shape[0]} samples.")
    return {"y": f.reshape(C.shape[0], -1)}


@estimator_options
class _LinearEstimator(ContextualizedBase):
    """Shared code of the regressor and classifier."""

    _sites = ("beta", "mu")
    _kind = "regression"

    base_predictor: Any = None

    # -------------------------------------------------------------- data preparation
    def _prepare(self, C: Any, X: Any) -> tuple[np.ndarray, np.ndarray]:
        self._check_options()
        Cn, Xn = _names(C), _names(X)
        C, X = as_2d("C", C), as_2d("X", X)
        same_rows(2, C=C, X=X)
        self.context_names_ = Cn
        self.feature_names_ = Xn
        self.n_context_features_ = int(C.shape[1])
        self.n_features_ = int(X.shape[1])
        self.c_scaler_ = Scaler.fit("C", C, self.normalize)
        self.x_scaler_ = Scaler.fit("X", X, self.normalize)
        self._set_gp_domain(self.c_scaler_(C))
        return C, X

    def _offsets_normalised(self, C: np.ndarray, X: np.ndarray) -> dict[str, np.ndarray]:
        """Base-predictor offsets on the model's (normalised) scale."""
        off = _base_offsets(self.base_predictor, C, X, self._kind)
        out: dict[str, np.ndarray] = {}
        sx_m, sx_s = self.x_scaler_.mean, self.x_scaler_.std
        ym, ys = self._y_center_scale()
        if "beta" in off:
            beta = off["beta"]  # (n, q, p) original scale
            if beta.shape[1:] != (self.n_groups_, self.n_features_):
                raise ValueError(f"`base_predictor` parameters have shape {beta.shape[1:]}; "
                                 f"expected {(self.n_groups_, self.n_features_)}.")
            out["beta_offset"] = beta * sx_s[None, None, :] / ys[None, :, None]
            mu = off["mu"] + np.einsum("nqp,p->nq", beta, sx_m)
            out["mu_offset"] = (mu - ym) / ys
        if "y" in off:
            f = off["y"]
            if f.shape[1] != self.n_groups_:
                raise ValueError(f"`base_predictor` predictions have {f.shape[1]} columns; "
                                 f"expected {self.n_groups_}.")
            out["y_offset"] = (f - ym) / ys
        return out

    def _y_center_scale(self) -> tuple[np.ndarray, np.ndarray]:
        q = self.n_groups_
        return np.zeros(q), np.ones(q)

    def _args(self, C: np.ndarray, X: np.ndarray, Y: Any = None) -> tuple:
        off = self._offsets_normalised(C, X)
        return (self.c_scaler_(C), self.x_scaler_(X), Y, off.get("beta_offset"),
                off.get("mu_offset"), off.get("y_offset"))

    def _template_args(self) -> tuple:
        return (np.zeros((1, self.n_context_features_)), np.zeros((1, self.n_features_)))

    # -------------------------------------------------------------- parameters
    def _back(self, beta: np.ndarray, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised-scale (beta, mu) -> original scale (for a linear predictor)."""
        xm, xs = self.x_scaler_.mean, self.x_scaler_.std
        ym, ys = self._y_center_scale()
        has_y_offset = self.base_predictor is not None and not isinstance(
            self.base_predictor, ContextualizedBase)
        if getattr(self, "univariate", False):
            b = beta * ys[:, None] / xs[None, :]
            m = ys[:, None] * (mu - beta * xm[None, :] / xs[None, :])
            if not has_y_offset:
                m = m + ym[:, None]
            return b, m
        b = beta * ys[:, None] / xs[None, :]
        m = ys * (mu - np.einsum("...qp,p->...q", beta, xm / xs))
        if not has_y_offset:
            m = m + ym
        return b, m

    def predict_params(self, C: Any, individual_preds: bool = False,
                       interval: float | None = None) -> Any:
        r"""Per-sample parameters ``(betas, mus)`` at contexts ``C``, on the original scale.

        ``betas`` is ``(n, y_dim, x_dim)`` and ``mus`` ``(n, y_dim)`` (univariate: both
        ``(n, y_dim, x_dim)``; multiclass: ``y_dim`` = classes, class 0 the zero reference).
        When a base predictor gives parameter offsets they are included; when it gives an
        outcome offset these are the parameters of the deviation from it.

        Args:
            C: Contexts ``(n, c_dim)``.
            individual_preds: Return every bootstrap / posterior draw (leading axis ``S``)
                instead of their mean.
            interval: e.g. ``0.95``: return :class:`~ctxppl.estimators.Interval` tuples
                ``(estimate, lower, upper)`` with equal-tailed quantiles over bootstraps and
                draws.

        Returns:
            ``(betas, mus)``, each an array or an ``Interval``.
        """
        self._check_fitted()
        C = self._check_context(C)
        n = C.shape[0]
        X0 = np.zeros((n, self.n_features_))
        args = (self.c_scaler_(C), self.x_scaler_(X0))
        if isinstance(self.base_predictor, ContextualizedBase):
            off = self._offsets_normalised(C, X0)
            args = args + (None, off["beta_offset"], off["mu_offset"])
        draws = self._site_draws(args, ("beta", "mu"))
        beta, mu = self._back(draws["beta"], draws["mu"])
        return (self._summarise(beta, individual_preds, interval),
                self._summarise(mu, individual_preds, interval))

    def _linear_predictor(self, C: Any, X: Any) -> np.ndarray:
        """``eta`` (S, n, groups) on the original scale, including base offsets."""
        self._check_fitted()
        X = self._check_features(X)
        C = self._check_context(C)
        same_rows(C=C, X=X)
        beta, mu = self.predict_params(C, individual_preds=True)
        if getattr(self, "univariate", False):
            eta = beta * X[None, :, None, :] + mu
        else:
            eta = np.einsum("snqp,np->snq", beta, X) + mu
        off = _base_offsets(self.base_predictor, C, X, self._kind)
        if "y" in off:
            f = off["y"]
            eta = eta + (f[None, :, :, None] if eta.ndim == 4 else f[None])
        return eta


@estimator_options
class ContextualizedRegressor(_LinearEstimator):
    __doc__ = r"""Contextualized linear regression: every sample gets its own coefficients
    :math:`\beta(c)` and intercept :math:`\mu(c)` from its context.

    .. math:: y_i = g\big(\beta(c_i)^\top x_i + \mu(c_i)\big) + \varepsilon_i

    ``fit(C, X, Y)`` with ``Y`` of shape ``(n,)`` or ``(n, y_dim)`` (several outputs);
    ``univariate=True`` fits every (input, output) pair as its own simple regression.
    """ + _DOC_OPTIONS + r"""        link_fn: Output link ``g`` (``"identity"``, ``"exp"``,
            ``"softplus"``, ``"sigmoid"``, ``"tanh"``).
        univariate: One simple regression per (input, output) pair.

    Attributes:
        fit_: The :class:`ctxppl.Fit` (diagnostics, posterior, ArviZ export).
        model_: The ctxppl model (a NumPyro program) that was fitted.
        n_context_features_, n_features_, n_outputs_: Input/output sizes.
        context_names_, feature_names_, target_names_: Column names of pandas inputs.

    Examples:
        >>> import numpy as np
        >>> from ctxppl.estimators import ContextualizedRegressor
        >>> rng = np.random.default_rng(0)
        >>> C = rng.uniform(-1, 1, (500, 1)); X = rng.normal(size=(500, 2))
        >>> Y = X[:, 0] * C[:, 0] + 2 * X[:, 1] + 0.01 * rng.normal(size=500)
        >>> est = ContextualizedRegressor(random_state=0).fit(C, X, Y)
        >>> betas, mus = est.predict_params(np.array([[0.5], [-0.5]]))
        >>> betas.shape, np.round(betas[:, 0], 1)
        ((2, 1, 2), array([[ 0.5,  2. ],
               [-0.5,  2. ]]))
    """

    link_fn: str = "identity"
    univariate: bool = False

    def _y_center_scale(self) -> tuple[np.ndarray, np.ndarray]:
        return self.y_scaler_.mean, self.y_scaler_.std

    def _build_model(self) -> Regression:
        cls = UnivariateRegression if self.univariate else Regression
        return cls(metamodel=self._metamodel(), y_dim=self.n_groups_, link=self.link_fn,
                   fit_intercept=bool(self.fit_intercept), alpha=float(self.alpha),
                   l1_ratio=float(self.l1_ratio), mu_ratio=float(self.mu_ratio),
                   noise_scale=None if self._bayesian() else 1.0,
                   noise_floor=_NOISE_FLOOR if self._uncertain() else 0.0,
                   prior_scale=float(self.prior_scale) if self._bayesian() else None,
                   plate=PLATE)

    def fit(self, C: Any, X: Any, Y: Any) -> ContextualizedRegressor:
        """Fit to contexts ``C`` ``(n, c_dim)``, predictors ``X`` ``(n, x_dim)`` and outcomes
        ``Y`` ``(n,)`` or ``(n, y_dim)``. Returns ``self``."""
        Yn = _names(Y)
        C, X = self._prepare(C, X)
        Y = as_2d("Y", Y, allow_1d=True)
        same_rows(2, C=C, X=X, Y=Y)
        self.y_1d_ = bool(Y.ndim == 1)
        Y2 = Y.reshape(len(Y), -1)
        self.target_names_ = Yn
        self.n_outputs_ = self.n_groups_ = int(Y2.shape[1])
        if self.link_fn != "identity" and self.normalize:
            self.y_scaler_ = Scaler(np.zeros(self.n_groups_), np.ones(self.n_groups_))
        else:
            self.y_scaler_ = Scaler.fit("Y", Y2, self.normalize)
        model = self._build_model()
        args = self._args(C, X)
        self._run(model, (args[0], args[1], self.y_scaler_(Y2)) + args[3:])
        return self

    def predict(self, C: Any, X: Any, individual_preds: bool = False,
                interval: float | None = None) -> Any:
        r"""Predicted outcomes ``(n,)`` (or ``(n, y_dim)``; univariate: ``(n, y_dim, x_dim)``),
        averaged over bootstraps/draws unless ``individual_preds``.

        With ``interval`` (e.g. ``0.9``) an :class:`~ctxppl.estimators.Interval` of the
        expected outcome :math:`g(\beta(c)^\top x + \mu(c))` over bootstraps / posterior
        draws (an interval for the regression function, without the noise of a new
        observation)."""
        from ctxppl.models._common import output_link

        eta = self._linear_predictor(C, X)
        y = np.asarray(output_link(self.link_fn)(eta))
        if self.y_1d_ and not self.univariate:
            y = y[..., 0]
        if interval is not None:
            return self._summarise(y, individual_preds, interval)
        return y if individual_preds else y.mean(axis=0)

    def score(self, C: Any, X: Any, Y: Any) -> float:
        """:math:`R^2` of :meth:`predict` (scikit-learn's ``r2_score``)."""
        return float(r2_score(np.asarray(Y), self.predict(C, X)))


class ContextualizedClassifier(_LinearEstimator):
    __doc__ = r"""Contextualized logistic regression: every sample gets its own decision
    boundary from its context. Binary and multiclass (softmax, class 0 as reference).

    ``fit(C, X, y)`` with ``y`` of shape ``(n,)`` holding any class labels (strings, ints,
    bools); ``predict_proba`` returns ``(n, n_classes)`` in the order of ``classes_``.
    """ + _DOC_OPTIONS + r"""
    Attributes:
        classes_: The class labels.
        fit_, model_, n_context_features_, n_features_: As for the regressor.

    Examples:
        >>> import numpy as np
        >>> from ctxppl.estimators import ContextualizedClassifier
        >>> rng = np.random.default_rng(0)
        >>> C = rng.uniform(-1, 1, (800, 1)); X = rng.normal(size=(800, 2))
        >>> logits = 3 * X[:, 0] * np.sign(C[:, 0])
        >>> y = rng.uniform(size=800) < 1 / (1 + np.exp(-logits))
        >>> clf = ContextualizedClassifier(random_state=0).fit(C, X, y)
        >>> betas, mus = clf.predict_params(np.array([[0.9], [-0.9]]))
        >>> np.abs(betas[:, 0, 0] - np.array([3.0, -3.0])) < 1.5  # true slopes +3 and -3
        array([ True,  True])
        >>> clf.predict_proba(np.array([[0.9]]), np.array([[1.0, 0.0]])).shape
        (1, 2)
    """

    _kind = "classification"
    _default_lr = 5e-3

    def _build_model(self) -> Classification:
        k = len(self.classes_)
        return Classification(metamodel=self._metamodel(), num_classes=max(k, 2),
                              y_dim=1 if k == 2 else None,
                              fit_intercept=bool(self.fit_intercept), alpha=float(self.alpha),
                              l1_ratio=float(self.l1_ratio), mu_ratio=float(self.mu_ratio),
                              prior_scale=float(self.prior_scale) if self._bayesian() else None,
                              plate=PLATE)

    def fit(self, C: Any, X: Any, y: Any) -> ContextualizedClassifier:
        """Fit to contexts ``C``, predictors ``X`` and labels ``y`` ``(n,)``. Returns ``self``."""
        C, X = self._prepare(C, X)
        if y is None:
            raise ValueError("this estimator requires y to be passed, but the target y is None.")
        if hasattr(y, "to_numpy"):
            y = y.to_numpy()
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected: `y` of "
                          "shape (n, 1) was flattened to (n,).", DataConversionWarning,
                          stacklevel=2)
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"`y` must be 1-D class labels; got shape {y.shape}.")
        same_rows(2, C=C, X=X, y=y)
        if y.dtype.kind in "fc" and not np.all(np.isfinite(y)):
            raise ValueError("`y` contains NaN/inf labels.")
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"`y` needs at least 2 classes; got only {self.classes_.tolist()}.")
        k = len(self.classes_)
        self.n_groups_ = 1 if k == 2 else k
        self.n_outputs_ = 1
        model = self._build_model()
        Y = codes.astype(np.float64)[:, None] if k == 2 else codes.astype(np.int32)
        args = self._args(C, X)
        self._run(model, (args[0], args[1], Y) + args[3:])
        return self

    def predict_proba(self, C: Any, X: Any, individual_preds: bool = False,
                      interval: float | None = None) -> Any:
        """Class probabilities ``(n, n_classes)``, averaged over bootstraps/draws unless
        ``individual_preds`` (then ``(S, n, n_classes)``); with ``interval`` an
        :class:`~ctxppl.estimators.Interval` over them."""
        eta = self._linear_predictor(C, X)
        if len(self.classes_) == 2:
            p1 = 0.5 * (1.0 + np.tanh(0.5 * eta[..., 0]))  # the logistic, without overflow
            p = np.stack([1 - p1, p1], axis=-1)
        else:
            z = eta - eta.max(axis=-1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=-1, keepdims=True)
        if interval is not None:
            return self._summarise(p, individual_preds, interval)
        return p if individual_preds else p.mean(axis=0)

    def predict(self, C: Any, X: Any) -> np.ndarray:
        """Most probable class label of every sample."""
        self._check_fitted()
        return self.classes_[np.argmax(self.predict_proba(C, X), axis=-1)]

    def score(self, C: Any, X: Any, y: Any) -> float:
        """Accuracy of :meth:`predict`."""
        return float(accuracy_score(np.asarray(y), self.predict(C, X)))

    def __sklearn_tags__(self):  # noqa: ANN204
        tags = super().__sklearn_tags__()
        tags.estimator_type = "classifier"
        return tags


@estimator_options
class ContextualGAMRegressor(ContextualizedRegressor):
    __doc__ = r"""Contextual generalized additive regression: a
    :class:`ContextualizedRegressor` whose encoder is a neural additive model (``"ngam"``),
    so each context feature's effect on the parameters can be read off separately.

    Examples:
        >>> from ctxppl.estimators import ContextualGAMRegressor
        >>> ContextualGAMRegressor().encoder_type
        'ngam'
    """

    encoder_type: str = "ngam"

@estimator_options
class ContextualGAMClassifier(ContextualizedClassifier):
    __doc__ = r"""Contextual generalized additive classifier: a
    :class:`ContextualizedClassifier` with a neural additive (``"ngam"``) encoder.

    Examples:
        >>> from ctxppl.estimators import ContextualGAMClassifier
        >>> ContextualGAMClassifier().encoder_type
        'ngam'
    """

    encoder_type: str = "ngam"
