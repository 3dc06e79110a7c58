r"""Plots for contextualized models (matplotlib; every function returns a Figure).

Figures are made without pyplot (no global state, any backend, nothing to close), except the
ArviZ wrappers (:func:`trace`, :func:`forest`, :func:`pair`), which ArviZ draws through pyplot.

* Per-sample parameters: :func:`true_vs_predicted` (as in the seed tutorial),
  :func:`params_vs_context` (with uncertainty bands), :func:`ngam_effects`.
* Effects and tests (contextualized-ml names): :func:`plot_homogeneous_context_effects`,
  :func:`plot_homogeneous_predictor_effects`, :func:`plot_heterogeneous_predictor_effects`,
  :func:`heterogeneity`.
* Networks: :func:`networks`. Mixed models: :func:`caterpillar`.
* Embeddings: :func:`embedding`, :func:`plot_lowdim_rep`, :func:`plot_embedding_for_all_covars`.
* ArviZ: :func:`trace`, :func:`forest`, :func:`pair` (arviz 0.x and 1.x).
"""

from ctxppl.plot._arviz import arviz_major as arviz_major
from ctxppl.plot._arviz import forest as forest
from ctxppl.plot._arviz import from_draws as from_draws
from ctxppl.plot._arviz import pair as pair
from ctxppl.plot._arviz import to_arviz_data as to_arviz_data
from ctxppl.plot._arviz import trace as trace
from ctxppl.plot._effects import (
    plot_heterogeneous_predictor_effects as plot_heterogeneous_predictor_effects,
)
from ctxppl.plot._effects import (
    plot_homogeneous_context_effects as plot_homogeneous_context_effects,
)
from ctxppl.plot._effects import (
    plot_homogeneous_predictor_effects as plot_homogeneous_predictor_effects,
)
from ctxppl.plot._embeddings import embedding as embedding
from ctxppl.plot._embeddings import plot_embedding_for_all_covars as plot_embedding_for_all_covars
from ctxppl.plot._embeddings import plot_lowdim_rep as plot_lowdim_rep
from ctxppl.plot._mixed import caterpillar as caterpillar
from ctxppl.plot._networks import networks as networks
from ctxppl.plot._ngam import ngam_effects as ngam_effects
from ctxppl.plot._params import params_vs_context as params_vs_context
from ctxppl.plot._params import true_vs_predicted as true_vs_predicted
from ctxppl.plot._tests import heterogeneity as heterogeneity

__all__ = ["true_vs_predicted", "params_vs_context", "ngam_effects",
           "plot_homogeneous_context_effects", "plot_homogeneous_predictor_effects",
           "plot_heterogeneous_predictor_effects", "heterogeneity", "networks", "caterpillar",
           "embedding", "plot_lowdim_rep", "plot_embedding_for_all_covars", "trace", "forest",
           "pair", "from_draws", "to_arviz_data", "arviz_major"]
