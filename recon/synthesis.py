"""Synthetic particle datasets drawn from the generative model of Eq. 1-2 (library side of ``recon.simulate``).

Poses are uniform on SO(3); shifts are Gaussian (RELION origins); CTFs are per particle with defocus uniform in a
range and random astigmatism; noise is white Gaussian with ``sigma^2 = signal variance / snr``, where the signal
variance is the mean over particles of the variance of the noise-free image over the whole box (the definition
used by the paper's synthetic data and by cryoDRGN/ASPIRE). ``snr = inf`` gives noise-free images.
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


def render_batch_fn(size: int, pixel_size_angstrom: float):
    """Jitted ``(volume_ft, angles (B,3), origins (B,2), ctf) -> (B, D, D)`` noise-free particle images."""

    def one(volume_ft, angles, origin, ctf):
        rotation = conventions.euler_to_matrix(angles)
        return projection.particle_image(volume_ft, rotation, origin, ctf, size, pixel_size_angstrom)

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0)))


def simulate_dataset(volume: np.ndarray, pixel_size_angstrom: float, spec: SimulationSpec, out_dir: str,
                     log=print) -> tuple[ParticleMetadata, float]:
    """Write ``particles.star``, ``particles.mrcs`` and ``ground_truth.mrc`` into ``out_dir``.

    Files are written under temporary names and renamed at the end: a failure leaves nothing half-written.
    Returns the metadata and the noise standard deviation used.
    """
    size = volume.shape[0]
    n = spec.num_particles
    rng = np.random.default_rng(spec.seed)
    angles = random_poses(rng, n)
    shift_sigma = 2.0 * pixel_size_angstrom if spec.shift_sigma_angstrom is None else spec.shift_sigma_angstrom
    origins = rng.normal(0.0, shift_sigma, (n, 2))
    ctf = random_ctfs(rng, n, spec)
    volume_ft = projection.prepare_volume_ft(jnp.asarray(volume, jnp.float32))
    render = render_batch_fn(size, pixel_size_angstrom)

    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".simulate-", dir=out_dir)
    try:
        stack_tmp = os.path.join(work, "particles.mrcs")
        handle = mrc.write_stack(stack_tmp, n, size, pixel_size_angstrom)
        signal_power = 0.0
        for start in range(0, n, spec.batch_size):
            sl = slice(start, min(n, start + spec.batch_size))
            batch_ctf = CTFParams(*(jnp.asarray(f[sl], jnp.float32) for f in ctf))
            images = np.asarray(render(volume_ft, jnp.asarray(angles[sl], jnp.float32),
                                       jnp.asarray(origins[sl], jnp.float32), batch_ctf))
            handle.data[sl] = images
            signal_power += float(np.sum(np.var(images.astype(np.float64), axis=(1, 2))))
        signal_var = signal_power / n
        noise_sigma = 0.0 if not np.isfinite(spec.snr) else float(np.sqrt(signal_var / spec.snr))
        if noise_sigma > 0:
            for start in range(0, n, spec.batch_size):
                sl = slice(start, min(n, start + spec.batch_size))
                noise = rng.normal(0.0, noise_sigma, (sl.stop - sl.start, size, size)).astype(np.float32)
                handle.data[sl] = handle.data[sl] + noise
        handle.update_header_stats()
        handle.close()

        names = np.array([f"{i + 1:06d}@particles.mrcs" for i in range(n)], dtype=object)
        meta = ParticleMetadata(
            source=os.path.join(out_dir, "particles.star"), stack_paths=np.full(n, os.path.join(out_dir,
                                                                                                 "particles.mrcs"),
                                                                                  dtype=object),
            image_indices=np.arange(n), image_names=names, pixel_size_angstrom=np.full(n, pixel_size_angstrom),
            box_size=np.full(n, size), ctf=ctf, optics_group=np.ones(n, dtype=int), angles_degrees=angles,
            origins_angstrom=origins)
        star.write_star(os.path.join(work, "particles.star"), meta)
        mrc.write_map(os.path.join(work, "ground_truth.mrc"), volume, pixel_size_angstrom)
        for name in ("particles.mrcs", "ground_truth.mrc", "particles.star"):
            os.replace(os.path.join(work, name), os.path.join(out_dir, name))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"simulated {n} particles of {size} px at {pixel_size_angstrom} A/px, SNR {spec.snr}, "
        f"signal variance {signal_var:.4g}, noise sigma {noise_sigma:.4g}")
    return meta, noise_sigma
