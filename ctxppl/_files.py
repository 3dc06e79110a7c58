r"""Safe files: every ctxppl writer and reader of ``.npz`` files goes through here.

* Writes are atomic: the bytes go to a temporary file in the target's folder, which is
  flushed, fsynced and ``os.replace``\ d over the target (then the folder is fsynced), so a
  crash or an error mid-write leaves the previous file exactly as it was. Everything is
  checked (JSON-serialisable metadata, numeric arrays) *before* any file is opened.
* Reads never unpickle: metadata is JSON, arrays are read with ``allow_pickle=False``, and a
  damaged file, a file of another kind or a file of an older format is reported as a
  :class:`FileFormatError` that says what the file is and what was expected.
* :func:`replace_folder` does the same for a whole output folder (the command line's).

This module is the lowest layer of the package: it imports nothing from ctxppl.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

import numpy as np

__all__ = ["FileFormatError", "atomic_write", "write_npz", "read_npz", "replace_folder",
           "encode_tree", "decode_tree", "file_sha256", "KINDS"]

#: Format-name prefix -> (what the file is, how to load it). Used to say "this is a <kind>
#: file, load it with <how>" when a file of one kind is given to the loader of another.
KINDS: dict[str, tuple[str, str]] = {
    "ctxppl-fit": ("a ctxppl fit file", "ctx.load(path, model=...)"),
    "ctxppl-estimator": ("a ctxppl estimator file", "<EstimatorClass>.load(path)"),
    "ctxppl.online.RandomEffects": ("a ctxppl.online.RandomEffects checkpoint",
                                    "ctx.online.RandomEffects.load(path)"),
    "ctxppl.online.GAME": ("a ctxppl.online.GAME checkpoint", "ctx.online.GAME.load(path)"),
    "ctxppl-cache": ("a ctx.workflow cache entry", "ctx.workflow.run(..., cache=folder)"),
}

_HEADERS = ("__meta__", "__header__")  # the JSON record's array name (estimators: __header__)


class FileFormatError(ValueError):
    """A file is damaged, of another kind, or of a format this version cannot read.

    Examples:
        >>> import os, tempfile
        >>> from ctxppl._files import read_npz
        >>> p = os.path.join(tempfile.mkdtemp(), "x.npz")
        >>> with open(p, "wb") as f:
        ...     _ = f.write(b"not a zip")
        >>> read_npz(p, expect="ctxppl-fit")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ctxppl._files.FileFormatError: ...x.npz' is not a ctxppl fit file: it is not an .npz ...
    """


# --------------------------------------------------------------------------- writing
def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would, for a moment, for all threads)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (best effort: not every platform allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(fh)`` on a temporary file next to ``path``, then move it over ``path``.

    The temporary file is flushed and fsynced before ``os.replace``; on any error it is
    removed and ``path`` is left untouched (or absent, if it did not exist).

    Args:
        path: The file to (re)place.
        write: Writes the whole content to the binary file object it is given.

    Examples:
        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "a.txt")
        >>> atomic_write(p, lambda fh: fh.write(b"one"))
        >>> def broken(fh):
        ...     fh.write(b"half")
        ...     raise RuntimeError("disk on fire")
        >>> atomic_write(p, broken)
        Traceback (most recent call last):
        ...
        RuntimeError: disk on fire
        >>> import pathlib
        >>> pathlib.Path(p).read_text(), os.listdir(os.path.dirname(p))  # unchanged, no leftovers
        ('one', ['a.txt'])
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path!r}: its folder {folder!r} does not exist.")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path!r}: it is a folder; give a file name.")
    mode = (os.stat(path).st_mode & 0o7777) if os.path.exists(path) else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


def _check_arrays(arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for name, value in arrays.items():
        if name in _HEADERS:
            raise ValueError(f"array name {name!r} is reserved for the file's header.")
        a = np.asarray(value)
        if a.dtype.hasobject:
            raise TypeError(f"array {name!r} has dtype {a.dtype}; only numeric, boolean and "
                            "string arrays can be saved (object arrays would need pickle).")
        out[name] = a
    return out


def write_npz(path: str | os.PathLike, arrays: Mapping[str, Any], meta: Mapping[str, Any],
              *, header: str = "__meta__") -> None:
    """Write ``arrays`` plus JSON ``meta`` to the ``.npz`` file ``path``, atomically.

    ``meta`` must be JSON-serialisable and the arrays numeric/boolean/string; both are
    checked before the file is opened, so a failed save never touches an existing file.

    Args:
        path: Target file.
        arrays: Name -> array.
        meta: The JSON header (should hold a ``"format"`` such as ``"ctxppl-fit/3"``).
        header: Name of the header entry inside the archive.

    Examples:
        >>> import os, tempfile, numpy as np
        >>> p = os.path.join(tempfile.mkdtemp(), "t.npz")
        >>> write_npz(p, {"a": np.arange(3)}, {"format": "ctxppl-cache/1"})
        >>> arrays, meta = read_npz(p, expect="ctxppl-cache")
        >>> arrays["a"].tolist(), meta["format"]
        ([0, 1, 2], 'ctxppl-cache/1')
    """
    try:
        text = json.dumps(dict(meta))
    except (TypeError, ValueError) as e:
        raise TypeError(f"cannot save {os.fspath(path)!r}: its metadata is not "
                        f"JSON-serialisable ({e}).") from None
    checked = _check_arrays(arrays)
    atomic_write(path, lambda fh: np.savez(fh, **{header: np.asarray(text)}, **checked))


# --------------------------------------------------------------------------- reading
def _describe(fmt: Any) -> str:
    if not isinstance(fmt, str):
        return f"a file of unknown format {fmt!r}"
    name = fmt.rpartition("/")[0] or fmt
    what, how = KINDS.get(name, (f"a file of format {fmt!r}", ""))
    return what + (f" (load it with {how})" if how else "")


def read_npz(path: str | os.PathLike, *, expect: str,
             versions: tuple[int, ...] = (1,)) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read an ``.npz`` written by :func:`write_npz`, without unpickling anything.

    Args:
        path: The file.
        expect: The format name it must have (a key of :data:`KINDS`, e.g. ``"ctxppl-fit"``).
        versions: Format versions this reader understands.

    Returns:
        ``(arrays, meta)``.

    Raises:
        FileNotFoundError: no such file.
        FileFormatError: not an ``.npz``, truncated / damaged, of another kind, or of an
            older format (saying which, and what to do).

    Examples:
        See :func:`write_npz`.
    """
    path = os.fspath(path)
    what = KINDS.get(expect, (f"a {expect} file", ""))[0]

    def fail(why: str) -> FileFormatError:
        return FileFormatError(f"{path!r} is not {what}: {why}.")

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r} (expected {what}).")
    if os.path.isdir(path):
        raise FileFormatError(f"{path!r} is a folder; expected {what} (an .npz file).")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise fail("it is not an .npz archive" + (" (the file is empty)" if not magic else ""))
    try:
        with zipfile.ZipFile(path) as zf:  # check every member's CRC before parsing any
            bad = zf.testzip()
        if bad is not None:
            raise zipfile.BadZipFile(f"member {bad!r} fails its CRC check")
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            head = next((h for h in _HEADERS if h in names), None)
            if head is None:
                raise fail("it is an .npz archive without a ctxppl header (written by "
                           "something else)")
            raw = z[head]
            if raw.dtype == np.uint8:  # ctxppl <= 0.1 fit files: a pickled header
                raise FileFormatError(
                    f"{path!r} was written by an older ctxppl fit format whose metadata is a "
                    "Python pickle; ctxppl no longer reads such files, because loading a pickle "
                    "can run arbitrary code. Refit and save the fit again with this version.")
            arrays = {k: z[k] for k in names if k != head}
    except FileFormatError:
        raise
    except (zipfile.BadZipFile, zlib.error, struct.error, EOFError, OSError, KeyError,
            ValueError, IndexError, NotImplementedError, RuntimeError, MemoryError) as e:
        raise fail(f"it looks truncated or damaged ({type(e).__name__}: {e})") from None
    try:
        meta = json.loads(str(raw))
    except ValueError as e:
        raise fail(f"its header is damaged ({e})") from None
    if not isinstance(meta, dict):
        raise fail("its header is damaged (not a JSON object)")
    fmt = meta.get("format")
    name, _, version = fmt.rpartition("/") if isinstance(fmt, str) else ("", "", "")
    if name != expect:
        raise fail(f"it is {_describe(fmt)}")
    if not version.isdigit() or int(version) not in versions:
        newest = max(versions)
        hint = ("written by a newer ctxppl; upgrade ctxppl" if version.isdigit()
                and int(version) > newest else "refit and save it again")
        raise FileFormatError(f"{path!r} is {what} of format version {version!r}; this ctxppl "
                              f"reads version(s) {list(versions)} ({hint}).")
    return arrays, meta


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in chunks).

    Examples:
        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "x")
        >>> atomic_write(p, lambda fh: fh.write(b"abc"))
        >>> file_sha256(p)[:12]
        'ba7816bf8f01'
    """
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- folders
@contextlib.contextmanager
def replace_folder(path: str | os.PathLike) -> Iterator[str]:
    """Yield a new, empty temporary folder next to ``path``; when the block succeeds it
    replaces ``path`` (whose old content is removed), when it fails it is removed and
    ``path`` stays exactly as it was.

    The files inside are fsynced before the swap. The swap is two renames (old folder
    aside, new folder in), so a crash between them leaves the old folder beside ``path`` as
    ``.<name>.old-*``, never a half-written ``path``.

    Examples:
        >>> import os, tempfile
        >>> out = os.path.join(tempfile.mkdtemp(), "run")
        >>> with replace_folder(out) as tmp:
        ...     atomic_write(os.path.join(tmp, "a.txt"), lambda fh: fh.write(b"1"))
        >>> with replace_folder(out) as tmp:
        ...     raise RuntimeError("the fit diverged")
        Traceback (most recent call last):
        ...
        RuntimeError: the fit diverged
        >>> os.listdir(out), os.listdir(os.path.dirname(out))
        (['a.txt'], ['run'])
    """
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        os.chmod(tmp, (os.stat(path).st_mode & 0o7777) if os.path.isdir(path)
                 else 0o777 & ~_umask())
        yield tmp
        for root, _, files in os.walk(tmp):
            for fname in files:
                fd = os.open(os.path.join(root, fname), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.lexists(path):
        old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
        os.rmdir(old)  # a fresh unique name for the old folder
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        if old is not None:
            os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- trees
class Unsupported(TypeError):
    """A value :func:`encode_tree` cannot store (names where it is and what it is)."""


def encode_tree(tree: Any, arrays: dict[str, np.ndarray], where: str = "value") -> Any:
    """Encode a tree of dicts / lists / tuples / None / bools / numbers / strings / arrays as
    JSON, moving the arrays into ``arrays`` (named ``a0``, ``a1``, ...).

    Anything else (a function, a class instance, an Equinox module) raises
    :class:`Unsupported` (a ``TypeError``) naming its place in the tree.

    Examples:
        >>> import numpy as np
        >>> arrays = {}
        >>> enc = encode_tree({"x": (1, np.ones(2)), "y": [None, "s"]}, arrays)
        >>> back = decode_tree(enc, arrays)
        >>> back["x"][0], back["x"][1].tolist(), back["y"]
        (1, [1.0, 1.0], [None, 's'])
    """
    if tree is None or isinstance(tree, bool | str):
        return tree
    if type(tree) is int:
        return tree
    if type(tree) is float:
        return tree if math.isfinite(tree) else {"$float": repr(tree)}
    if isinstance(tree, np.ndarray | np.generic) or (
            hasattr(tree, "__array__") and hasattr(tree, "shape") and hasattr(tree, "dtype")):
        try:
            a = np.asarray(tree)
        except (TypeError, ValueError) as e:  # e.g. a typed jax PRNG key
            raise Unsupported(f"{where} is an array that numpy cannot hold ({e}).") from None
        if a.dtype.hasobject:
            raise Unsupported(f"{where} is an array of Python objects (dtype object).")
        name = f"a{len(arrays)}"
        arrays[name] = a
        return {"$scalar": name} if isinstance(tree, np.generic) else {"$array": name}
    if type(tree) is list:
        return [encode_tree(x, arrays, f"{where}[{i}]") for i, x in enumerate(tree)]
    if type(tree) is tuple:
        return {"$tuple": [encode_tree(x, arrays, f"{where}[{i}]") for i, x in enumerate(tree)]}
    if type(tree) is dict:
        bad = [k for k in tree if not isinstance(k, str | int) or isinstance(k, bool)]
        if bad:
            raise Unsupported(f"{where} has a key {bad[0]!r} of type {type(bad[0]).__name__}; "
                              "only str and int keys can be saved.")
        items = [[k, encode_tree(v, arrays, f"{where}[{k!r}]")] for k, v in tree.items()]
        if all(isinstance(k, str) and not k.startswith("$") for k in tree):
            return dict(items)
        return {"$dict": items}
    kind = type(tree).__qualname__
    if callable(tree):
        kind = f"callable {getattr(tree, '__qualname__', kind)!s}"
    raise Unsupported(f"{where} is a {kind}; only arrays, numbers, strings, None and "
                      "dicts / lists / tuples of them can be saved.")


def decode_tree(obj: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """Inverse of :func:`encode_tree` (see its example)."""
    if isinstance(obj, list):
        return [decode_tree(x, arrays) for x in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        (tag, value), = obj.items()
        if tag in ("$array", "$scalar"):
            if value not in arrays:
                raise FileFormatError(f"the file lacks array {value!r} (it is damaged).")
            return arrays[value][()] if tag == "$scalar" else arrays[value]
        if tag == "$tuple":
            return tuple(decode_tree(x, arrays) for x in value)
        if tag == "$dict":
            return {k: decode_tree(v, arrays) for k, v in value}
        if tag == "$float":
            return float(value)
    return {k: decode_tree(v, arrays) for k, v in obj.items()}
