"""Every convention recon relies on, defined once: array layout and centring, centred Fourier transforms, RELION's
Euler angles, RELION's origins (shifts), the RELION/CTFFIND CTF and image polarity. Each is stated in the comment
block that opens its section below, next to the functions that implement it."""

from __future__ import annotations

import numpy as np

import jax
import jax.numpy as jnp

# ----------------------------------------------------------------------------------------------------------
# Arrays and coordinates.
# * A volume is an array ``vol[z, y, x]`` (the MRC/RELION memory order, x fastest). A point is written as the
#   vector ``(x, y, z)``. Voxel ``i`` along an axis of length ``D`` sits at coordinate ``i - D // 2`` (pixels): the
#   centre of the box is index ``D // 2`` (RELION's and cryoSPARC's convention, odd and even boxes alike).
# * An image is an array ``img[y, x]`` with the same centring.
#
# Fourier transforms ("centred" transforms).
# ``centred_fft(x) = fftshift(fftn(ifftshift(x)))``: the real-space origin (index ``D // 2``) is moved to index 0
# before the transform and the zero frequency is moved to index ``D // 2`` after it. Frequency index ``j`` stands
# for ``(j - D // 2) / D`` cycles per pixel, i.e. ``(j - D // 2) / (D * pixel_size_angstrom)`` per Angstrom. The
# forward transform carries no normalisation (numpy's ``norm="backward"``), so the zero frequency of an image is
# the sum of its pixels. Frequency vectors are ``(kx, ky)`` / ``(kx, ky, kz)``, matching the point vectors.


def box_coordinates(size: int) -> np.ndarray:
    """Coordinates (pixels) of the samples of one axis of length ``size``: ``arange(size) - size // 2``."""
    return np.arange(size) - size // 2


def frequency_coordinates(size: int) -> np.ndarray:
    """Frequencies (cycles per pixel) of a centred transform of length ``size``: ``(arange(size) - size//2)/size``."""
    return box_coordinates(size) / size


def image_frequency_grid(size: int, pixel_size_angstrom: float = 1.0) -> np.ndarray:
    """The ``(size, size, 2)`` grid of ``(kx, ky)`` frequencies of a centred 2D transform, in 1/Angstrom."""
    f = frequency_coordinates(size) / pixel_size_angstrom
    ky, kx = np.meshgrid(f, f, indexing="ij")
    return np.stack([kx, ky], axis=-1)


def array_module(*arrays):
    """jax.numpy where any argument is a jax array (or a tracer), numpy otherwise: for functions that serve both."""
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def centred_fft2(image):
    """Centred 2D FFT over the last two axes (``[..., y, x]``); works on numpy and jax arrays."""
    xp = jnp if isinstance(image, jnp.ndarray) else np
    return xp.fft.fftshift(xp.fft.fft2(xp.fft.ifftshift(image, axes=(-2, -1))), axes=(-2, -1))


def centred_ifft2(image_ft):
    """Inverse of :func:`centred_fft2` (returns complex; take ``.real`` for real images)."""
    xp = jnp if isinstance(image_ft, jnp.ndarray) else np
    return xp.fft.fftshift(xp.fft.ifft2(xp.fft.ifftshift(image_ft, axes=(-2, -1))), axes=(-2, -1))


def centred_fft3(volume):
    """Centred 3D FFT of ``vol[z, y, x]``."""
    xp = jnp if isinstance(volume, jnp.ndarray) else np
    return xp.fft.fftshift(xp.fft.fftn(xp.fft.ifftshift(volume)))


def centred_ifft3(volume_ft):
    """Inverse of :func:`centred_fft3` (complex)."""
    xp = jnp if isinstance(volume_ft, jnp.ndarray) else np
    return xp.fft.fftshift(xp.fft.ifftn(xp.fft.ifftshift(volume_ft)))


# ----------------------------------------------------------------------------------------------------------
# Euler angles (RELION).
# RELION's ``rlnAngleRot``, ``rlnAngleTilt``, ``rlnAnglePsi`` (degrees, ZYZ) define the matrix
#
#     A = Rz(psi) @ Ry(tilt) @ Rz(rot),   with  Rz(a) = [[c, s, 0], [-s, c, 0], [0, 0, 1]],
#                                              Ry(a) = [[c, 0, -s], [0, 1, 0], [s, 0, c]]
#
# (RELION's ``Euler_angles2matrix``). ``A`` maps reference (map) coordinates to image coordinates: the particle
# image is the projection along the image z axis of the map rotated by ``A``,
#
#     image(x, y) = integral over z of  V(A^T (x, y, z)),
#
# and, by the Fourier-slice theorem, its transform samples the map's transform at ``A^T (kx, ky, 0)``. In terms of
# active rotations, ``A = (Rz(rot) Ry(tilt) Rz(psi))^T`` -- the transpose of scipy's intrinsic ``"ZYZ"`` matrix.
# The projection direction (beam direction) in map coordinates is ``A^T (0, 0, 1)``, the third row of ``A``.


def euler_to_matrix(angles_degrees):
    """RELION ``(rot, tilt, psi)`` in degrees, shape ``(..., 3)`` -> matrices ``A``, shape ``(..., 3, 3)``.

    ``A`` maps map coordinates to image coordinates (see the module docstring). numpy in, numpy out; jax in,
    jax out.
    """
    xp = jnp if isinstance(angles_degrees, jnp.ndarray) else np
    a = xp.deg2rad(angles_degrees)
    rot, tilt, psi = a[..., 0], a[..., 1], a[..., 2]
    ca, sa = xp.cos(rot), xp.sin(rot)
    cb, sb = xp.cos(tilt), xp.sin(tilt)
    cg, sg = xp.cos(psi), xp.sin(psi)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    rows = [
        [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
        [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
        [sc, ss, cb],
    ]
    return xp.stack([xp.stack(r, axis=-1) for r in rows], axis=-2)


def matrix_to_euler(matrix: np.ndarray) -> np.ndarray:
    """Inverse of :func:`euler_to_matrix` (numpy, float64): ``(..., 3, 3)`` -> ``(..., 3)`` degrees.

    Returns ``tilt`` in ``[0, 180]``, ``rot`` and ``psi`` in ``(-180, 180]``. At ``tilt = 0`` or ``180`` only
    ``rot + psi`` (resp. ``psi - rot``) is defined; ``rot`` is then set to 0.
    """
    m = np.asarray(matrix, dtype=np.float64)
    cb = np.clip(m[..., 2, 2], -1.0, 1.0)
    tilt = np.arccos(cb)
    sb = np.sqrt(np.maximum(0.0, 1.0 - cb**2))
    regular = sb > 1e-6
    # Regular case: A[2,0] = sb*ca, A[2,1] = sb*sa, A[0,2] = -cg*sb, A[1,2] = sg*sb.
    rot = np.where(regular, np.arctan2(m[..., 2, 1], m[..., 2, 0]), 0.0)
    psi_regular = np.arctan2(m[..., 1, 2], -m[..., 0, 2])
    # Degenerate: tilt ~ 0 -> A = Rz(psi + rot); tilt ~ pi -> A = Rz(psi) Ry(pi) Rz(rot); with rot = 0,
    # A[0,0] = cg*cb, A[0,1] = sg.
    psi_degenerate = np.arctan2(m[..., 0, 1], m[..., 0, 0] * np.sign(cb + 1e-30))
    psi = np.where(regular, psi_regular, psi_degenerate)
    return np.rad2deg(np.stack([rot, tilt, psi], axis=-1))


def projection_direction(matrix):
    """Beam direction in map coordinates, ``A^T (0, 0, 1)``: the third row of ``A``, shape ``(..., 3)``."""
    return matrix[..., 2, :]


# ----------------------------------------------------------------------------------------------------------
# Shifts (RELION origins).
# ``rlnOriginXAngst``/``rlnOriginYAngst`` (RELION >= 3.1; ``rlnOriginX``/``rlnOriginY`` in pixels before) give
# the offset ``o`` such that the particle's centre lies at ``image centre - o``: the image is the centred
# projection translated by ``-o``. In Fourier space that is a multiplication by ``exp(+2 pi i k . o)``. recon stores
# shifts in exactly this sense (``origin_angstrom``), never negated.


def shift_phase(freqs_per_angstrom, origin_angstrom):
    """Phase factor that applies a RELION origin ``o`` (Angstrom) to a centred image transform.

    ``freqs_per_angstrom``: ``(..., 2)`` frequencies ``(kx, ky)``; ``origin_angstrom``: ``(2,)`` ``(ox, oy)``.
    Returns ``exp(+2 pi i k . o)``: the image content moves by ``-o`` (the particle centre is at centre - o).
    """
    xp = jnp if isinstance(freqs_per_angstrom, jnp.ndarray) or isinstance(origin_angstrom, jnp.ndarray) else np
    phase = 2.0 * np.pi * (freqs_per_angstrom[..., 0] * origin_angstrom[..., 0]
                           + freqs_per_angstrom[..., 1] * origin_angstrom[..., 1])
    return xp.cos(phase) + 1j * xp.sin(phase)


# ----------------------------------------------------------------------------------------------------------
# Contrast transfer function (RELION / CTFFIND).
# With ``u`` the spatial frequency (1/Angstrom) at azimuth ``phi`` (``atan2(ky, kx)``), underfocus positive,
#
#     defocus(phi) = (dU + dV) / 2 + (dU - dV) / 2 * cos(2 (phi - defocus_angle))
#     gamma = -pi * lambda * defocus(phi) * u^2 + pi / 2 * Cs * lambda^3 * u^4 - phase_shift - atan(Q / sqrt(1-Q^2))
#     CTF = -sin(gamma) * exp(-B u^2 / 4) * scale
#
# (``dU = rlnDefocusU``, ``dV = rlnDefocusV``, ``defocus_angle = rlnDefocusAngle``, ``Q = rlnAmplitudeContrast``,
# ``B = rlnCtfBfactor``, ``Cs`` in Angstrom, ``lambda`` the relativistic electron wavelength). ``CTF(0) = Q > 0``:
# the lowest-frequency lobe is positive.
#
# Image polarity.
# RELION expects particles white on a dark background: an image is the CTF above applied to the projection of a
# positive density, plus noise. recon uses the same model; stacks with dark particles are read with
# ``invert_contrast=True`` (or, for cryoSPARC, the stack's ``blob/sign``).


def electron_wavelength_angstrom(voltage_kv):
    """Relativistic electron wavelength (Angstrom) for an acceleration voltage in kV."""
    xp = jnp if isinstance(voltage_kv, jnp.ndarray) else np
    v = voltage_kv * 1e3
    return 12.2643247 / xp.sqrt(v * (1.0 + 0.978466e-6 * v))


def astigmatic_defocus_angstrom(azimuth_radians, defocus_u_angstrom, defocus_v_angstrom, defocus_angle_degrees):
    """Underfocus (positive, Angstrom) along the azimuth ``atan2(ky, kx)`` (RELION/CTFFIND convention):

    ``(dU + dV)/2 + (dU - dV)/2 * cos(2 (azimuth - angle))``; ``dU`` applies along ``angle``, ``dV`` across it.
    """
    xp = jnp if isinstance(azimuth_radians, jnp.ndarray) else np
    mean = 0.5 * (defocus_u_angstrom + defocus_v_angstrom)
    half_diff = 0.5 * (defocus_u_angstrom - defocus_v_angstrom)
    return mean + half_diff * xp.cos(2.0 * (azimuth_radians - xp.deg2rad(defocus_angle_degrees)))


CS_MM_TO_ANGSTROM = 1e7
