"""Particle polarity from the data: white particles on a dark background (recon's and RELION's convention,
``recon/conventions.py``) or dark ones.

Each image (with the signs the particle file and ``invert_contrast`` give) is phase-flipped with its own CTF
(its transform times the sign of the CTF, so every frequency of the projection of a positive density enters with a
positive weight; at the 20-A low-pass this matters only where the first CTF zero falls inside it), low-passed with a Gaussian to ``LOWPASS_ANGSTROM`` and scored by the mean inside the particle
radius minus the mean outside it, in units of the outside's standard deviation. White particles score positive,
dark ones negative, noise alone zero on average. The verdict is the t statistic of the scores over up to
``MAX_IMAGES`` images: beyond ``+-DECISIVE_T`` white or dark, else undetermined.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from recon import conventions
from recon.ctf import CTFParams, ctf_value
from recon.data import ParticleDataset, background_mask

LOWPASS_ANGSTROM = 20.0  # finer than the particle, coarser than the first CTF zeros that phase flipping rights
MAX_IMAGES = 500
DECISIVE_T = 4.0


@dataclasses.dataclass(frozen=True)
class Polarity:
    verdict: str  # "white", "dark" or "undetermined"
    t: float  # t statistic of the per-image scores (positive: white)
    images: int


def image_scores(images: np.ndarray, ctf: CTFParams, pixel_size_angstrom: float, radius_pixels: float,
                 lowpass_angstrom: float = LOWPASS_ANGSTROM) -> np.ndarray:
    """Per-image polarity scores ``(n,)`` of images ``(n, D, D)`` with their CTFs (fields ``(n,)``)."""
    size = images.shape[-1]
    freqs = conventions.image_frequency_grid(size, pixel_size_angstrom)
    cutoff = 1.0 / max(lowpass_angstrom, 2.5 * pixel_size_angstrom)
    gauss = np.exp(-0.5 * np.sum(freqs**2, -1) / cutoff**2)
    outside = background_mask(size, radius_pixels)
    inside = ~background_mask(size, 0.8 * radius_pixels)
    scores = []
    for start in range(0, len(images), 50):  # in chunks: bounded memory at large boxes
        part = slice(start, start + 50)
        per_image = CTFParams(*(np.asarray(f, np.float64)[part, None, None] for f in ctf))
        flip = np.sign(ctf_value(freqs, per_image))
        filtered = conventions.centred_ifft2(conventions.centred_fft2(images[part].astype(np.float64)) * flip
                                             * gauss).real
        background = filtered[:, outside]
        scores.append((filtered[:, inside].mean(1) - background.mean(1)) / (background.std(1) + 1e-12))
    return np.concatenate(scores)


def detect(dataset: ParticleDataset, max_images: int = MAX_IMAGES, seed: int = 0) -> Polarity:
    """The polarity of ``dataset``'s particles as it reads them now (its signs applied)."""
    n = len(dataset)
    chosen = np.sort(np.random.default_rng(seed).choice(n, size=min(max_images, n), replace=False))
    scores = image_scores(dataset.raw_images(chosen), dataset.meta.ctf.take(chosen), dataset.pixel_size_angstrom,
                          dataset.radius_pixels)
    t = float(np.mean(scores) / (np.std(scores, ddof=1) / np.sqrt(len(scores)) + 1e-12)) if len(scores) > 1 else 0.0
    verdict = "white" if t > DECISIVE_T else "dark" if t < -DECISIVE_T else "undetermined"
    return Polarity(verdict, t, len(chosen))


def follow(dataset: ParticleDataset) -> tuple[str, bool]:
    """``polarity = "auto"``: detect, and invert ``dataset`` in place if its particles read dark. Returns the line
    for run.log and whether it inverted."""
    found = detect(dataset)
    if found.verdict == "dark":
        dataset.sign = -dataset.sign
        return (f"warning: the particles read dark on a light background (t = {found.t:.1f} over {found.images} "
                "phase-flipped, low-passed images); inverted to white. --config.polarity=as_given keeps them as the "
                "file gives them (with --config.invert_contrast to force either sign)"), True
    what = {"white": "white on a dark background, as expected",
            "undetermined": "undetermined (kept as the file gives them)"}[found.verdict]
    return f"polarity: particles {what} (t = {found.t:.1f} over {found.images} phase-flipped, low-passed images)", False
