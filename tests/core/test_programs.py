"""The store of compiled programs (ctxppl/_programs.py), checked in fresh processes.

A second process fitting and predicting the same model loads both programs from the store
(``/ctxppl/programs/hit`` events, no new files), the fit's before its model checks (a
prefetch), runs both ahead of their check (the guess files name them) and gets bit-identical
results; a model that differs by one constant gets its own programs and its own answer,
although the guess (same code, names and shapes) ran the old program ahead: the key is the
traced program, never the code's name; a corrupted entry is reported by name, rebuilt and
gives the right answer; a program run early on the arrays it closed over last time is
dropped when they changed; a program with a progress-bar callback is never stored; two processes
writing one store at once leave readable entries; ``CTXPPL_NO_CACHE=1`` stores nothing.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctxppl._programs import GUESS, SUFFIX, stored_jit

from ._fresh import result, start

# A MAP fit + predict of `b * x` with noise `SCALE`; prints the store's events, the fitted
# value, the prediction and every warning.
CHILD = r"""
import json, sys, warnings
from jax import monitoring

counts = {"hit": 0, "miss": 0, "unstored": 0, "ahead": 0, "ahead_discarded": 0,
          "prefetched": 0}
def listen(event, **kw):
    if event.startswith("/ctxppl/programs/"):
        counts[event.rsplit("/", 1)[1]] += 1
monitoring.register_event_listener(listen)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import jax.numpy as jnp, numpyro, numpyro.distributions as dist
    import ctxppl as ctx

    SCALE = float(sys.argv[1])
    progress = len(sys.argv) > 2

    def model(x, y=None):
        b = numpyro.sample("b", dist.Normal(0.0, 1.0))
        with ctx.plate("n", x.shape[0]):
            numpyro.deterministic("mean", b * x)
            numpyro.sample("y", dist.Normal(b * x, SCALE), obs=y)

    x = jnp.linspace(0.0, 1.0, 8)
    fit = ctx.fit(model, x, 2.0 * x, key=0, num_steps=1000, learning_rate=0.05,
                  progress=progress)
    mean = fit.predict(jnp.array([1.0, 2.0]))["mean"]
print(json.dumps({**counts, "b": float(fit.params["b"]), "mean": [float(m) for m in mean],
                  "warnings": [f"{w.category.__name__}: {w.message}" for w in caught]}))
"""


def _start(root, *argv, **extra):
    return start(CHILD, root, argv or ("1.0",), **extra)


def _run(root, *argv, **extra):
    return result(_start(root, *argv, **extra))


def _stored(root, suffix=SUFFIX):
    return sorted(os.path.join(dirpath, f) for dirpath, _, files in os.walk(root)
                  for f in files if f.endswith(suffix))


def _exact(scale):
    """The MAP of b: prior N(0, 1), y = 2x observed with noise `scale`, x on 8 points."""
    x = np.linspace(0.0, 1.0, 8)
    prec = 1.0 + np.sum(x * x) / scale**2
    return np.sum(x * 2.0 * x) / scale**2 / prec


def test_second_process_loads_both_programs_and_agrees_bit_for_bit(tmp_path):
    first = _run(tmp_path)
    files = _stored(tmp_path)
    assert (first["miss"], first["hit"]) == (2, 0), first  # fit and predict, both new
    assert len(files) == 2 and any("run_opt" in f for f in files), files
    second = _run(tmp_path)
    assert (second["hit"], second["miss"]) == (2, 0), second
    assert (second["ahead"], second["ahead_discarded"]) == (2, 0), second  # both ran early
    assert second["prefetched"] == 1, second  # ctx.fit loaded its program before its checks
    assert _stored(tmp_path) == files  # nothing new written
    assert second["b"] == first["b"] and second["mean"] == first["mean"]
    for guess in _stored(tmp_path, GUESS):  # each names a stored program and its run time
        with open(guess) as f:
            record = json.load(f)
        name = os.path.basename(guess).split("-")[0]
        assert os.path.join(os.path.dirname(guess), f"{name}-{record['key']}{SUFFIX}") in files
        assert 0 < record["seconds"] < 60
    assert abs(first["b"] - _exact(1.0)) < 1e-3  # and it is the right answer
    assert first["mean"] == pytest.approx([first["b"], 2 * first["b"]], rel=1e-6)
    assert not [w for w in first["warnings"] + second["warnings"] if "ctxppl" in w], first


def test_a_changed_model_gets_its_own_program(tmp_path):
    a = _run(tmp_path, "1.0")
    b = _run(tmp_path, "0.5")  # same code, same names, same shapes; one constant differs
    assert b["miss"] >= 1, b  # not served the first model's program
    assert b["ahead_discarded"] >= 1, b  # the guess ran the old fit ahead: outputs dropped
    assert len(_stored(tmp_path)) >= 3
    assert abs(a["b"] - _exact(1.0)) < 1e-3 and abs(b["b"] - _exact(0.5)) < 1e-3
    assert abs(a["b"] - b["b"]) > 0.1


def test_store_is_off_with_ctxppl_no_cache(tmp_path):
    out = _run(tmp_path, CTXPPL_NO_CACHE="1")
    assert out["hit"] + out["miss"] + out["unstored"] == 0, out
    assert _stored(tmp_path) == []
    assert abs(out["b"] - _exact(1.0)) < 1e-3
    stored = _run(tmp_path / "on")  # eqx.filter_jit and the exported program: one answer
    assert stored["miss"] == 2 and (stored["b"], stored["mean"]) == (out["b"], out["mean"])


def test_progress_bar_programs_are_compiled_but_never_stored(tmp_path):
    out = _run(tmp_path, "1.0", "progress")
    assert out["unstored"] == 1 and out["miss"] == 1, out  # the fit (callback); the predict
    assert len(_stored(tmp_path)) == 1
    assert abs(out["b"] - _exact(1.0)) < 1e-3


def test_corrupted_entry_is_reported_rebuilt_and_correct(tmp_path):
    first = _run(tmp_path)
    fit_file = next(f for f in _stored(tmp_path) if "run_opt" in f)
    with open(fit_file, "r+b") as f:  # a torn write: half the file, then garbage
        size = os.path.getsize(fit_file)
        f.truncate(size // 2)
        f.seek(0, 2)
        f.write(b"\x00garbage" * 8)
    out = _run(tmp_path)
    bad = [w for w in out["warnings"] if "cannot be read" in w]
    assert len(bad) == 1 and os.path.basename(fit_file) in bad[0], out["warnings"]
    assert (out["hit"], out["miss"]) == (1, 1), out  # predict loaded, fit rebuilt
    assert out["b"] == first["b"] and out["mean"] == first["mean"]
    again = _run(tmp_path)  # the rebuilt entry is whole again
    assert (again["hit"], again["miss"]) == (2, 0) and not again["warnings"], again


def test_two_processes_writing_at_once_leave_readable_entries(tmp_path):
    procs = [_start(tmp_path), _start(tmp_path)]
    outs = [result(p) for p in procs]
    assert outs[0]["b"] == outs[1]["b"] and outs[0]["mean"] == outs[1]["mean"]
    assert len(_stored(tmp_path)) == 2
    after = _run(tmp_path)
    assert (after["hit"], after["miss"]) == (2, 0) and not after["warnings"], after
    assert after["b"] == outs[0]["b"]


def test_stored_jit_in_process_matches_filter_jit_and_keeps_static_outputs():
    def f(x, n, key):
        return {"y": x * n + jax.random.normal(key, x.shape), "n": n, "name": "f"}

    g = stored_jit(f, "test_f")
    x = jnp.arange(3.0)
    out = g(x, 2, jax.random.key(3))
    ref = f(x, 2, jax.random.key(3))
    np.testing.assert_array_equal(out["y"], ref["y"])
    assert out["n"] == 2 and out["name"] == "f"
    out3 = g(x, 3, jax.random.key(3))  # another static value: another program
    np.testing.assert_array_equal(out3["y"], f(x, 3, jax.random.key(3))["y"])


def test_a_constant_inside_a_nested_jit_is_part_of_the_key(tmp_path, monkeypatch):
    """Two programs that print alike (an inner jit closing over an array) but differ in the
    array's values must be two programs, not one file."""
    from ctxppl import _programs

    monkeypatch.setattr(_programs, "program_folder", lambda: str(tmp_path))

    def make(c):
        inner = jax.jit(lambda y: y + c)
        return stored_jit(lambda x: jax.lax.scan(lambda s, _: (inner(s), None), x, None,
                                                 length=2)[0], "nested")

    x = jnp.zeros(3)
    a = make(np.arange(3.0, dtype=np.float32))(x)
    b = make(np.ones(3, np.float32))(x)
    np.testing.assert_array_equal(a, 2 * np.arange(3.0))
    np.testing.assert_array_equal(b, 2 * np.ones(3))
    assert len([f for f in os.listdir(tmp_path) if f.endswith(SUFFIX)]) == 2


def _finish_timers():
    """Wait for the threads that record a first run's time in its guess file."""
    import threading

    for t in threading.enumerate():
        if t.name == "ctxppl-time":
            t.join(timeout=60)


def _store_events(tmp_path, monkeypatch, request):
    """The store moved to ``tmp_path`` for this test; the list its events are appended to
    (``hit``, ``miss``, ``ahead``, ...), listened to until the test ends."""
    from jax._src import monitoring

    from ctxppl import _programs

    monkeypatch.setattr(_programs, "program_folder", lambda: str(tmp_path))
    events = []

    def listen(event, **kw):
        if event.startswith("/ctxppl/programs/"):
            events.append(event.rsplit("/")[-1])

    monitoring.register_event_listener(listen)
    request.addfinalizer(lambda: monitoring.unregister_event_listener(listen))
    return events


@pytest.mark.parametrize(("long_run", "prefetch"), [(0.0, False), (1e9, False), (0.0, True)],
                         ids=["load-first", "load-on-a-thread", "prefetched"])
def test_a_loaded_program_returns_what_jax_jit_returns(tmp_path, monkeypatch, request,
                                                        long_run, prefetch):
    """Loaded (a hit) and run ahead (a hit whose guess ran it early), a program returns the
    values, dtypes, weak types and commitment ``jax.jit`` gives, with a closed-over array
    (JAX >= 0.11 passes it as a hidden argument) and arguments on the host and the device;
    loaded before the trace (as a long run is), on a thread beside it (a short one) or on a
    thread started by an earlier ``prefetch`` (then run by that thread)."""
    from ctxppl import _programs

    monkeypatch.setattr(_programs, "LONG_RUN", long_run)
    events = _store_events(tmp_path, monkeypatch, request)
    table = np.linspace(0.0, 1.0, 1000, dtype=np.float32)  # JAX >= 0.11 hoists it

    def f(x, w, k):
        return {"y": x * jnp.asarray(table)[:3] + w, "s": jnp.sum(x) * 2.0,
                "i": jnp.argmax(x), "u": jax.random.uniform(jax.random.wrap_key_data(k)),
                "weak": 2.0 * jnp.float32(1) + 1}

    ref = jax.jit(f)
    g = stored_jit(f, "types")
    args = (np.arange(3.0, dtype=np.float32), jnp.ones(3), jax.random.key_data(jax.random.key(1)))
    want = ref(*args)
    for round_ in ("miss", "hit", "hit-again"):
        g._memo.clear()  # as a fresh process: build again, from the store
        if prefetch:
            g.prefetch(*args)
            assert len(g._pending) == (round_ != "miss"), round_  # a guess exists after a run
        got = g(*args)
        assert len(g._pending) == 0, round_  # the call took what was prefetched
        _finish_timers()
        for k in want:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, (round_, k)
            assert got[k].weak_type == want[k].weak_type, (round_, k)
            assert got[k].committed == want[k].committed, (round_, k)
            np.testing.assert_array_equal(got[k], want[k])
    # stored once, then loaded twice and run ahead each time (on JAX >= 0.11 with the
    # hoisted constant stored beside the program; on 0.10 it is part of the program)
    hoisted = len(jax._src.core.jaxpr_const_args(jax.make_jaxpr(f)(*args).jaxpr)) > 0
    assert hoisted == (jax.__version_info__ >= (0, 11)), hoisted  # both paths are covered
    hit = ["prefetched", "hit"] if prefetch else ["hit"]
    assert events == ["miss", "ahead", *hit, "ahead", *hit], events
    g.prefetch(*args)  # compiled in this process already: nothing to load
    assert len(g._pending) == 0


# A Cholesky solve in a stored program, alone in its process: loading it skips the lowering
# that sets LAPACK's kernels up (on JAX 0.10 the loaded program then called a null function
# and the process died).
LAPACK_CHILD = r"""
import json
import jax, jax.numpy as jnp, numpy as np
from jax import monitoring
from ctxppl._programs import stored_jit

counts = {"hit": 0, "miss": 0}
monitoring.register_event_listener(
    lambda e, **kw: e.rsplit("/", 1)[1] in counts and e.startswith("/ctxppl/programs/")
    and counts.__setitem__(e.rsplit("/", 1)[1], counts[e.rsplit("/", 1)[1]] + 1))
solve = stored_jit(lambda a, b: jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(a), b),
                   "lapack_solve")
a = np.array([[4.0, 1.0], [1.0, 3.0]], np.float32)
x = solve(a, np.array([1.0, 2.0], np.float32))
print(json.dumps({**counts, "x": [float(v) for v in x]}))
"""


def test_a_loaded_program_with_a_lapack_call_runs_in_a_fresh_process(tmp_path):
    exact = np.linalg.solve([[4.0, 1.0], [1.0, 3.0]], [1.0, 2.0])
    first = result(start(LAPACK_CHILD, tmp_path, ()))
    second = result(start(LAPACK_CHILD, tmp_path, ()))
    assert (first["miss"], second["hit"]) == (1, 1), (first, second)
    np.testing.assert_allclose(second["x"], exact, rtol=1e-6)
    assert second["x"] == first["x"]


def test_a_program_calling_python_is_never_stored(tmp_path, monkeypatch):
    """``jax.pure_callback`` has no effect in the jaxpr, but its callback is registered in
    this process only: such a program is compiled here and not stored."""
    from ctxppl import _programs

    monkeypatch.setattr(_programs, "program_folder", lambda: str(tmp_path))

    def f(x):
        y = jax.pure_callback(lambda v: np.asarray(v) * 3.0, jax.ShapeDtypeStruct((3,), x.dtype), x)
        return jax.lax.scan(lambda c, _: (c + y, None), x, None, length=2)[0]

    x = jnp.arange(3.0)
    np.testing.assert_array_equal(stored_jit(f, "calls_python")(x), 7.0 * np.arange(3.0))
    assert os.listdir(tmp_path) == []


def _closing_over(table):
    """``x * sum(table)`` for a table the function closes over (JAX >= 0.11 hoists it)."""
    def f(x):
        return x * jnp.sum(jnp.asarray(table))
    return f


def test_a_program_run_ahead_on_stored_constants_is_dropped_when_they_changed(
        tmp_path, monkeypatch, request):
    """Two functions of the same name, code and shapes that close over tables of different
    values: the second's guess runs the first's program ahead on the *first's* table (stored
    beside it on JAX >= 0.11, part of it on 0.10); the trace's key covers the constants'
    values, so those outputs are dropped and the second function gets its own program and its
    own answer. A hoisted table above ``MAX_CONSTANTS`` is not stored: that program loads but
    waits for its trace."""
    from ctxppl import _programs

    events = _store_events(tmp_path, monkeypatch, request)
    x = np.arange(3.0, dtype=np.float32)
    ones, twos = np.ones(1000, np.float32), np.full(1000, 2.0, np.float32)

    stored_jit(_closing_over(ones), "table")(x)
    _finish_timers()
    g = stored_jit(_closing_over(ones), "table")  # a fresh process, same table: run ahead
    np.testing.assert_array_equal(g(x), x * 1000.0)
    _finish_timers()
    assert events == ["miss", "ahead", "hit"], events
    events.clear()
    h = stored_jit(_closing_over(twos), "table")  # same name, code, shapes; other values
    np.testing.assert_array_equal(h(x), x * 2000.0)
    _finish_timers()
    assert events == ["ahead_discarded", "miss"], events

    events.clear()
    monkeypatch.setattr(_programs, "MAX_CONSTANTS", 100)  # a 4 kB table is now too large
    stored_jit(_closing_over(ones), "big")(x)
    _finish_timers()
    np.testing.assert_array_equal(stored_jit(_closing_over(ones), "big")(x), x * 1000.0)
    hoisted = jax.__version_info__ >= (0, 11)  # else the table is inside the program
    assert events == (["miss", "hit"] if hoisted else ["miss", "ahead", "hit"]), events


# ctx.fit_many with bootstrap resamples and early stopping on held-out members: its random
# inputs are one stored program beside the fits' own, so a warm process compiles nothing.
MANY_CHILD = r"""
import json
from jax import monitoring
counts = {"hit": 0, "miss": 0, "unstored": 0, "jax_compiles": 0}
def listen(event, **kw):
    if event.startswith("/ctxppl/programs/") and event.rsplit("/", 1)[1] in counts:
        counts[event.rsplit("/", 1)[1]] += 1
def timed(event, secs, **kw):
    if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
        counts["jax_compiles"] += 1  # a program lowered by JAX, outside the store
monitoring.register_event_listener(listen)
monitoring.register_event_duration_secs_listener(timed)
import numpy as np, numpyro, numpyro.distributions as dist
import ctxppl as ctx

def model(x, y=None):
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    with ctx.plate("n", x.shape[0]):
        numpyro.sample("y", dist.Normal(b * x, 1.0), obs=y)

x = np.linspace(0.0, 1.0, 40).astype(np.float32)
fits = ctx.fit_many(model, x, 2.0 * x, key=3, num_fits=4, num_steps=300, bootstrap=True,
                    plate="n", val_split=0.2, progress=False)
print(json.dumps({**counts, "b": np.asarray(fits.params["b"]).tolist(),
                  "w": np.asarray(fits.diagnostics["weights"]).tolist()}))
"""


def test_fit_many_in_a_warm_process_compiles_nothing(tmp_path):
    first = result(start(MANY_CHILD, tmp_path, ()))
    assert first["miss"] == 2 and first["hit"] == 0, first  # the draws and the fits
    second = result(start(MANY_CHILD, tmp_path, ()))
    assert (second["hit"], second["miss"], second["unstored"]) == (2, 0, 0), second
    assert second["jax_compiles"] == 0, second  # no eager op compiled either
    assert second["b"] == first["b"] and second["w"] == first["w"]
    w = np.asarray(first["w"])  # bootstrap counts of 40 members, 20% of them held out
    assert w.shape == (4, 40) and np.all(w == np.round(w)) and np.all((w == 0).sum(1) >= 8)
