"""GAME back-fitting on a real Dask cluster (3 worker processes on loopback) equals the
in-process GAME, and a worker process killed in the middle of a batch loses nothing."""

import os

import jax
import numpy as np
import pytest

import ctxppl as ctx
from ctxppl.online import UpdateError

distributed = pytest.importorskip("distributed")

D = 2
TIMEOUT = 120  # seconds a batch may take: every test stops by itself, even if a worker hangs


@pytest.fixture(scope="module")
def client():
    # float64 tables compute in float64 only with JAX's x64 mode: on in the workers (also
    # when a nanny restarts one) and, through jax.enable_x64, for the in-process reference
    cluster = distributed.LocalCluster(n_workers=3, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                       env={"JAX_ENABLE_X64": "1"})
    cl = distributed.Client(cluster)
    yield cl
    cl.close()
    cluster.close()


def batches(rng, k=3, n=120):
    """Users (ints) x items (strings), logistic outcomes with a fixed-effect score."""
    out = []
    for _ in range(k):
        user = rng.integers(0, 12, n)
        item = np.array([f"item{i}" for i in rng.integers(0, 8, n)])
        x = {"user": np.column_stack([np.ones(n), rng.normal(size=n)]),
             "item": np.column_stack([np.ones(n), rng.normal(size=n)])}
        z = rng.normal(size=n)
        y = (rng.random(n) < 1 / (1 + np.exp(-(0.5 * z + 0.8 * x["user"][:, 1])))).astype(float)
        out.append((y, {"user": user, "item": item}, x, z))
    return out


def make_game(dtype, max_iter=50):
    rule = ctx.online.bayes_logistic(1.0, max_iter=max_iter)
    return ctx.online.GAME({"user": ctx.online.RandomEffects(rule, D, dtype=dtype),
                            "item": ctx.online.RandomEffects(rule, D, dtype=dtype)},
                           fixed=lambda z: 0.5 * z, passes=2)


def coefs(game, t, keys):
    return game.effects[t].coefficients(keys).astype(np.float64)


def check_equal(local, dgame, tol):
    got = dgame.gather()
    for t in ("user", "item"):
        keys = local.effects[t].keys
        assert sorted(got.effects[t].keys.tolist()) == sorted(keys.tolist())
        np.testing.assert_allclose(coefs(got, t, keys), coefs(local, t, keys), rtol=0,
                                   atol=tol)
        order_l, order_g = np.argsort(keys), np.argsort(got.effects[t].keys)
        # nothing applied twice: each entity absorbed exactly its records
        np.testing.assert_array_equal(got.effects[t].state.count[order_g],
                                      local.effects[t].state.count[order_l])
        np.testing.assert_array_equal(got.effects[t].state.step[order_g],
                                      local.effects[t].state.step[order_l])
    assert got.step == local.step


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-6), (np.float32, 1e-4)])
def test_dask_game_equals_in_process_game(client, dtype, tol):
    rng = np.random.default_rng(0)
    local, game = make_game(dtype), make_game(dtype)
    dgame = ctx.online.DaskGAME(client, game, timeout=TIMEOUT)
    assert dgame.num_shards == 3
    for step, (y, ids, x, z) in enumerate(batches(rng)):
        with jax.enable_x64(True):
            a = local.partial_fit(y, ids=ids, X=x, fixed_args=(z,), step=step)
        b = dgame.partial_fit(y, ids=ids, X=x, fixed_args=(z,), step=step)
        assert {t: (r.num_entities, r.num_records) for t, r in a.items()} == \
            {t: (r.num_entities, r.num_records) for t, r in b.items()}
    check_equal(local, dgame, tol)
    tables = dgame.tables["user"]  # state partitioned by entity: every worker owns some
    assert len({c.workers[0] for c in tables.copies}) == 3
    assert all(c.workers[0] != c.workers[1] for c in tables.copies)  # copies elsewhere

    # a solve that fails on a worker: its error names the entity, nothing changes anywhere
    y, ids, x, z = batches(rng, 1)[0]
    before = dgame.gather()
    strict = ctx.online.DaskGAME(client, make_game(dtype, max_iter=1), timeout=TIMEOUT)
    with pytest.raises(UpdateError, match="entity .*did not converge"):
        strict.partial_fit(y, ids=ids, X=x, fixed_args=(z,), step=0)
    assert len(strict.gather().effects["user"]) == 0 and strict.step == -1
    x["item"][0, 1] = np.nan  # bad data is refused before anything is sent
    with pytest.raises(UpdateError, match=r"entity .item.*non-finite features"):
        dgame.partial_fit(y, ids=ids, X=x, fixed_args=(z,), step=3)
    after = dgame.gather()
    for t in ("user", "item"):
        np.testing.assert_array_equal(after.effects[t].state.mean, before.effects[t].state.mean)
    assert dgame.step == 2 and dgame.recoveries == 0


def _die_at_next_commit():  # run on one worker by client.run
    from ctxppl.online._effects import RandomEffects

    def commit(self, proposal):
        os._exit(1)  # the worker process dies in the middle of the batch's commits

    RandomEffects.commit = commit


def test_worker_killed_mid_batch_loses_nothing(client):
    rng = np.random.default_rng(1)
    local, game = make_game(np.float64), make_game(np.float64)
    dgame = ctx.online.DaskGAME(client, game, timeout=TIMEOUT)
    data = batches(rng, k=3)
    for step, (y, ids, x, z) in enumerate(data):
        with jax.enable_x64(True):
            local.partial_fit(y, ids=ids, X=x, fixed_args=(z,), step=step)
        if step == 1:  # the second batch: one worker dies while committing
            victim = dgame.tables["user"].copies[0].workers[0]
            client.run(_die_at_next_commit, workers=[victim])
        dgame.partial_fit(y, ids=ids, X=x, fixed_args=(z,), step=step)
        if step == 1:
            assert victim not in client.scheduler_info()["workers"]  # really gone
            assert dgame.recoveries == 1  # the batch ran again, from the pre-batch states
    check_equal(local, dgame, 1e-6)
    client.wait_for_workers(3, timeout=120)  # the nanny restarted it, for the next tests


def _stall_next_commit():  # run on one worker by client.run: alive, but stuck until released
    import threading

    from ctxppl.online._effects import RandomEffects

    real = RandomEffects.commit
    RandomEffects.released = threading.Event()

    def commit(self, proposal):
        RandomEffects.commit = real
        RandomEffects.released.wait(120)  # bounded, should the test fail before releasing
        return real(self, proposal)

    RandomEffects.commit = commit


def _release():  # client.run runs it on the worker's event loop, not its busy task thread
    from ctxppl.online._effects import RandomEffects

    RandomEffects.released.set()


def test_stuck_worker_times_out_with_nothing_applied(client):
    rng = np.random.default_rng(2)
    local, game = make_game(np.float64), make_game(np.float64)
    with pytest.raises(ValueError, match=r"`timeout` must be a positive number.*got 0"):
        ctx.online.DaskGAME(client, make_game(np.float64), timeout=0)
    dgame = ctx.online.DaskGAME(client, game, timeout=120)
    (y, ids, x, z), (y2, ids2, x2, z2) = batches(rng, k=2)
    with jax.enable_x64(True):
        local.partial_fit(y, ids=ids, X=x, fixed_args=(z,), step=0)
        local.partial_fit(y2, ids=ids2, X=x2, fixed_args=(z2,), step=1)
    dgame.partial_fit(y, ids=ids, X=x, fixed_args=(z,), step=0)
    victim = dgame.tables["item"].copies[0].workers[0]
    client.run(_stall_next_commit, workers=[victim])
    dgame.timeout = 15  # a batch takes a few seconds here, even on a loaded machine
    with pytest.raises(TimeoutError, match=r"`timeout`: the batch did not finish within 15 s"):
        dgame.partial_fit(y2, ids=ids2, X=x2, fixed_args=(z2,), step=1)
    assert dgame.step == 0 and dgame.recoveries == 0  # nothing applied
    client.run(_release, workers=[victim])
    dgame.timeout = 120
    dgame.partial_fit(y2, ids=ids2, X=x2, fixed_args=(z2,), step=1)
    check_equal(local, dgame, 1e-6)  # the timed-out attempt left no trace
