"""Faults leave the state untouched and name the entity; checkpoints resume exactly."""

import numpy as np
import pytest

import ctxppl as ctx
from ctxppl.online import UpdateError

D = 3


def design(rng, n):
    x = rng.normal(size=(n, D))
    x[:, 0] = 1.0
    return x


def snapshot(re):
    return [a.copy() for a in re.state] + [re.keys.copy(), re.step]


def assert_same(before, re):
    after = snapshot(re)
    assert len(before) == len(after)
    for a, b in zip(before[:-1], after[:-1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert before[-1] == after[-1]


@pytest.fixture
def table(rng):
    """A Bernoulli table with two entities already updated once (step 0)."""
    re = ctx.online.RandomEffects(ctx.online.bayes_logistic(1.0), D)
    e = np.repeat(["alice", "bob"], 16)
    re.update(e, design(rng, 32), (rng.random(32) < 0.5).astype(float), step=0)
    return re


def batch(rng, n=48):
    e = np.repeat(["alice", "bob", "carol"], n // 3)
    return e, design(rng, n), (rng.random(n) < 0.5).astype(float)


@pytest.mark.parametrize("where", ["X", "y", "offset", "weight"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_values_name_the_entity(table, rng, where, bad):
    e, x, y = batch(rng)
    off, w = np.zeros(48), np.ones(48)
    arrays = {"X": x, "y": y, "offset": off, "weight": w}
    i = 20  # a record of bob
    if where == "X":
        x[i, 1] = bad
    else:
        arrays[where][i] = bad
    before = snapshot(table)
    with pytest.raises(UpdateError, match=r"entity 'bob' \(record 20\): non-finite") as err:
        table.update(e, x, y, offset=off, weight=w, step=1)
    assert err.value.entities == ["bob"]
    assert_same(before, table)


@pytest.mark.parametrize(("family", "label", "why"), [
    ("bernoulli", 2.0, "expected 0 or 1"), ("bernoulli", -1.0, "expected 0 or 1"),
    ("poisson", -1.0, "non-negative integer"), ("poisson", 0.5, "non-negative integer")])
def test_labels_outside_the_support(rng, family, label, why):
    re = ctx.online.RandomEffects(ctx.online.rule(family), D)
    e, x, y = batch(rng)
    re.update(e, x, y, step=0)
    before = snapshot(re)
    y = y.copy()
    y[40] = label  # carol
    with pytest.raises(UpdateError, match=rf"entity 'carol' \(record 40\).*{why}"):
        re.update(e, x, y, step=1)
    assert_same(before, re)


def test_negative_weight(table, rng):
    e, x, y = batch(rng)
    w = np.ones(48)
    w[0] = -1.0
    before = snapshot(table)
    with pytest.raises(UpdateError, match="entity 'alice'.*negative record weight"):
        table.update(e, x, y, weight=w, step=1)
    assert_same(before, table)


def test_failure_to_converge_names_entity_and_changes_nothing(rng):
    """One Newton iteration cannot converge from the prior: the update must raise, not
    return the old model as if updated."""
    re = ctx.online.RandomEffects(ctx.online.bayes_logistic(1.0, max_iter=1), D)
    e, x, y = batch(rng)
    before = snapshot(re)
    with pytest.raises(UpdateError, match=r"entity 'alice': the Newton solve did not converge "
                                          r"in 1 iterations.*\(3 entities failed\)") as err:
        re.update(e, x, y, step=0)
    assert err.value.entities == ["alice", "bob", "carol"]
    assert err.value.reason == "did not converge"
    assert_same(before, re)
    assert len(re) == 0


def test_overflow_is_reported_not_committed(rng):
    """Poisson with an absurd offset overflows float32: non-finite objective -> error."""
    re = ctx.online.RandomEffects(ctx.online.bayes_poisson(1.0), D)
    e, x, _ = batch(rng)
    off = np.zeros(48)
    off[e == "bob"] = 200.0
    with pytest.raises(UpdateError, match="entity 'bob': non-finite"):
        re.update(e, x, np.ones(48), offset=off, step=0)
    assert len(re) == 0


def test_unknown_feature_name_names_entity_and_feature():
    recs = [{"entity": f"u{i % 2 + 1}", "label": i % 3 == 0,
             "features": [("season", ["winter", "summer"][i % 2], 1.0)]} for i in range(20)]
    imap = ctx.online.IndexMap.from_records(recs)
    re = ctx.online.RandomEffects(ctx.online.bayes_logistic(), imap)
    re.update_records(recs, step=0)
    before = snapshot(re)
    new = recs + [{"entity": "u3", "label": 1, "features": [("season", "autumn", 1.0)]}]
    with pytest.raises(UpdateError, match=r"entity 'u3' \(record 20\) has feature "
                                          r"\('season', 'autumn'\)") as err:
        re.update_records(new, step=1)
    assert err.value.entities == ["u3"] and err.value.reason == "unknown feature"
    assert_same(before, re)


def test_bad_shapes_and_keys_raise_before_work(table, rng):
    e, x, y = batch(rng)
    with pytest.raises(ValueError, match=r"`X` must have shape \(48, 3\)"):
        table.update(e, x[:, :2], y)
    with pytest.raises(ValueError, match=r"`y` must have shape \(48,\)"):
        table.update(e, x, y[:-1])
    with pytest.raises(TypeError, match="entity keys of this table are strs"):
        table.update(np.arange(48), x, y)


def test_replay_is_idempotent(table, rng):
    e, x, y = batch(rng)
    rep = table.update(e, x, y, step=1)
    assert rep.num_entities == 3 and rep.num_new == 1 and rep.skipped == []
    after = snapshot(table)
    again = table.update(e, x, y, step=1)  # the same minibatch delivered twice
    assert again.num_entities == 0 and sorted(again.skipped) == ["alice", "bob", "carol"]
    assert_same(after, table)
    older = table.update(e, x, y, step=0)
    assert older.num_entities == 0
    assert_same(after, table)


def stream(rng, k=6):
    out = []
    for _ in range(k):
        e = rng.permutation(np.repeat(np.arange(5), rng.integers(9, 17, size=5)))
        out.append((e, design(rng, e.size), (rng.random(e.size) < 0.4).astype(float)))
    return out


def test_crash_and_resume_loses_nothing_and_applies_nothing_twice(rng, tmp_path):
    """Checkpoint after step 2, keep going to step 4, 'crash', restore, replay the stream
    from its start: the result equals the uninterrupted run bit for bit."""
    data = stream(rng)
    rule = ctx.online.bayes_logistic(2.0, delta=0.9)
    full = ctx.online.RandomEffects(rule, D)
    for step, (e, x, y) in enumerate(data):
        full.update(e, x, y, step=step)

    live = ctx.online.RandomEffects(rule, D)
    ckpt = tmp_path / "re.npz"
    for step, (e, x, y) in enumerate(data[:5]):
        live.update(e, x, y, step=step)
        if step == 2:
            live.save(ckpt)
    del live  # crash
    resumed = ctx.online.RandomEffects.load(ckpt)
    assert resumed.step == 2
    reports = [resumed.update(e, x, y, step=step) for step, (e, x, y) in enumerate(data)]
    assert [r.num_entities for r in reports[:3]] == [0, 0, 0]
    assert all(r.num_entities == 5 for r in reports[3:])
    assert_same(snapshot(full), resumed)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_save_load_round_trip_is_exact(rng, tmp_path, covariance):
    recs = [{"entity": i % 4, "label": float(rng.random() < 0.5), "offset": 0.1 * i,
             "features": [("f", str(i % 2), 1.0), ("g", "", float(rng.normal()))]}
            for i in range(40)]
    imap = ctx.online.IndexMap.from_records(recs)
    re = ctx.online.RandomEffects(ctx.online.bayes_logistic(1.0, covariance=covariance), imap,
                                  prior_mean=np.linspace(-0.5, 0.5, len(imap)))
    re.update_records(recs, step=3)
    re.save(tmp_path / "a.npz")
    back = ctx.online.RandomEffects.load(tmp_path / "a.npz")
    assert_same(snapshot(re), back)
    assert back.keys.dtype == re.keys.dtype and back.keys.tolist() == re.keys.tolist()
    assert back.features == imap and back.rule == re.rule
    np.testing.assert_array_equal(back.prior_mean, re.prior_mean)
    pd_a, pd_b = re.table(), back.table()
    assert pd_a.equals(pd_b)


def test_callable_prior_must_be_given_again_on_load(tmp_path, rng):
    re = ctx.online.RandomEffects(ctx.online.ridge(), D, prior_mean=lambda c: np.tile(c, (1, 3)))
    e, x, _ = batch(rng)
    re.update(e, x, rng.normal(size=48), context=np.ones((48, 1)))
    re.save(tmp_path / "c.npz")
    with pytest.raises(ValueError, match="prior mean was a function"):
        ctx.online.RandomEffects.load(tmp_path / "c.npz")
    back = ctx.online.RandomEffects.load(tmp_path / "c.npz", prior_mean=re.prior_mean)
    np.testing.assert_array_equal(back.state.prior_mean, np.ones((3, 3), np.float32))
