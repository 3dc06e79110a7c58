"""Grids: ParameterGrid order, single values, empties."""

import pandas as pd
import pytest
from sklearn.model_selection import ParameterGrid

import ctxppl as ctx
from ctxppl.workflow._grid import as_configs


def test_grid_matches_parameter_grid():
    g = ctx.workflow.grid(n_components=range(2, 5), covariance_type=["full", "diag"])
    ref = list(ParameterGrid({"n_components": list(range(2, 5)),
                              "covariance_type": ["full", "diag"]}))
    assert g == ref and len(g) == 6


def test_grid_single_values_and_subgrids():
    assert ctx.workflow.grid(width=8, act="relu") == [{"act": "relu", "width": 8}]
    g = ctx.workflow.grid({"K": [2]}, {"K": [3], "cov": ["full"]})
    assert g == [{"K": 2}, {"K": 3, "cov": "full"}]


def test_empty_grids_raise():
    with pytest.raises(ValueError, match="grid parameter `K` has no values"):
        ctx.workflow.grid(K=[])
    with pytest.raises(ValueError, match="`grid` is empty"):
        as_configs([])
    with pytest.raises(TypeError, match=r"`grid\[1\]` must be a dict"):
        as_configs([{"K": 2}, 3])
    df = pd.DataFrame({"K": [2, 3]})
    assert as_configs(df) == [{"K": 2}, {"K": 3}]
    assert as_configs(None) == [{}]
