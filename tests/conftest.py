"""Hardened test set-up: CPU only, rank promotion raises, fresh keys, no live arrays."""

import os
import zlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Implicit rank promotion hides shape bugs in plates; make it an error. (dtype promotion
# stays "standard": numpyro's own internals mix Python floats and int arrays.)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def getkey(request):
    """A fresh key per call, seeded from the test's name (printed on failure)."""
    seed = zlib.crc32(request.node.nodeid.encode())
    keys = iter(jax.random.split(jax.random.key(seed), 1000))
    return lambda: next(keys)


@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
