"""Inference: ``fit`` (MAP, Laplace, SVI, NUTS), ``fit_many``, the ``Fit`` result, ``load``."""

from ctxppl.infer._fit import DEFAULTS as DEFAULTS
from ctxppl.infer._fit import METHODS as METHODS
from ctxppl.infer._fit import fit as fit
from ctxppl.infer._fit import fit_many as fit_many
from ctxppl.infer._io import load as load
from ctxppl.infer._loop import LoopOptions as LoopOptions
from ctxppl.infer._loop import Stepper as Stepper
from ctxppl.infer._loop import optimize as optimize
from ctxppl.infer._result import Fit as Fit
from ctxppl.infer._result import FitError as FitError

__all__ = ["fit", "fit_many", "Fit", "FitError", "load", "METHODS", "DEFAULTS", "Stepper",
           "LoopOptions", "optimize"]
