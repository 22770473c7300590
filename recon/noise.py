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
MIN_GROUP = 10  # particles a micrograph needs for a noise level of its own; smaller ones take the pooled level
GROUP_SAMPLE = 20  # particles per micrograph whose backgrounds are read (fewer where that would exceed MAX_READS)
MAX_READS = 50_000
LEVEL_BOUNDS = (0.25, 4.0)


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


def noise_groups(meta) -> tuple[np.ndarray, str] | None:
    """Each particle's group for its noise level: its micrograph (``rlnMicrographName``), else its optics group
    where there are several; with its name. None: one group."""
    names = (meta.extra_columns or {}).get("rlnMicrographName")
    if names is not None:
        return np.unique(np.asarray(names).astype(str), return_inverse=True)[1], "micrograph"
    if len(np.unique(meta.optics_group)) > 1:
        return np.unique(meta.optics_group, return_inverse=True)[1], "optics group"
    return None


def group_levels(dataset, seed: int = 0) -> tuple[np.ndarray | None, str]:
    """Each particle's noise sigma relative to the set's (``(N,)``; None with one group) and a line for run.log.

    Real noise varies between micrographs (ice thickness, dose). For every group of at least :data:`MIN_GROUP`
    particles, the median over up to :data:`GROUP_SAMPLE` of them (fewer, down to 5, so that at most
    :data:`MAX_READS` images are read where there are at most 10,000 groups) of their background's standard
    deviation (as recon.data.estimate_noise_sigma measures the set's), divided by the set's sigma, within
    :data:`LEVEL_BOUNDS`; smaller groups keep 1 (pooled). The spectrum's shape (:func:`estimate`) stays one for
    the set: per-group spectra from a few dozen backgrounds would be mostly their own noise."""
    from recon.data import background_mask

    grouping = noise_groups(dataset.meta)
    if grouping is None:
        return None, "noise level: one for the whole set (no micrograph names or optics groups)"
    group, kind = grouping
    rng = np.random.default_rng([seed, 17])
    mask = background_mask(dataset.box_size, dataset.radius_pixels)
    levels = np.ones(len(dataset), np.float32)
    counts = np.bincount(group)
    measured = np.flatnonzero(counts >= MIN_GROUP)
    per_group = max(5, min(GROUP_SAMPLE, MAX_READS // max(len(measured), 1)))
    for g in measured:
        members = np.flatnonzero(group == g)
        chosen = np.sort(rng.choice(members, size=min(per_group, len(members)), replace=False))
        sigma = float(np.median(dataset.raw_images(chosen)[:, mask].std(axis=1)))
        levels[members] = np.clip(sigma / dataset.noise_sigma, *LEVEL_BOUNDS)
    pooled = int(counts[counts < MIN_GROUP].sum())
    if not len(measured):
        return None, (f"noise level: one for the whole set (no {kind} holds {MIN_GROUP} particles)")
    q = np.percentile(levels[np.isin(group, measured)], [5, 95])
    return levels, (f"noise level per {kind}: {len(measured)} of {len(counts)} measured (>= {MIN_GROUP} particles "
                    f"each), sigma {q[0]:.2f}-{q[1]:.2f} x the set's (5-95 %)"
                    + (f"; {pooled} particles in smaller ones take the set's" if pooled else ""))
