"""The plot tests reuse the analysis tests' cached fit."""

import pytest
from analysis._fits import null_fit as _null_fit  # tests/analysis (rootdir-relative package)


@pytest.fixture(scope="session")
def null_fit():
    return _null_fit()
