r"""GAME back-fitting on a Dask cluster: every entity type partitioned by entity over workers.

A minibatch is absorbed exactly as by the in-process :class:`~ctxppl.online.GAME`: for
``passes`` rounds, each entity type's shards propose an update with the other types' current
scores added to the offset, starting every round from the state before the batch; then all
shards of all types commit together. Here every step is a Dask task on the worker that holds
the shard, and each round's per-record scores travel between workers as Dask results (the
driver routes the records and collects small reports, never the state). The whole batch is
one transaction (:mod:`ctxppl.online._shards`): a worker killed in the middle costs a retry
from the pre-batch states, never an update lost or applied twice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ctxppl.online._batch import check_batch
from ctxppl.online._dask import sum_reports
from ctxppl.online._game import GAME
from ctxppl.online._shards import (
    ShardSet,
    _assemble,
    _propose,
    _report,
    _score,
    await_all,
    gather,
    run_transaction,
    shard_of,
)
from ctxppl.online._state import UpdateReport, as_keys

__all__ = ["DaskGAME"]


class DaskGAME:
    r"""A :class:`~ctxppl.online.GAME` whose entity types live on a Dask cluster.

    The same coefficients as the in-process ``GAME`` on the same batches (per-entity
    arithmetic is the same jitted function; the scores of other types are added in the same
    order), with each type's state partitioned by entity over the workers, each shard also
    copied to a second worker.

    Args:
        client: A ``distributed.Client`` -- of a ``LocalCluster`` or of any scheduler
            (``Client("tcp://scheduler:8786")``).
        game: The model: entity types, fixed effect, passes. Its tables (empty or filled)
            are distributed to the shards.
        num_shards: Shards per entity type (default: one per worker).
        threads: Threads each shard uses (default 1).
        backup: Keep a second copy of every shard on another worker (needs two workers).
        timeout: Seconds a batch may take on the cluster (``None``: no bound). A worker
            that is alive but never finishes then raises ``TimeoutError`` with nothing
            applied, instead of waiting forever (a worker that dies is retried at once).

    Attributes:
        step: Last step applied.
        recoveries: Batches that had to be re-run because a worker left.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> from distributed import Client, LocalCluster
        >>> game = ctx.online.GAME(
        ...     {"user": ctx.online.RandomEffects(ctx.online.ridge(1.0), 1),
        ...      "item": ctx.online.RandomEffects(ctx.online.ridge(1.0), 1)}, fixed=None)
        >>> ids = {"user": [1, 1, 2, 2], "item": ["a", "b", "a", "b"]}
        >>> y, X = np.array([1.0, 0.0, 2.0, 1.0]), np.ones((4, 1))
        >>> with LocalCluster(n_workers=2, processes=False,
        ...                   dashboard_address="127.0.0.1:0") as cl, \
        ...         Client(cl) as client:
        ...     dg = ctx.online.DaskGAME(client, game)
        ...     _ = dg.partial_fit(y, ids=ids, X=X)
        ...     got = dg.gather().effects["user"].coefficients([1, 2])
        >>> _ = game.partial_fit(y, ids=ids, X=X)  # the same batch, in process
        >>> bool(np.allclose(got, game.effects["user"].coefficients([1, 2])))
        True
    """

    def __init__(self, client: Any, game: GAME, *, num_shards: int | None = None,
                 threads: int = 1, backup: bool = True, timeout: float | None = None):
        if not isinstance(game, GAME):
            raise TypeError(f"`game` must be a ctx.online.GAME; got {type(game).__name__}.")
        workers = client.scheduler_info()["workers"]
        if not workers:
            raise ValueError("the Dask cluster has no workers.")
        self.client = client
        self._game = game  # inputs, fixed effect and family; its tables are not updated
        self.types = game.types
        self.passes = game.passes if len(game.types) > 1 else 1
        if timeout is not None and not timeout > 0:
            raise ValueError(f"`timeout` must be a positive number of seconds or None; got "
                             f"{timeout!r}.")
        self.timeout = timeout
        self.num_shards = int(num_shards or len(workers))
        if self.num_shards < 1:
            raise ValueError(f"`num_shards` must be positive; got {num_shards}.")
        self.step = game.step
        self.recoveries = 0
        self.tables = {t: ShardSet(client, game.effects[t], self.num_shards, threads, backup)
                       for t in self.types}

    def __repr__(self) -> str:
        return (f"DaskGAME({self._game.family}, types={list(self.types)}, "
                f"{self.num_shards} shards per type, step={self.step})")

    def partial_fit(self, y: Any, *, ids: Mapping[str, Any], X: Any, fixed_args: Any = (),
                    offset: Any = None, weight: Any = None, context: Any = None,
                    step: int | None = None) -> dict[str, UpdateReport]:
        """Absorb a minibatch into every entity type (back-fitting on the cluster).

        Arguments and return value as :meth:`GAME.partial_fit`. Raises a worker's
        :class:`~ctxppl.online.UpdateError` (nothing is updated then).

        Examples:
            See the class example.
        """
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"`y` must be 1-d; got shape {y.shape}.")
        n = y.shape[0]
        game = self._game
        ids_t, x_t, c_t = game._inputs(n, ids, X, context)
        base = game._base(n, fixed_args, offset)  # the fixed effect, on the driver
        if weight is not None and np.shape(weight) != (n,):
            raise ValueError(f"`weight` must have shape ({n},); got {np.shape(weight)}.")
        step = self.step + 1 if step is None else int(step)
        parts: dict[str, dict[int, dict]] = {}
        for t in self.types:
            keys = as_keys(ids_t[t])
            x = np.asarray(x_t[t])
            table = game.effects[t]  # bad data is refused here, before anything is sent
            check_batch(table.rule.family, keys, np.asarray(x, table.dtype),
                        np.asarray(y, table.dtype), base.astype(table.dtype),
                        np.ones(n, table.dtype) if weight is None
                        else np.asarray(weight, table.dtype))
            ctx_t = None if c_t[t] is None else np.asarray(c_t[t])
            sid = shard_of(keys, self.num_shards)
            parts[t] = {}
            for i in np.unique(sid).tolist():
                sel = np.flatnonzero(sid == i)
                parts[t][i] = {"ids": keys[sel], "X": x[sel], "y": y[sel], "rows": sel,
                               "offset": base[sel],
                               "weight": None if weight is None else np.asarray(weight)[sel],
                               "context": None if ctx_t is None else ctx_t[sel]}
        dtype = base.dtype.str
        many = len(self.types) > 1

        def attempt() -> tuple[list, dict]:
            batch = {t: {i: self.tables[t].scatter(i, b) for i, b in parts[t].items()}
                     for t in self.types}
            scores = {t: {i: self.tables[t].submit(i, _score, batch[t][i])
                          for i in batch[t]} for t in self.types} if many else {}
            props: dict[str, dict[int, Any]] = {}
            for _ in range(self.passes):
                for t in self.types:
                    others = None
                    if many:  # the other types' current scores, summed in type order
                        pieces = [[(parts[s][i]["rows"], scores[s][i]) for i in parts[s]]
                                  for s in self.types if s != t]
                        others = self.client.submit(_assemble, n, dtype, pieces, pure=False)
                    tab = self.tables[t]
                    props[t] = {i: tab.submit(i, _propose, batch[t][i], step, others)
                                for i in batch[t]}
                    if many:
                        scores[t] = {i: tab.submit(i, _score, batch[t][i], props[t][i])
                                     for i in batch[t]}
            new = [self.tables[t].commit(props[t]) for t in self.types]
            reports = {t: [self.client.submit(_report, p, pure=False)
                           for p in props[t].values()] for t in self.types}
            futures = [f for t in self.types for f in (*props[t].values(), *reports[t])]
            futures += [f for cs in new for c in cs.values() for f in c[:2]]
            await_all(self.client, futures, set().union(*(s.workers
                                                          for s in self.tables.values())),
                      timeout=self.timeout)
            return new, gather(self.client, reports)

        reports, retries = run_transaction([self.tables[t] for t in self.types], attempt)
        self.recoveries += retries
        self.step = max(self.step, step)
        return {t: sum_reports(step, reports[t]) for t in self.types}

    def gather(self) -> GAME:
        """A local :class:`~ctxppl.online.GAME` with every type's shards merged (for
        scoring, ``predict``, checkpoints).

        Examples:
            See the class example.
        """
        effects = {}
        for t in self.types:
            table = self.tables[t].gather()
            table.step = self.step
            effects[t] = table
        out = GAME(effects, self._game.fixed, passes=self._game.passes)
        out.step = self.step
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Checkpoint: :meth:`gather` then :meth:`GAME.save`; restore with
        ``DaskGAME(client, GAME.load(path, fixed=...))``.

        Examples:
            See the class example (``dg.gather().save(path)`` is the same).
        """
        self.gather().save(path)
