r"""Scores for many-model workflows: MSE, held-out log-likelihood / ELPD, AUC, adjusted Rand,
BIC, and ArviZ PSIS-LOO / WAIC for posterior fits.

A scoring function takes one argument, an :class:`Evaluation` (one fit on one split), and
returns a float or a dict of floats (columns ``"{name}_{key}"``). The evaluation gives the fit,
the split's ``train`` / ``test`` rows, the data, and -- computed once for all splits of a config
in one jit-compiled, vmapped pass -- every observed site's values, predictive means and
pointwise log-likelihoods, and every per-member site of the model at the fitted parameters:

.. code-block:: python

    def coverage(ev):                      # a custom score
        y, mu = ev.observed()[ev.test], ev.mean()[ev.test]
        return float(np.mean(np.abs(y - mu) < 1.0))
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from ctxppl.infer._arviz import from_groups
from ctxppl.workflow._evaluation import Evaluation

__all__ = ["Scorer", "mse", "log_likelihood", "elpd", "auc", "adjusted_rand", "bic", "loo",
           "waic", "as_scorers"]


class Scorer:
    r"""A named scoring function ``ev -> float | dict[str, float]`` with optional checks.

    Args:
        name: Column name (prefix for dict-valued scores).
        fn: The function of an :class:`Evaluation`.
        needs_draws: Ask for pointwise log-likelihood draws (PSIS-LOO, WAIC).
        needs_posterior: Fails before any fit when the method gives point estimates only.
        check: Optional ``check(data, sites, method)`` raising on bad input before any fit.

    Examples:
        >>> import ctxppl as ctx
        >>> ctx.workflow.Scorer("n_test", lambda ev: len(ev.test)).name
        'n_test'
    """

    def __init__(self, name: str, fn: Callable[[Evaluation], Any], *, needs_draws: bool = False,
                 needs_posterior: bool = False,
                 check: Callable[[Any, Mapping[str, Any], str], None] | None = None):
        self.name, self.fn = str(name), fn
        self.needs_draws, self.needs_posterior = needs_draws, needs_posterior
        self._check = check

    def __call__(self, ev: Evaluation) -> Any:
        return self.fn(ev)

    def check(self, data: Any, sites: Mapping[str, Any], method: str) -> None:
        if self.needs_posterior and method not in ("svi", "laplace"):
            raise ValueError(f"scorer `{self.name}` needs posterior draws; use method='svi' or "
                             f"'laplace' (got method={method!r}).")
        if self._check is not None:
            self._check(data, sites, method)

    def __repr__(self) -> str:
        return f"Scorer({self.name!r})"


def _rows(ev: Evaluation, rows: str) -> np.ndarray:
    if rows == "test":
        return ev.test
    if rows == "train":
        return np.flatnonzero(ev.weights > 0)
    raise ValueError(f"`rows` must be 'test' or 'train'; got {rows!r}.")


def _check_rows(rows: str) -> None:
    if rows not in ("test", "train"):
        raise ValueError(f"`rows` must be 'test' or 'train'; got {rows!r}.")


def mse(site: str | None = None, *, rows: str = "test") -> Scorer:
    r"""Mean squared error of the predictive mean on the held-out (or training) rows.

    Args:
        site: Observed site (default: the model's only observed per-member site).
        rows: ``"test"`` (held-out rows) or ``"train"``.

    Returns:
        A :class:`Scorer` named ``"mse"``.

    Examples:
        >>> import ctxppl as ctx
        >>> ctx.workflow.mse()
        Scorer('mse')
    """
    _check_rows(rows)

    def fn(ev: Evaluation) -> float:
        r = _rows(ev, rows)
        if r.size == 0:
            return float("nan")
        err = ev.observed(site)[r] - ev.mean(site)[r]
        return float(np.mean(err.astype(np.float64) ** 2))

    return Scorer("mse", fn)


def log_likelihood(site: str | None = None, *, rows: str = "test",
                   reduce: str = "mean") -> Scorer:
    r"""Held-out log-likelihood per row (``reduce="mean"``) or summed (``"sum"``).

    For point fits this is :math:`\log p(y_i \mid \hat\theta)`; for posterior fits the log
    posterior-predictive density :math:`\log \frac1S\sum_s p(y_i \mid \theta_s)`.

    Args:
        site: Observed site (default: the only one).
        rows: ``"test"`` or ``"train"``.
        reduce: ``"mean"`` or ``"sum"`` over rows.

    Returns:
        A :class:`Scorer` named ``"log_lik"``.

    Examples:
        >>> import ctxppl as ctx
        >>> ctx.workflow.log_likelihood(reduce="sum").name
        'log_lik'
    """
    _check_rows(rows)
    if reduce not in ("mean", "sum"):
        raise ValueError(f"`reduce` must be 'mean' or 'sum'; got {reduce!r}.")

    def fn(ev: Evaluation) -> float:
        r = _rows(ev, rows)
        if r.size == 0:
            return float("nan")
        ll = ev.log_lik(site)[r].astype(np.float64)
        return float(np.mean(ll) if reduce == "mean" else np.sum(ll))

    return Scorer("log_lik", fn)


def elpd(site: str | None = None) -> Scorer:
    r"""Expected log predictive density of the held-out rows (sum over rows).

    :math:`\sum_{i \in \mathrm{test}} \log \frac1S \sum_s p(y_i \mid \theta_s)` -- the
    cross-validated ELPD when the splits are k folds. Point fits use the plug-in density.

    Args:
        site: Observed site (default: the only one).

    Returns:
        A :class:`Scorer` named ``"elpd"``.

    Examples:
        >>> import ctxppl as ctx
        >>> ctx.workflow.elpd().name
        'elpd'
    """
    inner = log_likelihood(site, rows="test", reduce="sum").fn
    return Scorer("elpd", inner)


def auc(site: str | None = None) -> Scorer:
    r"""Area under the ROC curve of a binary observed site on the held-out rows.

    The predictive mean (the success probability) ranks the rows (``sklearn.metrics``).

    Args:
        site: Observed binary site (default: the only one).

    Returns:
        A :class:`Scorer` named ``"auc"``.

    Examples:
        >>> import ctxppl as ctx
        >>> ctx.workflow.auc().name
        'auc'
    """
    from sklearn.metrics import roc_auc_score

    def fn(ev: Evaluation) -> float:
        y, p = ev.observed(site)[ev.test], ev.mean(site)[ev.test]
        if y.size == 0 or len(np.unique(y)) < 2:
            return float("nan")
        return float(roc_auc_score(np.ravel(y), np.ravel(p)))

    return Scorer("auc", fn)


def adjusted_rand(labels: str, site: str = "cluster", *, rows: str = "test") -> Scorer:
    r"""Adjusted Rand index between true labels in the data and the model's cluster assignment.

    Args:
        labels: Name of the data column / entry holding the true labels.
        site: Per-member site holding the model's assignments (e.g. a
            ``numpyro.deterministic("cluster", ...)`` inside the plate).
        rows: ``"test"`` (held-out rows) or ``"train"``.

    Returns:
        A :class:`Scorer` named ``"ari"``.

    Examples:
        >>> import ctxppl as ctx
        >>> ctx.workflow.adjusted_rand("species").name
        'ari'
    """
    from sklearn.metrics import adjusted_rand_score

    _check_rows(rows)

    def fn(ev: Evaluation) -> float:
        r = _rows(ev, rows)
        if r.size == 0:
            return float("nan")
        truth = np.asarray(ev.data[labels])[r]
        pred = np.asarray(ev.site(site))[r]
        return float(adjusted_rand_score(truth, np.ravel(pred)))

    def check(data: Any, sites: Mapping[str, Any], method: str) -> None:
        try:
            data[labels]
        except (KeyError, IndexError, TypeError):
            raise KeyError(f"`labels` {labels!r} of adjusted_rand is not in the data.") from None
        if site not in sites:
            raise KeyError(f"`site` {site!r} of adjusted_rand is not a site of the model; "
                           f"sites: {sorted(sites)}. Add e.g. numpyro.deterministic({site!r}, "
                           "jnp.argmax(log_responsibilities, -1)) inside the plate.")

    return Scorer("ari", fn, check=check)


def bic(site: str | None = None) -> Scorer:
    r"""Bayesian information criterion on the training rows (lower is better).

    .. math:: \mathrm{BIC} = -2 \sum_i w_i \log p(y_i \mid \hat\theta) + k \log \sum_i w_i

    with training weights :math:`w_i` and :math:`k` the number of free (unconstrained)
    dimensions of every latent and ``param`` site (per-member latent sites included). Meant
    for MAP fits, as in mclust; use :func:`ctxppl.workflow.insample` splits for the classic
    in-sample BIC.

    Args:
        site: Observed site (default: the only one).

    Returns:
        A :class:`Scorer` named ``"bic"``.

    Examples:
        >>> import ctxppl as ctx
        >>> ctx.workflow.bic().name
        'bic'
    """
    def fn(ev: Evaluation) -> float:
        w = ev.weights.astype(np.float64)
        ll = np.sum(w * ev.log_lik(site).astype(np.float64))
        return float(-2.0 * ll + ev.num_params * np.log(np.sum(w)))

    return Scorer("bic", fn)


def _train_log_lik(ev: Evaluation, site: str | None) -> np.ndarray:
    """Pointwise log-likelihood draws ``(S, n_train)`` (float64) of the training rows."""
    return ev.log_lik_draws(site)[:, np.flatnonzero(ev.weights > 0)].astype(np.float64)


def loo(site: str | None = None) -> Scorer:
    r"""PSIS-LOO (ArviZ ``az.loo``) on the training rows of a posterior fit.

    Returns ``loo_elpd``, ``loo_se``, ``loo_p`` and ``loo_pareto_k_max`` (above 0.7 the
    estimate is unreliable; SVI / Laplace draws are approximate posteriors, so check it).

    Args:
        site: Observed site (default: the only one).

    Returns:
        A :class:`Scorer` named ``"loo"`` (needs ``method="svi"`` or ``"laplace"``).

    Examples:
        >>> import ctxppl as ctx
        >>> ctx.workflow.loo().needs_draws
        True
    """
    def fn(ev: Evaluation) -> dict[str, float]:
        import arviz as az

        ll = _train_log_lik(ev, site)
        idata = from_groups({"posterior": {"_": np.zeros((1, ll.shape[0]))},
                             "log_likelihood": {"y": ll[None]}})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = az.loo(idata, var_name="y")
        # arviz 1.x names the fields elpd / p, arviz 0.x elpd_loo / p_loo
        new = hasattr(res, "elpd")
        elpd, p = (res.elpd, res.p) if new else (res["elpd_loo"], res["p_loo"])
        return {"elpd": float(elpd), "se": float(res["se"] if not new else res.se),
                "p": float(p), "pareto_k_max": float(np.max(np.asarray(res["pareto_k"])))}

    return Scorer("loo", fn, needs_draws=True, needs_posterior=True)


def waic(site: str | None = None) -> Scorer:
    r"""WAIC on the training rows of a posterior fit (elpd scale: higher is better).

    .. math:: \widehat{\mathrm{elpd}}_{\mathrm{waic}} = \sum_i \log \frac1S \sum_s
       p(y_i \mid \theta_s) - \sum_i \mathrm{Var}_s \log p(y_i \mid \theta_s)

    (Watanabe 2010; ArviZ 1.x dropped ``az.waic``, so it is computed here with the same
    formula ArviZ 0.x used.) Returns ``waic_elpd``, ``waic_se`` and ``waic_p``.

    Args:
        site: Observed site (default: the only one).

    Returns:
        A :class:`Scorer` named ``"waic"`` (needs ``method="svi"`` or ``"laplace"``).

    Examples:
        >>> import ctxppl as ctx
        >>> ctx.workflow.waic().needs_posterior
        True
    """
    def fn(ev: Evaluation) -> dict[str, float]:
        ll = _train_log_lik(ev, site)
        lppd_i = jax.scipy.special.logsumexp(ll, axis=0) - np.log(ll.shape[0])
        p_i = np.var(ll, axis=0, ddof=1)
        elpd_i = np.asarray(lppd_i) - p_i
        return {"elpd": float(np.sum(elpd_i)), "se": float(np.sqrt(ll.shape[1] * np.var(elpd_i))),
                "p": float(np.sum(p_i))}

    return Scorer("waic", fn, needs_draws=True, needs_posterior=True)


def _check_signature(name: str, fn: Any) -> None:
    if not callable(fn):
        raise TypeError(f"scoring function `{name}` must be callable; got {type(fn).__name__}.")
    target = fn.fn if isinstance(fn, Scorer) else fn
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return  # builtins without a signature: trust them
    try:
        sig.bind(None)
    except TypeError:
        raise TypeError(
            f"scoring function `{name}` must take exactly one argument, a "
            f"ctx.workflow.Evaluation (use ev.fit, ev.train, ev.test, ev.observed(), ev.mean(), "
            f"ev.log_lik(), ev.site(name)); its signature is {name}{sig}.") from None


def as_scorers(scoring: Any) -> dict[str, Any]:
    """Normalise ``scoring`` (None, callable, list, or dict name -> callable); check signatures."""
    if scoring is None:
        return {}
    if isinstance(scoring, Mapping):
        items = [(str(k), v) for k, v in scoring.items()]
    else:
        seq = [scoring] if callable(scoring) else list(scoring)
        items = []
        for s in seq:
            name = getattr(s, "name", None) if isinstance(s, Scorer) else getattr(
                s, "__name__", None)
            if not name or name == "<lambda>":
                raise TypeError("pass unnamed scoring functions (lambdas) as a dict "
                                "{'name': fn}; got a lambda in a list.")
            items.append((name, s))
    names = [n for n, _ in items]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"scoring names must be unique; {dup} appear more than once. Pass a "
                         "dict {'name': scorer} to rename.")
    reserved = {"split", "fit", "error", "seconds", "batch_seconds", "cached", "converged",
                "config_id"}
    for n, s in items:
        if n in reserved:
            raise ValueError(f"scoring name {n!r} clashes with a result column; rename it.")
        _check_signature(n, s)
    return dict(items)
