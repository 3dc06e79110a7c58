"""Inference: ``fit`` (MAP, Laplace, SVI, NUTS), ``fit_many``, the ``Fit`` result, ``load``."""

from ctxppl._moved import moved_names
from ctxppl.infer._fit import DEFAULTS as DEFAULTS
from ctxppl.infer._fit import METHODS as METHODS
from ctxppl.infer._fit import fit as fit
from ctxppl.infer._fit import fit_many as fit_many
from ctxppl.infer._io import load as load
from ctxppl.infer._result import Fit as Fit
from ctxppl.infer._result import FitError as FitError
from ctxppl.infer._sbc import SBCResult as SBCResult
from ctxppl.infer._sbc import rank_pvalues as rank_pvalues
from ctxppl.infer._sbc import sbc as sbc

__all__ = ["fit", "fit_many", "Fit", "FitError", "load", "METHODS", "DEFAULTS", "sbc",
           "SBCResult", "rank_pvalues"]

__getattr__ = moved_names(__name__, {"Stepper": "ctxppl.infer._loop",
                                     "LoopOptions": "ctxppl.infer._loop",
                                     "optimize": "ctxppl.infer._loop"})
