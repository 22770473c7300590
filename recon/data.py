"""Particle datasets: validated metadata, lazily read images, data sign, noise estimate and normalisation.

Images are read from memory-mapped stacks only when asked for (``ParticleDataset.images``), so a dataset larger
than memory is never loaded whole. Each image is sign-corrected to white particles on a dark background, has the
mean of its background (pixels outside the particle radius) subtracted, and is divided by the noise standard
deviation, so that the noise has unit variance. The noise sigma is the median over (a sample of) images of the
background standard deviation: robust to the particle, which lies inside the radius, and to a few odd images.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from recon.ctf import CTFParams
from recon.errors import fail
from recon.io.metadata import ParticleMetadata
from recon.io.mrc import StackReader


def background_mask(size: int, radius_pixels: float) -> np.ndarray:
    """``(size, size)`` bool, True outside the disk of ``radius_pixels`` around the centre ``size // 2``."""
    c = np.arange(size) - size // 2
    return (c[:, None] ** 2 + c[None, :] ** 2) > radius_pixels**2


@dataclasses.dataclass
class ParticleDataset:
    """A validated particle set. ``images(idx)`` returns normalised float32 ``(k, D, D)`` images."""

    meta: ParticleMetadata
    box_size: int
    pixel_size_angstrom: float
    particle_radius_angstrom: float
    sign: np.ndarray  # (N,) +1 or -1 applied to the stored pixels
    noise_sigma: float = 1.0  # in stored pixel units; images() divides by it
    noise_power: np.ndarray | None = None  # relative noise power per Fourier ring (recon.noise); None: white
    noise_level: np.ndarray | None = None  # (N,) each particle's noise sigma / noise_sigma (recon.noise); None: 1
    reader: StackReader = dataclasses.field(default_factory=StackReader)

    def __len__(self) -> int:
        return len(self.meta)

    @property
    def radius_pixels(self) -> float:
        return self.particle_radius_angstrom / self.pixel_size_angstrom

    def raw_images(self, indices) -> np.ndarray:
        """Stored pixels of particles ``indices`` times their sign, float32 ``(k, D, D)``; checks for NaN."""
        indices = np.atleast_1d(np.asarray(indices))
        out = np.empty((len(indices), self.box_size, self.box_size), dtype=np.float32)
        paths = self.meta.stack_paths[indices]
        for path in dict.fromkeys(paths):
            where = np.nonzero(paths == path)[0]
            out[where] = self.raw_images_of_stack(path, self.meta.image_indices[indices[where]])
        return out * self.sign[indices, None, None].astype(np.float32)

    def raw_images_of_stack(self, path: str, stack_indices: np.ndarray) -> np.ndarray:
        """Images ``stack_indices`` (0-based) of one stack as stored, float32 ``(k, D, D)``; checks for NaN."""
        images = self.reader.read(path, stack_indices)
        bad = ~np.all(np.isfinite(images), axis=(1, 2))
        if np.any(bad):
            raise fail(path, f"image {int(np.asarray(stack_indices)[np.argmax(bad)]) + 1} contains NaN or infinite "
                             "pixels")
        return images

    def images(self, indices) -> np.ndarray:
        """Normalised images: background mean removed, divided by the noise sigma (times the particle's noise
        level where measured). ``(k, D, D)`` float32."""
        raw = self.raw_images(indices)
        mask = background_mask(self.box_size, self.radius_pixels)
        raw -= raw[:, mask].mean(axis=1)[:, None, None]
        return raw / (np.float32(self.noise_sigma) * self.levels(indices)[:, None, None])

    def levels(self, indices) -> np.ndarray:
        """``(k,)`` float32 noise levels of particles ``indices`` (1 where none was measured)."""
        indices = np.atleast_1d(np.asarray(indices))
        if self.noise_level is None:
            return np.ones(len(indices), np.float32)
        return self.noise_level[indices].astype(np.float32)

    def ctf(self, indices) -> CTFParams:
        """The CTFs of particles ``indices`` in the units of :meth:`images`: the file's, divided by the particle's
        noise level (an image divided by its noise sigma shows its signal divided by it too)."""
        ctf = self.meta.ctf.take(np.atleast_1d(np.asarray(indices)))
        if self.noise_level is None:
            return ctf
        return ctf._replace(scale=ctf.scale / self.levels(indices))

    def close(self):
        self.reader.close()


def estimate_noise_sigma(dataset: ParticleDataset, max_images: int = 1000, seed: int = 0) -> float:
    """Median over up to ``max_images`` images of the standard deviation of the background pixels."""
    n = len(dataset)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, max_images), replace=False))
    mask = background_mask(dataset.box_size, dataset.radius_pixels)
    if mask.sum() < 16:
        raise fail(dataset.meta.source, f"particle radius {dataset.particle_radius_angstrom:.1f} A leaves fewer "
                                        "than 16 background pixels to estimate the noise; use a smaller radius")
    sigmas = []
    for start in range(0, len(sample), 256):
        raw = dataset.raw_images(sample[start:start + 256])
        sigmas.append(raw[:, mask].std(axis=1))
    sigma = float(np.median(np.concatenate(sigmas)))
    if not sigma > 0:
        raise fail(dataset.meta.source, "background pixels have zero variance; cannot estimate the noise level")
    return sigma


def check_finite_pixels(dataset: ParticleDataset, chunk_images: int = 2048) -> None:
    """Read every used image once (in chunks of the memory-mapped stacks) and fail on the first NaN or infinite
    pixel, so that a bad image far down a stack stops the run before it writes anything, not hours into it."""
    meta = dataset.meta
    for path in dict.fromkeys(meta.stack_paths):
        used = np.unique(meta.image_indices[meta.stack_paths == path])
        for start in range(0, len(used), chunk_images):
            dataset.raw_images_of_stack(path, used[start:start + chunk_images])


def open_dataset(meta: ParticleMetadata, particle_radius_angstrom: float | None = None,
                 invert_contrast: bool = False, estimate_noise: bool = True,
                 check_pixels: bool = True) -> ParticleDataset:
    """Validate stacks and sizes, choose the data sign, estimate the noise. Raises one-line InputErrors.

    ``particle_radius_angstrom`` defaults to 40% of the box. ``invert_contrast`` flips stacks with dark particles
    (cryoSPARC's ``blob/sign`` is applied on top of it). ``check_pixels`` reads every image once to reject NaN or
    infinite pixels up front (about a second per gigabyte of stack).
    """
    reader = StackReader()
    sizes = {}
    for path in dict.fromkeys(meta.stack_paths):
        if not os.path.exists(path):
            raise fail(meta.source, f"refers to the stack {path}, which does not exist (searched next to the "
                                    "particle file; --data_dir adds a folder to search)")
        n_images, ny, nx = reader.shape(path)
        if ny != nx:
            raise fail(path, f"images are not square ({nx} x {ny})")
        in_stack = meta.image_indices[meta.stack_paths == path]
        if in_stack.max() >= n_images or in_stack.min() < 0:
            bad = int(in_stack.max() if in_stack.max() >= n_images else in_stack.min())
            raise fail(meta.source, f"refers to image {bad + 1} of {path}, which holds {n_images} images")
        sizes[path] = nx
    expected = meta.box_size
    for path, size in sizes.items():
        declared = expected[meta.stack_paths == path]
        declared = declared[declared > 0]
        if len(declared) and np.any(declared != size):
            raise fail(path, f"images are {size} px but the particle file {meta.source} says "
                             f"{int(declared[declared != size][0])} px")
    if len(set(sizes.values())) > 1:
        raise fail(meta.source, f"stacks have different box sizes ({sorted(set(sizes.values()))})")
    box = next(iter(sizes.values()))
    pixel = meta.common_pixel_size()
    if particle_radius_angstrom is None:
        particle_radius_angstrom = 0.4 * box * pixel
    if not 0 < particle_radius_angstrom:
        raise fail(meta.source, f"particle radius must be positive, got {particle_radius_angstrom}")
    sign = np.full(len(meta), -1.0 if invert_contrast else 1.0)
    if meta.invert_sign is not None:
        sign = np.where(meta.invert_sign, -sign, sign)
    dataset = ParticleDataset(meta=meta, box_size=box, pixel_size_angstrom=pixel,
                              particle_radius_angstrom=float(particle_radius_angstrom), sign=sign, reader=reader)
    if check_pixels:
        check_finite_pixels(dataset)
    if estimate_noise:
        dataset.noise_sigma = estimate_noise_sigma(dataset)
    return dataset
