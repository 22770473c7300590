"""Synthetic particle datasets drawn from the generative model of Eq. 1-2 (library side of ``recon.simulate``).

Poses are uniform on SO(3); shifts are Gaussian (RELION origins); CTFs are per particle with defocus uniform in a
range and random astigmatism; noise is white Gaussian with ``sigma^2 = signal variance / snr``, where the signal
variance is the mean over particles of the variance of the noise-free image over the whole box (the definition
used by the paper's synthetic data and by cryoDRGN/ASPIRE). ``snr = inf`` gives noise-free images.

Effects of real data, each off by default (``SimulationSpec``; drawn from their own random stream, so a set made
without them is the same as before): a B-factor envelope per particle that the metadata do not record; a spread of
particle amplitudes (ice thickness); junk (empty picks and off-model blobs, ``rlnClassNumber`` 2; good particles 1);
preferred views (a fraction of particles viewed within a few degrees of the map's z axis); coloured noise (power
falling as a power of frequency) whose level varies from micrograph to micrograph (``rlnMicrographName``); dark
particles (the stack's sign inverted).

Mixtures: given several maps ``(K, D, D, D)`` (one frame: each map's own centre is not re-centred), each particle
shows map ``c`` with probability ``class_proportions[c]`` (equal by default, drawn from their own stream), and
``rlnClassNumber`` holds its true class (1..K; junk K + 1), a column recon does not read when reconstructing.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile

import numpy as np

import jax
import jax.numpy as jnp

from recon import conventions, projection
from recon.ctf import CTFParams
from recon.io import mrc, star
from recon.io.metadata import ParticleMetadata


@dataclasses.dataclass(frozen=True)
class SimulationSpec:
    num_particles: int
    snr: float = 0.05
    seed: int = 0
    defocus_min_angstrom: float = 10000.0
    defocus_max_angstrom: float = 30000.0
    max_astigmatism_fraction: float = 0.05
    voltage_kv: float = 300.0
    spherical_aberration_mm: float = 2.7
    amplitude_contrast: float = 0.1
    bfactor_angstrom2: float = 0.0
    shift_sigma_angstrom: float | None = None  # default: 2 pixels
    batch_size: int = 256
    envelope_bfactor_min_angstrom2: float = 0.0  # per-particle envelope exp(-B k^2 / 4), B uniform in [min, max],
    envelope_bfactor_max_angstrom2: float = 0.0  # applied to the images but not written to the metadata
    amplitude_spread: float = 0.0  # particle amplitudes 1 + spread * N(0, 1), at least 0.2
    junk_fraction: float = 0.0  # of particles: half empty (noise only), half a random blob of the particle's power
    preferred_view_fraction: float = 0.0  # of particles: viewed along the map's z axis, tilt ~ |N(0, sigma)|
    preferred_view_sigma_degrees: float = 10.0
    noise_exponent: float = 0.0  # noise power ~ (k + k_min)^-exponent (0: white), its mean over the box as white's
    micrographs: int = 0  # > 0: particles spread over this many micrographs (rlnMicrographName)
    noise_variation: float = 0.0  # the noise sigma of each micrograph times 1 + U(-variation, variation)
    dark_particles: bool = False  # the stack holds dark particles (its sign inverted)
    class_proportions: tuple = ()  # with several maps: each map's share of the particles (default: equal)

    @property
    def realistic(self) -> bool:
        return bool(self.envelope_bfactor_max_angstrom2 or self.amplitude_spread or self.junk_fraction
                    or self.preferred_view_fraction or self.noise_exponent or self.micrographs or self.dark_particles)


def random_poses(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 3)`` RELION (rot, tilt, psi) degrees, uniform on SO(3) (uniform rot, psi; cos(tilt) uniform)."""
    rot = rng.uniform(-180.0, 180.0, n)
    tilt = np.degrees(np.arccos(rng.uniform(-1.0, 1.0, n)))
    psi = rng.uniform(-180.0, 180.0, n)
    return np.stack([rot, tilt, psi], axis=-1)


def random_ctfs(rng: np.random.Generator, n: int, spec: SimulationSpec) -> CTFParams:
    du = rng.uniform(spec.defocus_min_angstrom, spec.defocus_max_angstrom, n)
    dv = du * (1.0 - rng.uniform(0.0, spec.max_astigmatism_fraction, n))
    full = lambda v: np.full(n, float(v))  # noqa: E731
    return CTFParams(du, dv, rng.uniform(0.0, 180.0, n), full(spec.voltage_kv), full(spec.spherical_aberration_mm),
                     full(spec.amplitude_contrast), full(0.0), full(spec.bfactor_angstrom2), full(1.0))


def noise_shape(size: int, exponent: float) -> np.ndarray:
    """``(D, D)`` amplitude filter of the noise in a centred transform: power ``(|k| + k_min)^-exponent`` (``k`` in
    cycles per pixel, ``k_min`` one Fourier pixel), scaled so that the mean power over the box is 1 (white noise of
    the same variance)."""
    k = np.linalg.norm(conventions.image_frequency_grid(size), axis=-1)
    power = (k + 1.0 / size) ** -float(exponent)
    return np.sqrt(power / power.mean())


def coloured_noise(rng: np.random.Generator, n: int, size: int, exponent: float) -> np.ndarray:
    """``(n, D, D)`` Gaussian noise of unit variance per pixel on average, with the spectrum of ``noise_shape``."""
    white = rng.normal(0.0, 1.0, (n, size, size))
    if not exponent:
        return white
    return conventions.centred_ifft2(conventions.centred_fft2(white) * noise_shape(size, exponent)).real


def preferred_poses(rng: np.random.Generator, n: int, sigma_degrees: float) -> np.ndarray:
    """``(n, 3)`` poses viewed near the map's z axis: tilt ``|N(0, sigma)|``, rot and psi uniform."""
    poses = random_poses(rng, n)
    poses[:, 1] = np.abs(rng.normal(0.0, sigma_degrees, n)) % 180.0
    return poses


@dataclasses.dataclass(frozen=True)
class Effects:
    """The per-particle draws of the realistic effects (``SimulationSpec``)."""

    envelope_bfactor: np.ndarray  # (N,) A^2
    amplitude: np.ndarray  # (N,)
    junk: np.ndarray  # (N,) 0 good, 1 empty, 2 blob
    micrograph: np.ndarray  # (N,) index
    noise_scale: np.ndarray  # (micrographs,) factors on the noise sigma


def draw_effects(spec: SimulationSpec, n: int, angles: np.ndarray) -> Effects:
    """The effects' draws from their own stream (``[seed, 1]``); ``angles`` get the preferred views in place."""
    rng = np.random.default_rng([spec.seed, 1])
    bfactor = rng.uniform(spec.envelope_bfactor_min_angstrom2, max(spec.envelope_bfactor_max_angstrom2,
                                                                   spec.envelope_bfactor_min_angstrom2), n)
    amplitude = np.maximum(1.0 + spec.amplitude_spread * rng.normal(size=n), 0.2) if spec.amplitude_spread \
        else np.ones(n)
    junk = np.zeros(n, int)
    picked = rng.random(n) < spec.junk_fraction
    junk[picked] = 1 + (rng.random(int(picked.sum())) < 0.5)
    preferred = rng.random(n) < spec.preferred_view_fraction
    angles[preferred] = preferred_poses(rng, int(preferred.sum()), spec.preferred_view_sigma_degrees)
    micrographs = max(spec.micrographs, 1)
    micrograph = np.sort(rng.integers(0, micrographs, n))
    noise_scale = 1.0 + spec.noise_variation * rng.uniform(-1.0, 1.0, micrographs)
    return Effects(bfactor, amplitude, junk, micrograph, noise_scale)


def blob_images(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """``(n, D, D)`` off-model junk: a few Gaussian blobs at random places and widths, unit variance each."""
    c = np.arange(size) - size // 2
    out = np.zeros((n, size, size))
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            y, x = rng.uniform(-size / 4, size / 4, 2)
            width = rng.uniform(size / 20, size / 8)
            out[i] += rng.uniform(0.5, 1.5) * np.exp(-((c[:, None] - y) ** 2 + (c[None, :] - x) ** 2) / (2 * width**2))
        out[i] /= out[i].std() + 1e-12
    return out


def render_batch_fn(size: int, pixel_size_angstrom: float):
    """Jitted ``(volume_ft, angles (B,3), origins (B,2), ctf) -> (B, D, D)`` noise-free particle images."""

    def one(volume_ft, angles, origin, ctf):
        rotation = conventions.euler_to_matrix(angles)
        return projection.particle_image(volume_ft, rotation, origin, ctf, size, pixel_size_angstrom)

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0)))


def apply_effects(images: np.ndarray, effects: Effects, sl: slice, rng: np.random.Generator) -> np.ndarray:
    """Noise-free images ``(B, D, D)`` of particles ``sl`` with their amplitudes and junk."""
    images = images * effects.amplitude[sl, None, None]
    junk = effects.junk[sl]
    images[junk == 1] = 0.0
    blobs = np.flatnonzero(junk == 2)
    if len(blobs):
        power = np.sqrt(np.mean(np.var(images[junk == 0], axis=(1, 2)))) if np.any(junk == 0) else 1.0
        images[blobs] = power * blob_images(rng, len(blobs), images.shape[-1])
    return images


def true_classes(spec: SimulationSpec, n: int, num_classes: int) -> np.ndarray:
    """``(n,)`` each particle's map (0-based) from ``spec.class_proportions`` (equal when empty), drawn from the
    stream ``[seed, 3]``; all 0 for one map."""
    if num_classes == 1:
        return np.zeros(n, int)
    shares = np.asarray(spec.class_proportions or [1.0] * num_classes, np.float64)
    if len(shares) != num_classes or np.any(shares < 0) or not shares.sum() > 0:
        raise ValueError(f"class proportions {tuple(spec.class_proportions)} for {num_classes} maps")
    return np.random.default_rng([spec.seed, 3]).choice(num_classes, size=n, p=shares / shares.sum())


def simulate_dataset(volume: np.ndarray, pixel_size_angstrom: float, spec: SimulationSpec, out_dir: str,
                     log=print) -> tuple[ParticleMetadata, float]:
    """Write ``particles.star``, ``particles.mrcs`` and ``ground_truth.mrc`` into ``out_dir``; ``volume``
    ``(D, D, D)``, or ``(K, D, D, D)`` for a mixture (then also ``ground_truth_class_NN.mrc`` per map;
    ``ground_truth.mrc`` is the first).

    Files are written under temporary names and renamed at the end: a failure leaves nothing half-written.
    Returns the metadata and the noise standard deviation used.
    """
    maps = np.asarray(volume)[None] if np.ndim(volume) == 3 else np.asarray(volume)
    size = maps.shape[-1]
    n = spec.num_particles
    rng = np.random.default_rng(spec.seed)
    angles = random_poses(rng, n)
    shift_sigma = 2.0 * pixel_size_angstrom if spec.shift_sigma_angstrom is None else spec.shift_sigma_angstrom
    origins = rng.normal(0.0, shift_sigma, (n, 2))
    ctf = random_ctfs(rng, n, spec)
    effects = draw_effects(spec, n, angles) if spec.realistic else None
    truth = true_classes(spec, n, len(maps))
    maps_ft = [projection.prepare_volume_ft(jnp.asarray(m, jnp.float32)) for m in maps]
    render = render_batch_fn(size, pixel_size_angstrom)

    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".simulate-", dir=out_dir)
    try:
        rng_effects = np.random.default_rng([spec.seed, 2])
        stack_tmp = os.path.join(work, "particles.mrcs")
        handle = mrc.write_stack(stack_tmp, n, size, pixel_size_angstrom)
        signal_power = 0.0
        for start in range(0, n, spec.batch_size):
            sl = slice(start, min(n, start + spec.batch_size))
            rendered = ctf if effects is None else ctf._replace(bfactor_angstrom2=effects.envelope_bfactor)
            batch_ctf = CTFParams(*(jnp.asarray(f[sl], jnp.float32) for f in rendered))
            images = 0.0
            for c, volume_ft in enumerate(maps_ft):
                if np.any(truth[sl] == c):
                    rendered_c = np.asarray(render(volume_ft, jnp.asarray(angles[sl], jnp.float32),
                                                   jnp.asarray(origins[sl], jnp.float32), batch_ctf))
                    images = images + rendered_c * (truth[sl] == c)[:, None, None]
            if effects is not None:
                images = apply_effects(images, effects, sl, rng_effects)
            handle.data[sl] = images
            signal_power += float(np.sum(np.var(images.astype(np.float64), axis=(1, 2))))
        signal_var = signal_power / n
        noise_sigma = 0.0 if not np.isfinite(spec.snr) else float(np.sqrt(signal_var / spec.snr))
        if noise_sigma > 0:
            for start in range(0, n, spec.batch_size):
                sl = slice(start, min(n, start + spec.batch_size))
                if effects is None:
                    noise = rng.normal(0.0, noise_sigma, (sl.stop - sl.start, size, size)).astype(np.float32)
                else:
                    scale = noise_sigma * effects.noise_scale[effects.micrograph[sl]][:, None, None]
                    noise = (scale * coloured_noise(rng, sl.stop - sl.start, size, spec.noise_exponent)).astype(
                        np.float32)
                handle.data[sl] = handle.data[sl] + noise
        if spec.dark_particles:
            for start in range(0, n, spec.batch_size):
                sl = slice(start, min(n, start + spec.batch_size))
                handle.data[sl] = -handle.data[sl]
        handle.update_header_stats()
        handle.close()

        names = np.array([f"{i + 1:06d}@particles.mrcs" for i in range(n)], dtype=object)
        meta = ParticleMetadata(
            source=os.path.join(out_dir, "particles.star"), stack_paths=np.full(n, os.path.join(out_dir,
                                                                                                 "particles.mrcs"),
                                                                                  dtype=object),
            image_indices=np.arange(n), image_names=names, pixel_size_angstrom=np.full(n, pixel_size_angstrom),
            box_size=np.full(n, size), ctf=ctf, optics_group=np.ones(n, dtype=int), angles_degrees=angles,
            origins_angstrom=origins, extra_columns=None if effects is None and len(maps) == 1 else {
                "rlnClassNumber": truth + 1 if effects is None else np.where(effects.junk > 0, len(maps) + 1, truth + 1),
                **({} if effects is None else {"rlnMicrographName": np.array(
                    [f"micrograph_{m + 1:04d}.mrc" for m in effects.micrograph], object)})})
        star.write_star(os.path.join(work, "particles.star"), meta)
        names = ["particles.mrcs", "ground_truth.mrc", "particles.star"]
        mrc.write_map(os.path.join(work, "ground_truth.mrc"), maps[0], pixel_size_angstrom)
        for c in range(len(maps) if len(maps) > 1 else 0):
            names.append(f"ground_truth_class_{c + 1:02d}.mrc")
            mrc.write_map(os.path.join(work, names[-1]), maps[c], pixel_size_angstrom)
        for name in names:
            os.replace(os.path.join(work, name), os.path.join(out_dir, name))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mixture = f" from {len(maps)} maps ({', '.join(str(int(np.sum(truth == c))) for c in range(len(maps)))})" \
        if len(maps) > 1 else ""
    log(f"simulated {n} particles{mixture} of {size} px at {pixel_size_angstrom} A/px, SNR {spec.snr}, "
        f"signal variance {signal_var:.4g}, noise sigma {noise_sigma:.4g}")
    return meta, noise_sigma
