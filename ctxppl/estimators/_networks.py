"""scikit-learn-style contextualized networks: correlation, Markov and Bayesian."""

from __future__ import annotations

from typing import Any

import numpy as np

from ctxppl.estimators._base import (
    PLATE,
    ContextualizedBase,
    Scaler,
    _names,
    as_2d,
    estimator_options,
    same_rows,
)
from ctxppl.models import (
    BayesianNetwork,
    CorrelationNetwork,
    MarkovNetwork,
    correlation_from_slopes,
    dag_pred,
)
from ctxppl.models import project_to_dag as _project

__all__ = ["ContextualizedCorrelationNetworks", "ContextualizedMarkovNetworks",
           "ContextualizedBayesianNetworks"]

_NET_OPTIONS = r"""
    Args:
        inference, n_bootstraps, encoder_type, metamodel_type, num_archetypes, width, depth,
        alpha, l1_ratio, mu_ratio, fit_intercept, normalize, val_split, es_patience,
        learning_rate, max_epochs, batch_size, random_state, prior_scale, num_samples,
        uncertainty: As for :class:`ctxppl.estimators.ContextualizedRegressor`. With
            ``uncertainty=True`` every entry of every sample's network is its own Gaussian
            process of the context, so the weights integrated out grow with the square of
            the number of features: meant for small networks.
"""


class _NetworkEstimator(ContextualizedBase):
    def _common_kwargs(self) -> dict[str, Any]:
        return {"metamodel": self._metamodel(), "fit_intercept": bool(self.fit_intercept),
                "alpha": float(self.alpha), "l1_ratio": float(self.l1_ratio),
                "mu_ratio": float(self.mu_ratio),
                "prior_scale": float(self.prior_scale) if self._bayesian() else None,
                "plate": PLATE}

    def _prepare(self, C: Any, X: Any, Y: Any = None) -> tuple:
        self._check_options()
        self.context_names_, self.feature_names_ = _names(C), _names(X)
        C, X = as_2d("C", C), as_2d("X", X)
        if Y is not None:
            self.target_names_ = _names(Y)
            Y = as_2d("Y", Y)
        same_rows(2, C=C, X=X, Y=Y)
        self.n_context_features_ = int(C.shape[1])
        self.n_features_ = int(X.shape[1])
        self.c_scaler_ = Scaler.fit("C", C, self.normalize)
        self.x_scaler_ = Scaler.fit("X", X, self.normalize)
        self._set_gp_domain(self.c_scaler_(C))
        return C, X, Y

    def _template_args(self) -> tuple:
        return (np.zeros((1, self.n_context_features_)), np.zeros((1, self.n_features_)))

    def _draws(self, C: Any, sites: tuple[str, ...]) -> dict[str, np.ndarray]:
        self._check_fitted()
        C = self._check_context(C)
        n = C.shape[0]
        args = (self.c_scaler_(C), np.zeros((n, self.n_features_)))
        return self._site_draws(args, sites)

    def _check_network_input(self, X: Any) -> None:
        if X.shape[1] < 2:
            raise ValueError(f"a network needs at least 2 features in `X`; got {X.shape[1]}.")

    def measure_mses(self, C: Any, X: Any, individual_preds: bool = False) -> np.ndarray:
        """Per-sample mean squared error of reconstructing each feature of ``X`` from the
        others with the sample's network (``(n,)``, or ``(S, n)`` with
        ``individual_preds``)."""
        self._check_fitted()
        C = self._check_context(C)
        X = self._check_features(X)
        same_rows(C=C, X=X)
        pred = self.predict_X(C, X, individual_preds=True)
        mse = np.mean((X[None] - pred) ** 2, axis=-1)
        return mse if individual_preds else mse.mean(axis=0)


class ContextualizedCorrelationNetworks(_NetworkEstimator):
    __doc__ = r"""Contextualized correlation networks: every sample gets its own correlation
    matrix among the columns of ``X`` -- or, with ``fit(C, X, Y)``, between the columns of
    ``X`` and those of ``Y`` -- from per-pair contextualized simple regressions
    (:class:`ctxppl.models.CorrelationNetwork`).
    """ + _NET_OPTIONS + r"""
    Examples:
        >>> import numpy as np
        >>> from ctxppl.estimators import ContextualizedCorrelationNetworks
        >>> rng = np.random.default_rng(0)
        >>> C = rng.uniform(-1, 1, (2000, 1)); z = rng.normal(size=(2000, 2))
        >>> X = np.stack([z[:, 0], np.sign(C[:, 0]) * z[:, 0] + 0.5 * z[:, 1]], 1)
        >>> net = ContextualizedCorrelationNetworks(random_state=0).fit(C, X)
        >>> rho = net.predict_networks(np.array([[0.8], [-0.8]]))
        >>> rho[:, 0, 1].round(1)
        array([ 0.9, -0.9])
    """

    _sites = ("beta", "mu")
    _default_lr = 5e-3

    def fit(self, C: Any, X: Any, Y: Any = None) -> ContextualizedCorrelationNetworks:
        """Fit correlation networks among ``X`` (or between ``X`` and ``Y``)."""
        C, X, Y = self._prepare(C, X, Y)
        if Y is None:
            self._check_network_input(X)
            self.n_targets_ = 0
            self.y_scaler_ = None
        else:
            self.n_targets_ = int(Y.shape[1])
            self.y_scaler_ = Scaler.fit("Y", Y, self.normalize)
        model = self._build_model()
        args = (self.c_scaler_(C), self.x_scaler_(X))
        if Y is not None:
            args = args + (self.y_scaler_(Y),)
        self._run(model, args)
        return self

    def _build_model(self) -> CorrelationNetwork:
        return CorrelationNetwork(**self._common_kwargs(),
                                  noise_scale=None if self._bayesian() else 1.0,
                                  noise_floor=0.01 if self._uncertain() else 0.0)

    def _template_args(self) -> tuple:
        args = super()._template_args()
        if self.n_targets_:
            args = args + (np.zeros((1, self.n_targets_)),)
        return args

    def _slopes(self, C: Any) -> tuple[np.ndarray, np.ndarray]:
        """Slopes/intercepts ``(S, n, d, d)`` of every ordered pair, original scale."""
        self._check_fitted()
        C = self._check_context(C)
        n = C.shape[0]
        args = (self.c_scaler_(C), np.zeros((n, self.n_features_)))
        if self.n_targets_:
            args = args + (np.zeros((n, self.n_targets_)),)
        d = self._site_draws(args, ("beta", "mu"))
        m = self.x_scaler_.mean
        s = self.x_scaler_.std
        if self.n_targets_:
            m = np.concatenate([m, self.y_scaler_.mean])
            s = np.concatenate([s, self.y_scaler_.std])
        beta = d["beta"] * s[:, None] / s[None, :]   # beta[k, j]: z_k on z_j
        mu = m[:, None] + s[:, None] * (d["mu"] - d["beta"] * m[None, :] / s[None, :])
        return beta, mu

    def predict_correlation(self, C: Any, individual_preds: bool = True,
                            squared: bool = True) -> np.ndarray:
        """Per-sample correlations ``(n, p, p)`` (X-Y networks: ``(n, p, q)``); squared by
        default and per bootstrap/draw by default, as contextualized-ml."""
        beta, _ = self._slopes(C)
        rho = np.asarray(correlation_from_slopes(beta))
        p = self.n_features_
        if self.n_targets_:
            rho = rho[..., :p, p:]
        else:
            rho = rho * (1 - np.eye(p)) + np.eye(p)
        if not individual_preds:
            rho = rho.mean(axis=0)
        return rho**2 if squared else rho

    def predict_networks(self, C: Any, individual_preds: bool = False,
                         with_offsets: bool = False, interval: float | None = None) -> Any:
        """Per-sample signed correlations ``(n, p, p)`` (mean over bootstraps/draws unless
        ``individual_preds``); ``with_offsets`` also returns the pairwise slopes' intercepts;
        ``interval`` returns :class:`~ctxppl.estimators.Interval` s."""
        rho = self.predict_correlation(C, individual_preds=True, squared=False)
        out = self._summarise(rho, individual_preds, interval)
        if with_offsets:
            _, mu = self._slopes(C)
            return out, self._summarise(mu, individual_preds, interval)
        return out

    def predict_params(self, C: Any, individual_preds: bool = False,
                       interval: float | None = None) -> Any:
        """Pairwise slopes and intercepts ``(betas, mus)``, each ``(n, d, d)``: ``betas[:, k, j]``
        is the slope of feature ``k`` on feature ``j``."""
        beta, mu = self._slopes(C)
        return (self._summarise(beta, individual_preds, interval),
                self._summarise(mu, individual_preds, interval))

    def predict_X(self, C: Any, X: Any, individual_preds: bool = False) -> np.ndarray:
        """Each feature predicted from every other by the pairwise regressions, averaged over
        the predictors: ``(n, p)``."""
        C = self._check_context(C)
        X = self._check_features(X)
        beta, mu = self._slopes(C)
        p = self.n_features_
        beta, mu = beta[..., :p, :p], mu[..., :p, :p]
        pred = beta * X[None, :, None, :] + mu  # (S, n, k, j)
        off = 1 - np.eye(p)
        out = (pred * off).sum(-1) / off.sum(-1)
        return out if individual_preds else out.mean(axis=0)


class ContextualizedMarkovNetworks(_NetworkEstimator):
    __doc__ = r"""Contextualized Markov networks: every sample gets its own Gaussian graphical
    model (precision matrix) from its context (:class:`ctxppl.models.MarkovNetwork`,
    neighbourhood selection by pseudo-likelihood). ``alpha`` gives sparse networks.
    """ + _NET_OPTIONS + r"""
    Examples:
        >>> import numpy as np
        >>> from ctxppl.estimators import ContextualizedMarkovNetworks
        >>> rng = np.random.default_rng(0)
        >>> C = rng.uniform(-1, 1, (1000, 1)); X = rng.normal(size=(1000, 3))
        >>> net = ContextualizedMarkovNetworks(random_state=0).fit(C, X)
        >>> net.predict_precisions(C[:2]).shape
        (2, 3, 3)
    """

    _sites = ("precision", "mu")

    def _build_model(self) -> MarkovNetwork:
        return MarkovNetwork(**self._common_kwargs())

    def fit(self, C: Any, X: Any) -> ContextualizedMarkovNetworks:
        """Fit per-sample Markov networks among the columns of ``X``."""
        C, X, _ = self._prepare(C, X)
        self._check_network_input(X)
        model = self._build_model()
        self._run(model, (self.c_scaler_(C), self.x_scaler_(X)))
        return self

    def _precision_mu(self, C: Any) -> tuple[np.ndarray, np.ndarray]:
        d = self._draws(C, ("precision", "mu"))
        s, m = self.x_scaler_.std, self.x_scaler_.mean
        prec = d["precision"] / s[:, None] / s[None, :]
        return prec, m + s * d["mu"]

    def predict_precisions(self, C: Any, individual_preds: bool = False,
                           interval: float | None = None) -> Any:
        """Per-sample precision matrices ``(n, p, p)`` on the original scale."""
        prec, _ = self._precision_mu(C)
        return self._summarise(prec, individual_preds, interval)

    def predict_networks(self, C: Any, individual_preds: bool = False,
                         with_offsets: bool = False, interval: float | None = None) -> Any:
        """Per-sample partial correlations ``(n, p, p)``,
        :math:`-\\Theta_{jk}/\\sqrt{\\Theta_{jj}\\Theta_{kk}}` (diagonal 0); ``with_offsets``
        also returns the means ``(n, p)``."""
        prec, mu = self._precision_mu(C)
        dg = np.sqrt(np.diagonal(prec, axis1=-2, axis2=-1))
        pc = -prec / dg[..., :, None] / dg[..., None, :]
        p = self.n_features_
        pc = pc * (1 - np.eye(p))
        out = self._summarise(pc, individual_preds, interval)
        if with_offsets:
            return out, self._summarise(mu, individual_preds, interval)
        return out

    def predict_params(self, C: Any, individual_preds: bool = False,
                       interval: float | None = None) -> Any:
        """``(precisions, mus)``, each summarised as in :meth:`predict_precisions`."""
        prec, mu = self._precision_mu(C)
        return (self._summarise(prec, individual_preds, interval),
                self._summarise(mu, individual_preds, interval))

    def predict_X(self, C: Any, X: Any, individual_preds: bool = False) -> np.ndarray:
        """Each feature's conditional mean given the others: ``(n, p)``."""
        C = self._check_context(C)
        X = self._check_features(X)
        prec, mu = self._precision_mu(C)
        dg = np.diagonal(prec, axis1=-2, axis2=-1)
        off = prec * (1 - np.eye(self.n_features_))
        pred = mu - np.einsum("snjk,snk->snj", off, X[None] - mu) / dg
        return pred if individual_preds else pred.mean(axis=0)


@estimator_options
class ContextualizedBayesianNetworks(_NetworkEstimator):
    __doc__ = r"""Contextualized Bayesian networks (NOTMAD): every sample gets its own linear
    structural equation model on a DAG, mixed from archetype DAGs by its context
    (:class:`ctxppl.models.BayesianNetwork`).

    ``predict_networks(C)`` returns weighted adjacency matrices ``W[i, j, k]`` (edge
    ``j -> k``), projected onto DAGs by default.
    """ + _NET_OPTIONS + r"""        num_archetypes: Archetype DAGs (default 16, as NOTMAD).
        dag_loss: ``"notears"`` or ``"poly"`` acyclicity function.
        dag_alpha, dag_rho, l1: Per-sample DAG penalty :math:`\alpha h + \rho h^2/2` and L1 on
            edges. The defaults (10, 10) are 100x contextualized-ml's (0.1, 0.01), which
            leave 2-cycles that projection then cuts at random (see docs/benchmarks.md).
        normalize: Centre the features and divide them by one common scale (per-feature
            scaling would change which DAG fits best under equal noise variances).
        archetype_alpha, archetype_rho, archetype_l1: The same on the archetypes.

    Examples:
        >>> import numpy as np
        >>> from ctxppl.estimators import ContextualizedBayesianNetworks
        >>> rng = np.random.default_rng(0)
        >>> C = rng.uniform(-1, 1, (1000, 1)); x0 = rng.normal(size=1000)
        >>> X = np.stack([x0, 2 * x0 + 0.5 * rng.normal(size=1000)], 1)
        >>> net = ContextualizedBayesianNetworks(random_state=0).fit(C, X)
        >>> net.predict_networks(C[:1]).shape
        (1, 2, 2)
    """

    _sites = ("W", "mu")
    # The DAG penalty makes a step ~4x dearer; 300 steps already beat the peer's accuracy
    # by 4x on the benchmark (docs/benchmarks.md).
    _default_steps = 300

    num_archetypes: int = 16
    dag_loss: str = "notears"
    dag_alpha: float = 10.0
    dag_rho: float = 10.0
    l1: float = 0.0
    archetype_alpha: float = 0.0
    archetype_rho: float = 0.0
    archetype_l1: float = 0.0

    def _build_model(self) -> BayesianNetwork:
        kw = self._common_kwargs()
        kw.pop("alpha"), kw.pop("l1_ratio"), kw.pop("mu_ratio")
        return BayesianNetwork(**kw, dag_loss=self.dag_loss, dag_alpha=float(self.dag_alpha),
                               dag_rho=float(self.dag_rho), l1=float(self.l1),
                               archetype_alpha=float(self.archetype_alpha),
                               archetype_rho=float(self.archetype_rho),
                               archetype_l1=float(self.archetype_l1))

    def fit(self, C: Any, X: Any) -> ContextualizedBayesianNetworks:
        """Fit per-sample DAGs among the columns of ``X``."""
        C, X, _ = self._prepare(C, X)
        self._check_network_input(X)
        # One common scale for every feature: a linear SEM with equal noise variances is
        # identifiable, and stays so under a common rescaling -- but not under per-feature
        # standardisation, which would let the penalty pick reversed edges.
        s = self.x_scaler_.std
        self.x_scaler_ = Scaler(self.x_scaler_.mean, np.full_like(s, np.sqrt(np.mean(s**2))))
        model = self._build_model()
        self._run(model, (self.c_scaler_(C), self.x_scaler_(X)))
        return self

    def _W_mu(self, C: Any) -> tuple[np.ndarray, np.ndarray]:
        d = self._draws(C, ("W", "mu"))
        s, m = self.x_scaler_.std, self.x_scaler_.mean
        W = d["W"] * s[None, :] / s[:, None]  # W[j, k] * s_k / s_j
        mu = m + s * d["mu"] - np.einsum("j,snjk->snk", m, W)
        return W, mu

    def predict_params(self, C: Any, individual_preds: bool = False,
                       interval: float | None = None, project_to_dag: bool = False,
                       threshold: float = 0.0) -> Any:
        """Per-sample weighted adjacency matrices ``(n, p, p)`` (``W[i, j, k]``: edge
        ``j -> k``), on the original scale; optionally projected onto DAGs and with edges
        ``|w| <= threshold`` removed (after averaging)."""
        W, _ = self._W_mu(C)
        out = self._summarise(W, individual_preds, interval)
        if interval is None:
            if project_to_dag:
                out = _project(out)
            return np.where(np.abs(out) > threshold, out, 0.0)
        return out

    def predict_networks(self, C: Any, project_to_dag: bool = True, individual_preds: bool = False,
                         threshold: float = 0.0, interval: float | None = None) -> Any:
        """Per-sample networks: :meth:`predict_params` with ``project_to_dag=True`` by default."""
        return self.predict_params(C, individual_preds=individual_preds, interval=interval,
                                   project_to_dag=project_to_dag, threshold=threshold)

    def predict_X(self, C: Any, X: Any, individual_preds: bool = False,
                  project_to_dag: bool = False) -> np.ndarray:
        """Each feature predicted from its parents: ``x W + mu`` per sample, ``(n, p)``."""
        C = self._check_context(C)
        X = self._check_features(X)
        W, mu = self._W_mu(C)
        if project_to_dag:
            W = _project(W)
        pred = np.stack([dag_pred(X, w, m) for w, m in zip(W, mu, strict=True)])
        return pred if individual_preds else pred.mean(axis=0)

    def measure_mses(self, C: Any, X: Any, individual_preds: bool = False,
                     project_to_dag: bool = False) -> np.ndarray:
        """Per-sample mean squared reconstruction error of ``X`` by its SEM (``(n,)``)."""
        self._check_fitted()
        C = self._check_context(C)
        X = self._check_features(X)
        same_rows(C=C, X=X)
        pred = self.predict_X(C, X, individual_preds=True, project_to_dag=project_to_dag)
        mse = np.mean((X[None] - pred) ** 2, axis=-1)
        return mse if individual_preds else mse.mean(axis=0)

