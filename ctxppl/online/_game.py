r"""GAME: a fixed-effect model plus per-entity random effects of several entity types.

The linear predictor of a record is

.. math::

    \eta = f(\text{inputs}) + o + \sum_{t \in \text{types}} x_t^\top \theta_{t, e_t},

where :math:`f` is the fixed effect (any callable, or a fitted ctxppl model through
:func:`from_fit`), :math:`o` an optional extra offset, and :math:`\theta_{t, e}` the
coefficients of entity :math:`e` of type :math:`t` (e.g. per user and per item). A minibatch
is absorbed by back-fitting: for each type in turn, its entities are updated with the other
types' current scores added to the offset, for ``passes`` rounds. Each round restarts from
the state *before* the batch, so the batch's data enter every posterior exactly once; the
results of the last round are committed together (or nothing is, if any update fails).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ctxppl._files import read_npz, write_npz
from ctxppl.online._effects import RandomEffects
from ctxppl.online._explore import predictive_mean, sample_coefficients
from ctxppl.online._metrics import evaluate
from ctxppl.online._state import UpdateReport

__all__ = ["GAME", "from_fit", "FitFunction"]

_FORMAT = "ctxppl.online.GAME/1"


class FitFunction:
    """A fitted ctxppl model used as a plain function of its inputs.

    Build it with :func:`from_fit` (which has the example).
    """

    def __init__(self, fit: Any, site: str):
        self.fit = fit
        self.site = site

    def __call__(self, *inputs: Any) -> np.ndarray:
        out = self.fit.predict(*inputs, return_sites=[self.site])[self.site]
        return np.asarray(out)

    def __repr__(self) -> str:
        return f"from_fit({self.fit!r}, site={self.site!r})"


def from_fit(fit: Any, site: str) -> FitFunction:
    r"""Use a fitted ctxppl model as the fixed effect or as a context-encoded prior mean.

    ``from_fit(fit, site)(*inputs)`` is ``fit.predict(*inputs)[site]``. As the fixed effect of
    :class:`GAME` it should return one score per record; as ``prior_mean`` of
    :class:`RandomEffects` it is called with the entity contexts ``(k, c)`` and should
    return per-entity coefficients ``(k, d)`` -- e.g. the ``ctx.contextual`` site of a
    contextualized regression, so an unseen entity's coefficients start at what its context
    predicts.

    Args:
        fit: A :class:`ctxppl.Fit`.
        site: The sample or deterministic site to return.

    Examples:
        >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, ctxppl as ctx
        >>> def model(x, y=None):
        ...     b = numpyro.sample("b", dist.Normal(0.0, 10.0))
        ...     with ctx.plate("n", x.shape[0]):
        ...         numpyro.deterministic("score", b * x)
        ...         numpyro.sample("y", dist.Normal(b * x, 0.1), obs=y)
        >>> fit = ctx.fit(model, jnp.arange(3.0), 2 * jnp.arange(3.0), key=0, progress=False)
        >>> ctx.online.from_fit(fit, "score")(jnp.array([1.0, 2.0])).round(1).tolist()
        [2.0, 4.0]
    """
    from ctxppl.infer import Fit

    if not isinstance(fit, Fit):
        raise TypeError(f"`fit` must be a ctx.Fit; got {type(fit).__name__}.")
    if not isinstance(site, str):
        raise TypeError(f"`site` must be a site name (str); got {site!r}.")
    return FitFunction(fit, site)


def _per_type(value: Any, types: tuple[str, ...], name: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        missing = [t for t in types if t not in value]
        if missing:
            raise ValueError(f"`{name}` has no entry for entity type(s) {missing}; got keys "
                             f"{sorted(value)}.")
        return {t: value[t] for t in types}
    return {t: value for t in types}


class GAME:
    r"""Fixed effect + random effects of several entity types, updated online.

    Args:
        effects: One :class:`RandomEffects` per entity type, e.g.
            ``{"user": RandomEffects(...), "item": RandomEffects(...)}``. All must share the
            likelihood family.
        fixed: Fixed-effect scorer called as ``fixed(*fixed_args)`` -> ``(n,)`` scores: any
            callable, or :func:`from_fit` of a fitted ctxppl model; ``None`` for no fixed
            effect.
        passes: Back-fitting rounds per minibatch when there are several entity types.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> game = ctx.online.GAME(
        ...     {"user": ctx.online.RandomEffects(ctx.online.bayes_logistic(), 1),
        ...      "item": ctx.online.RandomEffects(ctx.online.bayes_logistic(), 1)},
        ...     fixed=lambda z: 0.5 * z[:, 0])
        >>> y = np.array([1, 0, 1, 1])
        >>> reps = game.partial_fit(y, ids={"user": [1, 1, 2, 2], "item": ["a", "b", "a", "b"]},
        ...                         X=np.ones((4, 1)), fixed_args=(np.zeros((4, 1)),))
        >>> sorted(reps), reps["user"].num_entities, reps["item"].num_entities
        (['item', 'user'], 2, 2)
        >>> game.predict(ids={"user": [9], "item": ["a"]}, X=np.ones((1, 1)),
        ...              fixed_args=(np.zeros((1, 1)),)).shape
        (1,)
    """

    def __init__(self, effects: Mapping[str, RandomEffects], fixed: Callable | None = None,
                 *, passes: int = 2):
        if not isinstance(effects, Mapping) or not effects:
            raise ValueError("`effects` must be a non-empty dict {entity_type: RandomEffects}.")
        for t, re in effects.items():
            if not isinstance(re, RandomEffects):
                raise TypeError(f"`effects[{t!r}]` must be a RandomEffects; got "
                                f"{type(re).__name__}.")
        fams = {re.rule.family for re in effects.values()}
        if len(fams) > 1:
            raise ValueError(f"all entity types must share one likelihood family; got {fams}.")
        from ctxppl.infer import Fit

        if isinstance(fixed, Fit):
            raise TypeError("`fixed` is a ctx.Fit; say which site holds the score: "
                            "fixed=ctx.online.from_fit(fit, site='eta').")
        if fixed is not None and not callable(fixed):
            raise TypeError(f"`fixed` must be callable or None; got {type(fixed).__name__}.")
        if int(passes) < 1:
            raise ValueError(f"`passes` must be at least 1; got {passes}.")
        self.effects = dict(effects)
        self.types = tuple(self.effects)
        self.family = fams.pop()
        self.fixed = fixed
        self.passes = int(passes)
        self.step = -1

    def __repr__(self) -> str:
        inner = ", ".join(f"{t}: {len(re)} entities" for t, re in self.effects.items())
        return f"GAME({self.family}, {{{inner}}}, step={self.step})"

    def _base(self, n: int, fixed_args: tuple, offset: Any) -> np.ndarray:
        dtype = next(iter(self.effects.values())).dtype
        base = np.zeros(n, dtype)
        if self.fixed is not None:
            if not isinstance(fixed_args, tuple):
                fixed_args = (fixed_args,)
            f = np.asarray(self.fixed(*fixed_args), dtype=dtype)
            if f.shape != (n,):
                raise ValueError(f"the fixed effect returned shape {f.shape} for {n} records; "
                                 f"expected ({n},).")
            if not np.all(np.isfinite(f)):
                i = int(np.flatnonzero(~np.isfinite(f))[0])
                raise ValueError(f"the fixed effect returned a non-finite score for record {i}.")
            base = base + f
        if offset is not None:
            off = np.asarray(offset, dtype=dtype)
            if off.shape != (n,):
                raise ValueError(f"`offset` must have shape ({n},); got {off.shape}.")
            base = base + off
        return base

    def _inputs(self, n: int, ids: Any, X: Any, context: Any) -> tuple[dict, dict, dict]:
        ids_t = _per_type(ids, self.types, "ids") if isinstance(ids, Mapping) else None
        if ids_t is None:
            raise ValueError(f"`ids` must be a dict {{entity_type: keys}} for types "
                             f"{list(self.types)}.")
        x_t = _per_type(X, self.types, "X")
        c_t = _per_type(context, self.types, "context") if isinstance(context, Mapping) \
            else {t: context for t in self.types}
        for t in self.types:
            if np.shape(ids_t[t])[:1] != (n,):
                raise ValueError(f"`ids[{t!r}]` must hold {n} keys; got shape "
                                 f"{np.shape(ids_t[t])}.")
        return ids_t, x_t, c_t

    def partial_fit(self, y: Any, *, ids: Mapping[str, Any], X: Any, fixed_args: Any = (),
                    offset: Any = None, weight: Any = None, context: Any = None,
                    step: int | None = None) -> dict[str, UpdateReport]:
        """Absorb a minibatch into every entity type (back-fitting, all-or-nothing).

        Args:
            y: Labels ``(n,)``.
            ids: ``{entity_type: keys (n,)}``.
            X: Features ``(n, d)`` shared by all types, or ``{entity_type: (n, d_t)}``.
            fixed_args: Arguments of the fixed effect (a tuple, or one array).
            offset: Extra offset ``(n,)`` added to the fixed-effect score.
            weight: Record weights ``(n,)``.
            context: Entity contexts ``(n, c)`` (or a dict per type) for context-encoded
                priors of new entities.
            step: Update step (default: one more than the last); replays are skipped.

        Returns:
            ``{entity_type: UpdateReport}``.

        Examples:
            >>> import numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.ridge(1.0), 1)
            >>> game = ctx.online.GAME({"u": re}, fixed=lambda z: z)
            >>> _ = game.partial_fit(np.array([1.0, 3.0, 0.0, 0.0]),
            ...                      ids={"u": ["a", "a", "b", "b"]}, X=np.ones((4, 1)),
            ...                      fixed_args=(np.zeros(4),))
            >>> game.effects["u"].coefficients(["a", "b"]).astype(float).round(3).tolist()
            [[1.333], [0.0]]
        """
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"`y` must be 1-d; got shape {y.shape}.")
        n = y.shape[0]
        ids_t, x_t, c_t = self._inputs(n, ids, X, context)
        base = self._base(n, fixed_args, offset)
        step = self.step + 1 if step is None else int(step)
        scores = {t: self.effects[t].score(ids_t[t], x_t[t], context=c_t[t])
                  for t in self.types}
        proposals: dict[str, Any] = {}
        passes = self.passes if len(self.types) > 1 else 1
        for _ in range(passes):
            for t in self.types:
                others = sum((scores[s] for s in self.types if s != t), np.zeros(n, base.dtype))
                re = self.effects[t]
                proposals[t] = re.propose(ids_t[t], x_t[t], y, offset=base + others,
                                          weight=weight, context=c_t[t], step=step)
                scores[t] = re.score(ids_t[t], x_t[t], context=c_t[t], proposal=proposals[t])
        reports = {t: self.effects[t].commit(proposals[t]) for t in self.types}
        self.step = max(self.step, step)
        return reports

    # ------------------------------------------------------------------ scoring
    def _moments(self, ids: Any, X: Any, fixed_args: Any, offset: Any,
                 context: Any) -> tuple[np.ndarray, np.ndarray]:
        n = np.shape(next(iter(ids.values())) if isinstance(ids, Mapping) else ids)[0]
        ids_t, x_t, c_t = self._inputs(n, ids, X, context)
        eta = self._base(n, fixed_args, offset).astype(np.float64)
        var = np.zeros(n)
        for t in self.types:
            e, v = self.effects[t]._moments(ids_t[t], x_t[t], None, c_t[t])
            eta += np.asarray(e)
            var += np.asarray(v)
        return eta, var

    def score(self, ids: Any, X: Any, *, fixed_args: Any = (), offset: Any = None,
              context: Any = None) -> np.ndarray:
        """Linear predictor per record with posterior-mean coefficients (unseen entities:
        their prior).

        Examples:
            >>> import numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.ridge(1.0), 1)
            >>> game = ctx.online.GAME({"u": re}, fixed=lambda z: z)
            >>> _ = game.partial_fit(np.array([1.0, 3.0, 0.0, 0.0]),
            ...                      ids={"u": ["a", "a", "b", "b"]}, X=np.ones((4, 1)),
            ...                      fixed_args=(np.zeros(4),))
            >>> game.score({"u": ["a", "new"]}, np.ones((2, 1)),
            ...            fixed_args=(np.ones(2),)).round(3)
            array([2.333, 1.   ])
        """
        return self._moments(ids, X, fixed_args, offset, context)[0]

    def predict(self, ids: Any, X: Any, *, fixed_args: Any = (), offset: Any = None,
                context: Any = None) -> np.ndarray:
        """Posterior predictive mean of the response per record (random effects of the
        different types are independent a posteriori in this approximation).

        Examples:
            >>> import numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.ridge(1.0), 1)
            >>> game = ctx.online.GAME({"u": re}, fixed=lambda z: z)
            >>> _ = game.partial_fit(np.array([1.0, 3.0, 0.0, 0.0]),
            ...                      ids={"u": ["a", "a", "b", "b"]}, X=np.ones((4, 1)),
            ...                      fixed_args=(np.zeros(4),))
            >>> game.predict({"u": ["a"]}, np.ones((1, 1)), fixed_args=(np.zeros(1),)).round(3)
            array([1.333], dtype=float32)
        """
        eta, var = self._moments(ids, X, fixed_args, offset, context)
        return np.asarray(predictive_mean(self.family, jnp.asarray(eta), jnp.asarray(var)))

    def ucb(self, ids: Any, X: Any, *, fixed_args: Any = (), offset: Any = None,
            alpha: float = 2.0, context: Any = None) -> np.ndarray:
        """Upper confidence bound of the linear predictor per record.

        Examples:
            >>> import numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.ridge(1.0), 1)
            >>> game = ctx.online.GAME({"u": re}, fixed=lambda z: z)
            >>> _ = game.partial_fit(np.array([1.0, 3.0, 0.0, 0.0]),
            ...                      ids={"u": ["a", "a", "b", "b"]}, X=np.ones((4, 1)),
            ...                      fixed_args=(np.zeros(4),))
            >>> game.ucb({"u": ["b"]}, np.ones((1, 1)), fixed_args=(np.zeros(1),),
            ...          alpha=1.0).round(3)  # 0 + sqrt(1 / (1 + 2))
            array([0.577])
        """
        eta, var = self._moments(ids, X, fixed_args, offset, context)
        return eta + alpha * np.sqrt(var)

    def thompson(self, ids: Any, X: Any, *, key: Any, fixed_args: Any = (),
                 offset: Any = None, context: Any = None) -> np.ndarray:
        """Thompson-sampled linear predictor per record (one draw per entity and type).

        Examples:
            >>> import numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.ridge(1.0), 1)
            >>> game = ctx.online.GAME({"u": re}, fixed=lambda z: z)
            >>> _ = game.partial_fit(np.array([1.0, 3.0, 0.0, 0.0]),
            ...                      ids={"u": ["a", "a", "b", "b"]}, X=np.ones((4, 1)),
            ...                      fixed_args=(np.zeros(4),))
            >>> s = game.thompson({"u": ["a", "a"]}, np.array([[1.0], [2.0]]), key=0,
            ...                   fixed_args=(np.zeros(2),))
            >>> bool(np.isclose(s[1], 2 * s[0]))
            True
        """
        key = jax.random.key(key) if isinstance(key, int) else key
        n = np.shape(next(iter(ids.values())))[0]
        ids_t, x_t, c_t = self._inputs(n, ids, X, context)
        out = self._base(n, fixed_args, offset).astype(np.float64)
        for t, k in zip(self.types, jax.random.split(key, len(self.types)), strict=True):
            codes, mean, prec, x, _ = self.effects[t]._records(ids_t[t], x_t[t], None, c_t[t])
            theta = sample_coefficients(k, mean, prec, 1)[0]
            out += np.asarray(jnp.sum(theta[codes] * x, -1))
        return out

    def evaluate(self, y: Any, ids: Any, X: Any, *, fixed_args: Any = (), offset: Any = None,
                 context: Any = None, **kwargs: Any) -> dict[str, Any]:
        """Held-out metrics of :meth:`predict` (see :func:`~ctxppl.online.evaluate`).

        Examples:
            >>> import numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.ridge(1.0), 1)
            >>> game = ctx.online.GAME({"u": re}, fixed=lambda z: z)
            >>> _ = game.partial_fit(np.array([1.0, 3.0, 0.0, 0.0]),
            ...                      ids={"u": ["a", "a", "b", "b"]}, X=np.ones((4, 1)),
            ...                      fixed_args=(np.zeros(4),))
            >>> m = game.evaluate(np.array([1.0, 0.0]), {"u": ["a", "b"]}, np.ones((2, 1)),
            ...                   fixed_args=(np.zeros(2),))
            >>> round(m["rmse"], 3)
            0.236
        """
        p = self.predict(ids, X, fixed_args=fixed_args, offset=offset, context=context)
        return evaluate(y, p, family=self.family, **kwargs)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Checkpoint every entity type and the step to one ``.npz`` (atomically).

        The fixed effect and prior-mean functions are not saved; pass them to :meth:`load`.

        Examples:
            >>> import os, tempfile
            >>> import numpy as np, ctxppl as ctx
            >>> re = ctx.online.RandomEffects(ctx.online.ridge(1.0), 1)
            >>> game = ctx.online.GAME({"u": re}, fixed=lambda z: z)
            >>> _ = game.partial_fit(np.array([1.0, 3.0, 0.0, 0.0]),
            ...                      ids={"u": ["a", "a", "b", "b"]}, X=np.ones((4, 1)),
            ...                      fixed_args=(np.zeros(4),))
            >>> p = os.path.join(tempfile.mkdtemp(), "game.npz"); game.save(p)
            >>> back = ctx.online.GAME.load(p, fixed=lambda z: z)
            >>> back.step, back.effects["u"].keys.tolist()
            (0, ['a', 'b'])
        """
        arrays: dict[str, np.ndarray] = {}
        metas = {}
        for i, t in enumerate(self.types):
            a, m = self.effects[t]._arrays(prefix=f"t{i}__")
            arrays.update(a)
            metas[t] = m
        write_npz(path, arrays, {"format": _FORMAT, "types": list(self.types),
                                 "effects": metas, "step": self.step, "passes": self.passes})

    @classmethod
    def load(cls, path: str | os.PathLike, *, fixed: Callable | None = None,
             prior_mean: Mapping[str, Any] | None = None,
             threads: int | None = None) -> GAME:
        """Restore a :meth:`save` checkpoint.

        Args:
            path: The ``.npz`` file.
            fixed: The fixed effect (not stored in checkpoints).
            prior_mean: ``{entity_type: prior_mean}`` for types whose prior mean was a
                function.
            threads: As in :class:`RandomEffects`.

        Examples:
            See :meth:`save`.
        """
        arrays, meta = read_npz(path, expect=_FORMAT.rpartition("/")[0])
        if meta.get("format") != _FORMAT:
            raise ValueError(f"not a GAME checkpoint (format {meta.get('format')!r}).")
        prior_mean = dict(prior_mean or {})
        effects = {t: RandomEffects._from_arrays(arrays, meta["effects"][t], f"t{i}__",
                                                 prior_mean=prior_mean.get(t), threads=threads)
                   for i, t in enumerate(meta["types"])}
        out = cls(effects, fixed, passes=meta["passes"])
        out.step = int(meta["step"])
        return out
