"""JAX's persistent compilation cache as ``import ctxppl`` sets it up (ctxppl/_cache.py).

Every claim is checked in fresh processes, the only place the cache matters: a second
process loads what the first compiled (cache hits counted through ``jax.monitoring``), two
processes writing one folder at once leave it intact, a corrupted entry costs a warning and
a recompilation (never a wrong answer or a crash), a folder of another version is never
read, ``CTXPPL_NO_CACHE=1`` and a user's own cache settings are respected.
"""

import os

import pytest

from ctxppl._cache import ENV_DIR, ENV_OFF, cache_folder, enable_compilation_cache

from ._fresh import result, start

# `fit`: a tiny MAP fit as plain JAX + optax + NumPyro code (what a user composing with
# their own code runs): one program, compiled in ~0.3 s, above ctxppl's 0.1 s threshold
# (ctx.fit's own programs go to ctxppl's store of executables, tests/core/test_programs.py);
# `import`: only import ctxppl. Prints the cache events of the process, the folder in use,
# every warning and the fitted value.
CHILD = r"""
import json, sys, warnings
from jax import monitoring

counts = {"hits": 0, "misses": 0}
names = {"/jax/compilation_cache/cache_hits": "hits",
         "/jax/compilation_cache/cache_misses": "misses"}
monitoring.register_event_listener(
    lambda event, **kw: event in names and counts.__setitem__(names[event],
                                                              counts[names[event]] + 1))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    if len(sys.argv) > 2:  # a cache the user configured before importing ctxppl
        import jax
        jax.config.update("jax_compilation_cache_dir", sys.argv[2])
    import jax, jax.numpy as jnp, numpyro.distributions as dist
    import ctxppl  # noqa: F401 - sets up the cache

    b = None
    if sys.argv[1] == "fit":
        import optax

        opt = optax.adam(0.05)

        def fit_b(x, y):
            def loss(b):
                return -(dist.Normal(0.0, 1.0).log_prob(b)
                         + dist.Normal(b * x, 1.0).log_prob(y).sum())

            def step(c, _):
                b, s = c
                u, s = opt.update(jax.grad(loss)(b), s)
                return (optax.apply_updates(b, u), s), None

            b0 = jnp.zeros(())
            return jax.lax.scan(step, (b0, opt.init(b0)), None, length=50, unroll=10)[0][0]

        x = jnp.linspace(0.0, 1.0, 8)
        b = float(jax.jit(fit_b)(x, 2.0 * x))
print(json.dumps({**counts, "dir": jax.config.jax_compilation_cache_dir, "b": b,
                  "min_compile_secs": jax.config.jax_persistent_cache_min_compile_time_secs,
                  "warnings": [f"{w.category.__name__}: {w.message}" for w in caught]}))
"""


def _start(root, *argv, **extra):
    return start(CHILD, root, argv or ("fit",), **extra)


def _run(root, *argv, **extra):
    return result(_start(root, *argv, **extra))


def _entries(folder):
    return sorted(p for p in os.listdir(folder) if p.endswith("-cache"))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A cache written by two processes at once (same programs, same keys, same moment)."""
    root = tmp_path_factory.mktemp("cache")
    first, second = _start(root), _start(root)
    return root, [result(first), result(second)]


def test_concurrent_writers_then_a_second_process_loads_everything(written, tmp_path):
    root, writers = written
    folder = writers[0]["dir"]
    assert os.path.dirname(folder) == str(root)
    assert all(w["dir"] == folder and w["warnings"] == [] for w in writers)
    assert sum(w["misses"] for w in writers) >= 1  # something was compiled and written
    entries = _entries(folder)
    assert entries
    # a folder of another version holding garbage under the same names is never read
    other = root / "jax0.0.0-jaxlib0.0.0-ctxppl0.0.0"
    other.mkdir()
    for name in entries:
        (other / name).write_bytes(b"not an executable")
    before = {}
    for name in entries:
        with open(os.path.join(folder, name), "rb") as f:
            before[name] = f.read()
    reader = _run(root)
    assert reader["warnings"] == []
    assert reader["misses"] == 0 and reader["hits"] == len(entries) == 1, (reader, entries)
    assert reader["b"] == writers[0]["b"] == writers[1]["b"]
    assert _entries(folder) == entries
    for name, data in before.items():  # nothing rewritten, nothing torn
        with open(os.path.join(folder, name), "rb") as f:
            assert f.read() == data, name


def test_corrupted_entry_warns_and_recompiles(tmp_path):
    # a cache of its own, corrupted where it was written: jax 0.10's keys include the
    # cache folder's path (XLA's autotune-cache option points into it), so a copy of a
    # folder elsewhere is a different cache
    root = tmp_path / "root"
    first = _run(root)
    folder = first["dir"]
    # every entry cut short (which programs take long enough to be cached depends on the
    # machine's load)
    for name in _entries(folder):
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])  # a write cut short
    out = _run(root)
    assert out["b"] == first["b"]  # recompiled: the same answer
    assert any("Error reading persistent compilation cache entry" in w
               for w in out["warnings"]), out["warnings"]
    assert out["misses"] >= 1


def test_no_cache_env_leaves_jax_alone(tmp_path):
    out = _run(tmp_path / "root", "import", **{ENV_OFF: "1"})
    assert out["dir"] is None and out["hits"] == out["misses"] == 0
    assert out["min_compile_secs"] == 1.0  # JAX's default, untouched
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("how", ["env", "config"])
def test_a_cache_the_user_configured_is_kept(tmp_path, how):
    mine = str(tmp_path / "mine")
    if how == "env":
        out = _run(tmp_path / "root", "import", JAX_COMPILATION_CACHE_DIR=mine)
    else:
        out = _run(tmp_path / "root", "import", mine)
    assert out["dir"] == mine
    assert out["min_compile_secs"] == 1.0  # the user's settings, not ctxppl's
    assert not (tmp_path / "root").exists()


def test_folder_is_keyed_by_versions(tmp_path):
    env = {ENV_DIR: str(tmp_path)}
    a, b = cache_folder("1.0", env), cache_folder("1.1", env)
    assert a != b and os.path.dirname(a) == os.path.dirname(b) == str(tmp_path)
    import jax
    import jaxlib

    assert jax.__version__ in a and jaxlib.__version__ in a


def test_switches_checked_before_any_work(tmp_path):
    # off switch, a user's JAX_COMPILATION_CACHE_DIR: nothing is created or configured
    for env in ({ENV_OFF: "1", ENV_DIR: str(tmp_path / "a")},
                {ENV_OFF: "true", ENV_DIR: str(tmp_path / "a")},
                {"JAX_COMPILATION_CACHE_DIR": "x", ENV_DIR: str(tmp_path / "a")}):
        assert enable_compilation_cache("1.0", env) is None
    assert not (tmp_path / "a").exists()
