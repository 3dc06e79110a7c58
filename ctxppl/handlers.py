"""Effect handlers for contextualized models (NumPyro Messengers)."""

from ctxppl._handlers import at_context as at_context
from ctxppl._handlers import contextualize as contextualize
from ctxppl._handlers import minibatch as minibatch
from ctxppl._handlers import subsample_with_replacement as subsample_with_replacement
from ctxppl._handlers import weight as weight

__all__ = ["at_context", "contextualize", "weight", "minibatch", "subsample_with_replacement"]
