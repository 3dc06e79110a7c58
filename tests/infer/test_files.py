"""Safe files: loading never runs code, a failed save never destroys the last good file,
a damaged file or a file of another kind is a clear error (ctx.load, estimators, online)."""

import os
import pathlib
import pickle
import re
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import ctxppl as ctx
from ctxppl._files import FileFormatError, atomic_write, read_npz, replace_folder, write_npz


def small_model(x, y=None, scale=1.0):
    m = numpyro.sample("m", dist.Normal(0.0, 10.0))
    with ctx.plate("n", x.shape[0]):
        numpyro.sample("y", dist.Normal(m * x, scale), obs=y)


def enc_model(C, Y=None):
    enc = ctx.encoder("enc", ctx.nn.Linear(C.shape[-1], 1))
    with ctx.plate("n", C.shape[0], context=C):
        w = ctx.contextual("w", enc)
        numpyro.sample("y", dist.Normal(w[..., 0], 1.0), obs=Y)


X = jnp.linspace(-1, 1, 20)
Y = 2 * X


@pytest.fixture(scope="module")
def saved_est(tmp_path_factory):
    from ctxppl.estimators import ContextualizedRegressor

    rng = np.random.default_rng(0)
    C, Xe = rng.normal(size=(30, 1)), rng.normal(size=(30, 2))
    est = ContextualizedRegressor(max_epochs=2, random_state=0, width=4, depth=1).fit(
        C, Xe, Xe[:, 0])
    path = tmp_path_factory.mktemp("est") / "est.npz"
    est.save(path)
    return est, path


@pytest.fixture(scope="module")
def saved_fit(tmp_path_factory):
    fit = ctx.fit(small_model, X, Y, key=0, progress=False, num_steps=50)
    path = tmp_path_factory.mktemp("fit") / "fit.npz"
    fit.save(path)
    return fit, path


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_a_pickled_header_runs_no_code(tmp_path):
    """The exploit of issue 10: a crafted .npz whose header unpickles to open(marker, 'w')."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.npz"
    payload = np.frombuffer(pickle.dumps({"format": 2, "x": _Evil(str(marker))}), np.uint8)
    np.savez(evil, __meta__=payload, a0=np.zeros(2))
    with pytest.raises(FileFormatError, match="older ctxppl fit format.*pickle.*Refit"):
        ctx.load(evil)
    assert not marker.exists()


def test_loading_never_imports_the_model_named_in_the_file(saved_fit, tmp_path):
    """A file naming `os:system` as its model and a shell command as its argument: loading
    and predicting must not call it (the model comes only from `model=`)."""
    fit, path = saved_fit
    marker = tmp_path / "ran"
    arrays, meta = read_npz(path, expect="ctxppl-fit", versions=(3,))
    meta["model"] = "os:system"
    meta["tree"]["args"] = {"$tuple": [f"touch {marker}"]}
    evil = tmp_path / "evil.npz"
    write_npz(evil, arrays, meta)
    back = ctx.load(evil)
    assert back.model is None and back.saved_model == "os:system"
    with pytest.raises(ValueError, match=r"saved with `os:system`.*`model=`"):
        back.predict()
    assert not marker.exists()


def test_no_pickle_in_the_package():
    root = pathlib.Path(ctx.__file__).parent
    pat = re.compile(r"pickle\.loads?\(|allow_pickle=True")
    hits = [f"{p}:{i}" for p in root.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if pat.search(line)]
    assert hits == []


def test_round_trip_keeps_encoders_kwargs_and_exact_arrays(tmp_path):
    C = jax.random.normal(jax.random.key(1), (30, 2))
    fit = ctx.fit(enc_model, C, C[:, 0], key=0, progress=False, num_steps=50)
    fit.save(tmp_path / "e.npz")
    back = ctx.load(tmp_path / "e.npz", model=enc_model)
    assert jax.tree_util.tree_structure(back.params) == jax.tree_util.tree_structure(fit.params)
    for a, b in zip(jax.tree_util.tree_leaves(fit.params), jax.tree_util.tree_leaves(back.params),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.predict()["w"], fit.predict()["w"])
    # without the model the encoder stays a {key path: array} dict, with a warning
    with pytest.warns(UserWarning, match="key path"):
        bare = ctx.load(tmp_path / "e.npz")
    assert isinstance(bare.params["enc$params"], dict)
    # a plain kwarg (float) round-trips as the same Python type
    fit2 = ctx.fit(small_model, X, Y, key=0, progress=False, num_steps=20,
                   model_kwargs={"scale": 0.5})
    fit2.save(tmp_path / "k.npz")
    assert ctx.load(tmp_path / "k.npz", model=small_model).kwargs == {"scale": 0.5}


def test_failed_save_keeps_the_previous_file(saved_fit, tmp_path):
    fit, path = saved_fit
    target = tmp_path / "good.npz"
    target.write_bytes(path.read_bytes())
    before = target.read_bytes()
    # a fit whose model kwarg is a function cannot be saved: the error names it, no file is
    # touched, nothing is left behind
    fn_fit = ctx.Fit(model=small_model, args=fit.args, kwargs={"scale": lambda: 1.0},
                     method=fit.method, params=fit.params, samples=None,
                     diagnostics=fit.diagnostics, options=fit.options, key=fit.key,
                     param_names=fit.param_names)
    with pytest.raises(TypeError, match=r"model_kwargs\['scale'\] is a callable"):
        fn_fit.save(target)
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["good.npz"]
    assert ctx.load(target, model=small_model).method == fit.method


def test_atomic_write_failure_mid_write_leaves_old_file(tmp_path):
    p = tmp_path / "f.bin"
    atomic_write(p, lambda fh: fh.write(b"good"))
    mode = os.stat(p).st_mode

    def boom(fh):
        fh.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(p, boom)
    assert p.read_bytes() == b"good" and os.listdir(tmp_path) == ["f.bin"]
    atomic_write(p, lambda fh: fh.write(b"new"))
    assert p.read_bytes() == b"new" and os.stat(p).st_mode == mode
    with pytest.raises(TypeError, match="JSON"):  # checked before the file is opened
        write_npz(p, {"a": np.ones(1)}, {"f": object()})
    with pytest.raises(TypeError, match="object"):
        write_npz(p, {"a": np.array([None])}, {})
    assert p.read_bytes() == b"new"


def test_replace_folder_swaps_whole_folder_or_nothing(tmp_path):
    out = tmp_path / "out"
    with replace_folder(out) as d:
        pathlib.Path(d, "a.csv").write_text("1")
        pathlib.Path(d, "old.png").write_text("x")
    with pytest.raises(RuntimeError):
        with replace_folder(out) as d:
            pathlib.Path(d, "a.csv").write_text("2")
            raise RuntimeError("fit diverged")
    assert sorted(os.listdir(out)) == ["a.csv", "old.png"] and (out / "a.csv").read_text() == "1"
    with replace_folder(out) as d:  # a new run owns the folder: no stale files
        pathlib.Path(d, "a.csv").write_text("3")
    assert os.listdir(out) == ["a.csv"] and os.listdir(tmp_path) == ["out"]


def _damaged(path, tmp_path):
    data = path.read_bytes()
    out = {"empty": b"", "text": b"hello, world\n", "truncated": data[: len(data) // 2],
           "tail-cut": data[:-10]}
    for i, pos in enumerate(np.linspace(0, len(data) - 1, 25).astype(int)):
        b = bytearray(data)
        b[pos] ^= 0x55
        out[f"flip{i}@{pos}"] = bytes(b)
    for name, content in out.items():
        p = tmp_path / f"{name}.npz"
        p.write_bytes(content)
        yield name, p


def test_damaged_fit_files_raise_a_clear_error(saved_fit, tmp_path):
    """Every damaged variant either loads the identical fit (a flip in a field no check
    covers, e.g. a timestamp) or raises FileFormatError naming the file; nothing else."""
    fit, path = saved_fit
    errors = 0
    for name, p in _damaged(path, tmp_path):
        try:
            back = ctx.load(p, model=small_model)
        except FileFormatError as e:
            assert repr(str(p)) in str(e), name
            errors += 1
            continue
        np.testing.assert_array_equal(back.params["m"], fit.params["m"])
    assert errors >= 20
    with pytest.raises(FileFormatError, match="truncated or damaged"):
        ctx.load(tmp_path / "truncated.npz")
    with pytest.raises(FileFormatError, match="not an .npz archive"):
        ctx.load(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError, match="no such file"):
        ctx.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "plain.npz", x=np.ones(2))
    with pytest.raises(FileFormatError, match="without a ctxppl header"):
        ctx.load(tmp_path / "plain.npz")


def test_files_of_another_kind_name_their_kind(saved_fit, saved_est, tmp_path):
    from ctxppl.estimators import ContextualizedClassifier, ContextualizedRegressor

    fit, fit_path = saved_fit
    _, est_path = saved_est
    with pytest.raises(FileFormatError, match="is a ctxppl estimator file"):
        ctx.load(est_path)
    with pytest.raises(FileFormatError, match="is a ctxppl fit file.*ctx.load"):
        ContextualizedRegressor.load(fit_path)
    with pytest.raises(TypeError, match="holds a ContextualizedRegressor"):
        ContextualizedClassifier.load(est_path)
    re_ = ctx.online.RandomEffects(ctx.online.ridge(), 1)
    re_.save(tmp_path / "re.npz")
    with pytest.raises(FileFormatError, match="RandomEffects checkpoint"):
        ctx.load(tmp_path / "re.npz")
    with pytest.raises(FileFormatError, match="is a ctxppl fit file"):
        ctx.online.RandomEffects.load(fit_path)
    with pytest.raises(FileFormatError, match="is a ctxppl fit file"):
        ctx.online.GAME.load(fit_path)


def test_estimator_file_cannot_name_an_arbitrary_class(saved_est, tmp_path):
    """An estimator file naming `subprocess.Popen` (with a shell command as its
    parameters) must not instantiate it."""
    from ctxppl.estimators import ContextualizedRegressor

    arrays, header = read_npz(saved_est[1], expect="ctxppl-estimator")
    marker = tmp_path / "ran"
    header["class"] = "subprocess.Popen"
    header["params"] = {"args": f"touch {marker}", "shell": True}
    write_npz(tmp_path / "evil.npz", arrays, header, header="__header__")
    with pytest.raises(FileFormatError, match="not a ctxppl estimator"):
        ContextualizedRegressor.load(tmp_path / "evil.npz")
    assert not marker.exists()


def test_estimator_failed_save_keeps_previous_file(saved_est, tmp_path, monkeypatch):
    est, path = saved_est
    (tmp_path / "est.npz").write_bytes(path.read_bytes())
    before = (tmp_path / "est.npz").read_bytes()
    monkeypatch.setattr(est, "learning_rate", lambda step: 0.1)  # not JSON: fails first
    with pytest.raises(TypeError, match="learning_rate"):
        est.save(tmp_path / "est.npz")
    assert (tmp_path / "est.npz").read_bytes() == before
    assert os.listdir(tmp_path) == ["est.npz"]


def test_zip_member_crc_is_checked(saved_fit, tmp_path):
    """A flip inside an array's bytes is caught by the zip CRC, not returned as data."""
    _, path = saved_fit
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("a0.npy")
    data = bytearray(path.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + info.file_size - 1] ^= 0xFF
    p = tmp_path / "flip.npz"
    p.write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match="CRC"):
        ctx.load(p)
