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


def blob_volume(size: int, seed: int = 0, n_blobs: int = 6, spread: float = 0.22, sigma_range=(0.06, 0.1)):
    """A smooth, asymmetric volume of Gaussian blobs and its analytic description (centres in pixels)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-spread * size, spread * size, (n_blobs, 3))
    sigmas = rng.uniform(sigma_range[0] * size, sigma_range[1] * size, n_blobs)
    amps = rng.uniform(0.5, 1.5, n_blobs)
    c = np.arange(size) - size // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    vol = np.zeros((size,) * 3)
    for (cx, cy, cz), s, a in zip(centres, sigmas, amps):
        vol += a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * s * s))
    return vol, (centres, sigmas, amps)


def spherical_average(volume):
    """``volume`` averaged over every rotation about the box centre (numpy, by radius bins of one voxel)."""
    n = volume.shape[0]
    radius = np.sqrt(sum(g ** 2 for g in np.meshgrid(*[np.arange(n) - n // 2] * 3, indexing="ij")))
    bins = np.round(radius).astype(int)
    profile = np.bincount(bins.ravel(), volume.ravel()) / np.maximum(np.bincount(bins.ravel()), 1)
    return profile[bins].astype(np.float32)


def analytic_projection(size, blobs, matrix):
    """Exact line integrals of the blobs along the image z axis after rotating the map by RELION's ``A``."""
    centres, sigmas, amps = blobs
    c = np.arange(size) - size // 2
    yy, xx = np.meshgrid(c, c, indexing="ij")
    img = np.zeros((size, size))
    for ctr, s, a in zip(centres, sigmas, amps):
        p = matrix @ ctr
        img += a * np.sqrt(2 * np.pi) * s * np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * s * s))
    return img


@pytest.fixture
def real_files():
    """Real files written by other software (RELION, cryoSPARC-era tools, cryoDRGN, ASPIRE) and a real map, kept in
    tests/data with their provenance and licences (tests/data/README.md)."""
    return TEST_DATA


def pytest_configure(config):
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
