"""Embeddings of per-sample models coloured by covariates."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ctxppl.analysis._embeddings import embed_models
from ctxppl.plot._base import as_2d_float, drop_unused, grid_shape, new_figure

__all__ = ["plot_lowdim_rep", "plot_embedding_for_all_covars", "embedding"]


def _draw(a: Any, fig: Any, low: np.ndarray, labels: np.ndarray, *, max_classes: int,
          min_samples: int, label: str | None, s: float, alpha: float) -> None:
    uniq = pd.unique(labels)
    discrete = len(uniq) < max_classes or not np.issubdtype(np.asarray(labels).dtype,
                                                             np.number)
    if discrete:
        vals, counts = np.unique(labels.astype(str), return_counts=True)
        kept = vals[counts > min_samples]
        if kept.size == 0:
            raise ValueError(f"no label has more than `min_samples`={min_samples} samples.")
        cmap = "tab10" if kept.size <= 10 else "tab20"
        from matplotlib import colormaps

        colors = colormaps[cmap]
        for i, v in enumerate(kept):  # one scatter per class (few), not per sample
            m = labels.astype(str) == v
            a.scatter(low[m, 0], low[m, 1], s=s, alpha=alpha, color=colors(i % colors.N),
                      label=v)
        a.legend(title=label, fontsize=7, title_fontsize=8, markerscale=1.5, loc="best")
    else:
        sc = a.scatter(low[:, 0], low[:, 1], c=labels.astype(np.float64), cmap="coolwarm", s=s,
                       alpha=alpha)
        fig.colorbar(sc, ax=a, label=label)
    a.set_xticks([])
    a.set_yticks([])


def plot_lowdim_rep(low_dim: Any, labels: Any, *, max_classes_for_discrete: int = 10,
                    min_samples: int = 0, cbar_label: str | None = None, title: str = "",
                    xlabel: str = "", ylabel: str = "", s: float = 12.0, alpha: float = 1.0,
                    ax: Any = None, **kwargs: Any) -> Any:
    """Scatter a 2-D embedding coloured by one covariate: a legend for discrete labels
    (fewer than ``max_classes_for_discrete`` values, or non-numeric), a colour bar otherwise.

    Args:
        low_dim: Embedding ``(n, >=2)`` (first two columns drawn).
        labels: Covariate ``(n,)``.
        max_classes_for_discrete: Numeric labels with fewer distinct values are discrete.
        min_samples: Hide classes with at most this many samples.
        cbar_label: Legend / colour-bar title.
        title: Axes title.
        xlabel: x-axis label.
        ylabel: y-axis label.
        s: Marker size.
        alpha: Marker opacity.
        ax: Existing Axes.
        **kwargs: Accepted for contextualized-ml compatibility (``figsize``, font sizes,
            ``figname``) and ignored; save with ``fig.savefig``.

    Returns:
        The matplotlib Figure.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> z = np.random.default_rng(0).normal(size=(30, 2))
        >>> len(ctx.plot.plot_lowdim_rep(z, np.arange(30) % 3).axes)
        1
        >>> len(ctx.plot.plot_lowdim_rep(z, np.linspace(0, 1, 30)).axes)  # with colour bar
        2
    """
    low = as_2d_float("low_dim", low_dim, allow_1d=False)
    if low.shape[1] < 2:
        raise ValueError(f"`low_dim` needs at least 2 columns; got {low.shape[1]}.")
    lab = np.asarray(labels.to_numpy() if hasattr(labels, "to_numpy") else labels)
    if lab.shape != (low.shape[0],):
        raise ValueError(f"`labels` must hold one value per sample ({low.shape[0]}); got shape "
                         f"{lab.shape}.")
    fig, axes = new_figure(ax=ax, panel=(4.4, 3.8))
    a = axes[0, 0]
    _draw(a, fig, low, lab, max_classes=max_classes_for_discrete, min_samples=min_samples,
          label=cbar_label, s=s, alpha=alpha)
    a.set_title(title)
    a.set_xlabel(xlabel)
    a.set_ylabel(ylabel)
    return fig


def plot_embedding_for_all_covars(reps: Any, covars_df: Any, covars_stds: Any = None,
                                  covars_means: Any = None, covars_encoders: Any = None, *,
                                  dithering_pct: float = 0.0, random_state: int = 0,
                                  max_classes_for_discrete: int = 10, ncols: int = 3,
                                  s: float = 10.0, alpha: float = 1.0, **kwargs: Any) -> Any:
    """One panel per covariate: the embedding ``reps`` coloured by it.

    Args:
        reps: Embedding ``(n, >=2)`` (e.g. :func:`ctxppl.analysis.embed_models`).
        covars_df: Covariates ``(n, k)`` (DataFrame; column names title the panels).
        covars_stds: Standard deviations (one per column) to undo a standardisation of the
            covariates.
        covars_means: Means (one per column) to undo a standardisation of the covariates.
        covars_encoders: Fitted ``LabelEncoder`` s (one per column) to show original labels.
        dithering_pct: Jitter both axes by this fraction of their SD (seeded by
            ``random_state``).
        random_state: Seed of the jitter.
        max_classes_for_discrete: As in :func:`plot_lowdim_rep`.
        ncols: Panels per row.
        s: Marker size.
        alpha: Marker opacity.
        **kwargs: Accepted for contextualized-ml compatibility and ignored.

    Returns:
        The matplotlib Figure.

    Examples:
        >>> import numpy as np, pandas as pd, ctxppl as ctx
        >>> z = np.random.default_rng(0).normal(size=(30, 2))
        >>> cov = pd.DataFrame({"sex": np.arange(30) % 2, "age": np.linspace(20, 80, 30)})
        >>> len(ctx.plot.plot_embedding_for_all_covars(z, cov).axes)  # 2 panels + 1 bar
        3
    """
    low = as_2d_float("reps", reps, allow_1d=False)
    if low.shape[1] < 2:
        raise ValueError(f"`reps` needs at least 2 columns; got {low.shape[1]}.")
    df = covars_df if isinstance(covars_df, pd.DataFrame) else pd.DataFrame(
        np.asarray(covars_df))
    if len(df) != low.shape[0]:
        raise ValueError(f"`covars_df` must have one row per sample ({low.shape[0]}); got "
                         f"{len(df)}.")
    if df.shape[1] == 0:
        raise ValueError("`covars_df` has no columns.")
    if dithering_pct > 0:
        rng = np.random.default_rng(random_state)
        low = low + rng.normal(size=low.shape) * dithering_pct * low.std(axis=0)
    nr, nc = grid_shape(df.shape[1], ncols)
    fig, axes = new_figure(nr, nc, panel=(4.2, 3.6))
    used = drop_unused(fig, axes, df.shape[1])
    for i, (a, col) in enumerate(zip(used, df.columns, strict=True)):  # one per covariate
        lab = df.iloc[:, i].to_numpy().copy()
        if covars_stds is not None:
            lab = lab * np.asarray(covars_stds).reshape(-1)[i]
        if covars_means is not None:
            lab = lab + np.asarray(covars_means).reshape(-1)[i]
        if covars_encoders is not None:
            lab = np.asarray(covars_encoders[i].inverse_transform(lab.astype(int)))
        _draw(a, fig, low, lab, max_classes=max_classes_for_discrete, min_samples=0,
              label=str(col), s=s, alpha=alpha)
        a.set_title(str(col), fontsize=9)
    return fig


def embedding(model: Any, C: Any, covars: Any, *, method: str = "pca",
              random_state: int = 0, **kwargs: Any) -> Any:
    """Embed a fitted model's per-sample models (:func:`ctxppl.analysis.embed_models`) and
    plot them coloured by every covariate (:func:`plot_embedding_for_all_covars`).

    Args:
        model: Fitted model (or per-sample parameters ``(n, ...)``).
        C: Contexts ``(n, n_contexts)`` (with a model).
        covars: Covariates ``(n, k)`` (often ``C`` itself, or a DataFrame of phenotypes).
        method: ``"pca"`` or ``"tsne"``.
        random_state: Seed of t-SNE.
        **kwargs: Passed to :func:`plot_embedding_for_all_covars`.

    Returns:
        The matplotlib Figure.

    Examples:
        >>> import numpy as np, pandas as pd, ctxppl as ctx
        >>> params = np.random.default_rng(0).normal(size=(30, 2, 2))
        >>> len(ctx.plot.embedding(params, None, pd.DataFrame({"g": np.arange(30) % 2})).axes)
        1
    """
    reps = embed_models(model, C, method=method, random_state=random_state)
    return plot_embedding_for_all_covars(reps, covars, random_state=random_state, **kwargs)
