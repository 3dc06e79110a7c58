r"""Contextualized networks: correlation, Markov (Gaussian graphical) and Bayesian (DAG).

Each is a NumPyro model ``model(C, X)`` (correlation networks also ``model(C, X, Y)`` for the
network *between* two feature sets) in which every sample gets its own network from its
context through a :class:`~ctxppl.models.Metamodel`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from ctxppl import _primitives as prim
from ctxppl.models._common import elastic_net, penalize, sample_plate, take
from ctxppl.models._metamodels import Metamodel
from ctxppl.models._regression import _check_2d, _LinearFamily

__all__ = ["CorrelationNetwork", "MarkovNetwork", "BayesianNetwork", "notears", "dag_poly",
           "correlation_from_slopes", "is_dag", "project_to_dag", "dag_pred"]


def _need_features(X: jax.Array, what: str) -> None:
    if X.shape[1] < 2:
        raise ValueError(f"a {what} needs at least 2 features in `X`; got {X.shape[1]}.")


def correlation_from_slopes(beta: Any) -> Any:
    r"""Pearson correlations from the two simple-regression slopes of every pair.

    :math:`\rho_{jk} = \mathrm{sign}(\beta_{jk})\sqrt{|\beta_{jk}\beta_{kj}|}` when both slopes
    have the same sign, else 0 (contextualized-ml's rule). ``beta[..., k, j]`` is the slope of
    feature ``k`` on feature ``j``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from ctxppl.models import correlation_from_slopes
        >>> correlation_from_slopes(jnp.array([[1.0, 0.5], [2.0, 1.0]]))
        Array([[1., 1.],
               [1., 1.]], dtype=float32)
    """
    bt = jnp.swapaxes(beta, -1, -2)
    same = jnp.sign(beta) == jnp.sign(bt)
    return jnp.where(same, jnp.sign(beta) * jnp.sqrt(jnp.abs(beta * bt)), 0.0)


@dataclass(frozen=True)
class CorrelationNetwork(_LinearFamily):
    r"""Per-sample correlation networks from per-pair contextualized simple regressions.

    For every ordered pair :math:`(j, k)`, :math:`z_k \sim \mathcal{N}(\beta_{kj}(c)\,z_j +
    \mu_{kj}(c), \sigma^2)`; the sample's correlation is
    :func:`correlation_from_slopes` of its slopes. ``model(C, X)`` gives the network among
    the columns of ``X`` (site ``correlation`` ``(n, p, p)``); ``model(C, X, Y)`` the network
    *between* ``X`` and ``Y`` (``(n, p, q)``), fitting only the cross pairs. This is a
    composite (pairwise) likelihood: point estimates are consistent, posterior spread is
    too narrow by a factor up to :math:`\sqrt{p}`.

    Args:
        noise_scale: Fixed residual scale (``None``: learned, site ``sigma``).
        noise_floor: With a learned scale, ``noise_floor + sigma`` (see
            :class:`ctxppl.models.Regression`).
        Other arguments as :class:`ctxppl.models.Regression`.

    Examples:
        >>> import jax.numpy as jnp, numpyro, ctxppl as ctx
        >>> model = ctx.models.CorrelationNetwork()
        >>> tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(
        ...     jnp.ones((4, 1)), jnp.ones((4, 3)))
        >>> tr["correlation"]["value"].shape
        (4, 3, 3)
    """

    noise_scale: float | None = 1.0
    x_dim: int | None = None
    noise_floor: float = 0.0

    def __call__(self, C: jax.Array, X: jax.Array, Y: jax.Array | None = None) -> None:
        _check_2d("C", C)
        n = C.shape[0]
        _check_2d("X", X, n)
        _check_2d("Y", Y, n)
        p = X.shape[1]
        if Y is None:
            _need_features(X, "correlation network")
            Z = X
            mask = 1.0 - jnp.eye(p)
        else:
            Z = jnp.concatenate([X, Y], axis=1)
            q = Y.shape[1]
            d = p + q
            block = jnp.zeros((d, d)).at[p:, :p].set(1.0)
            mask = block + block.T
        d = Z.shape[1]
        sigma = self.noise_scale
        if sigma is None:
            sigma = self.noise_floor + numpyro.sample("sigma", dist.HalfNormal(1.0))
        enc = self._param_encoder(C, d, d, True)
        with sample_plate(self.plate, C):
            beta, mu = self._params(enc, d, d, True)  # beta[b, k, j]: slope of z_k on z_j
            if self.alpha > 0:
                penalize("penalty", elastic_net(beta * mask, mu * mask, self.alpha,
                                                self.l1_ratio, self.mu_ratio, 2))
            beta = numpyro.deterministic("beta", beta)
            mu = numpyro.deterministic("mu", mu)
            rho = correlation_from_slopes(beta)
            if Y is None:
                rho = rho * mask + jnp.eye(d)
            else:
                rho = rho[:, :p, p:]
            numpyro.deterministic("correlation", rho)
            z = take(Z, 1)
            loc = beta * z[:, None, :] + mu  # (b, k, j)
            obs = jnp.broadcast_to(z[:, :, None], loc.shape)
            numpyro.sample("x", dist.Normal(loc, sigma).mask(mask > 0).to_event(2), obs=obs)


@dataclass(frozen=True)
class MarkovNetwork(_LinearFamily):
    r"""Per-sample Gaussian graphical models by (contextualized) neighbourhood selection.

    Each sample has a symmetric precision matrix :math:`\Theta(c)` (off-diagonal from the
    metamodel, diagonal :math:`e^{d_j(c)}`) and means :math:`\mu(c)`; the likelihood is
    Besag's pseudo-likelihood, one regression per feature:

    .. math::

        x_j \mid x_{-j} \sim \mathcal{N}\Big(\mu_j - \sum_{k \ne j}
        \frac{\Theta_{jk}}{\Theta_{jj}}(x_k - \mu_k),\ \Theta_{jj}^{-1}\Big)

    ``alpha`` (with ``l1_ratio=1``) puts an L1 penalty on the off-diagonal precision, giving
    sparse networks. Sites ``precision`` ``(n, p, p)``, ``mu`` ``(n, p)``.

    Examples:
        >>> import jax.numpy as jnp, numpyro, ctxppl as ctx
        >>> model = ctx.models.MarkovNetwork()
        >>> tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(
        ...     jnp.ones((4, 1)), jnp.ones((4, 3)))
        >>> tr["precision"]["value"].shape
        (4, 3, 3)
    """

    def __call__(self, C: jax.Array, X: jax.Array) -> None:
        _check_2d("C", C)
        _check_2d("X", X, C.shape[0])
        _need_features(X, "Markov network")
        p = X.shape[1]
        off_mask = 1.0 - jnp.eye(p)
        enc = self._encoder(C, (p, p + 2))
        with sample_plate(self.plate, C):
            theta = prim.contextual("theta", enc)
            raw = theta[..., :p]
            off = 0.5 * (raw + jnp.swapaxes(raw, -1, -2)) * off_mask
            log_diag = theta[..., p]
            mu = theta[..., p + 1] if self.fit_intercept else jnp.zeros_like(theta[..., p])
            if self.alpha > 0:
                penalize("penalty", elastic_net(off, None, self.alpha, self.l1_ratio, 0.0, 2))
            diag = jnp.exp(log_diag)
            numpyro.deterministic("precision", off + diag[..., None] * jnp.eye(p))
            mu = numpyro.deterministic("mu", mu)
            x = take(X, 1)
            xc = x - mu
            loc = mu - jnp.sum(off * xc[:, None, :], axis=-1) / diag
            numpyro.sample("x", dist.Normal(loc, jnp.exp(-0.5 * log_diag)).to_event(1), obs=x)


# ---------------------------------------------------------------------- DAGs
def _mm(A: jax.Array, B: jax.Array) -> jax.Array:
    """Batched products of small matrices as one fused multiply-sum (XLA's CPU ``dot`` is
    slower for thousands of 5x5 products)."""
    return jnp.sum(A[..., :, :, None] * B[..., None, :, :], axis=-2)


def notears(W: jax.Array, order: int | None = None) -> jax.Array:
    r"""NOTEARS acyclicity :math:`h(W) = \mathrm{tr}\,e^{W \circ W} - d`, batched over leading
    axes, with the exponential's series truncated at ``order`` (default ``max(d, 6)``):

    .. math:: h(W) = \sum_{k=1}^{K} \mathrm{tr}\big((W \circ W)^k\big) / k!

    Every cycle has length at most ``d``, so :math:`h = 0` exactly when ``W`` is a DAG, as
    for the full exponential; the terms left out weigh less than
    :math:`\|W\circ W\|^{K+1}/(K+1)!`. Traces of powers come from products of powers up to
    ``K/2`` (:math:`\mathrm{tr}(M^{a+b}) = \sum M^a \circ (M^b)^\top`), a few small products
    instead of ``expm``'s scaling and squaring, which is ~30x slower per step on CPU.

    Examples:
        >>> import jax.numpy as jnp
        >>> from ctxppl.models import notears
        >>> float(notears(jnp.array([[0.0, 1.0], [0.0, 0.0]])))
        0.0
        >>> round(float(notears(jnp.array([[0.0, 1.0], [1.0, 0.0]]))), 3)
        1.086
    """
    d = W.shape[-1]
    K = max(d, 6) if order is None else int(order)
    M = W * W
    powers = [None, M]
    for _ in range(2, (K + 1) // 2 + 1):
        powers.append(_mm(powers[-1], M))
    h = jnp.trace(M, axis1=-2, axis2=-1)
    fact = 1.0
    for k in range(2, K + 1):
        fact *= k
        a = (k + 1) // 2
        h = h + jnp.sum(powers[a] * jnp.swapaxes(powers[k - a], -1, -2), axis=(-2, -1)) / fact
    return h


def dag_poly(W: jax.Array) -> jax.Array:
    r"""Polynomial acyclicity :math:`h(W) = \mathrm{tr}\,(I + W\circ W / d)^d - d` (Yu et al.,
    DAG-GNN); 0 iff ``W`` is a DAG, cheaper than :func:`notears`. Batched.

    Examples:
        >>> import jax.numpy as jnp
        >>> from ctxppl.models import dag_poly
        >>> float(dag_poly(jnp.array([[0.0, 1.0], [0.0, 0.0]])))
        0.0
    """
    d = W.shape[-1]
    M = jnp.eye(d) + W * W / d
    P, R = None, M  # P = M^d by binary powering
    e = d
    while e:
        if e & 1:
            P = R if P is None else _mm(P, R)
        e >>= 1
        if e:
            R = _mm(R, R)
    return jnp.trace(P, axis1=-2, axis2=-1) - d


_DAG_LOSSES = {"notears": notears, "poly": dag_poly}


def dag_pred(X: Any, W: Any, mu: Any = None) -> Any:
    r"""Linear-SEM reconstruction :math:`\hat x_i = x_i W_i (+ \mu_i)` of every sample
    (``W[i, j, k]``: edge ``j -> k`` of sample ``i``).

    Examples:
        >>> import numpy as np
        >>> from ctxppl.models import dag_pred
        >>> dag_pred(np.ones((1, 2)), np.array([[[0.0, 2.0], [0.0, 0.0]]]))
        array([[0., 2.]])
    """
    out = np.einsum("ij,ijk->ik", np.asarray(X), np.asarray(W))
    return out if mu is None else out + np.asarray(mu)


@dataclass(frozen=True)
class BayesianNetwork(_LinearFamily):
    r"""Per-sample Bayesian networks: linear structural equation models with a DAG penalty
    (NOTMAD: archetype DAGs mixed by context).

    Each sample has a weighted adjacency :math:`W(c)` (``W[j, k]``: edge ``j -> k``, zero
    diagonal) and
    :math:`x \sim \mathcal{N}(x W(c) + \mu(c), \sigma^2 I)`, with per-sample penalty
    :math:`\alpha h(W) + \tfrac{\rho}{2} h(W)^2 + \lambda\|W\|_1` where :math:`h` is the
    NOTEARS (or polynomial) acyclicity function. With a ``subtype`` metamodel the archetypes
    are themselves adjacency matrices; ``archetype_alpha``/``archetype_rho``/``archetype_l1``
    penalise them the same way (NOTMAD). Use :func:`project_to_dag` to get exact DAGs.

    Args:
        dag_loss: ``"notears"`` (matrix exponential) or ``"poly"``.
        dag_alpha, dag_rho, l1: Per-sample penalty weights (contextualized-ml uses 0.1, 0.01,
            0; those leave 2-cycles on simple simulated SEMs, so the defaults here are 10,
            10, 0).
        archetype_alpha, archetype_rho, archetype_l1: Archetype penalty weights.
        noise_scale: Residual scale :math:`\sigma`.
        fit_intercept: Context-dependent means :math:`\mu(c)`.
        Other arguments as :class:`ctxppl.models.Regression`.

    Examples:
        >>> import jax.numpy as jnp, numpyro, ctxppl as ctx
        >>> model = ctx.models.BayesianNetwork()
        >>> tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(
        ...     jnp.ones((4, 1)), jnp.ones((4, 3)))
        >>> tr["W"]["value"].shape
        (4, 3, 3)
    """

    metamodel: Metamodel = field(default_factory=lambda: Metamodel("subtype",
                                                                   num_archetypes=16))
    dag_loss: str = "notears"
    dag_alpha: float = 10.0
    dag_rho: float = 10.0
    l1: float = 0.0
    archetype_alpha: float = 0.0
    archetype_rho: float = 0.0
    archetype_l1: float = 0.0
    noise_scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dag_loss not in _DAG_LOSSES:
            raise ValueError(f"`dag_loss` must be one of {sorted(_DAG_LOSSES)}; got "
                             f"{self.dag_loss!r}.")
        for name in ("dag_alpha", "dag_rho", "l1", "archetype_alpha", "archetype_rho",
                     "archetype_l1"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0; got {getattr(self, name)!r}.")

    def _penalty(self, W: jax.Array, alpha: float, rho: float, l1: float) -> jax.Array:
        h = _DAG_LOSSES[self.dag_loss](W)
        out = alpha * h + 0.5 * rho * h * h
        if l1:
            out = out + l1 * jnp.sum(jnp.abs(W), axis=(-2, -1))
        return out

    def __call__(self, C: jax.Array, X: jax.Array) -> None:
        _check_2d("C", C)
        _check_2d("X", X, C.shape[0])
        _need_features(X, "Bayesian network")
        p = X.shape[1]
        mask = 1.0 - jnp.eye(p)
        enc = self._encoder(C, (p, p + 1))
        with sample_plate(self.plate, C):
            theta = prim.contextual("theta", enc)
            W = theta[..., :p] * mask
            mu = theta[..., p] if self.fit_intercept else jnp.zeros_like(theta[..., p])
            W = numpyro.deterministic("W", W)
            mu = numpyro.deterministic("mu", mu)
            if self.dag_alpha or self.dag_rho or self.l1:
                penalize("penalty", self._penalty(W, self.dag_alpha, self.dag_rho, self.l1))
            x = take(X, 1)
            loc = jnp.sum(x[:, :, None] * W, axis=1) + mu
            numpyro.sample("x", dist.Normal(loc, self.noise_scale).to_event(1), obs=x)
        arch = getattr(getattr(enc, "head", None), "archetypes", None)
        if self.metamodel.kind == "subtype" and arch is not None and (
                self.archetype_alpha or self.archetype_rho or self.archetype_l1):
            A = jnp.reshape(arch, (-1, p, p + 1))[..., :p] * mask
            pen = jnp.sum(self._penalty(A, self.archetype_alpha, self.archetype_rho,
                                        self.archetype_l1))
            # The per-sample terms are summed over samples, so weigh the archetypes' penalty
            # by the number of samples to keep contextualized-ml's balance (mean loss + term).
            numpyro.factor("archetype_penalty", -C.shape[0] * pen)


# ---------------------------------------------------------------------- DAG utilities
def _acyclic(A: np.ndarray) -> np.ndarray:
    """Batched acyclicity of boolean adjacencies ``(n, d, d)``: a graph is a DAG iff its
    adjacency is nilpotent, i.e. ``A^(2^m) = 0`` for ``2^m >= d`` (m squarings)."""
    d = A.shape[-1]
    P = A.astype(np.float32)
    for _ in range(int(np.ceil(np.log2(max(d, 1))))):
        P = np.minimum(P @ P, 1.0)
    return ~P.any(axis=(-2, -1))


def is_dag(W: Any) -> Any:
    """Whether each weighted adjacency matrix (nonzero = edge, self-loops are cycles) is
    acyclic.

    Args:
        W: ``(d, d)`` or ``(..., d, d)`` array.

    Returns:
        A bool, or a bool array over the leading axes.

    Examples:
        >>> import numpy as np
        >>> from ctxppl.models import is_dag
        >>> is_dag(np.array([[0, 1], [0, 0]])), is_dag(np.array([[0, 1], [1, 0]]))
        (True, False)
    """
    W = np.asarray(W)
    if W.ndim < 2 or W.shape[-1] != W.shape[-2]:
        raise ValueError(f"`W` must be (..., d, d); got shape {W.shape}.")
    out = _acyclic((W != 0).reshape((-1,) + W.shape[-2:])).reshape(W.shape[:-2])
    return bool(out) if out.ndim == 0 else out


def project_to_dag(W: Any, return_threshold: bool = False) -> Any:
    r"""Project weighted adjacency matrices onto DAGs by thresholding.

    For each matrix: drop every edge with :math:`|w| \le t` for the smallest ``t`` (among its
    weights) that leaves an acyclic graph (binary search), then add the dropped edges back,
    strongest first, whenever they keep the graph acyclic. Already-acyclic matrices come back
    unchanged (``t = 0``). This is contextualized-ml's ``project_to_dag_torch`` rule,
    vectorised over all matrices at once.

    Args:
        W: ``(d, d)`` or ``(..., d, d)``.
        return_threshold: Also return the threshold(s) ``t``.

    Examples:
        >>> import numpy as np
        >>> from ctxppl.models import project_to_dag
        >>> project_to_dag(np.array([[0.0, 0.9], [0.2, 0.0]]))
        array([[0. , 0.9],
               [0. , 0. ]])
    """
    W = np.array(W, dtype=float)
    if W.ndim < 2 or W.shape[-1] != W.shape[-2]:
        raise ValueError(f"`W` must be (..., d, d); got shape {W.shape}.")
    d = W.shape[-1]
    w = W.reshape((-1, d, d))
    n = w.shape[0]
    a = np.abs(w)
    vals = np.sort(a.reshape(n, -1), axis=1)  # candidate thresholds, ascending
    lo = np.zeros(n, dtype=int)
    hi = np.full(n, d * d - 1)
    rows = np.arange(n)
    while np.any(lo < hi):  # smallest index whose threshold leaves a DAG (monotone)
        mid = (lo + hi) // 2
        ok = _acyclic(a > vals[rows, mid][:, None, None])
        hi = np.where(ok & (lo < hi), mid, hi)
        lo = np.where(~ok & (lo < hi), mid + 1, lo)
    already = _acyclic(a > 0)
    thresh = np.where(already, 0.0, vals[rows, lo])
    keep = a > thresh[:, None, None]
    # add back dropped edges, strongest first, when they keep the graph acyclic
    order = np.argsort(-a.reshape(n, -1), axis=1, kind="stable")
    for r in range(d * d):
        flat = order[:, r]
        j, k = np.divmod(flat, d)
        cand = (a[rows, j, k] > 0) & ~keep[rows, j, k]
        if not cand.any():
            continue
        trial = keep.copy()
        trial[rows, j, k] |= cand
        ok = cand & _acyclic(trial)
        keep[rows[ok], j[ok], k[ok]] = True
    out = np.where(keep, w, 0.0).reshape(W.shape)
    if return_threshold:
        thr = thresh.reshape(W.shape[:-2])
        return out, (float(thr) if thr.ndim == 0 else thr)
    return out
