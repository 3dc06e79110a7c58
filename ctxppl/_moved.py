"""Names that left a package's public surface stay importable, with a warning.

A package lists them as ``{name: "private.module"}`` and sets
``__getattr__ = moved_names(__name__, {...})``; the old ``ctxppl.<package>.<name>`` keeps
working (PEP 562) and says where the name lives now, so user code never breaks silently.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["moved_names"]


def moved_names(package: str, names: Mapping[str, str],
                fallback: Callable[[str], Any] | None = None) -> Callable[[str], Any]:
    """A module ``__getattr__`` that resolves ``names`` lazily with a ``DeprecationWarning``.

    Args:
        package: The package's ``__name__``.
        names: Name -> the private module that holds it now.
        fallback: Called for any other name (e.g. a package's own lazy attributes); without
            it, other names raise ``AttributeError``.

    Returns:
        A function to assign to the package's ``__getattr__``.

    Examples:
        >>> import warnings
        >>> getattr_ = moved_names("pkg", {"sqrt": "math"})
        >>> with warnings.catch_warnings(record=True) as w:
        ...     warnings.simplefilter("always")
        ...     getattr_("sqrt")(4.0), w[0].category.__name__
        (2.0, 'DeprecationWarning')
    """
    def __getattr__(name: str) -> Any:
        if name in names:
            warnings.warn(f"`{package}.{name}` is no longer part of the public API; it is an "
                          f"internal of `{names[name]}` and may change without notice.",
                          DeprecationWarning, stacklevel=2)
            return getattr(importlib.import_module(names[name]), name)
        if fallback is not None:
            return fallback(name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
