r"""Entity-partitioned state on Dask workers, held twice so that losing a worker loses nothing.

One entity type's table is split into shards by a stable hash of the entity key. Each shard
lives on two workers: a *primary*, where its updates are computed, and a *backup*, which
applies the same committed proposals (only the proposal travels). Updates are functional: a
commit makes new shard objects and the old ones stay valid until every shard of every table
has committed. So a batch is one transaction:

1. compute everything from the pre-batch states (proposals, scores, commits on both copies);
2. install the new states only when all of it finished;
3. if a worker left on the way, rebuild the lost copies from the surviving pre-batch ones
   and run the batch again -- the state after the retry equals a run without the failure,
   and nothing is applied twice (the pre-batch states never saw the batch; entity steps
   make a replayed step a no-op besides).

A data error (an :class:`~ctxppl.online.UpdateError` from a worker) is raised as it is and
leaves every shard unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ctxppl.online._effects import RandomEffects
from ctxppl.online._state import EntityIndex, EntityState, Proposal, as_keys

__all__ = ["shard_of", "ShardSet", "WorkerLost", "await_all", "gather", "run_transaction"]


def shard_of(keys: Any, num_shards: int) -> np.ndarray:
    """Shard of each entity key: ``key mod n`` for ints, a fixed-seed hash for strings
    (identical in every process).

    Examples:
        >>> from ctxppl.online._shards import shard_of
        >>> shard_of([0, 1, 5], 2).tolist()
        [0, 1, 1]
    """
    keys = as_keys(keys)
    if keys.dtype.kind in "iu":
        return (keys % num_shards).astype(np.int64)
    h = pd.util.hash_array(keys.astype(object), categorize=False)
    return (h % np.uint64(num_shards)).astype(np.int64)


# ---- functions run on the workers (module level, so workers import them) ------------------
def _new_shard(template: RandomEffects, threads: int) -> RandomEffects:
    shard = template.copy()
    shard.threads = threads
    return shard


def _copy(shard: RandomEffects) -> RandomEffects:
    return shard.copy()


def _propose(shard: RandomEffects, batch: dict, step: int, others: Any = None) -> Proposal:
    offset = batch["offset"]
    if others is not None:  # the other entity types' scores of these records (GAME)
        offset = offset + others[batch["rows"]]
    return shard.propose(batch["ids"], batch["X"], batch["y"], offset=offset,
                         weight=batch["weight"], context=batch["context"], step=step)


def _score(shard: RandomEffects, batch: dict, proposal: Proposal | None = None) -> np.ndarray:
    return shard.score(batch["ids"], batch["X"], context=batch["context"], proposal=proposal)


def _commit(shard: RandomEffects, proposal: Proposal) -> RandomEffects:
    out = shard.copy()  # functional: the pre-batch shard stays valid for a retry
    out.commit(proposal)
    return out


def _report(proposal: Proposal) -> Any:
    return proposal.report


def _assemble(n: int, dtype: str, parts: list) -> np.ndarray:
    """Sum of per-type score vectors, each scattered from its shards: ``parts`` is
    ``[[(rows, scores), ...] per type]``; types are added in order, as in-process GAME."""
    total = np.zeros(n, dtype)
    for pieces in parts:
        full = np.zeros(n, dtype)
        for rows, scores in pieces:
            full[rows] = scores
        total = total + full
    return total


# ---- the driver side ------------------------------------------------------------------------
class WorkerLost(RuntimeError):
    """A worker holding part of this batch left the cluster; the batch is retried."""


def _lost(exc: BaseException) -> bool:
    from concurrent.futures import CancelledError

    from distributed.client import FuturesCancelledError
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    return isinstance(exc, KilledWorker | CommClosedError | CancelledError |
                      FuturesCancelledError | ConnectionError | OSError)


def await_all(client: Any, futures: list, workers: set[str], poll: float = 0.5,
              timeout: float | None = None) -> None:
    """Wait for ``futures``; raise :class:`WorkerLost` as soon as one of ``workers`` left
    the cluster (tasks pinned to it would wait forever) or a result was lost, and the
    worker's own exception for a failed task (e.g. an ``UpdateError``). ``timeout``
    (seconds) bounds the wait for workers that are alive but never finish: then
    :class:`TimeoutError` (nothing is installed by the caller)."""
    import time

    from distributed import wait

    pending = [f for f in futures if f is not None]
    deadline = None if timeout is None else time.monotonic() + float(timeout)
    while True:
        if deadline is not None and time.monotonic() > deadline:
            late = sum(f.status == "pending" for f in pending)
            raise TimeoutError(
                f"`timeout`: the batch did not finish within {timeout} s ({late} of "
                f"{len(pending)} Dask tasks still pending on workers that are alive); nothing "
                "was applied. Raise `timeout` for large batches, or look for a stuck worker.")
        try:
            wait(pending, timeout=poll)
            break
        except TimeoutError:  # asyncio's is the builtin since Python 3.11
            pass
        except Exception as e:  # noqa: BLE001 - results cancelled with a lost worker
            if _lost(e):
                raise WorkerLost(str(e)[:300]) from e
            raise
        gone = workers - set(client.scheduler_info()["workers"])
        if gone:
            raise WorkerLost(f"worker(s) {sorted(gone)} left the cluster")
        if any(f.status in ("error", "cancelled", "lost") for f in pending):
            break
    for f in pending:
        if f.status == "finished":
            continue
        if f.status == "error":
            exc = f.exception()
            if _lost(exc):
                raise WorkerLost(str(exc))
            raise exc
        raise WorkerLost(f"a result was {f.status}")


def gather(client: Any, futures: Any) -> Any:
    """``client.gather``, a lost worker raised as :class:`WorkerLost`."""
    try:
        return client.gather(futures)
    except Exception as e:  # noqa: BLE001
        if _lost(e):
            raise WorkerLost(str(e)[:300]) from e
        raise


class _Copies(NamedTuple):
    primary: Any  # Future of the shard on `workers[0]`
    backup: Any  # Future of its copy on `workers[1]` (None with one worker)
    workers: tuple


class ShardSet:
    """One entity type's shards on a Dask cluster, each held twice (see the module doc).

    Examples:
        >>> import numpy as np, ctxppl as ctx
        >>> from distributed import Client, LocalCluster
        >>> from ctxppl.online._shards import ShardSet
        >>> with LocalCluster(n_workers=2, processes=False,
        ...                   dashboard_address="127.0.0.1:0") as cl, \\
        ...         Client(cl) as client:
        ...     s = ShardSet(client, ctx.online.RandomEffects(ctx.online.ridge(), 1), 4)
        ...     len(s.copies), len({c.workers for c in s.copies})
        (4, 2)
    """

    def __init__(self, client: Any, table: RandomEffects, num_shards: int, threads: int = 1,
                 backup: bool = True):
        if num_shards < 1:
            raise ValueError(f"`num_shards` must be positive; got {num_shards}.")
        workers = sorted(client.scheduler_info()["workers"])
        if not workers:
            raise ValueError("the Dask cluster has no workers.")
        self.client = client
        self.template = table
        self.num_shards = int(num_shards)
        self.threads = int(threads)
        self.backup = bool(backup)
        self.copies: list[_Copies] = []
        futures = []
        for i, part in enumerate(self._split(table)):
            part = _new_shard(part, self.threads)
            w = workers[i % len(workers)]
            b = workers[(i + 1) % len(workers)] if backup and len(workers) > 1 else None
            p = client.scatter([part], workers=[w], hash=False)[0]
            c = client.scatter([part], workers=[b], hash=False)[0] if b is not None else None
            self.copies.append(_Copies(p, c, (w, b)))
            futures += [p, c]
        await_all(client, futures, set(workers) - {None})

    def _split(self, table: RandomEffects) -> list[RandomEffects]:
        sid = shard_of(table.keys, self.num_shards) if len(table) else np.zeros(0, np.int64)
        parts = []
        for i in range(self.num_shards):
            rows = np.flatnonzero(sid == i)
            part = table.copy()
            part._state = table.state.take(rows)
            part._index = EntityIndex(table.keys[rows])
            parts.append(part)
        return parts

    @property
    def workers(self) -> set[str]:
        """Workers that hold a copy of some shard."""
        return {w for c in self.copies for w in c.workers if w is not None}

    def scatter(self, i: int, data: Any) -> Any:
        """``data`` sent to shard ``i``'s primary worker."""
        # in a list: scatter would send a dict's values as separate keys
        return self.client.scatter([data], workers=[self.copies[i].workers[0]], hash=False)[0]

    def submit(self, i: int, fn: Callable, *args: Any) -> Any:
        """``fn(primary shard i, *args)`` on its worker."""
        c = self.copies[i]
        return self.client.submit(fn, c.primary, *args, workers=[c.workers[0]],
                                  allow_other_workers=False, pure=False)

    def commit(self, proposals: dict[int, Any]) -> dict[int, _Copies]:
        """New copies of the shards in ``proposals`` (primary and backup apply the same
        proposal); install them with :meth:`install` once everything finished."""
        new = {}
        for i, prop in proposals.items():
            c = self.copies[i]
            p = self.client.submit(_commit, c.primary, prop, workers=[c.workers[0]],
                                   allow_other_workers=False, pure=False)
            b = None
            if c.backup is not None:
                b = self.client.submit(_commit, c.backup, prop, workers=[c.workers[1]],
                                       allow_other_workers=False, pure=False)
            new[i] = _Copies(p, b, c.workers)
        return new

    def install(self, new: dict[int, _Copies]) -> None:
        for i, c in new.items():
            self.copies[i] = c

    def recover(self) -> int:
        """Rebuild the copies lost with a worker from the surviving ones; returns how many
        shards lost a copy. Raises if a shard lost both."""
        from ctxppl.infer._distributed import DistributedError

        alive = sorted(self.client.scheduler_info()["workers"])
        if not alive:
            raise DistributedError("every Dask worker is gone; the shards are lost.")
        fixed, futures = 0, []
        for i, c in enumerate(self.copies):
            ok = [(f, w) for f, w in ((c.primary, c.workers[0]), (c.backup, c.workers[1]))
                  if f is not None and w in alive and f.status == "finished"]
            want = 2 if self.backup and len(alive) > 1 else 1
            if len(ok) >= want:
                continue
            if not ok:
                raise DistributedError(
                    f"shard {i} lost both its copies (workers {c.workers} left); restore the "
                    "table from a checkpoint (save / from_local).")
            src, src_w = ok[0]
            b = None
            others = [w for w in alive if w != src_w]
            if want == 2 and others:
                b_w = others[i % len(others)]
                b = self.client.submit(_copy, src, workers=[b_w], allow_other_workers=False,
                                       pure=False)
                futures.append(b)
            else:
                b_w = None
            self.copies[i] = _Copies(src, b, (src_w, b_w))
            fixed += 1
        await_all(self.client, futures, set(alive))
        return fixed

    def gather(self) -> RandomEffects:
        """All shards merged into one local table (rows ordered by shard)."""
        shards = self.client.gather([c.primary for c in self.copies])
        out = self.template.copy()
        states = [s.state for s in shards]
        out._state = EntityState(*(np.concatenate(parts) for parts in zip(*states,
                                                                           strict=True)))
        keys = [s.keys for s in shards if len(s)]
        out._index = EntityIndex(np.concatenate(keys) if keys else [])
        return out


def run_transaction(sets: list[ShardSet], attempt: Callable[[], tuple[list, Any]],
                    max_retries: int = 3) -> tuple[Any, int]:
    """Run ``attempt`` (it submits a batch and returns ``(new copies per set, result)``
    after everything finished) until it succeeds without losing a worker; install the new
    copies. Returns ``(result, retries)``."""
    from ctxppl.infer._distributed import DistributedError

    for retry in range(max_retries + 1):
        try:
            new, result = attempt()
        except WorkerLost:
            for s in sets:
                s.recover()
            continue
        for s, n in zip(sets, new, strict=True):
            s.install(n)
        return result, retry
    raise DistributedError(f"the batch failed {max_retries + 1} times in a row because "
                           "workers left the cluster; nothing was applied.")
