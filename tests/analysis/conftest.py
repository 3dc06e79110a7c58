"""Shared fits for the analysis tests (see ``_fits.py``)."""

import pytest

from ._fits import Q_NULL, B, N  # noqa: F401  (re-exported for the test modules)
from ._fits import null_fit as _null_fit


@pytest.fixture(scope="session")
def null_fit():
    return _null_fit()
