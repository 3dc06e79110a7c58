"""Data sets used by the tutorials, tests and benchmarks (all generated or shipped offline),
and the models of the seed tutorial that go with them."""

from ctxppl.datasets._cluster_tutorial import TUTORIAL_FIGURES as TUTORIAL_FIGURES
from ctxppl.datasets._cluster_tutorial import ClusterTutorialData as ClusterTutorialData
from ctxppl.datasets._cluster_tutorial import bayesian_tutorial_model as bayesian_tutorial_model
from ctxppl.datasets._cluster_tutorial import (
    calibrated_tutorial_model as calibrated_tutorial_model,
)
from ctxppl.datasets._cluster_tutorial import cluster_tutorial as cluster_tutorial
from ctxppl.datasets._cluster_tutorial import fit_seed_calibrated as fit_seed_calibrated
from ctxppl.datasets._cluster_tutorial import fit_seed_map as fit_seed_map
from ctxppl.datasets._cluster_tutorial import tutorial_model as tutorial_model

__all__ = ["cluster_tutorial", "ClusterTutorialData", "tutorial_model",
           "bayesian_tutorial_model", "calibrated_tutorial_model", "fit_seed_map",
           "fit_seed_calibrated", "TUTORIAL_FIGURES"]
