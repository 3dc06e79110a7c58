"""Input checks done before any inference work starts."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["normalize_inputs", "check_finite_inputs", "normalize_key"]


def _to_array(value: Any) -> Any:
    if hasattr(value, "to_numpy") and hasattr(value, "dtypes"):  # pandas DataFrame / Series
        return value.to_numpy()
    return value


def _arg_names(model: Callable, args: tuple, kwargs: dict) -> list[tuple[str, Any]]:
    try:
        bound = inspect.signature(model).bind_partial(*args, **kwargs)
        return list(bound.arguments.items())
    except (TypeError, ValueError):
        return [(f"args[{i}]", a) for i, a in enumerate(args)] + list(kwargs.items())


def check_finite_inputs(model: Callable, args: tuple, kwargs: dict) -> None:
    """Raise if an array argument is non-numeric or holds NaN/inf (names the argument)."""
    for name, value in _arg_names(model, args, kwargs):
        for path, leaf in jax.tree_util.tree_leaves_with_path(value):
            if not isinstance(leaf, np.ndarray | jax.Array | np.generic):
                continue
            where = f"`{name}`" + (jax.tree_util.keystr(path) if path else "")
            dtype = leaf.dtype
            if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
                raise TypeError(f"{where} must be numeric; got dtype {dtype}. Encode categories "
                                "as integers or one-hot columns first.")
            if isinstance(leaf, jax.core.Tracer):
                continue
            arr = np.asarray(leaf)
            if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
                bad = int(np.size(arr) - np.sum(np.isfinite(arr)))
                raise ValueError(f"{where} contains {bad} NaN/inf value(s) (shape {arr.shape}); "
                                 "drop or impute them before fitting.")


def normalize_inputs(model: Callable, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """pandas -> numpy, object arrays rejected, NaN/inf rejected."""
    args = tuple(_to_array(a) for a in args)
    kwargs = {k: _to_array(v) for k, v in kwargs.items()}
    for name, value in _arg_names(model, args, kwargs):
        if isinstance(value, list | tuple) and value and all(
                isinstance(x, int | float) for x in value):
            raise TypeError(f"`{name}` is a Python {type(value).__name__} of numbers; pass "
                            "an array (np.asarray) so it is traced, not baked into the program.")
        if isinstance(value, np.ndarray) and value.dtype == object:
            raise TypeError(f"`{name}` has dtype object; pass a numeric array.")
    check_finite_inputs(model, args, kwargs)
    return args, kwargs


def normalize_key(key: Any) -> jax.Array:
    if key is None:
        raise ValueError("`key` is required: pass `key=jax.random.key(0)` (or an int seed).")
    if isinstance(key, int | np.integer):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            if key.shape != ():
                raise ValueError(f"`key` must be a single key; got shape {key.shape}.")
            return key
        if key.shape == (2,) and key.dtype == jnp.uint32:
            return jax.random.wrap_key_data(key)
    raise TypeError(f"`key` must be a jax.random.key or an int seed; got {type(key).__name__}.")
