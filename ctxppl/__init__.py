"""ctxppl: contextualized probabilistic programming, a NumPyro plugin.

Every sample gets its own model parameters, estimated from its context:
``theta_i = f(c_i) + scale * eps_i``. Write models as NumPyro programs with :func:`plate`,
:func:`encoder` and :func:`contextual`; fit them with :func:`fit` (MAP, Laplace, SVI, NUTS).
"""

from ctxppl import handlers as handlers
from ctxppl import nn as nn
from ctxppl import workflow as workflow
from ctxppl import models as models
from ctxppl import online as online
from ctxppl import estimators as estimators
from ctxppl import analysis as analysis
from ctxppl import plot as plot
from ctxppl._primitives import PlateInfo as PlateInfo
from ctxppl._primitives import context as context
from ctxppl._primitives import contextual as contextual
from ctxppl._primitives import encoder as encoder
from ctxppl._primitives import plate as plate
from ctxppl.infer import Fit as Fit
from ctxppl.infer import FitError as FitError
from ctxppl.infer import fit as fit
from ctxppl.infer import fit_many as fit_many
from ctxppl.infer import load as load
from ctxppl.models.mixed import mixed as mixed

__version__ = "0.1.0"

__all__ = ["plate", "context", "encoder", "contextual", "PlateInfo", "fit", "fit_many", "Fit",
           "FitError", "load", "handlers", "nn", "workflow", "models", "mixed", "online", "estimators",
           "analysis", "plot", "__version__"]
