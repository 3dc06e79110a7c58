"""Input checks done before any inference work starts."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["normalize_inputs", "check_finite_inputs", "normalize_key", "seed_key",
           "check_broadcasting", "check_nonempty"]


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


def _names(model: Callable, n: int) -> list[str]:
    try:
        params = list(inspect.signature(model).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return [names[i] if i < len(names) else f"args[{i}]" for i in range(n)]


def _list_to_array(name: str, value: Any) -> Any:
    """A (nested) list of numbers -> a numpy array, as the estimators do; lists that are not
    rectangular numeric data are refused with a message naming the argument."""
    if not isinstance(value, list):
        return value
    if not value:  # an empty list is empty data (reported as 0 rows), not a config
        return np.zeros((0,), np.float32)
    if all(isinstance(x, str) for x in value):  # e.g. column names: not data
        return value
    try:
        arr = np.asarray(value)
    except ValueError:
        arr = None
    if arr is None or arr.dtype == object:
        raise TypeError(f"`{name}` is a Python list that is not a rectangular array of "
                        "numbers (ragged rows, or mixed types); pass a numeric array.")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        return value
    return arr


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
            if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
                from ctxppl.infer._distributed import check_global_finite

                check_global_finite(leaf, where)  # rows on several processes: all-reduce
                continue
            arr = np.asarray(leaf)
            if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
                bad = int(np.size(arr) - np.sum(np.isfinite(arr)))
                raise ValueError(f"{where} contains {bad} NaN/inf value(s) (shape {arr.shape}); "
                                 "drop or impute them before fitting.")


def normalize_inputs(model: Callable, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """pandas and (nested) lists of numbers -> numpy; object arrays and NaN/inf rejected."""
    args = tuple(_to_array(a) for a in args)
    kwargs = {k: _to_array(v) for k, v in kwargs.items()}
    for name, value in _arg_names(model, args, kwargs):
        if isinstance(value, tuple) and value and all(
                isinstance(x, int | float) for x in value):
            raise TypeError(f"`{name}` is a Python tuple of numbers; pass an array "
                            "(np.asarray) so it is traced, not baked into the program.")
        if isinstance(value, np.ndarray) and value.dtype == object:
            raise TypeError(f"`{name}` has dtype object; pass a numeric array.")
    args = tuple(_list_to_array(n, a) for n, a in zip(_names(model, len(args)), args,
                                                      strict=True))
    kwargs = {k: _list_to_array(k, v) for k, v in kwargs.items()}
    check_finite_inputs(model, args, kwargs)
    return args, kwargs


def seed_key(seed: int) -> jax.Array:
    """``jax.random.key(seed)``, built on the host for the default threefry keys.

    ``jax.random.key`` compiles two small programs in every fresh process (~0.1 s); for
    ``0 <= seed < 2**31`` under the default implementation its key data are ``[0, seed]``
    (the seed's high and low 32 bits), which is what this wraps. Other seeds and
    implementations go to ``jax.random.key``.

    Examples:
        >>> import jax
        >>> bool((jax.random.key_data(seed_key(7)) == jax.random.key_data(jax.random.key(7))).all())
        True
    """
    if 0 <= seed < 2**31 and jax.config.jax_default_prng_impl == "threefry2x32":
        return jax.random.wrap_key_data(np.array([0, seed], np.uint32), impl="threefry2x32")
    return jax.random.key(seed)


def normalize_key(key: Any) -> jax.Array:
    if key is None:
        raise ValueError("`key` is required: pass `key=jax.random.key(0)` (or an int seed).")
    if isinstance(key, bool | np.bool_):
        raise TypeError(f"`key` must be a jax.random.key or an int seed; got the bool {key}.")
    if isinstance(key, int | np.integer):
        if not -(2**63) <= int(key) < 2**63:
            raise ValueError(f"`key`: an int seed must lie in [-2**63, 2**63); got {int(key)}. "
                             "Pass a smaller seed or a jax.random.key.")
        return seed_key(int(key))
    if isinstance(key, jax.Array):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            if key.shape != ():
                raise ValueError(f"`key` must be a single key; got shape {key.shape}.")
            return key
        if key.shape == (2,) and key.dtype == jnp.uint32:
            return jax.random.wrap_key_data(key)
    raise TypeError(f"`key` must be a jax.random.key or an int seed; got {type(key).__name__}.")


_MSG_BROADCAST = (
    "observed site `{site}` of shape {shape} broadcasts against its distribution's batch "
    "shape {batch} to {full}{where}: the likelihood would count {n_full} terms instead of "
    "{n_batch}. A common cause is an outcome held as a column, Y of shape (N, 1): pass "
    "Y[:, 0] (shape (N,)). If the model means this broadcast, pass check_broadcast=False.")


def check_broadcasting(structure: Any) -> None:
    """Raise if an observed value broadcasts its distribution to a batch shape larger than
    both (e.g. ``Y`` of shape ``(N, 1)`` inside a plate of size ``N`` gives ``N x N`` terms),
    or, inside plates, to dimensions that no enclosing plate declares (``Y`` of shape
    ``(N, N)`` for a plate of ``N``: the plate would meet Y's last axis). A distribution
    observed at many values outside any plate (plain NumPyro) passes.

    Examples:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist, ctxppl as ctx
        >>> from ctxppl.infer._sites import model_structure
        >>> def model(y):
        ...     with ctx.plate("rows", 3):
        ...         numpyro.sample("y", dist.Normal(0.0, 1.0), obs=y)
        >>> check_broadcasting(model_structure(model, (jnp.zeros((3, 1)),), {}))
        Traceback (most recent call last):
        ...
        ValueError: observed site `y` of shape (3, 1) broadcasts ... to (3, 3) inside ...
    """
    for name, site in structure.sites.items():
        if site.type != "sample" or not site.observed or site.batch_shape is None:
            continue
        ndim = len(site.shape) - site.event_ndim
        value_batch = tuple(site.shape[:ndim]) if ndim > 0 else ()
        try:
            full = tuple(np.broadcast_shapes(value_batch, tuple(site.batch_shape)))
        except ValueError:
            continue  # numpyro reports shape mismatches itself
        depth = max((-d for _, d in site.plates), default=0)
        if full == tuple(site.batch_shape) or (full == value_batch and len(full) <= depth):
            continue  # one term per distribution, or per value within the plates' dims
        if full == value_batch and not site.plates:
            continue  # plain NumPyro: a distribution observed at many values, no plate
        where = "".join(f" inside ctx.plate({p!r}, {structure.plates.get(p)})"
                        for p, _ in site.plates[:1])
        raise ValueError(_MSG_BROADCAST.format(
            site=name, shape=tuple(site.shape), batch=tuple(site.batch_shape), full=full,
            where=where, n_full=int(np.prod(full)), n_batch=int(np.prod(site.batch_shape))))


def check_nonempty(model: Callable, args: tuple, kwargs: dict, error: Exception) -> None:
    """Turn numpyro's ``AssertionError: size of plate should be positive`` (or any failure
    to trace the model) on empty data into a ``ValueError`` naming the empty argument."""
    for name, value in _arg_names(model, args, kwargs):
        for path, leaf in jax.tree_util.tree_leaves_with_path(value):
            if isinstance(leaf, np.ndarray | jax.Array) and leaf.ndim and leaf.shape[0] == 0:
                where = f"`{name}`" + (jax.tree_util.keystr(path) if path else "")
                raise ValueError(f"{where} has 0 rows (shape {tuple(leaf.shape)}); there is "
                                 "nothing to fit.") from None
    if isinstance(error, AssertionError) and "plate" in str(error):
        raise ValueError(f"a plate of the model has size 0 ({error}); is the data empty?"
                         ) from None
