"""``ctx.load``: read a fit saved with :meth:`Fit.save` (format in ``_format.py``).

Loading never runs code named by the file: nothing is unpickled and nothing is imported.
The model function is supplied by the caller (``model=``); without it the fit's arrays,
samples and diagnostics load, but ``predict`` / ``to_arviz`` need the model.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ctxppl.infer._format import read_fit
from ctxppl.infer._result import Fit

__all__ = ["load"]


def load(path: str | os.PathLike, model: Callable | None = None) -> Fit:
    """Load a fit saved with :meth:`Fit.save`.

    Nothing in the file is executed: the header is JSON, arrays are read with
    ``allow_pickle=False``, and the model is never imported by the name stored in the file.
    Pass it as ``model=`` (the saved name is shown in the error of ``predict`` otherwise).

    Args:
        path: The ``.npz`` file.
        model: The model function the fit was made with (needed for ``predict``,
            ``to_arviz`` and to rebuild encoder ``param`` sites as Equinox modules).

    Returns:
        The :class:`Fit`, with identical arrays.

    Raises:
        FileNotFoundError: no such file.
        ctxppl.FileFormatError: (a ``ValueError``) the file is damaged, of another kind
            (e.g. an estimator file), or of an older format that was a pickle.

    Examples:
        >>> import os, tempfile, jax.numpy as jnp, numpyro, numpyro.distributions as dist
        >>> import ctxppl as ctx
        >>> def model(y=None):
        ...     numpyro.sample("y", dist.Normal(numpyro.sample("m", dist.Normal()), 1), obs=y)
        >>> fit = ctx.fit(model, jnp.array(1.0), key=0, progress=False)
        >>> p = os.path.join(tempfile.mkdtemp(), "fit.npz"); fit.save(p)
        >>> ctx.load(p, model=model).method
        'map'
    """
    if model is not None and not callable(model):
        raise TypeError(f"`model` must be the model function (callable); got "
                        f"{type(model).__name__}.")
    fields = read_fit(path, model)
    ref = fields.pop("model_ref")
    fit = Fit(model=model, **fields)
    fit.saved_model = ref
    return fit
