"""Hardened test set-up: CPU only, warnings are errors (pyproject), fresh keys per test."""

import os
import zlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
# One persistent compilation cache for the whole suite (every xdist worker and every
# subprocess a test starts inherits it): a program compiled by one test is loaded by the
# next process that needs it. Kept beside pytest's own cache (`make clean` removes it).
os.environ.setdefault("CTXPPL_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "xla"))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# STYLE.md asks for jax_numpy_rank_promotion="raise" and dtype_promotion="strict"; both break
# numpyro's own internals (nested plates broadcast (3, 3) * (1,); Python floats meet int
# arrays), so they cannot be global here. ctxppl's code is checked for rank promotion by
# `strict_ranks` below, used by the tests of ctxppl-only code paths.


@pytest.fixture
def strict_ranks():
    with jax.numpy_rank_promotion("raise"):
        yield


@pytest.fixture
def getkey(request):
    """A fresh key per call, seeded from the test's name (printed on failure)."""
    seed = zlib.crc32(request.node.nodeid.encode())
    keys = iter(jax.random.split(jax.random.key(seed), 1000))
    return lambda: next(keys)


@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
