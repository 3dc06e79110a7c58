r"""Online random effects (GAME): per-entity models on top of a fixed-effect offset.

A fixed-effect model (any callable or fitted ctxppl model) scores every record; per-entity
random effects (per user, item, ad, ...) correct that score with a small linear model each,
refreshed from minibatches of a stream by sequential Laplace updates, vectorised and jitted
over entities. See :class:`GAME`, :class:`RandomEffects` and the update rules
(:func:`ridge`, :func:`logistic`, :func:`bayes_logistic`, :func:`bayes_poisson`).
"""

from ctxppl._moved import moved_names
from ctxppl.online._dask import DaskRandomEffects as DaskRandomEffects
from ctxppl.online._dask_game import DaskGAME as DaskGAME
from ctxppl.online._effects import RandomEffects as RandomEffects
from ctxppl.online._explore import predictive_mean as predictive_mean
from ctxppl.online._features import IndexMap as IndexMap
from ctxppl.online._features import UpdateError as UpdateError
from ctxppl.online._game import GAME as GAME
from ctxppl.online._game import from_fit as from_fit
from ctxppl.online._metrics import evaluate as evaluate
from ctxppl.online._rules import Rule as Rule
from ctxppl.online._rules import bayes_linear as bayes_linear
from ctxppl.online._rules import bayes_logistic as bayes_logistic
from ctxppl.online._rules import bayes_poisson as bayes_poisson
from ctxppl.online._rules import logistic as logistic
from ctxppl.online._rules import ridge as ridge
from ctxppl.online._rules import rule as rule
from ctxppl.online._state import EntityState as EntityState
from ctxppl.online._state import Proposal as Proposal
from ctxppl.online._state import UpdateReport as UpdateReport
from ctxppl.online._updates import update_entities as update_entities

__all__ = [
    "GAME", "from_fit", "evaluate", "RandomEffects", "DaskRandomEffects", "DaskGAME",
    "UpdateReport", "Proposal", "UpdateError", "EntityState", "IndexMap", "Rule", "rule", "ridge",
    "bayes_linear", "logistic", "bayes_logistic", "bayes_poisson", "update_entities",
    "predictive_mean",
]

__getattr__ = moved_names(__name__, {
    "Bucket": "ctxppl.online._batch", "check_batch": "ctxppl.online._batch",
    "pad_records": "ctxppl.online._batch", "padded_sizes": "ctxppl.online._batch",
    "shard_of": "ctxppl.online._shards", "predictive_moments": "ctxppl.online._explore",
    "sample_coefficients": "ctxppl.online._explore",
    "ucb_from_moments": "ctxppl.online._explore",
    "records_to_arrays": "ctxppl.online._features", "EntityIndex": "ctxppl.online._state",
    "FitFunction": "ctxppl.online._game", "STATUS": "ctxppl.online._updates",
    "UpdateOutput": "ctxppl.online._updates", "entity_update": "ctxppl.online._updates",
    "padded_size": "ctxppl.online._updates"})
