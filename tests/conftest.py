import os
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"

# One persistent XLA compilation cache for the test session and every subprocess it starts (they inherit the
# environment; JAX reads these at import, which comes after this file): the tiny runs compile the same step
# functions again and again (a tiny reconstruction on 2 cores: 62 s with a cold cache, 18 s with a warm one).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

from recon.blobs import analytic_projection, blob_volume  # noqa: E402,F401 (the tests import them from here)


def spherical_average(volume):
    """``volume`` averaged over every rotation about the box centre (numpy, by radius bins of one voxel)."""
    n = volume.shape[0]
    radius = np.sqrt(sum(g ** 2 for g in np.meshgrid(*[np.arange(n) - n // 2] * 3, indexing="ij")))
    bins = np.round(radius).astype(int)
    profile = np.bincount(bins.ravel(), volume.ravel()) / np.maximum(np.bincount(bins.ravel()), 1)
    return profile[bins].astype(np.float32)


@pytest.fixture
def real_files():
    """Real files written by other software (RELION, cryoSPARC-era tools, cryoDRGN, ASPIRE) and a real map, kept in
    tests/data with their provenance and licences (tests/data/README.md)."""
    return TEST_DATA


def pytest_configure(config):
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
