r"""Entity-partitioned random effects on a Dask cluster.

Entities are assigned to shards by a stable hash of their key (:func:`shard_of`); each shard
is a :class:`~ctxppl.online.RandomEffects` that lives on one worker -- with a copy on another
-- and is updated there by the same jitted function as a single-process table. An update is
one transaction over all shards (see :mod:`ctxppl.online._shards`): all-or-nothing across the
cluster, and a worker lost in the middle of it costs a retry, never an update.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ctxppl.online._batch import check_batch
from ctxppl.online._effects import RandomEffects
from ctxppl.online._shards import (
    ShardSet,
    _propose,
    _report,
    await_all,
    gather,
    run_transaction,
)
from ctxppl.online._shards import shard_of as shard_of
from ctxppl.online._state import UpdateReport, as_keys

__all__ = ["DaskRandomEffects", "shard_of", "sum_reports"]


def sum_reports(step: int, reports: list) -> UpdateReport:
    """One report for the shards' reports of one update."""
    return UpdateReport(step, sum(r.num_entities for r in reports),
                        sum(r.num_new for r in reports), sum(r.num_records for r in reports),
                        [k for r in reports for k in r.skipped],
                        max((r.max_iter for r in reports), default=0),
                        max((r.seconds for r in reports), default=0.0))


class DaskRandomEffects:
    r"""A :class:`~ctxppl.online.RandomEffects` table partitioned by entity over Dask workers.

    Each shard lives on a worker and, with ``backup=True`` (default) and two or more
    workers, also on the next one, which applies the same committed updates: a worker that
    dies in the middle of an update loses nothing -- the update runs again from the states
    before it, and nothing is applied twice. ``recoveries`` counts such retries.

    Args:
        client: A ``distributed.Client`` (a ``LocalCluster`` or any scheduler address).
        template: An empty (or filled) table giving the rule, features, prior and dtype;
            its entities are distributed to the shards.
        num_shards: Number of shards (default: one per worker); shard ``i`` lives on worker
            ``i mod num_workers``.
        threads: Threads each shard uses for its slabs (default 1: one per worker thread).
        backup: Keep a second copy of every shard on another worker.

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> from distributed import Client, LocalCluster
        >>> with LocalCluster(n_workers=1, processes=False,
        ...                   dashboard_address="127.0.0.1:0") as cl, \
        ...         Client(cl) as client:
        ...     dre = ctx.online.DaskRandomEffects(
        ...         client, ctx.online.RandomEffects(ctx.online.ridge(1.0), 1))
        ...     _ = dre.update(["a", "b"], np.ones((2, 1)), np.array([1.0, 2.0]))
        ...     dre.gather().coefficients(["a", "b"]).round(3).tolist()
        [[0.5], [1.0]]
    """

    def __init__(self, client: Any, template: RandomEffects, *, num_shards: int | None = None,
                 threads: int = 1, backup: bool = True):
        if not isinstance(template, RandomEffects):
            raise TypeError(f"`template` must be a RandomEffects; got "
                            f"{type(template).__name__}.")
        workers = client.scheduler_info()["workers"]
        if not workers:
            raise ValueError("the Dask cluster has no workers.")
        self.client = client
        self.num_shards = int(num_shards or len(workers))
        if self.num_shards < 1:
            raise ValueError(f"`num_shards` must be positive; got {num_shards}.")
        self._template = template
        self.step = template.step
        self.recoveries = 0
        self.shards = ShardSet(client, template, self.num_shards, threads, backup)

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
        keys = as_keys(ids)
        n = keys.size
        step = self.step + 1 if step is None else int(step)
        X, y = np.asarray(X), np.asarray(y)
        t = self._template
        base = np.zeros(n, t.dtype) if offset is None else np.asarray(offset, t.dtype)
        cols = {"X": X, "y": y, "offset": base, "weight": weight, "context": context}
        for k, v in cols.items():
            if v is not None and np.shape(v)[:1] != (n,):
                raise ValueError(f"`{k}` must have {n} rows (one per record); got shape "
                                 f"{np.shape(v)}.")
        # data errors are found here, before anything is sent (record numbers are global)
        check_batch(t.rule.family, keys, np.asarray(X, t.dtype), np.asarray(y, t.dtype), base,
                    np.ones(n, t.dtype) if weight is None else np.asarray(weight, t.dtype))
        sid = shard_of(keys, self.num_shards)
        parts = {}
        for i in np.unique(sid).tolist():
            sel = np.flatnonzero(sid == i)
            parts[i] = {"ids": keys[sel], "rows": sel,
                        **{k: None if v is None else np.asarray(v)[sel] for k, v in cols.items()}}
        shards = self.shards

        def attempt() -> tuple[list, list]:
            props = {i: shards.submit(i, _propose, shards.scatter(i, b), step)
                     for i, b in parts.items()}
            new = shards.commit(props)
            reports = [self.client.submit(_report, p, pure=False) for p in props.values()]
            await_all(self.client, [*props.values(), *reports,
                                    *(f for c in new.values() for f in c[:2])],
                      shards.workers)
            return [new], gather(self.client, reports)

        reports, retries = run_transaction([shards], attempt)
        self.recoveries += retries
        self.step = max(self.step, step)
        return sum_reports(step, reports)

    def gather(self) -> RandomEffects:
        """All shards merged into one local :class:`RandomEffects` (rows ordered by shard).

        Examples:
            See the class example.
        """
        out = self.shards.gather()
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
