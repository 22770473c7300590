"""Reconstruction from KNOWN poses by Wiener-filtered direct Fourier inversion.

Not the paper's method (that is ab initio, with poses marginalised); this is the reference point that checks the
forward model and the conventions end to end: if the angles, the shift sign, the CTF or the centring were wrong,
the map from the true poses of a simulated dataset would not match its ground truth.

    V_hat(k) = sum_i CTF_i conj(S_i) I_i (k)  /  (sum_i CTF_i^2 (k) + 1 / snr)

with both sums accumulated on the oversampled grid by the adjoint of trilinear slicing.
"""

from __future__ import annotations

import numpy as np

import jax
import jax.numpy as jnp

from recon import conventions, projection
from recon.ctf import CTFParams, ctf_value


def _accumulate_fn(size: int, pixel_size_angstrom: float, oversampling: int):
    padded = oversampling * size
    freqs_np = projection.nyquist_disk_frequencies(size)
    inside = np.sum(freqs_np**2, axis=-1) <= 0.25
    freqs = jnp.asarray(freqs_np[inside], jnp.float32)
    raster = jnp.asarray(np.nonzero(inside)[0])
    template = jax.ShapeDtypeStruct((padded,) * 3, jnp.complex64)

    def one(image, angles, origin, ctf):
        rotation = conventions.euler_to_matrix(angles)
        image_ft = conventions.centred_fft2(image).reshape(-1)[raster]
        freqs_angstrom = freqs / pixel_size_angstrom
        c = ctf_value(freqs_angstrom, ctf)
        data = image_ft * c * jnp.conj(conventions.shift_phase(freqs_angstrom, origin))
        return projection.slice_points(rotation, freqs, padded), data, c * c

    def batch(carry, images, angles, origins, ctf):
        points, data, weights = jax.vmap(one)(images, angles, origins, ctf)
        points = points.reshape(-1, 3)
        # One scatter for the whole batch: the adjoint of interpolating all its slice points at once.
        adjoint = jax.linear_transpose(
            lambda v: projection.interpolate(v, points, "linear", oversampling), template)
        numerator = adjoint(data.reshape(-1).astype(jnp.complex64))[0]
        denominator = adjoint(weights.reshape(-1).astype(jnp.complex64))[0].real
        return carry[0] + numerator, carry[1] + denominator

    return jax.jit(batch, donate_argnums=0), padded


def reconstruct_known_poses(dataset, indices=None, snr: float = 1.0, batch_size: int = 64,
                            oversampling: int = 2) -> np.ndarray:
    """``(D, D, D)`` float32 map from the poses and shifts in ``dataset.meta`` (normalised images)."""
    meta = dataset.meta
    if meta.angles_degrees is None:
        raise ValueError("the particle file has no angles")
    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    size, pixel = dataset.box_size, dataset.pixel_size_angstrom
    fn, padded = _accumulate_fn(size, pixel, oversampling)
    origins = meta.origins_angstrom if meta.origins_angstrom is not None else np.zeros((len(meta), 2))
    carry = (jnp.zeros((padded,) * 3, jnp.complex64), jnp.zeros((padded,) * 3, jnp.float32))
    for start in range(0, len(indices), batch_size):
        idx = indices[start:start + batch_size]
        pad = batch_size - len(idx)
        images = dataset.images(idx)
        angles, shifts, ctf = meta.angles_degrees[idx], origins[idx], meta.ctf.take(idx)
        if pad:  # keep one compiled shape: padded entries have zero images and zero CTF
            images = np.concatenate([images, np.zeros((pad, size, size), np.float32)])
            angles = np.concatenate([angles, np.zeros((pad, 3))])
            shifts = np.concatenate([shifts, np.zeros((pad, 2))])
            ctf = CTFParams(*(np.concatenate([f, np.full(pad, 0.0 if name == "scale" else f[0])])
                              for name, f in zip(CTFParams._fields, ctf)))
        carry = fn(carry, jnp.asarray(images), jnp.asarray(angles, jnp.float32), jnp.asarray(shifts, jnp.float32),
                   CTFParams(*(jnp.asarray(f, jnp.float32) for f in ctf)))
    num, den = carry
    volume_ft = num / (den + 1.0 / snr)
    full = conventions.centred_ifft3(volume_ft).real
    start = padded // 2 - size // 2
    # No gridding correction: the ratio of two sums spread by the same kernel already normalises it (dividing by
    # sinc^2 lowered the FSC against the ground truth in our checks).
    return np.asarray(full[start:start + size, start:start + size, start:start + size], dtype=np.float32)
