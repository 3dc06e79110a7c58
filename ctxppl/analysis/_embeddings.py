"""Low-dimensional embeddings of per-sample models (PCA or t-SNE from scikit-learn).

contextualized-ml's tutorials embed the per-sample parameters with UMAP; UMAP is not a
dependency of ctxppl, so :func:`embed_models` offers PCA (linear, deterministic) and t-SNE.
Any other reducer can be applied to :func:`model_matrix`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

from ctxppl.analysis._source import check_context, check_model

__all__ = ["model_matrix", "embed_models", "convert_to_one_hot"]

_METHODS = ("pca", "tsne")


def model_matrix(model: Any, C: Any = None) -> np.ndarray:
    """Every sample's model as one row: coefficients and intercepts flattened, ``(n, k)``.

    Args:
        model: A fitted ctxppl estimator / :class:`~ctxppl.analysis.FitParams` (then ``C``
            is required), or an array of per-sample parameters ``(n, ...)``.
        C: Contexts ``(n, n_contexts)`` at which to predict the models.

    Returns:
        ``(n, k)`` float array (means over bootstraps / draws).

    Examples:
        >>> import numpy as np
        >>> from ctxppl.analysis._embeddings import model_matrix
        >>> model_matrix(np.zeros((5, 2, 3))).shape
        (5, 6)
    """
    if hasattr(model, "predict_params"):
        check_model(model)
        Cc = check_context(model, C)
        out = model.predict_params(Cc)
        parts = out if isinstance(out, tuple) else (out,)
        n = Cc.shape[0]
        mats = [np.asarray(p, dtype=np.float64).reshape(n, -1) for p in parts if p is not None]
        return np.concatenate(mats, axis=1)
    arr = np.asarray(model, dtype=np.float64)
    if arr.ndim < 2:
        raise ValueError(f"per-sample parameters must be at least 2-D (samples, ...); got shape "
                         f"{arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError("per-sample parameters contain NaN/inf values.")
    return arr.reshape(arr.shape[0], -1)


def embed_models(model: Any, C: Any = None, *, method: str = "pca", n_components: int = 2,
                 standardize: bool = True, random_state: int | None = 0,
                 perplexity: float | None = None, max_iter: int | None = None) -> np.ndarray:
    """Embed the per-sample models in ``n_components`` dimensions, for plots coloured by
    covariates (:func:`ctxppl.plot.plot_embedding_for_all_covars`).

    Args:
        model: A fitted model with ``C``, or per-sample parameters ``(n, ...)``.
        C: Contexts ``(n, n_contexts)`` (with a model).
        method: ``"pca"`` or ``"tsne"``.
        n_components: Output dimensions.
        standardize: Scale every parameter to unit variance first (constant ones dropped).
        random_state: Seed of t-SNE (and of PCA's randomized solver).
        perplexity: t-SNE perplexity (default ``min(30, (n - 1) / 3)``).
        max_iter: t-SNE iterations (scikit-learn's default 1,000 when ``None``; at least 250).

    Returns:
        ``(n, n_components)`` embedding.

    Examples:
        >>> import numpy as np
        >>> from ctxppl.analysis import embed_models
        >>> params = np.random.default_rng(0).normal(size=(40, 3, 2))
        >>> embed_models(params).shape, embed_models(params, method="tsne", max_iter=250).shape
        ((40, 2), (40, 2))
    """
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS} (UMAP is not a ctxppl "
                         f"dependency; apply it to model_matrix(...)); got {method!r}.")
    M = model_matrix(model, C)
    n = M.shape[0]
    if not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise ValueError(f"`n_components` must be a positive int; got {n_components!r}.")
    if n <= n_components:
        raise ValueError(f"need more samples than `n_components` ({n_components}); got {n}.")
    if standardize:
        sd = M.std(axis=0)
        keep = sd > 1e-12 * np.maximum(1.0, np.abs(M.mean(axis=0)))
        M = (M[:, keep] - M[:, keep].mean(axis=0)) / sd[keep] if keep.any() else M[:, :1] * 0
    if method == "pca":
        from sklearn.decomposition import PCA

        k = min(n_components, M.shape[1])
        Z = PCA(n_components=k, random_state=random_state).fit_transform(M)
        if k < n_components:  # fewer parameters than dimensions asked for: pad with zeros
            Z = np.concatenate([Z, np.zeros((n, n_components - k))], axis=1)
        return Z
    from sklearn.manifold import TSNE

    perp = min(30.0, (n - 1) / 3) if perplexity is None else float(perplexity)
    if not 0 < perp < n:
        raise ValueError(f"`perplexity` must be in (0, {n}); got {perp}.")
    opts = {}
    if max_iter is not None:  # scikit-learn >= 1.5 calls it max_iter, older n_iter
        import inspect

        name = "max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter"
        opts[name] = int(max_iter)
    return TSNE(n_components=n_components, perplexity=perp, init="pca",
                random_state=random_state, **opts).fit_transform(M)


def convert_to_one_hot(col: Collection[Any]) -> tuple[np.ndarray, list[Any]]:
    """Integer codes of a categorical column and its sorted distinct values
    (contextualized-ml's helper of the same name; its values come in set order).

    Examples:
        >>> from ctxppl.analysis import convert_to_one_hot
        >>> convert_to_one_hot(["b", "a", "b"])
        (array([1., 0., 1.], dtype=float32), ['a', 'b'])
    """
    vals, codes = np.unique(np.asarray(list(col)), return_inverse=True)
    return codes.astype(np.float32), vals.tolist()
