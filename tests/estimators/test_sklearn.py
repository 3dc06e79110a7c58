"""scikit-learn's estimator checks for the contextualized regressor and classifier.

ctxppl's estimators take context and predictors separately (``fit(C, X, Y)``), so the checks
run through thin adapters (``_adapters.py``) that pass every column as both ``C`` and ``X``
and forward all validation to the estimator.

Every check of ``sklearn.utils.estimator_checks`` runs and passes; none is listed as an
expected failure. (``check_array_api_input`` is skipped by scikit-learn itself unless
``SCIPY_ARRAY_API=1``.) Each check fits on its own data shape, and every new shape compiles
a new program (~3 s), so the full list takes about a minute per estimator: the checks in
``FAST`` -- input validation, API contracts, and the accuracy checks ``check_regressors_train``
/ ``check_classifiers_train`` -- run in the default suite, the rest are marked ``slow``.
"""

from __future__ import annotations

import functools

import pytest
from sklearn.utils.estimator_checks import estimator_checks_generator

from ._adapters import ClassifierAdapter, RegressorAdapter

FAST = {
    "check_estimator_cloneable", "check_estimator_repr", "check_no_attributes_set_in_init",
    "check_parameters_default_constructible", "check_get_params_invariance",
    "check_set_params", "check_estimators_unfitted", "check_fit2d_1sample", "check_fit1d",
    "check_estimators_empty_data_messages", "check_complex_data", "check_requires_y_none",
    "check_fit2d_predict1d", "check_regressors_train", "check_classifiers_train",
    "check_estimators_pickle", "check_methods_subset_invariance", "check_supervised_y_2d",
    "check_classifiers_regression_target", "check_do_not_raise_errors_in_init_or_set_params",
}


def _name(check) -> str:  # noqa: ANN001
    while isinstance(check, functools.partial):
        check = check.func
    return check.__name__


def _params():
    for est in (RegressorAdapter(), ClassifierAdapter()):
        for estimator, check in estimator_checks_generator(est):
            name = _name(check)
            marks = [] if name in FAST else [pytest.mark.slow]
            yield pytest.param(estimator, check,
                               id=f"{type(est).__name__}-{name}", marks=marks)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
@pytest.mark.parametrize(("estimator", "check"), list(_params()))
def test_sklearn_check(estimator, check):  # noqa: ANN001
    from sklearn.exceptions import SkipTestWarning  # noqa: F401

    try:
        check(estimator)
    except __import__("unittest").SkipTest as e:
        pytest.skip(str(e))
