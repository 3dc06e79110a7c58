"""``ctx.workflow.ModelSpec``: what a model factory returns -- a model and how data feed it."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ModelSpec"]


class _Bound(functools.partial):
    """``functools.partial`` that compares and hashes by value, so jit caches are shared by
    configs that bind the same constants to the same model function."""

    def _ident(self) -> tuple:
        return (self.func, self.args, tuple(sorted(self.keywords.items())))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._ident() == other._ident()

    def __hash__(self) -> int:
        return hash(self._ident())


def _is_ref(ref: Any) -> bool:
    if isinstance(ref, str):
        return True
    return isinstance(ref, list | tuple) and bool(ref) and all(isinstance(r, str) for r in ref)


@dataclass(frozen=True)
class ModelSpec:
    r"""What a model factory returns: a NumPyro model and how the data feed it.

    Args:
        model: A NumPyro model function (``ctx.plate`` / ``ctx.encoder`` / ``ctx.contextual``
            or plain NumPyro). Prefer a module-level function with the config in ``constants``:
            configs that share constants and shapes then share one compiled program.
        plate: Name of the plate whose members are the data rows; splits weight its members.
        args: Positional model arguments, each the name of a ``data`` entry / column, or a
            list of column names (stacked into an ``(n, k)`` array), or an array.
        kwargs: Keyword model arguments, same forms as ``args``.
        constants: Keyword arguments bound to the model as Python values (ints, strings,
            floats, tuples): shape-changing settings such as ``K`` or ``width``. Must be
            hashable.
        options: Fit options for this config (``num_steps``, ``learning_rate``,
            ``init_strategy``, ...), overriding the options given to ``run``.

    Examples:
        >>> import numpyro, numpyro.distributions as dist, ctxppl as ctx
        >>> def model(y=None, *, scale):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, scale))
        ...     with ctx.plate("rows", 3):
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> spec = ctx.workflow.ModelSpec(model, plate="rows", kwargs={"y": "y"},
        ...                               constants={"scale": 10.0})
        >>> spec.plate, spec.bound_model().keywords
        ('rows', {'scale': 10.0})
    """

    model: Callable
    plate: str
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    constants: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not callable(self.model):
            raise TypeError(f"`model` of ModelSpec must be a NumPyro model function; got "
                            f"{type(self.model).__name__}.")
        if not isinstance(self.plate, str) or not self.plate:
            raise TypeError(f"`plate` of ModelSpec must be a plate name (str); got "
                            f"{self.plate!r}.")
        if isinstance(self.args, str) or not isinstance(self.args, Sequence):
            raise TypeError(f"`args` of ModelSpec must be a tuple of data names; got "
                            f"{self.args!r}. For one argument write args=({self.args!r},).")
        object.__setattr__(self, "args", tuple(self.args))
        for name in ("kwargs", "constants", "options"):
            if not isinstance(getattr(self, name), Mapping):
                raise TypeError(f"`{name}` of ModelSpec must be a dict; got "
                                f"{type(getattr(self, name)).__name__}.")
        for k, v in self.constants.items():
            try:
                hash(v)
            except TypeError:
                raise TypeError(f"constant `{k}` of ModelSpec must be hashable (int, float, "
                                f"str, tuple); got {type(v).__name__}. Pass arrays through "
                                "`kwargs` instead (they are then traced, not baked in)."
                                ) from None
        clash = sorted(set(self.constants) & set(self.kwargs))
        if clash:
            raise ValueError(f"{clash} appear in both `kwargs` and `constants` of ModelSpec.")

    def bound_model(self) -> Callable:
        """The model with ``constants`` bound (hashable by value)."""
        if not self.constants:
            return self.model
        return _Bound(self.model, **dict(self.constants))

    def resolve(self, data: Any) -> tuple[tuple, dict]:
        """Model ``(args, kwargs)`` read from ``data``."""
        args = tuple(_resolve(data, r, f"args[{i}]") for i, r in enumerate(self.args))
        kwargs = {k: _resolve(data, r, f"kwargs[{k!r}]") for k, r in self.kwargs.items()}
        return args, kwargs


def _entries(data: Any) -> list[str]:
    cols = getattr(data, "columns", None)
    return [str(c) for c in (cols if cols is not None else data.keys())]


def _resolve(data: Any, ref: Any, where: str) -> Any:
    if ref is None:
        return None
    if not _is_ref(ref):
        if hasattr(ref, "__array__") or isinstance(ref, int | float):
            return ref
        raise TypeError(f"ModelSpec {where} must be a data name, a list of column names or an "
                        f"array; got {type(ref).__name__}.")
    names = [ref] if isinstance(ref, str) else list(ref)
    missing = [r for r in names if r not in _entries(data)]
    if missing:
        raise KeyError(f"ModelSpec {where} refers to {missing}, which is not in `data`; its "
                       f"entries are {_entries(data)}.")
    if isinstance(ref, str):
        value = data[ref]
        return value.to_numpy() if hasattr(value, "to_numpy") else np.asarray(value)
    cols = [np.asarray(data[r].to_numpy() if hasattr(data[r], "to_numpy") else data[r],
                       dtype=np.float32) for r in names]
    return np.stack(cols, axis=-1)
