"""Gaussian-blob volumes and their exact projections: an analytic reference for the forward model.

A sum of isotropic 3D Gaussians projects along any axis to a sum of 2D Gaussians in closed form, so the Fourier
slice and the real-space projection (recon/projection.py) can be checked against exact line integrals. Used by the
tests and by the forward-model accuracy benchmark. Pixel centres follow recon/conventions.py (index ``D // 2``).
"""

from __future__ import annotations

import numpy as np


def blob_volume(size: int, seed: int = 0, n_blobs: int = 6, spread: float = 0.22, sigma_range=(0.06, 0.1)):
    """A smooth, asymmetric volume ``(size,)*3`` of Gaussian blobs and its analytic description ``(centres (x, y, z)
    in pixels from the box centre, sigmas in pixels, amplitudes)``."""
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


def analytic_projection(size: int, blobs, matrix: np.ndarray) -> np.ndarray:
    """Exact line integrals ``(size, size)`` of ``blobs`` along the image z axis after rotating the map by RELION's
    ``A`` (``matrix``)."""
    centres, sigmas, amps = blobs
    c = np.arange(size) - size // 2
    yy, xx = np.meshgrid(c, c, indexing="ij")
    img = np.zeros((size, size))
    for ctr, s, a in zip(centres, sigmas, amps):
        p = matrix @ ctr
        img += a * np.sqrt(2 * np.pi) * s * np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * s * s))
    return img
