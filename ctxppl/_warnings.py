"""Warnings that point at the user's line (numpyro's / pandas' ``find_stack_level``)."""

from __future__ import annotations

import inspect
import os

__all__ = ["find_stack_level"]

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


def find_stack_level() -> int:
    """``stacklevel`` for :func:`warnings.warn` naming the first frame outside ctxppl.

    Counted from the caller of ``warnings.warn``: a warning raised deep inside
    ``ctx.fit`` -> ``_fit_nuts`` (or an estimator's ``fit`` -> ``ctx.fit``) is reported at
    the user's line, however many ctxppl frames lie between.

    Examples:
        >>> import warnings
        >>> from ctxppl._warnings import find_stack_level
        >>> find_stack_level() >= 1
        True
    """
    frame = inspect.currentframe()
    n = 0
    while frame is not None:
        fname = os.path.abspath(frame.f_code.co_filename)
        if not fname.startswith(_PKG_DIR + os.sep):
            break
        frame = frame.f_back
        n += 1
    # n counts the ctxppl frames including this one: the caller of ``warnings.warn`` is
    # stacklevel 1, so the first frame outside ctxppl is stacklevel n
    return n
