r"""Online random effects (GAME): per-entity models on top of a fixed-effect offset.

A fixed-effect model (any callable or fitted ctxppl model) scores every record; per-entity
random effects (per user, item, ad, ...) correct that score with a small linear model each,
refreshed from minibatches of a stream by sequential Laplace updates, vectorised and jitted
over entities. See :class:`GAME`, :class:`RandomEffects` and the update rules
(:func:`ridge`, :func:`logistic`, :func:`bayes_logistic`, :func:`bayes_poisson`).
"""

from ctxppl.online._batch import Bucket as Bucket
from ctxppl.online._batch import check_batch as check_batch
from ctxppl.online._batch import pad_records as pad_records
from ctxppl.online._batch import padded_sizes as padded_sizes
from ctxppl.online._dask import DaskRandomEffects as DaskRandomEffects
from ctxppl.online._dask import shard_of as shard_of
from ctxppl.online._effects import Proposal as Proposal
from ctxppl.online._effects import RandomEffects as RandomEffects
from ctxppl.online._effects import UpdateReport as UpdateReport
from ctxppl.online._explore import predictive_mean as predictive_mean
from ctxppl.online._explore import predictive_moments as predictive_moments
from ctxppl.online._explore import sample_coefficients as sample_coefficients
from ctxppl.online._explore import ucb_from_moments as ucb_from_moments
from ctxppl.online._features import IndexMap as IndexMap
from ctxppl.online._features import UpdateError as UpdateError
from ctxppl.online._features import records_to_arrays as records_to_arrays
from ctxppl.online._game import GAME as GAME
from ctxppl.online._game import FitFunction as FitFunction
from ctxppl.online._game import from_fit as from_fit
from ctxppl.online._metrics import evaluate as evaluate
from ctxppl.online._state import EntityIndex as EntityIndex
from ctxppl.online._state import EntityState as EntityState
from ctxppl.online._updates import STATUS as STATUS
from ctxppl.online._updates import Rule as Rule
from ctxppl.online._updates import UpdateOutput as UpdateOutput
from ctxppl.online._updates import bayes_linear as bayes_linear
from ctxppl.online._updates import bayes_logistic as bayes_logistic
from ctxppl.online._updates import bayes_poisson as bayes_poisson
from ctxppl.online._updates import entity_update as entity_update
from ctxppl.online._updates import logistic as logistic
from ctxppl.online._updates import padded_size as padded_size
from ctxppl.online._updates import ridge as ridge
from ctxppl.online._updates import rule as rule
from ctxppl.online._updates import update_entities as update_entities

__all__ = [
    "GAME", "from_fit", "FitFunction", "evaluate", "DaskRandomEffects", "shard_of",
    "RandomEffects", "UpdateReport", "Proposal", "UpdateError",
    "Rule", "rule", "ridge", "bayes_linear", "logistic", "bayes_logistic", "bayes_poisson",
    "update_entities", "entity_update", "UpdateOutput", "STATUS", "padded_size",
    "IndexMap", "records_to_arrays", "EntityState", "EntityIndex",
    "Bucket", "pad_records", "padded_sizes", "check_batch",
    "predictive_moments", "predictive_mean", "sample_coefficients", "ucb_from_moments",
]
