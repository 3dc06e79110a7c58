r"""Update rules for per-entity random effects: pure, jitted, vmapped over entities.

Every rule is one sequential Laplace step. For an entity with previous posterior mean
:math:`m` and precision :math:`P`, base prior :math:`\mathcal N(m_0, \mathrm{diag}(p_0)^{-1})`
and forgetting factor :math:`\delta \in [0, 1]`, a minibatch :math:`(X, y, o, w)` gives

.. math::

    \theta^\star = \arg\min_\theta \; \sum_r w_r\, \ell(y_r, x_r^\top\theta + o_r)
        + \tfrac{\delta}{2} (\theta - m)^\top P (\theta - m)
        + \tfrac{1-\delta}{2} (\theta - m_0)^\top \mathrm{diag}(p_0) (\theta - m_0),

    P^\star = X^\top \mathrm{diag}(w\, v(\theta^\star)) X + \delta P
        + (1-\delta)\,\mathrm{diag}(p_0),

with :math:`\ell` the negative log likelihood of the family and :math:`v` its second
derivative in the linear predictor. :math:`\delta = 1` is exact sequential Bayesian updating
(the full precision carries over), :math:`\delta = 0` forgets everything but the base prior
(an L2-penalised fit of the minibatch alone, as Lambda Learner's ``TrainerLogisticLossWithL2``
and ``TrainerSquareLossWithL2``). With :math:`m_0 = 0, p_0 = \lambda` this is exactly Lambda
Learner's ``TrainerSequentialBayesianLogisticLossWithL2`` objective and Hessian.

The minimiser is found by damped Newton iterations inside ``lax.while_loop`` (a Gaussian
likelihood needs one step). Entities that have converged are frozen, so an entity's result
does not depend on which other entities share its batch.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float

from ctxppl.online._rules import Rule

__all__ = ["UpdateOutput", "update_entities", "entity_update", "padded_size", "STATUS"]

STATUS = {0: "converged", 1: "did not converge", 2: "non-finite objective or Hessian"}
_UNROLL_MAX = 16  # Cholesky unrolled into vectorised scalar ops up to this many features


# ----------------------------------------------------------------------------- families
def _nll(family: str, y: jax.Array, eta: jax.Array, dispersion: float) -> jax.Array:
    if family == "bernoulli":
        return jax.nn.softplus(eta) - y * eta
    if family == "poisson":
        return jnp.exp(eta) - y * eta
    return 0.5 * (y - eta) ** 2 / dispersion


def _score_var(family: str, y: jax.Array, eta: jax.Array,
               dispersion: float) -> tuple[jax.Array, jax.Array]:
    """d nll / d eta and d^2 nll / d eta^2."""
    if family == "bernoulli":
        p = jax.nn.sigmoid(eta)
        return p - y, p * (1 - p)
    if family == "poisson":
        mu = jnp.exp(eta)
        return mu - y, mu
    return (eta - y) / dispersion, jnp.full_like(eta, 1.0 / dispersion)


# ----------------------------------------------------------------------------- linear algebra
def _solve_spd(h: jax.Array, b: jax.Array) -> jax.Array:
    """Solve ``h x = b`` for one symmetric positive definite ``(d, d)`` matrix.

    For small ``d``: the unrolled Cholesky factorisation and both triangular solves on
    scalars, never assembling the factor (fewer, larger fused loops under vmap).
    """
    d = h.shape[-1]
    if d > _UNROLL_MAX:
        return jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(h), True), b)
    low: list[list[jax.Array]] = [[None] * d for _ in range(d)]  # type: ignore[list-item]
    for j in range(d):
        s = h[j, j]
        for k in range(j):
            s = s - low[j][k] * low[j][k]
        low[j][j] = jnp.sqrt(s)
        for i in range(j + 1, d):
            s = h[i, j]
            for k in range(j):
                s = s - low[i][k] * low[j][k]
            low[i][j] = s / low[j][j]
    z: list[jax.Array] = []
    for i in range(d):
        s = b[i]
        for k in range(i):
            s = s - low[i][k] * z[k]
        z.append(s / low[i][i])
    x: list[jax.Array] = [None] * d  # type: ignore[list-item]
    for i in reversed(range(d)):
        s = z[i]
        for k in range(i + 1, d):
            s = s - low[k][i] * x[k]
        x[i] = s / low[i][i]
    return jnp.stack(x)


# ----------------------------------------------------------------------------- the update
class UpdateOutput(NamedTuple):
    """Result of :func:`update_entities` (leading axis: entities).

    Attributes:
        mean: New posterior means ``(U, d)``.
        precision: New precisions ``(U, d, d)`` (full) or ``(U, d)`` (diag).
        status: ``0`` converged, ``1`` hit ``max_iter``, ``2`` non-finite (see ``STATUS``).
        num_iter: Newton iterations used.
        step: Size of the last Newton step (max-abs).

    Examples:
        >>> from ctxppl.online._updates import STATUS, UpdateOutput
        >>> UpdateOutput._fields
        ('mean', 'precision', 'status', 'num_iter', 'step')
        >>> STATUS[1]
        'did not converge'
    """

    mean: jax.Array
    precision: jax.Array
    status: jax.Array
    num_iter: jax.Array
    step: jax.Array


_CHUNK = 256  # entities per jitted call (amortises per-call and per-iteration overheads)
_SMALL = 1e-2  # Newton steps below this (relative) are taken without a decrease test


def _hessian_data(xt: jax.Array, wv: jax.Array) -> jax.Array:
    # X' diag(wv) X from the transposed features (d, n) as a broadcast-multiply-reduce over
    # the contiguous record axis: XLA fuses it into one loop, which on CPU is several times
    # faster than the equivalent batched dot_general for d ~ 10.
    return jnp.sum((xt * wv[None, :])[:, None, :] * xt[None, :, :], axis=-1)


class _K(NamedTuple):
    """A rule inside jit: family/covariance static, numbers traced (no recompiles when the
    prior precision, forgetting factor, dispersion, tolerance or iteration limit change)."""

    family: str
    covariance: str
    p0: jax.Array
    delta: jax.Array
    dispersion: jax.Array
    tol: jax.Array
    max_iter: jax.Array


def _numbers(r: Rule, d: int, dtype: np.dtype) -> tuple[np.ndarray, ...]:
    tol = r.tol if r.tol is not None else float(np.sqrt(np.finfo(dtype).eps))
    return (r.prior_vector(d, dtype), np.asarray(r.delta, dtype),
            np.asarray(r.dispersion, dtype), np.asarray(tol, dtype),
            np.asarray(r.max_iter, np.int32))


class _Data(NamedTuple):
    """One entity's quadratic prior (q, b) and records (features transposed, (d, n))."""

    q: jax.Array
    b: jax.Array
    xt: jax.Array
    y: jax.Array
    offset: jax.Array
    weight: jax.Array


def _setup(r: _K, mean: jax.Array, precision: jax.Array, prior_mean: jax.Array,
           x: jax.Array, y: jax.Array, offset: jax.Array, weight: jax.Array) -> _Data:
    p0, delta = r.p0, r.delta
    if r.covariance == "full":
        q = delta * precision + (1 - delta) * jnp.diag(p0)
        b = delta * (precision @ mean) + (1 - delta) * p0 * prior_mean
    else:
        q = jnp.diag(delta * precision + (1 - delta) * p0)
        b = delta * precision * mean + (1 - delta) * p0 * prior_mean
    return _Data(q, b, x.T, y, offset, weight)


def _quad(dat: _Data, th: jax.Array) -> jax.Array:
    return 0.5 * th @ (dat.q @ th) - dat.b @ th


def _data_nll(r: _K, dat: _Data, eta: jax.Array) -> jax.Array:
    return jnp.sum(dat.weight * _nll(r.family, dat.y, eta, r.dispersion))


def _grad(r: _K, dat: _Data, th: jax.Array, eta: jax.Array) -> jax.Array:
    s, _ = _score_var(r.family, dat.y, eta, r.dispersion)
    return dat.xt @ (dat.weight * s) + dat.q @ th - dat.b


def _hess(r: _K, dat: _Data, eta: jax.Array) -> jax.Array:
    _, v = _score_var(r.family, dat.y, eta, r.dispersion)
    return _hessian_data(dat.xt, dat.weight * v) + dat.q


_HALVINGS = 30  # at most this many halvings of a Newton step (rarely more than none)


def _solve_chunk(static: tuple[str, str], numbers: tuple, defer: jax.Array,
                 mean: jax.Array, precision: jax.Array, prior_mean: jax.Array, x: jax.Array,
                 y: jax.Array, offset: jax.Array, weight: jax.Array, start: jax.Array,
                 last_step: jax.Array) -> UpdateOutput:
    """Damped Newton iterations for a chunk of entities (leading axis), loop control per
    chunk: the loop runs until every entity of the chunk has converged; converged entities
    are frozen, so each entity's path depends only on its own data. The linear predictor and
    the gradient are carried (an iteration makes three passes over the features: Hessian,
    the step's change of the predictor, gradient at the new point). The full Newton step is
    taken when the objective still decreases at its end, or when it is small; only
    otherwise (a ``lax.cond`` on the chunk) is a backtracking search run.

    The chunk stops once at most ``defer`` of its entities are still running (a traced
    count: 0 runs to the end); those come back with status 3, their iterate and last step
    size, and :func:`update_entities` resumes them (``start``, ``last_step``) in packed
    chunks, so a few slow entities do not hold a whole chunk's iterations.
    """
    dtype = x.dtype
    r = _K(*static, *numbers)
    full = r.covariance == "full"
    dat = jax.vmap(lambda *a: _setup(r, *a))(mean, precision, prior_mean, x, y, offset, weight)
    vgrad = jax.vmap(lambda d_, t, e: _grad(r, d_, t, e))
    vhess = jax.vmap(lambda d_, e: _hess(r, d_, e))
    vsolve = jax.vmap(_solve_spd)
    vmatvec = jax.vmap(lambda d_, t: t @ d_.xt)
    vvalue = jax.vmap(lambda d_, e, t: _data_nll(r, d_, e) + _quad(d_, t))
    tol = r.tol
    u = x.shape[0]

    def finish(th: jax.Array, status: jax.Array, iters: jax.Array,
               size: jax.Array) -> UpdateOutput:
        h = vhess(dat, vmatvec(dat, th) + offset)
        ok = jnp.all(jnp.isfinite(th), -1) & jnp.all(jnp.isfinite(h), (-2, -1))
        status = jnp.where(ok, status, 2).astype(jnp.int32)
        prec = h if full else jnp.diagonal(h, axis1=-2, axis2=-1)
        return UpdateOutput(th, prec, status, iters.astype(jnp.int32), size)

    eta0 = vmatvec(dat, start) + offset
    if r.family == "gaussian":  # quadratic objective: one Newton step is exact
        step = vsolve(vhess(dat, eta0), vgrad(dat, start, eta0))
        return finish(start - step, jnp.zeros((u,), jnp.int32), jnp.ones((u,), jnp.int32),
                      jnp.max(jnp.abs(step), -1))

    def cond(c: tuple) -> jax.Array:
        it, status = c[0], c[5]
        return (jnp.sum(status < 0) > defer) & (it < r.max_iter)

    def body(c: tuple) -> tuple:
        it, th, eta, g, size, status, iters = c
        running = status < 0
        step = vsolve(vhess(dat, eta), g)
        xs = vmatvec(dat, step)
        th1, eta1 = th - step, eta - xs
        g1 = vgrad(dat, th1, eta1)
        # the objective is convex along the step, so phi'(1) = -g1 . step <= 0 means it
        # decreased all the way; small steps are taken as they are (rounding can make them
        # look uphill); anything else (a lax.cond on the chunk) gets a backtracking search
        small = jnp.max(jnp.abs(step), -1) <= _SMALL * (1 + jnp.max(jnp.abs(th), -1))
        finite1 = jnp.all(jnp.isfinite(g1), -1)
        ok = (finite1 & ((jnp.sum(g1 * step, -1) >= 0) | small)) | ~running

        def backtrack() -> tuple:
            # accept t = 1 where the objective did not increase; halve t only where it did
            f0 = vvalue(dat, eta, th)
            slack = 16 * jnp.finfo(dtype).eps * (jnp.abs(f0) + 1)
            acc0 = ok | (vvalue(dat, eta1, th1) <= f0 + slack)

            def more(c: tuple) -> jax.Array:
                return ~jnp.all(c[1]) & (c[2] < _HALVINGS)

            def halve(c: tuple) -> tuple:
                t, acc, k = c
                t = jnp.where(acc, t, 0.5 * t)
                fv = vvalue(dat, eta - t[:, None] * xs, th - t[:, None] * step)
                return t, acc | (fv <= f0 + slack), k + 1

            t, acc, _ = lax.while_loop(more, halve, (jnp.ones_like(size), acc0,
                                                     jnp.zeros((), jnp.int32)))
            th_t, eta_t = th - t[:, None] * step, eta - t[:, None] * xs
            g_t = lax.cond(jnp.all(t == 1), lambda: g1, lambda: jnp.where(
                (t == 1)[:, None], g1, vgrad(dat, th_t, eta_t)))
            return t, th_t, eta_t, g_t, acc

        t, th1, eta1, g1, finite = lax.cond(
            jnp.all(ok), lambda: (jnp.ones_like(size), th1, eta1, g1, jnp.ones_like(ok)),
            backtrack)
        new_size = jnp.max(jnp.abs(t[:, None] * step), -1)
        scale = 1 + jnp.max(jnp.abs(th1), -1)
        bad = ~(finite & jnp.isfinite(new_size) & jnp.all(jnp.isfinite(g1), -1))
        # converged: a step below tol (Newton's error after it is ~tol^2), or -- in the
        # quadratic regime -- a next step predicted (L s^2 with L = s / s_prev^2) below
        # 16 tol^2, i.e. at the rounding level of the float32 objective
        predicted_ok = jnp.isfinite(size) & (new_size <= _SMALL * scale) & \
            (new_size ** 3 <= 16 * tol ** 2 * scale * size ** 2)
        done = (new_size <= tol * scale) | predicted_ok
        keep = running & ~bad
        th = jnp.where(keep[:, None], th1, th)
        eta = jnp.where(keep[:, None], eta1, eta)
        g = jnp.where(keep[:, None], g1, g)
        size = jnp.where(running, new_size, size)
        status = jnp.where(running, jnp.where(bad, 2, jnp.where(done, 0, -1)), status)
        return it + 1, th, eta, g, size, status, iters + running

    init = (jnp.zeros((), jnp.int32), start, eta0, vgrad(dat, start, eta0), last_step,
            jnp.full((u,), -1, jnp.int32), jnp.zeros((u,), jnp.int32))
    it, th, _, _, size, status, iters = lax.while_loop(cond, body, init)
    deferred = (status < 0) & (it < r.max_iter)
    status = jnp.where(deferred, 3, jnp.where(status < 0, 1, status))
    return finish(th, status, iters, size)


def entity_update(r: Rule, mean: Float[Array, " d"], precision: Float[Array, "..."],
                  prior_mean: Float[Array, " d"], x: Float[Array, "n d"],
                  y: Float[Array, " n"], offset: Float[Array, " n"],
                  weight: Float[Array, " n"]) -> UpdateOutput:
    r"""One entity's update (unbatched form of :func:`update_entities`).

    Args:
        r: The :class:`Rule`.
        mean: Previous posterior mean ``(d,)``.
        precision: Previous precision, ``(d, d)`` for full or ``(d,)`` for diagonal rules.
        prior_mean: Base prior mean ``(d,)`` (e.g. from a context encoder).
        x: Features of the entity's records ``(n, d)`` (padding rows have weight 0).
        y: Labels ``(n,)``.
        offset: Fixed-effect scores ``(n,)``.
        weight: Record weights ``(n,)``.

    Returns:
        An :class:`UpdateOutput` for this entity (no leading axis).

    Examples:
        >>> import jax.numpy as jnp, ctxppl as ctx
        >>> r = ctx.online.ridge(1.0)
        >>> from ctxppl.online._updates import entity_update
        >>> out = entity_update(r, jnp.zeros(1), jnp.eye(1), jnp.zeros(1),
        ...                     jnp.ones((3, 1)), jnp.full(3, 2.0), jnp.zeros(3), jnp.ones(3))
        >>> float(out.mean[0])  # (1 + 3)^-1 * 6
        1.5
    """
    args = (mean, precision, prior_mean, x, y, offset, weight)
    out = update_entities(r, *(jnp.asarray(a)[None] for a in args))
    return UpdateOutput(*(a[0] for a in out))


_update_chunk = jax.jit(_solve_chunk, static_argnums=0)


def padded_size(n: int, quantum: int = 1) -> int:
    """Round ``n`` up to ``quantum * k`` with ``k`` in {1, 2, 3, 4, 6, 8, 12, 16, ...}.

    Few distinct sizes (so few compilations) and at most 1/3 padding.

    Examples:
        >>> from ctxppl.online._updates import padded_size
        >>> [padded_size(n) for n in (1, 5, 7, 13, 50)]
        [1, 6, 8, 16, 64]
    """
    k = max(1, -(-int(n) // quantum))
    p = 1
    while p < k:
        if p * 3 // 2 >= k and p >= 2:
            return quantum * (p * 3 // 2)
        p *= 2
    return quantum * p


def update_entities(r: Rule, mean: Float[Array, "U d"], precision: Float[Array, "U ..."],
                    prior_mean: Float[Array, "U d"], x: Float[Array, "U n d"],
                    y: Float[Array, "U n"], offset: Float[Array, "U n"],
                    weight: Float[Array, "U n"]) -> UpdateOutput:
    r"""Update many entities at once: the rule's Newton solve, vectorised over entities.

    Ragged minibatches are padded: entity ``u`` owns rows ``x[u, :n_u]`` and the padding
    rows carry ``weight == 0`` (:func:`ctxppl.online._batch.pad_records` builds such buckets).
    Entities are solved in chunks of 256 by one jitted function (compiled once per rule
    family and covariance, record count, feature count and dtype, whatever the number of
    entities or the rule's numbers); the chunks are dispatched asynchronously. A chunk stops
    iterating when at most 1/16 of its entities still run; those few are resumed together
    in a second pass (their Newton iterates are unchanged by the pause). The function is
    pure: the caller decides whether to keep the result (:class:`ctxppl.online.RandomEffects`
    checks ``status`` first).

    Args:
        r: The :class:`Rule` (static).
        mean: Previous means ``(U, d)``.
        precision: Previous precisions ``(U, d, d)`` (full) or ``(U, d)`` (diag).
        prior_mean: Base prior means ``(U, d)``.
        x: Padded features ``(U, n, d)``.
        y: Padded labels ``(U, n)``.
        offset: Padded fixed-effect scores ``(U, n)``.
        weight: Padded record weights ``(U, n)`` (0 on padding).

    Returns:
        An :class:`UpdateOutput` of NumPy arrays with a leading entity axis ``U``.

    Examples:
        >>> import jax.numpy as jnp, ctxppl as ctx
        >>> r = ctx.online.bayes_logistic(1.0)
        >>> U, n, d = 2, 4, 2
        >>> out = ctx.online.update_entities(
        ...     r, jnp.zeros((U, d)), jnp.tile(jnp.eye(d), (U, 1, 1)), jnp.zeros((U, d)),
        ...     jnp.ones((U, n, d)), jnp.array([[1., 1, 1, 0], [0, 0, 0, 1]]),
        ...     jnp.zeros((U, n)), jnp.ones((U, n)))
        >>> out.status.tolist(), (out.mean[:, 0] > 0).tolist()
        ([0, 0], [True, False])
    """
    x = np.asarray(x)
    if x.ndim != 3 or x.dtype.kind != "f":
        raise ValueError(f"`x` must be a float array of shape (entities, records, features); "
                         f"got {x.dtype} {x.shape}.")
    u, n, d = x.shape
    want = {"mean": (u, d), "prior_mean": (u, d), "y": (u, n), "offset": (u, n),
            "weight": (u, n),
            "precision": (u, d, d) if r.covariance == "full" else (u, d)}
    got = {"mean": mean, "prior_mean": prior_mean, "y": y, "offset": offset,
           "weight": weight, "precision": precision}
    got = {k: np.asarray(v, x.dtype) for k, v in got.items()}
    for k, shape in want.items():
        if tuple(got[k].shape) != shape:
            raise ValueError(f"`{k}` must have shape {shape} for x of shape {x.shape} and "
                             f"covariance={r.covariance!r}; got {tuple(got[k].shape)}.")
    if u == 0:
        raise ValueError("`x` holds no entities (leading axis of size 0).")
    args = [got["mean"], got["precision"], got["prior_mean"], x, got["y"], got["offset"],
            got["weight"]]
    # one compiled function per (rule, records, features, dtype): chunks are dispatched
    # asynchronously, then collected; only the last chunk is padded (with dummy entities:
    # no records, identity precision -> they converge at once)
    numbers = tuple(jax.device_put(a) for a in _numbers(r, d, x.dtype))
    start = args[0]
    last = np.full(u, np.inf, x.dtype)
    static = (r.family, r.covariance)
    out = _run_chunks(static, numbers, _CHUNK // 16, args + [start, last], d, r.covariance)
    slow = np.flatnonzero(out.status == 3)
    if slow.size:  # finish the stragglers, packed (same iterations as if never paused)
        before = out.num_iter[slow]
        rest = _run_chunks(static, numbers, 0,
                           [a[slow] for a in args] + [out.mean[slow], out.step[slow]], d,
                           r.covariance)
        for a, b in zip(out, rest, strict=True):
            a[slow] = b
        out.num_iter[slow] += before
    return out


def _run_chunks(static: tuple, numbers: tuple, defer: int, args: list, d: int,
                covariance: str) -> UpdateOutput:
    u, n = args[3].shape[:2]
    defer = jax.device_put(np.int32(defer))
    dtype = args[3].dtype
    outs = []
    for lo in range(0, u, _CHUNK):
        part = [a[lo:lo + _CHUNK] for a in args]
        pad = _CHUNK - part[0].shape[0]
        if pad:
            fill = [np.zeros((pad, d), dtype),
                    np.broadcast_to(np.eye(d, dtype=dtype) if covariance == "full"
                                    else np.ones(d, dtype), (pad,) + args[1].shape[1:]),
                    np.zeros((pad, d), dtype), np.zeros((pad, n, d), dtype),
                    np.zeros((pad, n), dtype), np.zeros((pad, n), dtype),
                    np.zeros((pad, n), dtype), np.zeros((pad, d), dtype),
                    np.full(pad, np.inf, dtype)]
            part = [np.concatenate([a, b]) for a, b in zip(part, fill, strict=True)]
        outs.append(_update_chunk(static, numbers, defer, *part))
    outs = jax.device_get(outs)
    return UpdateOutput(*(np.concatenate(parts)[:u] for parts in zip(*outs, strict=True)))
