"""ctxppl: contextualized probabilistic programming, a NumPyro plugin.

Every sample gets its own model parameters, estimated from its context:
``theta_i = f(c_i) + scale * eps_i``. Write models as NumPyro programs with :func:`plate`,
:func:`encoder` and :func:`contextual`; fit them with :func:`fit` (MAP, Laplace, SVI, NUTS).

The core (primitives, ``nn``, ``handlers``, ``infer``) is imported eagerly; the layers on top
(``models``, ``mixed``, ``estimators``, ``analysis``, ``plot``, ``online``, ``workflow``,
``datasets``) load on first use, so ``import ctxppl`` costs little more than numpyro.
"""

import importlib as _importlib

__version__ = "0.1.0"

from ctxppl._cache import enable_compilation_cache as _enable_compilation_cache  # noqa: E402

# JAX's persistent compilation cache in a per-user folder, before anything compiles; only
# JAX's config is set (CTXPPL_NO_CACHE=1 turns it off; see ctxppl/_cache.py)
_enable_compilation_cache(__version__)

from ctxppl import handlers as handlers  # noqa: E402
from ctxppl import nn as nn  # noqa: E402
from ctxppl._files import FileFormatError as FileFormatError  # noqa: E402
from ctxppl._primitives import PlateInfo as PlateInfo  # noqa: E402
from ctxppl._primitives import context as context  # noqa: E402
from ctxppl._primitives import contextual as contextual  # noqa: E402
from ctxppl._primitives import encoder as encoder  # noqa: E402
from ctxppl._primitives import plate as plate  # noqa: E402
from ctxppl.infer import Fit as Fit  # noqa: E402
from ctxppl.infer import FitError as FitError  # noqa: E402
from ctxppl.infer import fit as fit  # noqa: E402
from ctxppl.infer import fit_many as fit_many  # noqa: E402
from ctxppl.infer import load as load  # noqa: E402

_LAZY_MODULES = ("models", "estimators", "analysis", "plot", "online", "workflow", "datasets",
                 "distributed")
_LAZY_NAMES = {"mixed": ("ctxppl.models.mixed", "mixed")}

__all__ = ["plate", "context", "encoder", "contextual", "PlateInfo", "fit", "fit_many", "Fit",
           "FitError", "FileFormatError", "load", "handlers", "nn", "mixed", *_LAZY_MODULES,
           "__version__"]


def __getattr__(name: str):  # noqa: ANN202 - PEP 562 lazy submodules
    if name in _LAZY_MODULES:
        value = _importlib.import_module(f"ctxppl.{name}")
    elif name in _LAZY_NAMES:
        module, attr = _LAZY_NAMES[name]
        value = getattr(_importlib.import_module(module), attr)
    else:
        raise AttributeError(f"module 'ctxppl' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
