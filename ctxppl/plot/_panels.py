"""Which parameters of a block get a panel, and how the panels are labelled."""

from __future__ import annotations

from typing import Any

import numpy as np

from ctxppl.analysis._source import names_of

__all__ = ["panel_positions", "param_labels"]


def panel_positions(shape: tuple[int, ...], index: Any, labels: list[str], max_panels: int,
                    arg: str = "index") -> list[int]:
    """Flat positions into a parameter block of ``shape`` selected by ``index``."""
    size = int(np.prod(shape)) if shape else 1
    if index is None:
        pos = list(range(size))
    else:
        items = index if isinstance(index, list) else [index]
        pos = []
        for it in items:
            if isinstance(it, str):
                hits = [k for k, lab in enumerate(labels) if lab == it or
                        lab.endswith(f", {it}]") or lab.endswith(f"[{it}]")]
                if not hits:
                    raise ValueError(f"`{arg}` {it!r} matches no parameter; parameters are "
                                     f"{labels[:20]}.")
                pos.extend(hits)
            elif isinstance(it, tuple):
                if len(it) != len(shape) or any(not 0 <= v < s for v, s in zip(it, shape,
                                                                            strict=True)):
                    raise ValueError(f"`{arg}` {it} is not a position in parameters of shape "
                                     f"{shape}.")
                pos.append(int(np.ravel_multi_index(it, shape)))
            elif isinstance(it, (int, np.integer)) and 0 <= int(it) < size:
                pos.append(int(it))
            else:
                raise ValueError(f"`{arg}` entries must be flat ints in [0, {size}), tuples of "
                                 f"shape {shape} or names; got {it!r}.")
    if len(pos) > max_panels:
        raise ValueError(f"{len(pos)} parameters selected but at most {max_panels} panels are "
                         f"drawn; choose some with `{arg}=` (e.g. {labels[:3]}) or raise "
                         "`max_panels`.")
    return pos


def param_labels(model: Any, shape: tuple[int, ...], param: str, Y: Any = None) -> list[str]:
    """``beta[y, x]`` style labels for a parameter block (predictors on the last axis)."""
    if not shape:
        return [param]
    names_per_axis: list[list[str]] = []
    for a, s in enumerate(shape):
        if param == "beta" and a == len(shape) - 1:
            names_per_axis.append(names_of(model, "feature_names_", s, "x"))
        elif a == 0:
            from ctxppl.analysis._pvals import _target_names

            names_per_axis.append(_target_names(model, Y, s))
        else:
            names_per_axis.append([str(v) for v in range(s)])
    return [f"{param}[{', '.join(names_per_axis[a][i] for a, i in enumerate(ix))}]"
            for ix in np.ndindex(*shape)]
