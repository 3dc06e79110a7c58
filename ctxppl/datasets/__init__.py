"""Data sets used by the tutorials, tests and benchmarks (all generated or shipped offline)."""

from ctxppl.datasets._cluster_tutorial import ClusterTutorialData as ClusterTutorialData
from ctxppl.datasets._cluster_tutorial import cluster_tutorial as cluster_tutorial

__all__ = ["cluster_tutorial", "ClusterTutorialData"]
