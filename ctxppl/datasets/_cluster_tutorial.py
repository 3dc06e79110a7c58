r"""The "Death to Cluster Models; Long Live Context Encoders" tutorial data, rebuilt exactly.

Context :math:`C \in [-1, 1]^2` on a 75 x 75 grid (reversed, as in the tutorial), doses
:math:`X \sim U[-1, 1]^2`, effects :math:`W_0 = C_0 + C_1^2,\ W_1 = C_0^2 + C_1` and response
:math:`Y = X_0 W_0 + X_1 W_1` (no noise). Training patients are the grid points within 0.1 of
five disk centres (221 of them); the other 5,404 are unobserved. Contexts are standardised
with the training mean and standard deviation, as in the tutorial.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ClusterTutorialData", "cluster_tutorial"]

_CENTERS = np.array([[0, 0], [0.5, 0.5], [0.5, -0.5], [-0.5, 0.5], [-0.5, -0.5]])
_PATIENTS = np.array([[0.6, -0.6], [-1.0, 0.0]])


def _effects(c: np.ndarray) -> np.ndarray:
    return np.stack([c[:, 0] + c[:, 1] ** 2, c[:, 0] ** 2 + c[:, 1]], axis=1)


@dataclass(frozen=True)
class ClusterTutorialData:
    """Train/test split of the tutorial data (``C`` standardised; ``*_raw`` on [-1, 1]).

    ``noise_*`` are the tutorial's two standardised N(0, 1) noise context features;
    ``patients_*`` are its two patients of interest, (0.6, -0.6) and (-1, 0).
    """

    C_train: np.ndarray
    X_train: np.ndarray
    Y_train: np.ndarray
    W_train: np.ndarray
    C_test: np.ndarray
    X_test: np.ndarray
    Y_test: np.ndarray
    W_test: np.ndarray
    C_train_raw: np.ndarray
    C_test_raw: np.ndarray
    noise_train: np.ndarray
    noise_test: np.ndarray
    patients_C: np.ndarray
    patients_W: np.ndarray
    C_mean: np.ndarray
    C_std: np.ndarray

    def as_npz_dict(self) -> dict[str, np.ndarray]:
        """Arrays by name (``Y`` as ``(n, 1)`` columns, as the reference package wants)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["Y_train"], d["Y_test"] = self.Y_train[:, None], self.Y_test[:, None]
        return d


def cluster_tutorial(seed: int = 0, n_grid: int = 75) -> ClusterTutorialData:
    """Rebuild the seed tutorial's data set.

    Args:
        seed: Seed of numpy's generator for the doses ``X`` and the noise features (the
            tutorial used numpy's global state; the grid, split and effects are fixed).
        n_grid: Grid points per axis (75 in the tutorial).

    Returns:
        A :class:`ClusterTutorialData`.

    Examples:
        >>> from ctxppl.datasets import cluster_tutorial
        >>> d = cluster_tutorial()
        >>> d.C_train.shape, d.C_test.shape
        ((221, 2), (5404, 2))
    """
    rng = np.random.default_rng(seed)
    z = np.linspace(-1, 1, n_grid)
    Z = np.stack(np.meshgrid(z, z, indexing="ij"), axis=-1).reshape(-1, 2)
    C = Z[::-1].copy()
    W = _effects(C)
    X = rng.uniform(-1, 1, size=W.shape)
    Y = (X * W).sum(axis=1)
    dist = np.linalg.norm(Z[:, None, :] - _CENTERS[None], axis=-1).min(axis=1)
    train = dist < 0.1
    test = ~train
    mean, std = C[train].mean(axis=0), C[train].std(axis=0)
    Cs = (C - mean) / std
    noise = rng.normal(0, 1, size=C.shape)
    n_mean, n_std = noise[train].mean(axis=0), noise[train].std(axis=0)
    noise = (noise - n_mean) / n_std
    return ClusterTutorialData(
        C_train=Cs[train], X_train=X[train], Y_train=Y[train], W_train=W[train],
        C_test=Cs[test], X_test=X[test], Y_test=Y[test], W_test=W[test],
        C_train_raw=C[train], C_test_raw=C[test],
        noise_train=noise[train], noise_test=noise[test],
        patients_C=(_PATIENTS - mean) / std, patients_W=_effects(_PATIENTS),
        C_mean=mean, C_std=std)
