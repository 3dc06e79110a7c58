"""Held-out metrics for online models: AUC, log loss, calibration (scikit-learn)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["evaluate"]

_BINARY = ("auc", "log_loss", "calibration")


def evaluate(y: Any, p: Any, *, metrics: Sequence[str] | None = None, family: str = "bernoulli",
             bins: int = 10) -> dict[str, Any]:
    r"""Metrics of predicted means ``p`` against held-out labels ``y``.

    Bernoulli (default metrics ``auc``, ``log_loss``, ``calibration``): ROC AUC
    (``sklearn.metrics.roc_auc_score``), log loss (``sklearn.metrics.log_loss``) and a
    reliability table (``sklearn.calibration.calibration_curve``, quantile bins) with the
    expected calibration error :math:`\sum_b \frac{n_b}{n} |\bar y_b - \bar p_b|`.
    Gaussian / Poisson: ``rmse``, ``mae`` and (Poisson) ``poisson_deviance``.

    Args:
        y: Labels ``(n,)``.
        p: Predicted means ``(n,)`` (probabilities for Bernoulli).
        metrics: Names to compute (default: all of the family's).
        family: ``"bernoulli"``, ``"gaussian"`` or ``"poisson"``.
        bins: Calibration bins.

    Returns:
        A dict; ``calibration`` maps to ``{"prob_true", "prob_pred", "count", "ece"}``.

    Examples:
        >>> import numpy as np
        >>> from ctxppl.online import evaluate
        >>> out = evaluate(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
        >>> out["auc"], round(out["log_loss"], 4)
        (0.75, 0.4723)
    """
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import (
        log_loss,
        mean_absolute_error,
        mean_poisson_deviance,
        mean_squared_error,
        roc_auc_score,
    )

    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if y.ndim != 1 or p.shape != y.shape:
        raise ValueError(f"`y` and `p` must be 1-d of equal length; got {y.shape} and {p.shape}.")
    if not np.all(np.isfinite(p)):
        raise ValueError("`p` holds non-finite predictions.")
    allowed = _BINARY if family == "bernoulli" else ("rmse", "mae", "poisson_deviance")
    metrics = tuple(metrics) if metrics is not None else (
        allowed if family != "gaussian" else ("rmse", "mae"))
    unknown = [m for m in metrics if m not in allowed]
    if unknown:
        raise ValueError(f"`metrics` {unknown} are not available for family {family!r}; "
                         f"choose from {allowed}.")
    out: dict[str, Any] = {}
    if family == "bernoulli":
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("`y` must hold 0/1 labels for the bernoulli family.")
        if "auc" in metrics:
            out["auc"] = float(roc_auc_score(y, p)) if 0 < y.mean() < 1 else float("nan")
        if "log_loss" in metrics:
            out["log_loss"] = float(log_loss(y, np.clip(p, 1e-12, 1 - 1e-12), labels=[0, 1]))
        if "calibration" in metrics:
            pt, pp = calibration_curve(y, p, n_bins=bins, strategy="quantile")
            # the bins calibration_curve uses (quantile strategy), to weight the bins
            edges = np.percentile(p, np.linspace(0, 1, bins + 1) * 100)
            total = np.bincount(np.searchsorted(edges[1:-1], p), minlength=len(edges))
            count = total[total != 0]
            ece = float(np.sum(count / count.sum() * np.abs(pt - pp)))
            out["calibration"] = {"prob_true": pt, "prob_pred": pp, "count": count, "ece": ece}
        return out
    if "rmse" in metrics:
        out["rmse"] = float(np.sqrt(mean_squared_error(y, p)))
    if "mae" in metrics:
        out["mae"] = float(mean_absolute_error(y, p))
    if "poisson_deviance" in metrics:
        out["poisson_deviance"] = float(mean_poisson_deviance(y, np.maximum(p, 1e-12)))
    return out
