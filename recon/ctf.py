"""Contrast transfer function (RELION/CTFFIND convention; signs defined in :mod:`recon.conventions`)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

import jax.numpy as jnp

from recon import conventions


class CTFParams(NamedTuple):
    """Per-particle CTF parameters; every field has shape ``(...)`` (one value per particle, or scalars).

    ``defocus_angle_degrees``, ``phase_shift_degrees``, ``bfactor_angstrom2`` and ``scale`` follow RELION's
    ``rlnDefocusAngle``, ``rlnPhaseShift``, ``rlnCtfBfactor`` and ``rlnCtfScalefactor``.
    """

    defocus_u_angstrom: np.ndarray
    defocus_v_angstrom: np.ndarray
    defocus_angle_degrees: np.ndarray
    voltage_kv: np.ndarray
    spherical_aberration_mm: np.ndarray
    amplitude_contrast: np.ndarray
    phase_shift_degrees: np.ndarray
    bfactor_angstrom2: np.ndarray
    scale: np.ndarray

    def take(self, index) -> "CTFParams":
        """The parameters of particles ``index`` (numpy fancy indexing on every field)."""
        return CTFParams(*(np.asarray(f)[index] for f in self))

    def as_arrays(self, dtype=np.float32) -> "CTFParams":
        return CTFParams(*(np.asarray(f, dtype=dtype) for f in self))


def make_ctf_params(defocus_u_angstrom, defocus_v_angstrom=None, defocus_angle_degrees=0.0, voltage_kv=300.0,
                    spherical_aberration_mm=2.7, amplitude_contrast=0.1, phase_shift_degrees=0.0,
                    bfactor_angstrom2=0.0, scale=1.0) -> CTFParams:
    """Broadcast scalars and arrays into a :class:`CTFParams` of float64 numpy arrays."""
    if defocus_v_angstrom is None:
        defocus_v_angstrom = defocus_u_angstrom
    fields = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (
        defocus_u_angstrom, defocus_v_angstrom, defocus_angle_degrees, voltage_kv, spherical_aberration_mm,
        amplitude_contrast, phase_shift_degrees, bfactor_angstrom2, scale)))
    return CTFParams(*(np.array(f) for f in fields))


def ctf_value(freqs_per_angstrom, params: CTFParams):
    """CTF of ONE particle at frequencies ``(..., 2)`` ``(kx, ky)`` in 1/Angstrom; returns shape ``(...)``.

    ``params`` holds scalars (vmap over particles for a batch). Pure; numpy or jax.
    """
    xp = jnp if any(isinstance(a, jnp.ndarray) for a in (freqs_per_angstrom, *params)) else np
    kx, ky = freqs_per_angstrom[..., 0], freqs_per_angstrom[..., 1]
    u2 = kx * kx + ky * ky
    azimuth = xp.arctan2(ky, kx)
    defocus = conventions.astigmatic_defocus_angstrom(
        azimuth, params.defocus_u_angstrom, params.defocus_v_angstrom, params.defocus_angle_degrees)
    lam = conventions.electron_wavelength_angstrom(params.voltage_kv)
    cs = params.spherical_aberration_mm * conventions.CS_MM_TO_ANGSTROM
    q = params.amplitude_contrast
    amplitude_phase = xp.arctan2(q, xp.sqrt(1.0 - q * q))
    gamma = (-np.pi * lam * defocus * u2 + 0.5 * np.pi * cs * lam**3 * u2 * u2
             - xp.deg2rad(params.phase_shift_degrees) - amplitude_phase)
    envelope = xp.exp(-params.bfactor_angstrom2 * u2 / 4.0)
    return -xp.sin(gamma) * envelope * params.scale
