"""Reading one entity type's random effects: lookups, scores, predictions, exploration.

:class:`Reading` is the read side of :class:`~ctxppl.online.RandomEffects` (a mixin over
its ``_state``, ``_index``, ``rule``, ``features`` and prior): nothing here changes the state.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ctxppl.online._batch import as_float, factorize
from ctxppl.online._explore import (
    predictive_mean,
    predictive_moments,
    sample_coefficients,
    ucb_from_moments,
)
from ctxppl.online._features import IndexMap
from ctxppl.online._state import Proposal, as_keys

__all__ = ["Reading"]


class Reading:
    """Read-only methods of :class:`~ctxppl.online.RandomEffects`."""

    def lookup(self, ids: Any, *, context: Any = None,
               proposal: Proposal | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Coefficient mean and precision for each key (unseen keys get the prior).

        Args:
            ids: Entity keys ``(k,)``.
            context: Contexts ``(k, c)`` for unseen keys when ``prior_mean`` is a function.
            proposal: Read through an uncommitted :class:`Proposal` (used by back-fitting).

        Returns:
            ``(mean (k, d), precision (k, d, d) or (k, d))``.

        Examples:
            >>> import numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.ridge(1.0), 1)
            >>> _ = re.update(["a", "a", "b", "b"], np.ones((4, 1)), np.array([1.0, 3.0, 0, 0]))
            >>> mean, prec = re.lookup(["b", "unseen"])
            >>> mean.tolist(), prec.tolist()  # prior for the unseen entity
            ([[0.0], [0.0]], [[[3.0]], [[1.0]]])
        """
        keys = as_keys(ids)
        k = keys.size
        rows = self._index.rows(keys)
        mean = np.empty((k, self.num_features), self.dtype)
        prec = self._prior_precision(k)
        known = rows >= 0
        mean[known] = self._state.mean[rows[known]]
        prec[known] = self._state.precision[rows[known]]
        if proposal is not None and proposal.rows.size:
            pos = pd.Index(proposal.keys).get_indexer(keys) if k else np.zeros(0, np.int64)
            hit = pos >= 0
            mean[hit], prec[hit] = proposal.mean[pos[hit]], proposal.precision[pos[hit]]
            known |= hit
        if not known.all():
            ctx = None if context is None else np.asarray(context)[~known]
            mean[~known] = self._prior_means(ctx, int((~known).sum()))
        return mean, prec

    def coefficients(self, ids: Any = None, *, context: Any = None) -> np.ndarray:
        """Posterior means ``(k, d)`` for ``ids`` (default: every known entity).

        Examples:
            >>> import numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.ridge(1.0), 1)
            >>> _ = re.update(["a", "a", "b", "b"], np.ones((4, 1)), np.array([1.0, 3.0, 0, 0]))
            >>> re.coefficients().astype(float).round(3).tolist()
            [[1.333], [0.0]]
        """
        if ids is None:
            return self.state.mean.copy()
        return self.lookup(ids, context=context)[0]

    def variances(self, ids: Any = None, *, context: Any = None) -> np.ndarray:
        """Posterior variances (diagonal of the covariance) ``(k, d)``.

        Examples:
            >>> import numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.ridge(1.0), 1)
            >>> _ = re.update(["a", "a", "b", "b"], np.ones((4, 1)), np.array([1.0, 3.0, 0, 0]))
            >>> re.variances(["a"]).astype(float).round(3).tolist()  # 1 / (1 + 2)
            [[0.333]]
        """
        if ids is None:
            prec = self.state.precision
        else:
            prec = self.lookup(ids, context=context)[1]
        if prec.ndim == 2:
            return 1.0 / prec
        return np.diagonal(np.linalg.inv(prec.astype(np.float64)), axis1=-2,
                           axis2=-1).astype(self.dtype)

    def _records(self, ids: Any, X: Any, offset: Any, context: Any,
                 proposal: Proposal | None = None) -> tuple[jax.Array, ...]:
        keys = as_keys(ids)
        n = keys.size
        X = as_float(X, self.dtype, (n, self.num_features), "X")
        offset = (np.zeros(n, self.dtype) if offset is None
                  else as_float(offset, self.dtype, (n,), "offset"))
        for name, arr in (("X", X), ("offset", offset)):  # as update does: no silent NaN out
            bad = ~np.isfinite(arr.reshape(n, -1)).all(axis=1)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"`{name}` has NaN/inf in {int(bad.sum())} record(s) (first: "
                                 f"record {i}, entity {keys[i:i + 1].tolist()[0]!r}); a "
                                 "prediction from it would be NaN. Drop or impute them.")
        codes, uniq = factorize(keys)
        ctx_u = None
        if context is not None:
            _, first = np.unique(codes, return_index=True)
            ctx_u = np.asarray(context)[first]
        mean, prec = self.lookup(uniq, context=ctx_u, proposal=proposal)
        return jnp.asarray(codes), jnp.asarray(mean), jnp.asarray(prec), jnp.asarray(X), \
            jnp.asarray(offset)

    def score(self, ids: Any, X: Any, offset: Any = None, *, context: Any = None,
              proposal: Proposal | None = None) -> np.ndarray:
        r"""Linear predictor :math:`x^\top m_e + o` per record (posterior mean coefficients).

        Examples:
            >>> import numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.ridge(), 1, prior_mean=[0.5])
            >>> re.score(["new"], np.ones((1, 1)), offset=[1.0]).tolist()  # unseen: prior
            [1.5]
        """
        codes, mean, _, x, off = self._records(ids, X, offset, context, proposal)
        return np.asarray(jnp.sum(mean[codes] * x, -1) + off)

    def _moments(self, ids: Any, X: Any, offset: Any, context: Any) -> tuple[jax.Array, ...]:
        codes, mean, prec, x, off = self._records(ids, X, offset, context)
        return predictive_moments(mean[codes], prec[codes], x, off)

    def predict(self, ids: Any, X: Any, offset: Any = None, *,
                context: Any = None) -> np.ndarray:
        r"""Posterior predictive mean of the response per record (see
        :func:`~ctxppl.online.predictive_mean`).

        Examples:
            >>> import numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.bayes_logistic(), 1)
            >>> re.predict(["u"], np.zeros((1, 1))).tolist()
            [0.5]
        """
        eta, var = self._moments(ids, X, offset, context)
        return np.asarray(predictive_mean(self.rule.family, eta, var))

    def ucb(self, ids: Any, X: Any, offset: Any = None, *, alpha: float = 2.0,
            context: Any = None) -> np.ndarray:
        r"""Upper confidence bound :math:`x^\top m + o + \alpha \sqrt{x^\top P^{-1} x}` of the
        linear predictor per record.

        Examples:
            >>> import numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.ridge(4.0), 1)
            >>> re.ucb(["u"], np.ones((1, 1)), alpha=1.0).tolist()  # sd = 1/sqrt(4)
            [0.5]
        """
        eta, var = self._moments(ids, X, offset, context)
        return np.asarray(ucb_from_moments(eta, var, alpha))

    def thompson(self, ids: Any, X: Any, offset: Any = None, *, key: Any,
                 context: Any = None) -> np.ndarray:
        r"""Thompson-sampled linear predictor per record: one coefficient draw from
        :math:`\mathcal N(m_e, P_e^{-1})` per distinct entity, shared by its records (so
        ``argmax`` over an entity's candidate records is a Thompson-sampling choice).

        Examples:
            >>> import jax, numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.ridge(1.0), 1)
            >>> s = re.thompson(["u", "u"], np.array([[1.0], [2.0]]), key=jax.random.key(0))
            >>> bool(np.isclose(s[1], 2 * s[0]))
            True
        """
        key = jax.random.key(key) if isinstance(key, int) else key
        codes, mean, prec, x, off = self._records(ids, X, offset, context)
        theta = sample_coefficients(key, mean, prec, 1)[0]
        return np.asarray(jnp.sum(theta[codes] * x, -1) + off)

    def table(self, ids: Any = None) -> pd.DataFrame:
        """Coefficients as a name-term-value table with variances (without an IndexMap the
        features are named ``x0, x1, ...``).

        Examples:
            >>> import numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.ridge(1.0), 1)
            >>> _ = re.update(["a", "a", "b", "b"], np.ones((4, 1)), np.array([1.0, 3.0, 0, 0]))
            >>> re.table(["b"]).round(3).values.tolist()
            [['b', 'x0', '', 0.0, 0.333]]
        """
        keys = self.keys if ids is None else as_keys(ids)
        mean, var = self.coefficients(ids), self.variances(ids)
        imap = self.features or IndexMap([(f"x{i}", "") for i in range(self.num_features)],
                                         intercept=False)
        return imap.table(mean, var, entities=keys)
