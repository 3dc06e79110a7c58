"""Accuracy split by covariate groups (contextualized-ml's ``print_acc_by_covars``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["get_roc", "acc_by_covars", "print_acc_by_covars"]


def get_roc(Y_true: Any, Y_pred: Any) -> float:
    """Area under the ROC curve, or NaN when it is undefined (one class only).

    ``Y_pred`` holds scores or probabilities of the positive class; a 2-column probability
    matrix uses its second column.

    Examples:
        >>> from ctxppl.analysis import get_roc
        >>> get_roc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
        >>> get_roc([1, 1], [0.2, 0.3])
        nan
    """
    from sklearn.metrics import roc_auc_score

    yt, yp = np.squeeze(np.asarray(Y_true)), np.asarray(Y_pred, dtype=np.float64)
    if yp.ndim == 2 and yp.shape[1] == 2:
        yp = yp[:, 1]
    yp = np.squeeze(yp)
    if yt.size == 0 or len(np.unique(yt)) < 2:
        return float("nan")
    try:
        return float(roc_auc_score(yt, yp))
    except ValueError:
        return float("nan")


def acc_by_covars(Y_true: Any, Y_pred: Any, covar_df: pd.DataFrame, *,
                  metric: Callable[[Any, Any], float] | None = None, max_classes: int = 20,
                  covar_stds: Any = None, covar_means: Any = None, covar_encoders: Any = None,
                  train_idx: Any = None, test_idx: Any = None) -> pd.DataFrame:
    """A metric of the predictions in every group of every covariate with few distinct
    values.

    Args:
        Y_true: Outcomes ``(n,)``.
        Y_pred: Predictions ``(n,)`` (scores / probabilities for the default metric).
        covar_df: Covariates ``(n, k)`` (DataFrame); columns with more than ``max_classes``
            distinct values are skipped.
        metric: ``metric(y_true, y_pred) -> float``; default :func:`get_roc` (AUROC, as
            contextualized-ml); e.g. ``sklearn.metrics.mean_squared_error`` for regression.
        max_classes: Largest number of groups per covariate.
        covar_stds: Standard deviations (one per column) to undo a standardisation of the
            covariates.
        covar_means: Means (one per column) to undo a standardisation of the covariates.
        covar_encoders: Fitted ``LabelEncoder`` s (one per column) to show original labels.
        train_idx: Boolean mask of the training samples (with ``test_idx``: the metric on both
            splits).
        test_idx: Boolean mask of the test samples.

    Returns:
        DataFrame with ``covariate``, ``group``, ``n`` and ``score`` (or ``n_train``,
        ``train``, ``n_test``, ``test``).

    Examples:
        >>> import numpy as np, pandas as pd
        >>> from ctxppl.analysis import acc_by_covars
        >>> y = np.array([0, 1, 0, 1, 0, 1]); s = np.array([.2, .9, .1, .3, .6, .4])
        >>> acc_by_covars(y, s, pd.DataFrame({"sex": ["f", "f", "f", "m", "m", "m"]}))
          covariate group  n  score
        0       sex     f  3    1.0
        1       sex     m  3    0.0
    """
    metric = get_roc if metric is None else metric
    if not callable(metric):
        raise TypeError(f"`metric` must be a callable (y_true, y_pred) -> float; got "
                        f"{type(metric).__name__}.")
    if not isinstance(covar_df, pd.DataFrame):
        covar_df = pd.DataFrame(np.asarray(covar_df))
        if covar_df.ndim != 2:
            raise ValueError("`covar_df` must be 2-D (samples, covariates).")
    yt, yp = np.asarray(Y_true), np.asarray(Y_pred)
    yt = yt.reshape(len(yt), -1)[:, 0] if yt.ndim > 1 and yt.shape[1] == 1 else yt
    n = len(covar_df)
    if len(yt) != n or len(yp) != n:
        raise ValueError(f"`Y_true`, `Y_pred` and `covar_df` need one row per sample; got "
                         f"{len(yt)}, {len(yp)} and {n} rows.")
    split = train_idx is not None and test_idx is not None
    if split:
        train_idx, test_idx = np.asarray(train_idx, bool), np.asarray(test_idx, bool)
        if train_idx.shape != (n,) or test_idx.shape != (n,):
            raise ValueError(f"`train_idx` and `test_idx` must be boolean masks of length {n}.")
    rows = []
    for i, covar in enumerate(covar_df.columns):  # few covariates, not samples
        labels = covar_df.iloc[:, i].to_numpy().copy()
        if len(pd.unique(labels)) > max_classes:
            continue
        if covar_stds is not None:
            labels = labels * np.asarray(covar_stds)[i]
        if covar_means is not None:
            labels = labels + np.asarray(covar_means)[i]
        if covar_encoders is not None:
            try:
                labels = covar_encoders[i].inverse_transform(labels.astype(int))
            except (AttributeError, TypeError, ValueError):
                pass
        for label in sorted(pd.unique(labels), key=str):
            m = labels == label
            row: dict[str, Any] = {"covariate": str(covar), "group": label}
            if split:
                tr, te = m & train_idx, m & test_idx
                row.update(n_train=int(tr.sum()), train=_score(metric, yt[tr], yp[tr]),
                           n_test=int(te.sum()), test=_score(metric, yt[te], yp[te]))
            else:
                row.update(n=int(m.sum()), score=_score(metric, yt[m], yp[m]))
            rows.append(row)
    return pd.DataFrame(rows)


def _score(metric: Callable, yt: np.ndarray, yp: np.ndarray) -> float:
    if len(yt) == 0:
        return float("nan")
    return float(metric(yt, yp))


def print_acc_by_covars(Y_true: Any, Y_pred: Any, covar_df: pd.DataFrame, **kwargs: Any
                        ) -> pd.DataFrame:
    """Print :func:`acc_by_covars` in contextualized-ml's layout and return the table.

    Examples:
        >>> import numpy as np, pandas as pd
        >>> from ctxppl.analysis import print_acc_by_covars
        >>> t = print_acc_by_covars(np.array([0, 1, 0, 1]), np.array([.2, .9, .6, .4]),
        ...                         pd.DataFrame({"g": [0, 0, 1, 1]}))
        ... # doctest: +NORMALIZE_WHITESPACE
        ====================
        g
        ----------
        0:	 ROC: 1.00
        1:	 ROC: 0.00
        ====================
    """
    table = acc_by_covars(Y_true, Y_pred, covar_df, **kwargs)
    name = "ROC" if kwargs.get("metric") is None else "Score"
    for covar, grp in (table.groupby("covariate", sort=False) if len(table) else []):
        print("=" * 20)
        print(covar)
        print("-" * 10)
        for _, r in grp.iterrows():
            if "train" in r:
                print(f"{r['group']}:\t Train {name}: {r['train']:.2f}, Test {name}: "
                      f"{r['test']:.2f}")
            else:
                print(f"{r['group']}:\t {name}: {r['score']:.2f}")
        print("=" * 20)
    return table
