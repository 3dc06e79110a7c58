"""Entity-partitioned updates on a real Dask cluster equal the single-process run."""

import numpy as np
import pytest

import ctxppl as ctx
from ctxppl.online import UpdateError
from ctxppl.online._dask import shard_of

distributed = pytest.importorskip("distributed")

D = 3


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address="127.0.0.1:0")
    cl = distributed.Client(cluster)
    yield cl
    cl.close()
    cluster.close()


def stream(rng, k=3):
    keys = np.array([f"user{i}" for i in range(10)])
    out = []
    for _ in range(k):
        e = rng.permutation(np.repeat(keys, rng.integers(9, 17, size=keys.size)))
        x = rng.normal(size=(e.size, D))
        x[:, 0] = 1
        out.append((e, x, (rng.random(e.size) < 0.4).astype(float), 0.2 * rng.normal(size=e.size)))
    return out


def test_dask_run_equals_local_run_and_failures_change_nothing(client, rng):
    rule = ctx.online.bayes_logistic(1.5, delta=0.9)
    local = ctx.online.RandomEffects(rule, D)
    dist_re = ctx.online.DaskRandomEffects(client, ctx.online.RandomEffects(rule, D))
    assert dist_re.num_shards == 2
    for step, (e, x, y, o) in enumerate(stream(rng)):
        a = local.update(e, x, y, offset=o, step=step)
        b = dist_re.update(e, x, y, offset=o, step=step)
        assert (a.num_entities, a.num_records) == (b.num_entities, b.num_records)
    merged = dist_re.gather()
    shards = shard_of(merged.keys, 2)
    assert set(shards.tolist()) == {0, 1}  # both workers own entities
    keys = local.keys
    # same jitted function, per-entity arithmetic independent of batchmates
    np.testing.assert_allclose(merged.coefficients(keys), local.coefficients(keys),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(merged.lookup(keys)[1], local.lookup(keys)[1], rtol=1e-6)
    np.testing.assert_array_equal(merged.state.count[np.argsort(merged.keys)],
                                  local.state.count[np.argsort(local.keys)])

    # a bad record on one shard: the error names the entity, no shard changes
    e, x, y, o = stream(rng, 1)[0]
    x[np.flatnonzero(e == "user3")[0], 1] = np.nan
    with pytest.raises(UpdateError, match="entity 'user3'"):
        dist_re.update(e, x, y, offset=o, step=3)
    after = dist_re.gather()
    np.testing.assert_array_equal(after.state.mean, merged.state.mean)
    np.testing.assert_array_equal(after.state.step, merged.state.step)
    # replaying an applied step is skipped on every shard
    e, x, y, o = stream(rng, 1)[0]
    assert dist_re.update(e, x, y, offset=o, step=2).num_entities == 0

    # a solve that fails on a worker: raised on the driver, naming the entity; no shard commits
    strict = ctx.online.DaskRandomEffects(
        client, ctx.online.RandomEffects(ctx.online.bayes_logistic(1.5, max_iter=1), D))
    with pytest.raises(UpdateError, match="did not converge"):
        strict.update(e, x, y, offset=o, step=0)
    assert len(strict.gather()) == 0 and strict.step == -1
