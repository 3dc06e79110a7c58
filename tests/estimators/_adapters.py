"""Thin scikit-learn adapters: ``fit(X, y)`` -> ``estimator.fit(C=X, X=X, Y=y)``.

ctxppl's estimators take the context ``C`` and the predictors ``X`` separately
(``fit(C, X, Y)``), which scikit-learn's ``check_estimator`` cannot call. The adapter passes
every column as both context and predictor (a varying-coefficient model of the features on
themselves), forwards every other call, and does no validation of its own, so the checks
exercise the estimator's own input validation.
"""

from __future__ import annotations

from typing import Any

from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone

from ctxppl.estimators import ContextualizedClassifier, ContextualizedRegressor

# Small, fast settings: the checks test the API, not accuracy (except check_*_train, which
# these settings pass).
FAST = {"encoder_type": "linear", "metamodel_type": "naive", "max_epochs": 300,
        "random_state": 0}


class _Adapter(BaseEstimator):
    def __init__(self, estimator: Any = None):
        self.estimator = estimator

    def fit(self, X: Any, y: Any) -> _Adapter:
        base = self._default() if self.estimator is None else self.estimator
        self.estimator_ = clone(base).fit(X, X, y)
        self.n_features_in_ = self.estimator_.n_features_
        names = self.estimator_.feature_names_
        if names is not None:
            import numpy as np

            self.feature_names_in_ = np.asarray(names, dtype=object)
        return self

    def predict(self, X: Any) -> Any:
        self._check()
        return self.estimator_.predict(X, X)

    def _check(self) -> None:
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "estimator_")


class RegressorAdapter(RegressorMixin, _Adapter):
    @staticmethod
    def _default() -> Any:
        return ContextualizedRegressor(**FAST)

    def __sklearn_tags__(self):  # noqa: ANN204
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class ClassifierAdapter(ClassifierMixin, _Adapter):
    @staticmethod
    def _default() -> Any:
        return ContextualizedClassifier(**FAST)

    def fit(self, X: Any, y: Any) -> ClassifierAdapter:
        super().fit(X, y)
        self.classes_ = self.estimator_.classes_
        return self

    def predict_proba(self, X: Any) -> Any:
        self._check()
        return self.estimator_.predict_proba(X, X)
