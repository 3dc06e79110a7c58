"""Where the units of a ``ctx.workflow.run`` execute: in-process, joblib (loky) or Dask."""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import Any

from ctxppl.workflow._units import Unit

__all__ = ["BACKENDS", "chunks", "execute"]

BACKENDS = ("serial", "loky", "dask")


def chunks(units: list[Unit], n_workers: int) -> list[list[Unit]]:
    groups: dict[str, list[Unit]] = collections.defaultdict(list)
    for u in units:
        groups[u.signature].append(u)
    target = max(1, math.ceil(len(units) / max(1, n_workers)))
    tasks = []
    for g in groups.values():
        for i in range(0, len(g), target):
            tasks.append(g[i:i + target])
    return sorted(tasks, key=len, reverse=True)


def execute(tasks: list[list[Unit]], runner: Callable, backend: str, n_jobs: int | None,
             client: Any) -> Any:
    """Yield lists of unit records as tasks finish."""
    if backend == "serial":
        for t in tasks:
            for u in t:  # one unit at a time: the progress bar moves per config
                yield runner([u])
        return
    if backend == "loky":
        from joblib import Parallel, delayed

        parallel = Parallel(n_jobs=n_jobs or -1, backend="loky",
                            return_as="generator_unordered")
        yield from parallel(delayed(runner)(t) for t in tasks)
        return
    # dask
    import distributed

    own = False
    if client is None:
        try:
            client = distributed.get_client()
        except ValueError:
            raise RuntimeError(
                "backend='dask' needs a Dask cluster: start one, e.g. `client = distributed."
                "Client(distributed.LocalCluster())` or `Client('tcp://scheduler:8786')`, and "
                "pass `client=client` (or create it before calling run).") from None
    elif isinstance(client, str):
        client = distributed.Client(client)
        own = True
    try:
        futures = client.map(runner, tasks, pure=False)
        for fut in distributed.as_completed(futures):
            yield fut.result()
    finally:
        if own:
            client.close()
