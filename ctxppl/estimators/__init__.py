"""scikit-learn-style contextualized estimators (regression, classification, networks).

Every estimator builds a ctxppl model (:mod:`ctxppl.models`), fits it with ``ctx.fit`` (or all
bootstraps at once with ``ctx.fit_many``) by MAP, SVI, Laplace or NUTS, and returns per-sample
parameters on the original scale of the data.
"""

from ctxppl.estimators._base import Interval as Interval
from ctxppl.estimators._networks import (
    ContextualizedBayesianNetworks as ContextualizedBayesianNetworks,
)
from ctxppl.estimators._networks import (
    ContextualizedCorrelationNetworks as ContextualizedCorrelationNetworks,
)
from ctxppl.estimators._networks import (
    ContextualizedMarkovNetworks as ContextualizedMarkovNetworks,
)
from ctxppl.estimators._regression import ContextualGAMClassifier as ContextualGAMClassifier
from ctxppl.estimators._regression import ContextualGAMRegressor as ContextualGAMRegressor
from ctxppl.estimators._regression import ContextualizedClassifier as ContextualizedClassifier
from ctxppl.estimators._regression import ContextualizedRegressor as ContextualizedRegressor

__all__ = ["ContextualizedRegressor", "ContextualizedClassifier", "ContextualGAMRegressor",
           "ContextualGAMClassifier", "ContextualizedCorrelationNetworks",
           "ContextualizedMarkovNetworks", "ContextualizedBayesianNetworks", "Interval"]
