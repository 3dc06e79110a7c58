r"""The "Death to Cluster Models; Long Live Context Encoders" tutorial data, rebuilt exactly.

Context :math:`C \in [-1, 1]^2` on a 75 x 75 grid (reversed, as in the tutorial), doses
:math:`X \sim U[-1, 1]^2`, effects :math:`W_0 = C_0 + C_1^2,\ W_1 = C_0^2 + C_1` and response
:math:`Y = X_0 W_0 + X_1 W_1` (no noise). Training patients are the grid points within 0.1 of
five disk centres (221 of them); the other 5,404 are unobserved. Contexts are standardised
with the training mean and standard deviation, as in the tutorial.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax

import ctxppl as ctx

__all__ = ["ClusterTutorialData", "cluster_tutorial", "tutorial_model",
           "bayesian_tutorial_model", "calibrated_tutorial_model", "fit_seed_map",
           "fit_seed_calibrated", "TUTORIAL_FIGURES"]

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


#: The tutorial's published (response MSE, effect MSE) on unobserved patients.
TUTORIAL_FIGURES = {"population": (0.306, 0.470), "cluster": (0.098, 0.148),
                    "contextualized": (0.032, 0.048)}


def tutorial_model(width: int = 25, depth: int = 2, activation: str = "swish"):  # noqa: ANN201
    r"""The tutorial's contextualized regression as a NumPyro program.

    .. math:: w_i = \mathrm{MLP}(c_i),\quad y_i \sim \mathcal{N}(x_i^\top w_i, \sigma^2)

    Examples:
        >>> import ctxppl as ctx
        >>> model = ctx.datasets.tutorial_model(width=4, depth=1)
        >>> callable(model)
        True
    """

    def model(C, X, Y=None):  # noqa: ANN001, ANN202
        enc = ctx.encoder("enc", ctx.nn.MLP(C.shape[-1], X.shape[-1], width=width, depth=depth,
                                            activation=activation))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        with ctx.plate("patients", C.shape[0], context=C):
            w = ctx.contextual("w", enc)
            x = numpyro.subsample(X, event_dim=1)
            y = None if Y is None else numpyro.subsample(Y, event_dim=0)
            numpyro.sample("y", dist.Normal(jnp.sum(x * w, -1), sigma), obs=y)

    return model


def bayesian_tutorial_model(width: int = 8, depth: int = 1, prior_scale: float = 1.0):  # noqa: ANN201
    """The same program with a Bayesian encoder: Normal(0, prior_scale) on every weight.

    Examples:
        >>> import ctxppl as ctx
        >>> model = ctx.datasets.bayesian_tutorial_model(width=4)
        >>> callable(model)
        True
    """

    def model(C, X, Y=None):  # noqa: ANN001, ANN202
        enc = ctx.encoder("enc", ctx.nn.MLP(C.shape[-1], X.shape[-1], width=width, depth=depth,
                                            activation="swish"),
                          prior=dist.Normal(0.0, prior_scale))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        with ctx.plate("patients", C.shape[0], context=C):
            w = ctx.contextual("w", enc)
            numpyro.sample("y", dist.Normal(jnp.sum(X * w, -1), sigma), obs=Y)

    return model


def calibrated_tutorial_model(domain: Any, num_basis: int = 6, noise: float = 0.01):  # noqa: ANN201
    r"""The same regression with a Gaussian-process encoder (the calibrated route).

    .. math:: w_{ik} = b_k + a_k^\top c_i + f_k(c_i),\quad f_k \sim \mathcal{GP}(0,
        \alpha_k^2 k_{\ell}),\quad y_i \sim \mathcal{N}(x_i^\top w_i, \text{noise}^2)

    :class:`ctxppl.nn.HSGP` (``num_basis`` per context feature, squared-exponential kernel)
    with its own priors; fit it with ``ctx.fit(..., method="marginal")`` (or
    :func:`fit_seed_calibrated`). The tutorial's responses carry no noise, so the noise scale
    is fixed (the observed responses' SD is 0.41): a latent one collapses towards 0, where
    the marginal likelihood keeps rising and its optimiser stalls (docs/uncertainty.md).

    Args:
        domain: The training contexts (``d.C_train``): the basis functions' box is built
            around them.
        num_basis: Basis functions per context feature.
        noise: The observation noise SD.

    Examples:
        >>> import ctxppl as ctx
        >>> d = ctx.datasets.cluster_tutorial()
        >>> model = ctx.datasets.calibrated_tutorial_model(d.C_train)
        >>> callable(model)
        True
    """
    if not (isinstance(noise, int | float) and np.isfinite(noise) and noise > 0):
        raise ValueError(f"`noise` must be a positive number; got {noise!r}.")
    domain = np.asarray(domain, dtype=float)
    if domain.ndim != 2:
        raise ValueError(f"`domain` must be the (n, c_dim) training contexts; got shape "
                         f"{domain.shape}.")
    ctx.nn.HSGP(domain.shape[1], 1, num_basis=num_basis, domain=domain)  # checks both now

    def model(C, X, Y=None):  # noqa: ANN001, ANN202
        gp = ctx.nn.HSGP(C.shape[-1], X.shape[-1], num_basis=num_basis, domain=domain)
        enc = ctx.encoder("enc", gp, prior=gp.prior)
        with ctx.plate("patients", C.shape[0], context=C):
            w = ctx.contextual("w", enc)
            numpyro.sample("y", dist.Normal(jnp.sum(X * w, -1), noise), obs=Y)

    return model


def fit_seed_calibrated(d: ClusterTutorialData, key: Any, model=None,  # noqa: ANN001
                        progress: bool = False, **options: Any) -> ctx.Fit:
    """The calibrated route on the tutorial data: :func:`calibrated_tutorial_model` fitted
    by ``ctx.fit(..., method="marginal")`` (basis weights integrated out, lengthscales and
    amplitudes by their marginal likelihood, Laplace over them).

    Examples:
        >>> import ctxppl as ctx
        >>> d = ctx.datasets.cluster_tutorial(seed=0)
        >>> small = ctx.datasets.calibrated_tutorial_model(d.C_train, num_basis=3)
        >>> fit = ctx.datasets.fit_seed_calibrated(d, key=0, model=small, num_steps=5,
        ...                                        hyper="map", num_samples=20)
        >>> fit.predict(d.C_test, d.X_test)["w"].shape
        (20, 5404, 2)
    """
    model = model or calibrated_tutorial_model(d.C_train)
    return ctx.fit(model, d.C_train, d.X_train, d.Y_train, method="marginal", key=key,
                   progress=progress, **options)


def fit_seed_map(d: ClusterTutorialData, key: Any, model=None, num_steps: int = 3000,  # noqa: ANN001
                 optimizer: Any = None, progress: bool = False) -> ctx.Fit:
    """The tuned MAP fit used by the demo and the benchmark (full batch, cosine-decayed Adam).

    Examples:
        >>> import ctxppl as ctx
        >>> d = ctx.datasets.cluster_tutorial(seed=0)
        >>> fit = ctx.datasets.fit_seed_map(d, key=0, num_steps=20)
        >>> fit.predict(d.C_test, d.X_test)["w"].shape
        (5404, 2)
    """
    model = model or _DEFAULT_MODEL
    optimizer = optimizer or _DEFAULT_OPTIMIZER
    return ctx.fit(model, d.C_train, d.X_train, d.Y_train, key=key, num_steps=num_steps,
                   optimizer=optimizer, tol=0.0, progress=progress)


_DEFAULT_MODEL = tutorial_model()
_DEFAULT_OPTIMIZER = optax.adam(optax.cosine_decay_schedule(1e-2, 3000, alpha=0.01))
