"""The noise power spectrum of a particle stack, from the images' backgrounds, for a likelihood whitened by it.

Real noise is coloured: its power falls with frequency. Each image's background (outside the particle radius, the
inside set to zero with a soft edge) is transformed, its power averaged over up to ``MAX_IMAGES`` images in rings
of one Fourier pixel and divided by the mask's mean square: for white noise every ring is then the pixel variance
(the mask's transform spreads power without changing its total), for coloured noise its spectrum smoothed over the
mask's transform. The spectrum is returned relative to its mean over the box (white noise: 1 everywhere), so it
leaves the noise sigma of the images' normalisation as it is. The likelihood divides each frequency's squared
residual by it (``likelihood.make_grid``'s ``noise_power``).
"""

from __future__ import annotations

import numpy as np

from recon import conventions

MAX_IMAGES = 1000


def ring_index(size: int) -> np.ndarray:
    """``(D, D)`` ring (Fourier pixels from the centre, rounded) of each frequency of a centred transform."""
    k = np.linalg.norm(conventions.image_frequency_grid(size), axis=-1) * size
    return np.rint(k).astype(int)


def background_spectrum(images: np.ndarray, radius_pixels: float) -> np.ndarray:
    """Relative noise power per ring ``(D // 2 + 1,)`` (rings beyond the box's inscribed circle folded into the
    last) from images ``(n, D, D)`` with unit-free pixels; mean over the box's frequencies 1."""
    size = images.shape[-1]
    c = conventions.box_coordinates(size)
    r = np.hypot(c[:, None], c[None, :])
    mask = np.clip((r - radius_pixels) / 3.0, 0.0, 1.0)  # 0 inside the particle, 1 beyond a 3-pixel edge
    backgrounds = images - np.sum(images * mask, axis=(1, 2), keepdims=True) / mask.sum()
    power = np.mean(np.abs(conventions.centred_fft2(backgrounds * mask)) ** 2, axis=0) / np.mean(mask**2)
    rings = np.minimum(ring_index(size), size // 2)
    per_ring = np.bincount(rings.ravel(), power.ravel()) / np.bincount(rings.ravel())
    per_ring[0] = per_ring[1]  # the mean was removed: ring 0 says nothing about the noise there
    return per_ring / np.mean(per_ring[rings])


def at_frequencies(spectrum: np.ndarray, freqs_cycles_per_pixel: np.ndarray, size: int) -> np.ndarray:
    """The relative noise power at frequencies ``(N_k, 2)``, linear between rings."""
    k = np.linalg.norm(freqs_cycles_per_pixel, axis=-1) * size
    return np.interp(k, np.arange(len(spectrum)), spectrum)


def estimate(dataset, seed: int = 0) -> np.ndarray:
    """The relative noise power per ring of ``dataset`` (its normalised images, up to ``MAX_IMAGES``)."""
    n = len(dataset)
    chosen = np.sort(np.random.default_rng([seed, 13]).choice(n, size=min(MAX_IMAGES, n), replace=False))
    spectra = [background_spectrum(dataset.images(chosen[i:i + 250]).astype(np.float64), dataset.radius_pixels)
               for i in range(0, len(chosen), 250)]
    weights = np.diff(np.r_[0:len(chosen):250, len(chosen)])
    spectrum = np.average(spectra, axis=0, weights=weights)
    return spectrum / np.mean(spectrum[np.minimum(ring_index(dataset.box_size), dataset.box_size // 2)])
