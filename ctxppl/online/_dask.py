r"""Entity-partitioned random effects on a Dask cluster.

Entities are assigned to shards by a stable hash of their key; each shard is a
:class:`~ctxppl.online.RandomEffects` that lives on one worker and is updated there by the
same jitted function as a single-process table. An update is two-phase, so it stays
all-or-nothing across the cluster: every shard first *proposes* its update (nothing
changes); only when all proposals succeeded does every shard *commit*. A failure anywhere
raises the worker's :class:`~ctxppl.online.UpdateError` (naming the entity) and leaves all
shards unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ctxppl.online._batch import check_batch
from ctxppl.online._effects import RandomEffects
from ctxppl.online._state import EntityIndex, EntityState, Proposal, UpdateReport, as_keys

__all__ = ["DaskRandomEffects", "shard_of"]


def shard_of(keys: Any, num_shards: int) -> np.ndarray:
    """Shard of each entity key: ``key mod n`` for ints, a fixed-seed hash for strings
    (identical in every process).

    Examples:
        >>> from ctxppl.online._dask import shard_of
        >>> shard_of([0, 1, 5], 2).tolist()
        [0, 1, 1]
    """
    keys = as_keys(keys)
    if keys.dtype.kind in "iu":
        return (keys % num_shards).astype(np.int64)
    h = pd.util.hash_array(keys.astype(object), categorize=False)
    return (h % np.uint64(num_shards)).astype(np.int64)


# functions run on the workers (module level, so workers import them) ----------------------
def _new_shard(template: RandomEffects, threads: int) -> RandomEffects:
    shard = template.copy()
    shard.threads = threads
    return shard


def _propose(shard: RandomEffects, batch: dict, step: int) -> Proposal:
    return shard.propose(batch["ids"], batch["X"], batch["y"], offset=batch["offset"],
                         weight=batch["weight"], context=batch["context"], step=step)


def _commit(shard: RandomEffects, proposal: Proposal) -> RandomEffects:
    # in place: the proposal was checked on every shard, and commit cannot fail halfway
    shard.commit(proposal)
    return shard


class DaskRandomEffects:
    r"""A :class:`~ctxppl.online.RandomEffects` table partitioned by entity over Dask workers.

    Args:
        client: A ``distributed.Client`` (a ``LocalCluster`` or any scheduler address).
        template: An empty (or filled) table giving the rule, features, prior and dtype;
            its entities are distributed to the shards.
        num_shards: Number of shards (default: one per worker); shard ``i`` lives on worker
            ``i mod num_workers``.
        threads: Threads each shard uses for its slabs (default 1: one per worker thread).

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> from distributed import Client, LocalCluster
        >>> with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cl, \
        ...         Client(cl) as client:
        ...     dre = ctx.online.DaskRandomEffects(
        ...         client, ctx.online.RandomEffects(ctx.online.ridge(1.0), 1))
        ...     _ = dre.update(["a", "b"], np.ones((2, 1)), np.array([1.0, 2.0]))
        ...     dre.gather().coefficients(["a", "b"]).round(3).tolist()
        [[0.5], [1.0]]
    """

    def __init__(self, client: Any, template: RandomEffects, *, num_shards: int | None = None,
                 threads: int = 1):
        if not isinstance(template, RandomEffects):
            raise TypeError(f"`template` must be a RandomEffects; got "
                            f"{type(template).__name__}.")
        workers = sorted(client.scheduler_info()["workers"])
        if not workers:
            raise ValueError("the Dask cluster has no workers.")
        self.client = client
        self.num_shards = int(num_shards or len(workers))
        if self.num_shards < 1:
            raise ValueError(f"`num_shards` must be positive; got {num_shards}.")
        self._workers = [workers[i % len(workers)] for i in range(self.num_shards)]
        self._template = template
        self.step = template.step
        parts = self._split_table(template)
        self._shards = [client.submit(_new_shard, part, threads, workers=[w],
                                      allow_other_workers=False, pure=False)
                        for part, w in zip(parts, self._workers, strict=True)]

    def _split_table(self, table: RandomEffects) -> list[RandomEffects]:
        sid = shard_of(table.keys, self.num_shards) if len(table) else np.zeros(0, np.int64)
        parts = []
        for i in range(self.num_shards):
            rows = np.flatnonzero(sid == i)
            part = table.copy()
            part._state = table.state.take(rows)
            part._index = EntityIndex(table.keys[rows])
            parts.append(part)
        return parts

    def __repr__(self) -> str:
        return (f"DaskRandomEffects({self._template.rule.family}, {self.num_shards} shards, "
                f"step={self.step})")

    def update(self, ids: Any, X: Any, y: Any, *, offset: Any = None, weight: Any = None,
               context: Any = None, step: int | None = None) -> UpdateReport:
        """Route the records to their shards, propose everywhere, then commit everywhere.

        Arguments and return value as :meth:`RandomEffects.update` (the report sums the
        shards' reports). Raises the first shard's error if any shard fails; nothing is
        updated then.

        Examples:
            See the class example.
        """
        from distributed import wait

        keys = as_keys(ids)
        n = keys.size
        step = self.step + 1 if step is None else int(step)
        X, y = np.asarray(X), np.asarray(y)
        cols = {"X": X, "y": y, "offset": offset, "weight": weight, "context": context}
        for k, v in cols.items():
            if v is not None and np.shape(v)[:1] != (n,):
                raise ValueError(f"`{k}` must have {n} rows (one per record); got shape "
                                 f"{np.shape(v)}.")
        # data errors are found here, before anything is sent (record numbers are global)
        t = self._template
        check_batch(t.rule.family, keys, np.asarray(X, t.dtype), np.asarray(y, t.dtype),
                    np.zeros(n, t.dtype) if offset is None else np.asarray(offset, t.dtype),
                    np.ones(n, t.dtype) if weight is None else np.asarray(weight, t.dtype))
        sid = shard_of(keys, self.num_shards)
        props: dict[int, Any] = {}
        for i in np.unique(sid).tolist():
            sel = np.flatnonzero(sid == i)
            batch = {"ids": keys[sel]}
            batch.update({k: None if v is None else np.asarray(v)[sel] for k, v in cols.items()})
            props[i] = self.client.submit(_propose, self._shards[i], batch, step,
                                          workers=[self._workers[i]],
                                          allow_other_workers=False, pure=False)
        wait(list(props.values()))
        for fut in props.values():
            if fut.status == "error":
                exc = fut.exception()
                for other in props.values():
                    other.release()
                raise exc  # the worker's exception (e.g. UpdateError naming the entity)
        reports = self.client.gather([props[i] for i in props], direct=False)
        reports = [p.report for p in reports]
        for i, fut in props.items():
            self._shards[i] = self.client.submit(_commit, self._shards[i], fut,
                                                 workers=[self._workers[i]],
                                                 allow_other_workers=False, pure=False)
        wait([self._shards[i] for i in props])
        self.step = max(self.step, step)
        return UpdateReport(step, sum(r.num_entities for r in reports),
                            sum(r.num_new for r in reports),
                            sum(r.num_records for r in reports),
                            [k for r in reports for k in r.skipped],
                            max((r.max_iter for r in reports), default=0),
                            max((r.seconds for r in reports), default=0.0))

    def gather(self) -> RandomEffects:
        """All shards merged into one local :class:`RandomEffects` (rows ordered by shard).

        Examples:
            See the class example.
        """
        shards = self.client.gather(self._shards)
        out = self._template.copy()
        states = [s.state for s in shards]
        out._state = EntityState(*(np.concatenate(parts) for parts in zip(*states,
                                                                           strict=True)))
        keys = [s.keys for s in shards if len(s)]
        out._index = EntityIndex(np.concatenate(keys) if keys else [])
        out.step = self.step
        return out

    def save(self, path: str) -> None:
        """Checkpoint (gathers the shards and writes one :meth:`RandomEffects.save` file);
        restore with ``DaskRandomEffects.from_local(client, RandomEffects.load(path))``.

        Examples:
            See the class example (``dre.gather().save(path)`` is the same).
        """
        self.gather().save(path)

    @classmethod
    def from_local(cls, client: Any, table: RandomEffects, **kwargs: Any) -> DaskRandomEffects:
        """Distribute a local table (e.g. a restored checkpoint) over the cluster.

        Examples:
            See the class example (``from_local`` is the constructor).
        """
        return cls(client, table, **kwargs)
