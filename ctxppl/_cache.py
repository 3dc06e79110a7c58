r"""JAX's persistent compilation cache, turned on for ctxppl users at ``import ctxppl``.

A fresh process (a script, ``ctxppl fit``, a notebook kernel) spends most of its time
compiling; with the cache, a second process fitting a model of the same shapes loads the
compiled programs from disk instead. What ``import ctxppl`` does, and the only state it
touches (JAX's own config, set once):

* Nothing at all when ``CTXPPL_NO_CACHE=1``, when the user configured a cache themselves
  (``JAX_COMPILATION_CACHE_DIR``, or ``jax.config.update("jax_compilation_cache_dir", ...)``
  before importing ctxppl) or disabled JAX's (``jax_enable_compilation_cache=False``), or when
  the folder cannot be created (a read-only home: ctxppl then runs as before, uncached).
* Otherwise sets ``jax_compilation_cache_dir`` to ``<root>/<jax-jaxlib-ctxppl versions>/``,
  where ``<root>`` is ``CTXPPL_CACHE_DIR`` or the per-user cache folder of the platform
  (``platformdirs.user_cache_dir("ctxppl")``: ``$XDG_CACHE_HOME/ctxppl`` or
  ``~/.cache/ctxppl`` on Linux, ``~/Library/Caches/ctxppl`` on macOS). One folder per
  version: a cache written by another JAX or ctxppl is never read (JAX's own keys include
  the jaxlib version as well), old folders can be deleted by hand at any time.
* Unless set by the user (their ``JAX_*`` environment variable or a non-default value),
  ``jax_persistent_cache_min_compile_time_secs`` = 0.1 (JAX: 1.0; ctxppl's per-fit programs
  compile in 0.1-1 s too) and ``jax_compilation_cache_max_size`` = 1 GiB. A finite size
  turns on JAX's least-recently-used eviction, under which every read and write of the
  cache holds a file lock (the ``filelock`` package): two processes writing at once cannot
  tear an entry.

A corrupted entry (a truncated file, a process killed mid-write) is JAX's to handle: it
warns ``Error reading persistent compilation cache entry for '<program>'`` and compiles
anew; the result is correct. JAX keeps the bad file (it never overwrites an entry), so the
warning comes back in later processes until the version folder is deleted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["enable_compilation_cache", "cache_folder", "ENV_DIR", "ENV_OFF"]

ENV_DIR = "CTXPPL_CACHE_DIR"
ENV_OFF = "CTXPPL_NO_CACHE"

# JAX options set with the folder, each unless the user set it (JAX env var / non-default)
_OPTIONS = {
    "jax_persistent_cache_min_compile_time_secs": 0.1,
    "jax_compilation_cache_max_size": 2**30,
}


def cache_folder(version: str, environ: Mapping[str, str] | None = None) -> str:
    """The cache folder ctxppl uses for this JAX, jaxlib and ctxppl ``version``.

    Examples:
        >>> cache_folder("1.0", {"CTXPPL_CACHE_DIR": "/tmp/c"}).startswith("/tmp/c/jax")
        True
    """
    import jax
    import jaxlib

    env = os.environ if environ is None else environ
    root = env.get(ENV_DIR)
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("ctxppl", appauthor=False)
    tag = f"jax{jax.__version__}-jaxlib{jaxlib.__version__}-ctxppl{version}"
    return os.path.join(os.path.expanduser(root), tag)


def _off(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in ("", "0", "false", "no")


def enable_compilation_cache(version: str, environ: Mapping[str, str] | None = None
                             ) -> str | None:
    """Point JAX's persistent compilation cache at ctxppl's per-user folder (see the module
    docstring); called once by ``import ctxppl``.

    Returns:
        The folder now in use, or ``None`` when ctxppl left JAX's cache settings alone
        (disabled, configured by the user, or the folder cannot be created).

    Examples:
        >>> enable_compilation_cache("1.0", {"CTXPPL_NO_CACHE": "1"}) is None
        True
    """
    import jax

    env = os.environ if environ is None else environ
    if _off(env.get(ENV_OFF)):
        return None
    if (env.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir
            or not jax.config.jax_enable_compilation_cache):
        return None
    folder = cache_folder(version, env)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return None
    if not os.access(folder, os.W_OK | os.X_OK):
        return None
    for name, value in _OPTIONS.items():
        if env.get(name.upper()) is None and getattr(jax.config, name) == _jax_default(name):
            jax.config.update(name, value)
    jax.config.update("jax_compilation_cache_dir", folder)
    return folder


def _jax_default(name: str) -> object:
    return {"jax_persistent_cache_min_compile_time_secs": 1.0,
            "jax_compilation_cache_max_size": -1}[name]
