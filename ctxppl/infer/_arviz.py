"""ArviZ export with dims named after plates; works with arviz 0.2x and 1.x."""

from __future__ import annotations

from typing import Any

import numpy as np

from ctxppl.infer._sites import ModelStructure

__all__ = ["site_dims", "make_arviz", "from_groups", "arviz_major"]


def arviz_major() -> int:
    """The installed ArviZ's major version (0 or 1).

    Examples:
        >>> from ctxppl.plot import arviz_major
        >>> arviz_major() in (0, 1)
        True
    """
    import arviz as az

    return int(az.__version__.split(".")[0])


def from_groups(groups: dict[str, dict[str, Any]], **kwargs: Any) -> Any:
    """``az.from_dict`` for both ArviZ APIs: 1.x takes the groups as one dict (DataTree),
    0.x as keyword arguments (InferenceData)."""
    import arviz as az

    if arviz_major() >= 1:
        return az.from_dict(groups, **kwargs)
    return az.from_dict(**groups, **kwargs)


def site_dims(name: str, shape: tuple[int, ...], structure: ModelStructure) -> list[str]:
    """Dim names for one draw of site ``name`` with shape ``shape`` (no chain/draw dims)."""
    info = structure.sites.get(name)
    dims = [f"{name}_dim_{i}" for i in range(len(shape))]
    if info is None:
        return dims
    n_batch = len(shape) - info.event_ndim
    for plate, dim in info.plates:
        axis = n_batch + dim
        size = structure.plates.get(plate)
        if 0 <= axis < len(shape) and shape[axis] == size:
            dims[axis] = plate
    return dims


def make_arviz(groups: dict[str, dict[str, Any]], structure: ModelStructure) -> Any:
    """``az.from_dict`` over ``groups`` (posterior/log_likelihood have chain, draw axes)."""
    dims: dict[str, list[str]] = {}
    used: set[str] = set()
    # One dims entry per variable, taken from its full shape (observed data or posterior);
    # log-likelihood arrays lack the event dims and take the leading ones
    # (``from_dict`` trims dims to the array's rank for log_likelihood groups).
    order = sorted(groups, key=lambda g: ("observed_data", "posterior").index(g)
                   if g in ("observed_data", "posterior") else 2)
    for gname in order:
        lead = 0 if gname == "observed_data" else 2
        for name, value in groups[gname].items():
            if name in dims:
                continue
            d = site_dims(name, tuple(np.shape(value)[lead:]), structure)
            dims[name] = d
            used.update(d)
    coords = {p: np.arange(n) for p, n in structure.plates.items() if p in used}
    groups = {g: {k: np.asarray(v) for k, v in grp.items()} for g, grp in groups.items() if grp}
    return from_groups(groups, dims=dims, coords=coords)
