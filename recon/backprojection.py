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


def accumulate_fn(size: int, pixel_size_angstrom: float, oversampling: int = 2):
    """Jitted ``(carry, images (B, D, D), rotations (B, K, 3, 3), origins (B, K, 2), weights (B, K), ctf) -> carry``
    adding each image at each of its K poses, weighted, to ``carry = (numerator, denominator)`` on the
    ``oversampling * D`` grid: ``sum w CTF conj(S) I`` and ``sum w CTF^2`` (weight 0 for padding). Returns the
    function and the padded size."""
    padded = oversampling * size
    freqs_np = projection.nyquist_disk_frequencies(size)
    inside = np.sum(freqs_np**2, axis=-1) <= 0.25
    freqs = jnp.asarray(freqs_np[inside], jnp.float32)
    raster = jnp.asarray(np.nonzero(inside)[0])
    template = jax.ShapeDtypeStruct((padded,) * 3, jnp.complex64)

    def one(image, rotations, origins, weights, ctf):
        image_ft = conventions.centred_fft2(image).reshape(-1)[raster]
        freqs_angstrom = freqs / pixel_size_angstrom
        c = ctf_value(freqs_angstrom, ctf)

        def pose(rotation, origin, weight):
            data = weight * image_ft * c * jnp.conj(conventions.shift_phase(freqs_angstrom, origin))
            return projection.slice_points(rotation, freqs, padded), data, weight * c * c

        return jax.vmap(pose)(rotations, origins, weights)

    def batch(carry, images, rotations, origins, weights, ctf):
        points, data, power = jax.vmap(one)(images, rotations, origins, weights, ctf)
        points = points.reshape(-1, 3)
        # One scatter for the whole batch: the adjoint of interpolating all its slice points at once.
        adjoint = jax.linear_transpose(
            lambda v: projection.interpolate(v, points, "linear", oversampling), template)
        numerator = adjoint(data.reshape(-1).astype(jnp.complex64))[0]
        denominator = adjoint(power.reshape(-1).astype(jnp.complex64))[0].real
        return carry[0] + numerator, carry[1] + denominator

    return jax.jit(batch, donate_argnums=0), padded


def empty_sums(size: int, oversampling: int = 2):
    padded = oversampling * size
    return jnp.zeros((padded,) * 3, jnp.complex64), jnp.zeros((padded,) * 3, jnp.float32)


def invert(carry, size: int, snr: float) -> np.ndarray:
    """``(D, D, D)`` float32 map ``numerator / (denominator + 1 / snr)`` brought back to real space and cropped.
    No gridding correction: the ratio of two sums spread by the same kernel already normalises it."""
    num, den = carry
    full = conventions.centred_ifft3(num / (den + 1.0 / snr)).real
    padded = num.shape[0]
    start = padded // 2 - size // 2
    return np.asarray(full[start:start + size, start:start + size, start:start + size], dtype=np.float32)


def reconstruct_known_poses(dataset, indices=None, snr: float = 1.0, batch_size: int = 64,
                            oversampling: int = 2) -> np.ndarray:
    """``(D, D, D)`` float32 map from the poses and shifts in ``dataset.meta`` (normalised images)."""
    meta = dataset.meta
    if meta.angles_degrees is None:
        raise ValueError("the particle file has no angles")
    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    size, pixel = dataset.box_size, dataset.pixel_size_angstrom
    fn, _ = accumulate_fn(size, pixel, oversampling)
    origins = meta.origins_angstrom if meta.origins_angstrom is not None else np.zeros((len(meta), 2))
    carry = empty_sums(size, oversampling)
    for start in range(0, len(indices), batch_size):
        idx = indices[start:start + batch_size]
        pad = batch_size - len(idx)
        images = dataset.images(idx)
        rotations = conventions.euler_to_matrix(meta.angles_degrees[idx])
        shifts, ctf, weights = origins[idx], dataset.ctf(idx), np.ones(len(idx))
        if pad:  # keep one compiled shape: padded entries have zero images and weights
            images = np.concatenate([images, np.zeros((pad, size, size), np.float32)])
            rotations = np.concatenate([rotations, np.broadcast_to(np.eye(3), (pad, 3, 3))])
            shifts = np.concatenate([shifts, np.zeros((pad, 2))])
            weights = np.concatenate([weights, np.zeros(pad)])
            ctf = CTFParams(*(np.concatenate([f, np.full(pad, f[0])]) for f in ctf))
        carry = fn(carry, jnp.asarray(images), jnp.asarray(rotations, jnp.float32)[:, None],
                   jnp.asarray(shifts, jnp.float32)[:, None], jnp.asarray(weights, jnp.float32)[:, None],
                   CTFParams(*(jnp.asarray(f, jnp.float32) for f in ctf)))
    return invert(carry, size, snr)
