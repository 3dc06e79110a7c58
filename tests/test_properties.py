"""Property-based tests (hypothesis) of issue 10's promises, over shapes, dtypes, NaN/inf
placement, containers and sizes:

* ``ctx.fit``, the estimators, ``ctx.mixed`` and ``RandomEffects.update`` either work or
  raise ``ValueError`` / ``TypeError`` (or a ctxppl error class) before any fit program is
  compiled -- never a raw library error, never a silent NaN;
* saved files round-trip exactly, and a damaged file is either read identically or refused
  with ``FileFormatError``; a failed save never changes an existing file.

``make test`` runs few examples per property (derandomized: the same ones every run);
``make test-slow`` runs the ``slow`` copies with many more.
"""

import logging
import os
import pathlib
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ctxppl as ctx
from ctxppl._files import FileFormatError, decode_tree, encode_tree, read_npz, write_npz

FAST = settings(max_examples=10, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
CLEAN = (ValueError, TypeError, ctx.FitError)  # FileFormatError is a ValueError


class _Compiles(logging.Handler):
    """Names of the fit programs compiled while it is attached (tiny helpers excluded)."""

    def __init__(self):
        super().__init__()
        self.programs = []

    def emit(self, record):
        msg = record.getMessage()
        name = msg.split(" with ")[0]
        if msg.startswith("Compiling ") and any(
                w in name for w in ("run", "scan", "while", "loop", "collect")):
            self.programs.append(name)


def outcome(call):
    """Run ``call``; return "ok" or the clean exception, after checking that a failure
    happened before any fit program compiled."""
    counter = _Compiles()
    logger = logging.getLogger("jax")
    logger.addHandler(counter)
    try:
        with jax.log_compiles():
            call()
    except CLEAN as e:
        assert counter.programs == [], (e, counter.programs)
        assert "np.int" not in str(e) and "np.float" not in str(e), str(e)  # plain numbers
        return e
    finally:
        logger.removeHandler(counter)
    return "ok"


# --------------------------------------------------------------------------- data
def _corrupt(draw, a, allow):
    """Maybe put NaN / inf into one cell of float array ``a``."""
    kind = draw(st.sampled_from(["none", "none", "nan", "inf"] if allow else ["none"]))
    if kind == "none" or a.size == 0 or a.dtype.kind != "f":
        return a, False
    a = a.copy()
    a.flat[draw(st.integers(0, a.size - 1))] = np.nan if kind == "nan" else np.inf
    return a, True


def _container(draw, a):
    kind = draw(st.sampled_from(["numpy", "numpy", "jax", "list", "pandas"]))
    if kind == "jax":
        return jnp.asarray(a)
    if kind == "list":
        return a.tolist()
    if kind == "pandas":
        return pd.DataFrame(a) if a.ndim == 2 else pd.Series(a)
    return a


@st.composite
def fit_inputs(draw):
    n = draw(st.sampled_from([0, 1, 4, 4, 6]))  # few shapes: compiled programs are reused
    p = draw(st.sampled_from([1, 2]))
    dtype = draw(st.sampled_from([np.float32, np.float32, np.float64, np.int32, bool]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    C = rng.normal(size=(n, draw(st.sampled_from([1, 2])))).astype(dtype)
    X = rng.normal(size=(n, p)).astype(np.float32)
    y_shape = draw(st.sampled_from([(n,), (n,), (n, 1), (n, 2), (), (n + 1,)]))
    Y = np.asarray(rng.normal(size=y_shape)).astype(np.float32)
    C, bad_c = _corrupt(draw, C, allow=True)
    X, bad_x = _corrupt(draw, X, allow=True)
    Y, bad_y = _corrupt(draw, Y, allow=True)
    bad = bad_c or bad_x or bad_y
    return _container(draw, C), _container(draw, X), _container(draw, Y), bad, (
        n, y_shape, dtype)


def model(C, X, Y=None):
    enc = ctx.encoder("enc", ctx.nn.Linear(C.shape[-1], X.shape[-1]))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with ctx.plate("rows", C.shape[0], context=C):
        w = ctx.contextual("w", enc)
        numpyro.sample("y", dist.Normal(jnp.sum(X * w, -1), sigma), obs=Y)


def check_fit(data):
    C, X, Y, bad, (n, y_shape, dtype) = data
    method = "map"
    res = outcome(lambda: ctx.fit(model, C, X, Y, key=0, method=method, progress=False,
                                  num_steps=2, window=1))
    valid = not bad and n > 0 and y_shape == (n,) and dtype is not bool
    if valid and np.dtype(dtype).kind == "f":
        assert res == "ok", res
    if bad or n == 0 or y_shape == (n + 1,) or (n > 1 and y_shape in ((n, 1), (n, 2))):
        assert isinstance(res, CLEAN), (data[3:], res)


@FAST
@given(fit_inputs())
def test_fit_works_or_fails_cleanly(data):
    check_fit(data)


@pytest.mark.slow
@SLOW
@given(fit_inputs())
def test_fit_works_or_fails_cleanly_many(data):
    check_fit(data)


# --------------------------------------------------------------------------- estimators
@st.composite
def estimator_inputs(draw):
    n = draw(st.sampled_from([0, 12, 12]))  # one valid shape: one compiled program
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    C = rng.normal(size=(n, 1)).astype(np.float32)
    X = rng.normal(size=(n, 2)).astype(np.float32)
    y = rng.normal(size=draw(st.sampled_from([(n,), (n,), (n + 1,), (n, 1, 1)])))
    C, b1 = _corrupt(draw, C, True)
    y, b2 = _corrupt(draw, y, True)
    if draw(st.booleans()):
        C = _container(draw, C)
    return C, X, y, b1 or b2, n


def check_estimator(data, tmp):
    from ctxppl.estimators import ContextualizedRegressor

    C, X, y, bad, n = data
    est = ContextualizedRegressor(max_epochs=1, width=4, depth=1, random_state=0)
    res = outcome(lambda: est.fit(C, X, y))
    if bad or n == 0 or np.shape(y) != (n,):  # (n, q) outcomes are valid; these are not
        assert isinstance(res, CLEAN), res
        return
    if res != "ok":
        assert isinstance(res, CLEAN)
        return
    path = os.path.join(tmp, "est.npz")
    est.save(path)
    back = type(est).load(path)
    np.testing.assert_array_equal(back.predict(C, X), est.predict(C, X))


@settings(FAST, max_examples=6)
@given(estimator_inputs())
def test_estimator_works_or_fails_cleanly(data):
    with tempfile.TemporaryDirectory() as tmp:
        check_estimator(data, tmp)


@pytest.mark.slow
@SLOW
@given(estimator_inputs())
def test_estimator_works_or_fails_cleanly_many(data):
    with tempfile.TemporaryDirectory() as tmp:
        check_estimator(data, tmp)


# --------------------------------------------------------------------------- ctx.mixed
@st.composite
def mixed_inputs(draw):
    n = draw(st.sampled_from([0, 1, 3, 20, 20]))
    k = draw(st.sampled_from([1, 2, 4]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    df = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n),
                       "g": rng.integers(0, k, n)})
    kind = draw(st.sampled_from(["none", "nan_y", "nan_x", "text_x", "inf_y"]))
    if n and kind == "nan_y":
        df.loc[draw(st.integers(0, n - 1)), "y"] = np.nan
    elif n and kind == "nan_x":
        df.loc[draw(st.integers(0, n - 1)), "x"] = np.nan
    elif n and kind == "inf_y":
        df.loc[draw(st.integers(0, n - 1)), "y"] = np.inf
    elif n and kind == "text_x":
        df["x"] = df["x"].astype(str)
    formula = draw(st.sampled_from(["y ~ x + (1 | g)", "y ~ x + (x | g)", "y ~ x + (1 | g",
                                    "y ~ x + 1 | g)", "y ~ (1 | nope)", "y ~ x"]))
    return df, formula


def check_mixed(data):
    df, formula = data
    res = outcome(lambda: ctx.mixed(formula, df))
    if formula.count("(") != formula.count(")") or "nope" in formula or len(df) == 0:
        assert isinstance(res, CLEAN), res
    if isinstance(res, ValueError) and formula.count("(") != formula.count(")"):
        assert "parenthes" in str(res) or "'('" in str(res), res


@FAST
@given(mixed_inputs())
def test_mixed_works_or_fails_cleanly(data):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular fits of tiny data warn, by design
        check_mixed(data)


@pytest.mark.slow
@SLOW
@given(mixed_inputs())
def test_mixed_works_or_fails_cleanly_many(data):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_mixed(data)


# --------------------------------------------------------------------------- online updates
@st.composite
def update_inputs(draw):
    n = draw(st.sampled_from([0, 1, 5]))
    d = draw(st.sampled_from([1, 2]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    ids = draw(st.sampled_from(["str", "int", "mixed", "bool"]))
    keys = {"str": [f"u{i % 3}" for i in range(n)], "int": [i % 3 for i in range(n)],
            "mixed": [i if i % 2 else str(i) for i in range(n)],
            "bool": [bool(i % 2) for i in range(n)]}[ids]
    X = rng.normal(size=draw(st.sampled_from([(n, d), (n, d), (n, d + 1), (n,)])))
    y = rng.normal(size=draw(st.sampled_from([(n,), (n,), (n + 1,)])))
    X, b1 = _corrupt(draw, X, True)
    y, b2 = _corrupt(draw, y, True)
    return keys, X, y, d, b1 or b2, ids


def check_update(data):
    keys, X, y, d, bad, ids = data
    re = ctx.online.RandomEffects(ctx.online.ridge(1.0), d)
    before = [np.copy(a) for a in re.state]
    res = outcome(lambda: re.update(keys, X, y))
    n = len(keys)
    if bad or (ids == "bool" and n) or (ids == "mixed" and n > 1) or \
            np.shape(X) != (n, d) or np.shape(y) != (n,):
        assert isinstance(res, CLEAN + (ctx.online.UpdateError,)), res
        for a, b in zip(re.state, before, strict=True):  # nothing was absorbed
            np.testing.assert_array_equal(a, b)
    elif res == "ok" and n:
        assert np.all(np.isfinite(re.predict(keys, X)))


@FAST
@given(update_inputs())
def test_online_update_works_or_fails_cleanly(data):
    check_update(data)


@pytest.mark.slow
@SLOW
@given(update_inputs())
def test_online_update_works_or_fails_cleanly_many(data):
    check_update(data)


# --------------------------------------------------------------------------- files
_dtypes = st.sampled_from([np.float32, np.float64, np.int8, np.int64, np.uint16, np.bool_,
                           np.complex64])
_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.text(max_size=5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.builds(lambda dt, shape, seed: np.asarray(
        np.random.default_rng(seed).normal(size=shape) * 9).astype(dt),
              _dtypes, st.lists(st.integers(0, 3), max_size=3).map(tuple),
              st.integers(0, 99)),
    st.builds(lambda dt, v: dt(v), st.sampled_from([np.float32, np.int64]),
              st.integers(-5, 5)))
_tree = st.recursive(_leaf, lambda kids: st.one_of(
    st.lists(kids, max_size=3), st.lists(kids, max_size=3).map(tuple),
    st.dictionaries(st.one_of(st.text(max_size=4), st.integers(-3, 3)), kids, max_size=3)),
    max_leaves=12)


def _same(a, b):
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif isinstance(a, np.ndarray | np.generic):
        assert a.dtype == b.dtype and np.shape(a) == np.shape(b)
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    else:
        assert a == b


def check_files(tree, flips):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.npz")
        arrays = {}
        write_npz(path, arrays, {"format": "ctxppl-cache/1", "t": encode_tree(tree, arrays)})
        got, meta = read_npz(path, expect="ctxppl-cache")
        _same(tree, decode_tree(meta["t"], got))
        good = pathlib.Path(path).read_bytes()
        for arrays, meta in (({}, {"format": "ctxppl-cache/1", "f": {1, 2}}),
                             ({"o": np.array([tree, None], dtype=object)}, {})):
            with pytest.raises(TypeError):  # unsaveable: refused before the file is opened
                write_npz(path, arrays, meta)
        assert pathlib.Path(path).read_bytes() == good and os.listdir(tmp) == ["t.npz"]
        for pos, cut in flips:  # damaged copies: identical content, or FileFormatError
            data = bytearray(good)
            if cut:
                data = data[: pos % len(data)]
            else:
                data[pos % len(data)] ^= 0xA5
            bad = os.path.join(tmp, "bad.npz")
            pathlib.Path(bad).write_bytes(bytes(data))
            try:
                got, meta = read_npz(bad, expect="ctxppl-cache")
            except FileFormatError as e:
                assert repr(bad) in str(e)
                continue
            _same(tree, decode_tree(meta["t"], got))


_flips = st.lists(st.tuples(st.integers(0, 10**6), st.booleans()), max_size=6)


@FAST
@given(_tree, _flips)
def test_files_round_trip_and_damage_is_detected(tree, flips):
    check_files(tree, flips)


@pytest.mark.slow
@SLOW
@given(_tree, _flips)
def test_files_round_trip_and_damage_is_detected_many(tree, flips):
    check_files(tree, flips)
