"""Settings derived from the data, for the plain command (``config.automatic``).

Every field that the config leaves at 0 (or ``"auto"``) is filled in from the particle stack, and every field given
a value is kept, so ``--config.KEY=VALUE`` overrides any automatic choice. The resolved config is what the run
records (config.json) and works with; the choices are also returned as lines for run.log.

* particle radius: from the radial profile of the pixel variance across a sample of low-passed images (the
  molecule, its shift spread and its CTF delocalisation raise the variance above the background's);
* shifts: a starting disk of ``MAX_SHIFT_FRACTION`` of the box and a Gaussian prior of ``SHIFT_SIGMA_FRACTION``
  (single images at the SNR of cryo-EM cannot be centred one by one), then, with ``quadrature.adapt_shifts``, the
  disk widened before each level to 3.5 sigma of the offsets the means of the particles' shift posteriors measure;
* schedule: from 40 A (or a quarter of the box) to the resolution 0.9 x Nyquist allows but not finer than
  ``FINEST_TARGET_ANGSTROM``; each level lasts ``passes_per_level`` passes over the training set, chosen so that a
  level holds about ``PARTICLES_PER_LEVEL`` particle visits (at least 0.05 and at most 10 passes);
* importance sampling from the second level, annealed in passes (``sampling.tau0_passes``); with
  ``sampling.adapt_slots`` each level then measures its proposals and sums every pose while they are not yet
  informative, else sizes its slots so that N = s0 ESS holds for all but ``max_capped_share`` of the particles
  (``recon/training.py``, ``size_level``);
* interpolation by box size (linear at 3x up to 96 px, Kaiser-Bessel at 2x above, where a 3x padded map costs
  more than it saves), and minibatches small enough that there are at least 8 of them.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from recon import conventions, noise, polarity, schedules
from recon.data import ParticleDataset, estimate_noise_sigma
from recon.errors import InputError, fail

PARTICLES_PER_LEVEL = 15_000
FINEST_TARGET_ANGSTROM = 9.0
MIN_PARTICLES = 50
SAMPLE_IMAGES = 1000
MAX_SHIFT_FRACTION = 0.12  # of the box: 3.5 sigma of offsets up to 3.4% of the box (2 px at 64 px)
SHIFT_SIGMA_FRACTION = 0.05


def lowpass(images: np.ndarray, pixel_size_angstrom: float, resolution_angstrom: float) -> np.ndarray:
    """``images (k, D, D)`` with every frequency above ``1 / resolution_angstrom`` removed (a hard disk)."""
    size = images.shape[-1]
    radius = np.linalg.norm(conventions.image_frequency_grid(size, pixel_size_angstrom), axis=-1)
    keep = np.fft.ifftshift(radius <= 1.0 / resolution_angstrom)
    return np.real(np.fft.ifft2(np.fft.fft2(images) * keep)).astype(np.float32)


def radial_profile(image: np.ndarray) -> np.ndarray:
    """Mean of ``image (D, D)`` over rings of unit width around the centre ``D // 2``; index = radius in pixels."""
    size = image.shape[-1]
    c = np.arange(size) - size // 2
    r = np.rint(np.hypot(c[:, None], c[None, :])).astype(int)
    return np.bincount(r.ravel(), image.ravel()) / np.maximum(np.bincount(r.ravel()), 1)


def estimate_radius_pixels(images: np.ndarray, fraction: float = 0.05) -> float:
    """The particle radius (pixels) from low-passed images ``(k, D, D)``: the radius beyond which the pixel variance
    across images stays within ``fraction`` of its peak excess over the background (the corners of the box).

    The variance is taken about the mean image, not about each image's corner mean: noise is stationary, so its
    variance is the same at every pixel whatever its spectrum, whereas subtracting a per-image corner mean leaves
    low-frequency (coloured) noise less variable near the corners than at the centre, an excess that reads as
    particle out to the box's edge."""
    size = images.shape[-1]
    c = np.arange(size) - size // 2
    r = np.hypot(c[:, None], c[None, :])
    corners = r >= 0.5 * size
    variance = np.var(images.astype(np.float64), axis=0)
    profile = radial_profile(variance)
    background = float(np.median(variance[corners]))
    excess = profile[: size // 2] - background
    above = np.nonzero(excess > fraction * excess.max())[0]
    return float(above.max() + 1) if len(above) else 0.4 * size


def particle_radius_pixels(dataset: ParticleDataset, seed: int) -> float:
    """The particle radius (pixels) the plain command takes: from low-passed sample images, kept within 15-45% of
    the box."""
    pixel, size = dataset.pixel_size_angstrom, dataset.box_size
    images = lowpass(sample_images(dataset, seed), pixel, max(20.0, 4.0 * pixel))
    return min(max(estimate_radius_pixels(images), 0.15 * size), 0.45 * size)


def sample_images(dataset: ParticleDataset, seed: int) -> np.ndarray:
    n = len(dataset)
    rng = np.random.default_rng([seed, 11])
    return dataset.raw_images(np.sort(rng.choice(n, size=min(n, SAMPLE_IMAGES), replace=False)))


def in_passes(c, num_particles: int) -> int:
    """Turn ``schedule.passes_per_level`` and ``sampling.tau0_passes`` (where > 0) into iterations in ``c``;
    returns the number of minibatches of a pass."""
    if not c.batch_size:
        raise InputError("batch_size 0 is chosen from the data only with --config.automatic=True; give a batch size")
    n_train = num_particles - schedules.heldout_count(num_particles, c.num_heldout)
    n_batches = math.ceil(n_train / c.batch_size)
    if c.schedule.passes_per_level:
        c.schedule.iterations_per_level = max(1, int(math.ceil(c.schedule.passes_per_level * n_batches)))
    if c.sampling.tau0_passes:
        c.sampling.tau0 = max(1.0, round(c.sampling.tau0_passes * n_batches, 2))
    return n_batches


def resolve(config, dataset: ParticleDataset) -> tuple[object, list[str]]:
    """The config with its automatic fields filled in from ``dataset``, and one line per choice (for run.log).
    Without ``config.automatic`` only ``schedule.passes_per_level`` and ``sampling.tau0_passes`` (where set) are
    turned into iterations. Raises an ``InputError`` for a dataset too small to reconstruct."""
    c = copy.deepcopy(config)
    if not config.automatic:
        in_passes(c, len(dataset))
        return c, []
    lines = []
    n = len(dataset)
    if n < MIN_PARTICLES:
        raise fail(dataset.meta.source, f"{n} particles: too few for an ab initio reconstruction (at least "
                                        f"{MIN_PARTICLES}; a few thousand for a useful map)")
    size, pixel = dataset.box_size, dataset.pixel_size_angstrom
    box_angstrom = size * pixel
    if not c.particle_radius_angstrom:
        radius = particle_radius_pixels(dataset, c.seed)
        c.particle_radius_angstrom = round(radius * pixel, 1)
        lines.append(f"particle radius {c.particle_radius_angstrom:.1f} A (pixel variance across "
                     f"{min(n, SAMPLE_IMAGES)} images)")
    q = c.quadrature
    if not q.max_shift_angstrom:
        q.max_shift_angstrom = round(MAX_SHIFT_FRACTION * box_angstrom, 1)
    if not q.shift_sigma_angstrom:
        q.shift_sigma_angstrom = round(SHIFT_SIGMA_FRACTION * box_angstrom, 1)
    lines.append(f"shifts up to {q.max_shift_angstrom:.1f} A to start with, prior sigma {q.shift_sigma_angstrom:.1f} A"
                 + (" (the disk widens from the measured offsets)" if c.quadrature.get("adapt_shifts") else ""))
    s = c.schedule
    if not s.target_resolution_angstrom:
        s.target_resolution_angstrom = math.ceil(100 * max(2.0 * pixel / 0.9, FINEST_TARGET_ANGSTROM)) / 100
    if not s.start_resolution_angstrom:
        s.start_resolution_angstrom = round(max(min(40.0, box_angstrom / 4.0), s.target_resolution_angstrom), 2)
    n_train = n - schedules.heldout_count(n, c.num_heldout)
    if not c.batch_size:  # a multiple of the devices that split each minibatch
        import jax

        devices = c.devices or jax.device_count()
        c.batch_size = int(max(10, min(200, n_train // 8)) // devices * devices) or devices
    if c.sampling.tau0:  # a given tau0 (iterations) wins over the default in passes
        c.sampling.tau0_passes = 0.0
    if not s.iterations_per_level and not s.passes_per_level:
        s.passes_per_level = round(min(max(PARTICLES_PER_LEVEL / n_train, 0.05), 10.0), 3)
    n_batches = in_passes(c, n)
    levels = schedules.resolution_levels(s.start_resolution_angstrom, max(s.target_resolution_angstrom, 2 * pixel / 0.9),
                               s.level_ratio)
    lines.append(f"schedule {levels[0]:.1f} -> {levels[-1]:.1f} A in {len(levels)} levels of "
                 f"{s.iterations_per_level} minibatches of {c.batch_size} "
                 f"({s.iterations_per_level * c.batch_size / n_train:.2f} passes over {n_train} particles)")
    smp = c.sampling
    if smp.start_iteration < 0:  # the first level sums every pose: every particle's proposal then has a start
        smp.start_iteration = s.iterations_per_level if len(levels) > 1 else 0
    lines.append(f"importance sampling from iteration {smp.start_iteration} "
                 f"({levels[min(smp.start_iteration // s.iterations_per_level, len(levels) - 1)]:.1f} A), "
                 f"annealing tau0 {smp.tau0:g} iterations ({smp.tau0 / n_batches:.2f} passes)")
    if c.likelihood_kernel == "auto":
        c.likelihood_kernel = "linear" if size <= 96 else "kaiser_bessel"
    if not c.likelihood_oversampling:  # 3x for linear interpolation (2.5 % off the slice), 2x for Kaiser-Bessel
        c.likelihood_oversampling = 3 if c.likelihood_kernel == "linear" else 2
    lines.append(f"interpolation {c.likelihood_kernel} at {c.likelihood_oversampling}x ({size} px box)")
    if c.optimizer.line_search == "auto":  # along the SAGD step where steps are long (large boxes, fine levels)
        c.optimizer.line_search = "minibatch" if size <= 96 else "step"
    if isinstance(c.remat, str):  # recompute chunks in the backward pass only where memory asks for it
        remat = size > 96 if c.remat == "auto" else c.remat.lower() in ("true", "1", "yes")
        with c.unlocked():
            del c["remat"]
            c.remat = remat
    c.automatic = False  # resolved: resolving again changes nothing
    return c, lines


def prepare(config, dataset: ParticleDataset) -> tuple[object, list[str]]:
    """:func:`resolve`, then ``dataset`` given the resolved particle radius and its noise estimated with it (the
    background lies outside that radius). ``dataset`` is changed in place."""
    config, lines = resolve(config, dataset)
    if config.particle_radius_angstrom:
        dataset.particle_radius_angstrom = float(config.particle_radius_angstrom)
    if config.get("polarity", "as_given") == "auto":  # within the resolved radius
        line, inverted = polarity.follow(dataset)
        lines.append(line)
        with config.unlocked():  # the decision, recorded: config.json says what the run used
            config.invert_contrast = bool(config.invert_contrast) != inverted
            config.polarity = "as_given"
    elif config.get("polarity", "as_given") != "as_given":
        raise InputError(f"--config.polarity={config.polarity!r}: expected auto or as_given")
    dataset.noise_sigma = estimate_noise_sigma(dataset)
    model = config.get("noise_model", "white")
    if model == "coloured" and config.get("noise_per_micrograph", False):
        dataset.noise_level, line = noise.group_levels(dataset, config.seed)
        lines.append(line)
        dataset.noise_power = noise.estimate(dataset, config.seed)
        p = dataset.noise_power
        lines.append(f"noise: coloured, its power relative to white {p[1]:.2f} at the lowest frequencies, "
                     f"{p[len(p) // 2]:.2f} at half Nyquist, {p[-1]:.2f} at Nyquist (from the images' backgrounds; "
                     "the likelihood is whitened by it)")
    elif model != "white":
        raise InputError(f"--config.noise_model={model!r}: expected white or coloured")
    return config, lines
