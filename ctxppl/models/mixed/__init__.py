r"""Mixed-effect and multi-level models: lme4 formulas, GLMM families, contextualized
random effects.

:func:`ctxppl.mixed` fits ``y ~ x + (x | g)``-style formulas, either by the marginal engine
(random effects integrated out: exact REML/ML for gaussian, Laplace for GLMMs; vectorised
over groups, one ``jit``) or as an ordinary ctxppl/NumPyro program through
:func:`ctxppl.fit` (Laplace, SVI with minibatches, NUTS). :func:`program` returns that
program for custom inference.
"""

from ctxppl.models.mixed._api import mixed as mixed
from ctxppl.models.mixed._api import program as program
from ctxppl.models.mixed._families import Family as Family
from ctxppl.models.mixed._families import bernoulli as bernoulli
from ctxppl.models.mixed._families import binomial as binomial
from ctxppl.models.mixed._families import gaussian as gaussian
from ctxppl.models.mixed._families import get_family as get_family
from ctxppl.models.mixed._families import negative_binomial as negative_binomial
from ctxppl.models.mixed._families import poisson as poisson
from ctxppl.models.mixed._formula import parse_formula as parse_formula
from ctxppl.models.mixed._marginal import ConvergenceWarning as ConvergenceWarning
from ctxppl.models.mixed._marginal import SingularFitWarning as SingularFitWarning
from ctxppl.models.mixed._program import ContextLinear as ContextLinear
from ctxppl.models.mixed._program import MixedProgram as MixedProgram
from ctxppl.models.mixed._program import resolve_priors as resolve_priors
from ctxppl.models.mixed._result import MixedResult as MixedResult

__all__ = ["mixed", "program", "MixedResult", "MixedProgram", "Family", "gaussian", "bernoulli",
           "binomial", "poisson", "negative_binomial", "get_family", "parse_formula",
           "ContextLinear", "resolve_priors", "SingularFitWarning", "ConvergenceWarning"]
