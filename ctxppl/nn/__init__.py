"""Context encoders (Equinox modules). See :mod:`ctxppl.nn._encoders` and
:mod:`ctxppl.nn._hsgp`."""

from ctxppl.nn._encoders import MLP as MLP
from ctxppl.nn._encoders import NGAM as NGAM
from ctxppl.nn._encoders import Archetype as Archetype
from ctxppl.nn._encoders import Constant as Constant
from ctxppl.nn._encoders import Encoder as Encoder
from ctxppl.nn._encoders import Linear as Linear
from ctxppl.nn._encoders import get_link as get_link
from ctxppl.nn._hsgp import HSGP as HSGP

__all__ = ["Encoder", "Constant", "Linear", "MLP", "NGAM", "Archetype", "HSGP", "get_link"]
