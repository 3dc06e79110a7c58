r"""One entity type's random effects, updated online: the object shell over the jitted core.

:class:`RandomEffects` keeps, for every entity (user, item, ad, ...), a Laplace posterior of
a small linear model on top of a fixed-effect offset, and updates it from minibatches with
an update :class:`~ctxppl.online.Rule`. The heavy lifting is one pure jitted function
(:func:`~ctxppl.online.update_entities`); this class checks the batch first, groups and pads
its records, and commits the new rows only when every entity's update succeeded.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import numpy as np
import pandas as pd

from ctxppl.online._batch import as_float, check_batch, factorize, pad_records
from ctxppl.online._checkpoint import Checkpoint
from ctxppl.online._features import IndexMap, UpdateError, records_to_arrays
from ctxppl.online._reading import Reading
from ctxppl.online._rules import Rule
from ctxppl.online._state import EntityIndex, EntityState, Proposal, UpdateReport, as_keys
from ctxppl.online._updates import _CHUNK, STATUS, update_entities

__all__ = ["RandomEffects"]



class RandomEffects(Reading, Checkpoint):
    r"""Per-entity random effects of one entity type, updated online.

    Entity ``e`` has coefficients :math:`\theta_e \in \mathbb R^d` with a Laplace posterior
    :math:`\mathcal N(m_e, P_e^{-1})`; a record ``(x, y, o)`` of entity ``e`` has linear
    predictor :math:`x^\top\theta_e + o`, where the offset ``o`` is the fixed-effect score.
    Each :meth:`update` applies the :class:`~ctxppl.online.Rule` to every entity in the
    minibatch at once (vectorised and jitted; no Python loop over entities).

    An update is all-or-nothing: a batch with NaN/inf values, labels outside the family's
    support, negative weights, or an entity whose Newton solve does not converge raises
    :class:`~ctxppl.online.UpdateError` naming the entity and the reason, and leaves the
    state untouched. Every update carries a ``step``; entities already at that step are
    skipped, so replaying a stream after restoring a checkpoint applies nothing twice.

    Args:
        rule: The update rule (:func:`~ctxppl.online.bayes_logistic`, ...).
        features: Number of features ``d``, or an :class:`~ctxppl.online.IndexMap` for
            name-term-value records (:meth:`update_records`, :meth:`table`).
        prior_mean: Base prior mean of an entity's coefficients: ``None`` (zeros), a
            ``(d,)`` array, or a callable mapping entity contexts ``(k, c)`` to ``(k, d)``
            (e.g. :func:`~ctxppl.online.from_fit` of a contextualized ``ctx.fit``), applied
            to an entity's first record when it is first seen.
        dtype: Floating dtype of the state and computations.
        threads: Threads that run slabs of entities concurrently (default: CPU count).
        slab: Entities per jitted call (bounds memory).

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> re = ctx.online.RandomEffects(ctx.online.ridge(1.0), 2)
        >>> X = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
        >>> rep = re.update(["a", "a", "b"], X, np.array([1.0, 3.0, -1.0]), step=0)
        >>> rep.num_entities, re.coefficients(["a", "b"]).round(3).tolist()
        (2, [[1.0, 1.0], [-0.5, 0.0]])
    """

    def __init__(self, rule: Rule, features: int | IndexMap, *, prior_mean: Any = None,
                 dtype: Any = np.float32, threads: int | None = None, slab: int = 16384):
        if not isinstance(rule, Rule):
            raise TypeError(f"`rule` must be a ctx.online.Rule (e.g. ctx.online.ridge()); "
                            f"got {type(rule).__name__}.")
        self.rule = rule
        if isinstance(features, IndexMap):
            self.features: IndexMap | None = features
            d = len(features)
        elif isinstance(features, int | np.integer) and features > 0:
            self.features, d = None, int(features)
        else:
            raise ValueError(f"`features` must be a positive int or an IndexMap; got "
                             f"{features!r}.")
        self.num_features = d
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ValueError(f"`dtype` must be a floating dtype; got {self.dtype}.")
        self._p0 = rule.prior_vector(d, self.dtype)
        self.prior_mean = self._check_prior(prior_mean)
        self.threads = int(threads) if threads else (os.cpu_count() or 1)
        if slab < _CHUNK:
            raise ValueError(f"`slab` must be at least {_CHUNK}; got {slab}.")
        self.slab = int(slab)
        self._state = EntityState.empty(d, rule.covariance, self.dtype)
        self._index = EntityIndex()
        self.step = -1

    def _check_prior(self, prior_mean: Any) -> Any:
        from ctxppl.infer import Fit

        if isinstance(prior_mean, Fit):
            raise TypeError("`prior_mean` is a ctx.Fit; say which site holds the "
                            "coefficients: prior_mean=ctx.online.from_fit(fit, site='w').")
        if prior_mean is None or callable(prior_mean):
            return prior_mean
        pm = np.asarray(prior_mean, dtype=self.dtype)
        if pm.shape != (self.num_features,):
            raise ValueError(f"`prior_mean` must be None, a callable or an array of shape "
                             f"({self.num_features},); got shape {pm.shape}.")
        return pm

    # ------------------------------------------------------------------ state access
    @property
    def state(self) -> EntityState:
        """The per-entity state (views of the stored arrays, one row per known entity).

        Examples:
            >>> import numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.ridge(1.0), 1)
            >>> _ = re.update(["a", "a", "b", "b"], np.ones((4, 1)), np.array([1.0, 3.0, 0, 0]))
            >>> re.state.count.tolist(), re.state.step.tolist()
            ([2, 2], [0, 0])
        """
        n = len(self._index)
        return EntityState(*(a[:n] for a in self._state))

    @property
    def keys(self) -> np.ndarray:
        """Entity keys, in state-row order.

        Examples:
            >>> import numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.ridge(1.0), 1)
            >>> _ = re.update(["a", "a", "b", "b"], np.ones((4, 1)), np.array([1.0, 3.0, 0, 0]))
            >>> re.keys.tolist()
            ['a', 'b']
        """
        return self._index.keys

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return (f"RandomEffects({self.rule.family}, {len(self)} entities, "
                f"{self.num_features} features, step={self.step})")

    def copy(self) -> RandomEffects:
        """A deep copy (the state arrays are copied).

        Examples:
            >>> import numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.ridge(1.0), 1)
            >>> _ = re.update(["a", "a", "b", "b"], np.ones((4, 1)), np.array([1.0, 3.0, 0, 0]))
            >>> twin = re.copy(); _ = twin.update(["a"], np.ones((1, 1)), np.ones(1))
            >>> int(re.state.count[0]), int(twin.state.count[0])
            (2, 3)
        """
        out = copy.copy(self)
        out._state = EntityState(*(a.copy() for a in self._state))
        return out

    def _prior_means(self, context: np.ndarray | None, k: int) -> np.ndarray:
        if self.prior_mean is None:
            return np.zeros((k, self.num_features), self.dtype)
        if not callable(self.prior_mean):
            return np.broadcast_to(self.prior_mean, (k, self.num_features)).copy()
        if context is None:
            raise ValueError("this table's `prior_mean` is a function of the entity context: "
                             "pass `context=` (one row per record) with the records of new "
                             "entities.")
        if k == 0:
            return np.zeros((0, self.num_features), self.dtype)
        pm = np.asarray(self.prior_mean(context), dtype=self.dtype)
        if pm.shape != (k, self.num_features):
            raise ValueError(f"`prior_mean` returned shape {pm.shape} for {k} contexts; "
                             f"expected ({k}, {self.num_features}).")
        if not np.all(np.isfinite(pm)):
            raise ValueError("`prior_mean` returned non-finite values.")
        return pm

    def _prior_precision(self, k: int) -> np.ndarray:
        if self.rule.covariance == "full":
            return np.broadcast_to(np.diag(self._p0), (k,) + (self.num_features,) * 2).copy()
        return np.broadcast_to(self._p0, (k, self.num_features)).copy()

    # ------------------------------------------------------------------ updates
    def propose(self, ids: Any, X: Any, y: Any, *, offset: Any = None, weight: Any = None,
                context: Any = None, step: int | None = None) -> Proposal:
        """Compute an update without applying it (:meth:`commit` applies it).

        Arguments as in :meth:`update`. Raises :class:`~ctxppl.online.UpdateError` (naming
        the entity) for bad data or a failed solve; the state is never touched here.

        Examples:
            >>> import numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.ridge(1.0), 1)
            >>> _ = re.update(["a", "a", "b", "b"], np.ones((4, 1)), np.array([1.0, 3.0, 0, 0]))
            >>> p = re.propose(["a"], np.ones((1, 1)), np.array([5.0]))
            >>> float(re.coefficients(["a"])[0, 0]), float(p.mean[0, 0])  # not yet applied
            (1.3333333730697632, 2.25)
            >>> _ = re.commit(p); float(re.coefficients(["a"])[0, 0])
            2.25
        """
        t0 = time.perf_counter()
        keys = as_keys(ids)
        n, d = keys.size, self.num_features
        if isinstance(X, pd.DataFrame):
            X = X.to_numpy()
        X = as_float(X, self.dtype, (n, d), "X")
        y = as_float(y, self.dtype, (n,), "y")
        offset = (np.zeros(n, self.dtype) if offset is None
                  else as_float(offset, self.dtype, (n,), "offset"))
        weight = (np.ones(n, self.dtype) if weight is None
                  else as_float(weight, self.dtype, (n,), "weight"))
        if context is not None:
            context = np.asarray(context)
            if context.ndim != 2 or context.shape[0] != n:
                raise ValueError(f"`context` must have shape ({n}, num_context_features); "
                                 f"got {context.shape}.")
        step = self.step + 1 if step is None else int(step)
        if step < 0:
            raise ValueError(f"`step` must be a non-negative int; got {step}.")
        self._index.check_kind(keys)
        check_batch(self.rule.family, keys, X, y, offset, weight)

        codes, uniq = factorize(keys)
        rows = self._index.rows(uniq)
        known = rows >= 0
        stale = np.zeros(uniq.size, bool)
        stale[known] = self._state.step[rows[known]] >= step
        skipped = uniq[stale].tolist()
        keep = ~stale
        if not keep.any():
            empty = np.zeros(0, np.int64)
            rep = UpdateReport(step, 0, 0, 0, skipped, 0, time.perf_counter() - t0)
            return Proposal(step, self._index, uniq[:0], empty,
                            np.zeros((0, d), self.dtype), self._prior_precision(0),
                            np.zeros((0, d), self.dtype), empty, rep)
        # compact to the entities that are updated (no copies when none is skipped)
        if keep.all():
            codes_k, rec = codes, slice(None)
            uniq_k, rows_k, known_k = uniq, rows.copy(), known
        else:
            new_code = np.cumsum(keep) - 1
            rec = keep[codes]
            codes_k = new_code[codes[rec]]
            uniq_k, rows_k, known_k = uniq[keep], rows[keep], known[keep]
        u = uniq_k.size
        new_keys = uniq_k[~known_k]
        index = self._index.extended(new_keys)
        rows_k[~known_k] = len(self._index) + np.arange(new_keys.size)
        # previous state rows; new entities start at the prior
        ctx_new = None
        if context is not None and new_keys.size:
            # codes count up in order of first appearance: a record is an entity's first
            # where the running maximum of the codes increases
            run = np.maximum.accumulate(codes_k)
            first = np.flatnonzero(np.r_[True, run[1:] > run[:-1]])
            ctx_new = context[rec][first[~known_k]]
        pm_new = self._prior_means(ctx_new, new_keys.size)
        mean0 = np.empty((u, d), self.dtype)
        prec0 = self._prior_precision(u)
        prior0 = np.empty((u, d), self.dtype)
        mean0[~known_k] = pm_new
        prior0[~known_k] = pm_new
        if known_k.any():
            old = self._state.take(rows_k[known_k])
            mean0[known_k], prec0[known_k], prior0[known_k] = old.mean, old.precision, \
                old.prior_mean
        out = self._solve(codes_k, u, X[rec], y[rec], offset[rec], weight[rec], mean0, prec0,
                          prior0)
        status, num_iter, size = out[2], out[3], out[4]
        if np.any(status != 0):
            self._raise_failed(uniq_k, status, num_iter, size)
        counts = np.bincount(codes_k, minlength=u)
        rep = UpdateReport(step, u, int(new_keys.size), int(counts.sum()), skipped,
                           int(num_iter.max()), time.perf_counter() - t0)
        return Proposal(step, index, uniq_k, rows_k, out[0], out[1], pm_new, counts, rep)

    def _solve(self, codes: np.ndarray, u: int, x: np.ndarray, y: np.ndarray,
               offset: np.ndarray, weight: np.ndarray, mean0: np.ndarray,
               prec0: np.ndarray, prior0: np.ndarray) -> tuple[np.ndarray, ...]:
        buckets = pad_records(codes, u, x, y, offset, weight)
        mean = np.empty_like(mean0)
        prec = np.empty_like(prec0)
        status = np.empty(u, np.int32)
        num_iter = np.empty(u, np.int32)
        size = np.empty(u, self.dtype)
        jobs = []
        for b in buckets:
            # about four jobs per thread (load balance), each at most `slab` entities
            per = max(_CHUNK, min(self.slab, _CHUNK * math.ceil(
                b.entities.size / (4 * self.threads * _CHUNK))))
            jobs += [(b, lo, min(lo + per, b.entities.size))
                     for lo in range(0, b.entities.size, per)]

        def run(job: tuple) -> None:
            b, lo, hi = job
            ent = b.entities[lo:hi]
            res = update_entities(self.rule, mean0[ent], prec0[ent], prior0[ent], b.x[lo:hi],
                                  b.y[lo:hi], b.offset[lo:hi], b.weight[lo:hi])
            res = jax.device_get(res)
            mean[ent], prec[ent], status[ent] = res.mean, res.precision, res.status
            num_iter[ent], size[ent] = res.num_iter, res.step

        # threads pay off only with several chunks of work for each of them
        workers = min(self.threads, len(jobs), max(1, u // (8 * _CHUNK)))
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(run, jobs))
        else:
            for job in jobs:
                run(job)
        return mean, prec, status, num_iter, size

    def _raise_failed(self, keys: np.ndarray, status: np.ndarray, num_iter: np.ndarray,
                      size: np.ndarray) -> None:
        bad = np.flatnonzero(status != 0)
        i = int(bad[0])
        code = int(status[i])
        if code == 1:
            why = (f"the Newton solve did not converge in {self.rule.max_iter} iterations "
                   f"(last step {float(size[i]):.3g}); raise `max_iter` or the prior precision")
        else:
            why = (f"{STATUS[code]} (overflow: extreme features, offsets or labels for the "
                   f"{self.rule.family} family?)")
        more = f" ({bad.size} entities failed)" if bad.size > 1 else ""
        raise UpdateError(f"entity {keys[i:i + 1].tolist()[0]!r}: {why}{more}. Nothing was "
                          "updated.",
                          keys[bad[:20]].tolist(), STATUS[code])

    def commit(self, proposal: Proposal) -> UpdateReport:
        """Apply a :class:`Proposal` from :meth:`propose` of this same state (see the example
        there).

        Examples:
            >>> import numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.ridge(1.0), 1)
            >>> _ = re.update(["a", "a", "b", "b"], np.ones((4, 1)), np.array([1.0, 3.0, 0, 0]))
            >>> re.commit(re.propose(["c"], np.ones((1, 1)), np.ones(1))).num_new
            1
        """
        if proposal.rows.size == 0:
            return proposal.report
        n_old, n_new = len(self._index), len(proposal.index)
        if n_new - n_old != proposal.prior_mean.shape[0]:
            raise ValueError("this proposal was computed from a different state.")
        st = self._state
        if n_new > st.mean.shape[0]:
            st = st.grow(max(n_new, 2 * st.mean.shape[0], 64))
        rows = proposal.rows
        st.mean[rows] = proposal.mean
        st.precision[rows] = proposal.precision
        st.prior_mean[n_old:n_new] = proposal.prior_mean
        st.count[rows] += proposal.count_add
        st.step[rows] = proposal.step
        self._state, self._index = st, proposal.index
        self.step = max(self.step, proposal.step)
        return proposal.report

    def update(self, ids: Any, X: Any, y: Any, *, offset: Any = None, weight: Any = None,
               context: Any = None, step: int | None = None) -> UpdateReport:
        r"""Absorb a minibatch of records (all-or-nothing).

        Args:
            ids: Entity key of each record ``(n,)`` (ints or strings).
            X: Features ``(n, d)``.
            y: Labels ``(n,)`` (0/1 for Bernoulli, counts for Poisson).
            offset: Fixed-effect scores ``(n,)`` (default 0).
            weight: Record weights ``(n,)`` (default 1).
            context: Entity context per record ``(n, c)``, needed when ``prior_mean`` is a
                function and the batch has new entities.
            step: Update step (default: one more than the last). Entities whose last update
                has a step ``>= step`` are skipped (reported in ``skipped``).

        Returns:
            An :class:`UpdateReport`.

        Raises:
            UpdateError: bad data or a failed solve (the message names the entity); nothing
                is updated.

        Examples:
            >>> import numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.bayes_logistic(1.0), 1)
            >>> re.update([7, 7, 7], np.ones((3, 1)), np.array([1, 1, 0]), step=5).step
            5
            >>> re.update([7], np.ones((1, 1)), np.array([1]), step=5).skipped  # a replay
            [7]
        """
        return self.commit(self.propose(ids, X, y, offset=offset, weight=weight,
                                        context=context, step=step))

    def update_records(self, records: Sequence[Any], *, entity: str = "entity",
                       label: str = "label", context: Any = None,
                       step: int | None = None) -> UpdateReport:
        """:meth:`update` from name-term-value records (see
        :func:`~ctxppl.online._features.records_to_arrays`); needs ``features=IndexMap``.

        Examples:
            >>> import ctxppl as ctx
            >>> recs = [{"entity": "u", "label": 1, "offset": 0.2,
            ...          "features": [("season", "winter", 1.0)]}]
            >>> re = ctx.online.RandomEffects(ctx.online.bayes_logistic(),
            ...                               ctx.online.IndexMap.from_records(recs))
            >>> re.update_records(recs).num_records
            1
        """
        if self.features is None:
            raise ValueError("update_records needs a table built with features=IndexMap.")
        arr = records_to_arrays(records, self.features, entity=entity, label=label,
                                dtype=self.dtype)
        return self.update(arr["ids"], arr["X"], arr["y"], offset=arr["offset"],
                           weight=arr["weight"], context=context, step=step)
