"""Hardened test set-up: CPU only, warnings are errors (pyproject), fresh keys per test."""

import contextlib
import os
import warnings
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


@pytest.fixture
def short_chains():
    """``with short_chains(): fit = ctx.fit(..., method="nuts")`` for NUTS runs kept short
    for speed, whose posterior the test checks within the Monte Carlo error of their ESS.
    Such runs may miss ctx's convergence thresholds (R-hat <= 1.01, bulk ESS >= 100 -- R-hat
    is noisy at a few hundred draws) and say so; exactly that warning is tolerated, anything
    else fails the test (a divergence, non-finite draws, any other warning)."""

    @contextlib.contextmanager
    def tolerate():
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            yield
        for w in rec:
            text = str(w.message)
            ok = w.category is RuntimeWarning and "has not converged: " in text
            if ok:
                parts = text.split("has not converged: ")[1].split(". Draws")[0].split("; ")
                ok = all("r_hat" in p or "ESS" in p for p in parts)
            assert ok, f"unexpected warning: {w.category.__name__}: {text}"

    return tolerate
