r"""Hyperparameter grids: Cartesian products of settings (scikit-learn's ``ParameterGrid``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sklearn.model_selection import ParameterGrid

__all__ = ["grid", "as_configs"]


def _values(name: str, v: Any) -> list[Any]:
    if isinstance(v, str | bytes) or not isinstance(v, Sequence | range) and not hasattr(
            v, "__array__"):
        return [v]  # a single setting
    values = list(v)
    if not values:
        raise ValueError(f"grid parameter `{name}` has no values; give at least one.")
    return values


def grid(*grids: Mapping[str, Any], **params: Any) -> list[dict[str, Any]]:
    r"""All combinations of hyperparameter settings, one dict per configuration.

    Keyword arguments map a name to a list of values (a single value is a one-value list);
    positional dicts add further sub-grids (their configurations are appended, as with
    scikit-learn's ``ParameterGrid`` over a list of dicts). Order: the last name varies
    fastest, names sorted alphabetically (``ParameterGrid``'s convention).

    Args:
        *grids: Optional extra sub-grids, each a dict ``name -> values``.
        **params: ``name -> values`` of the main grid.

    Returns:
        A list of config dicts (pass it to :func:`ctxppl.workflow.run`).

    Raises:
        ValueError: if a parameter has no values (the grid would be empty).

    Examples:
        >>> import ctxppl as ctx
        >>> ctx.workflow.grid(K=[2, 3], covariance=["diag", "full"])
        [{'K': 2, 'covariance': 'diag'}, {'K': 2, 'covariance': 'full'}, {'K': 3, 'covariance': 'diag'}, {'K': 3, 'covariance': 'full'}]
    """  # noqa: E501
    subgrids = [dict(g) for g in grids]
    for g in subgrids:
        if not isinstance(g, dict):
            raise TypeError(f"positional arguments of grid() must be dicts; got "
                            f"{type(g).__name__}.")
    if params or not subgrids:
        subgrids.insert(0, dict(params))
    clean = [{str(k): _values(str(k), v) for k, v in g.items()} for g in subgrids]
    return [dict(c) for c in ParameterGrid(clean)]


def as_configs(configs: Any) -> list[dict[str, Any]]:
    """Normalise ``grid`` input of ``run``: list of dicts, ``ParameterGrid``, DataFrame, None."""
    if configs is None:
        return [{}]
    if hasattr(configs, "to_dict") and hasattr(configs, "columns"):  # pandas DataFrame
        out = configs.to_dict(orient="records")
    elif isinstance(configs, Mapping):
        out = grid(**configs)
    else:
        try:
            out = list(configs)
        except TypeError:
            raise TypeError("`grid` must be a list of config dicts (e.g. ctx.workflow.grid(...)), "
                            f"a ParameterGrid or a DataFrame; got {type(configs).__name__}."
                            ) from None
    if not out:
        raise ValueError("`grid` is empty: there is no configuration to fit. Build one with "
                         "ctx.workflow.grid(name=[values, ...]).")
    for i, c in enumerate(out):
        if not isinstance(c, Mapping):
            raise TypeError(f"`grid[{i}]` must be a dict of hyperparameters; got "
                            f"{type(c).__name__}.")
        for k in c:
            if not isinstance(k, str):
                raise TypeError(f"`grid[{i}]` has a non-string key {k!r}; hyperparameter names "
                                "must be strings (they become DataFrame columns and keyword "
                                "arguments of the model factory).")
    return [dict(c) for c in out]
