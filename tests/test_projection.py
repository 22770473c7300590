"""Forward model: Fourier slices against exact line integrals and a real-space projection; adjointness."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from recon import conventions as cv
from recon import projection as pj
from recon.ctf import make_ctf_params
from tests.conftest import analytic_projection, blob_volume

POSES = [(0.0, 0.0, 0.0), (30.0, 60.0, -20.0), (123.0, 100.0, 45.0), (-70.0, 150.0, 200.0), (10.0, 90.0, 90.0)]
SIZE = 32


@pytest.fixture(scope="module")
def blobs():
    vol, desc = blob_volume(SIZE, seed=4)
    return vol, desc, pj.prepare_volume_ft(jnp.asarray(vol, jnp.float32))


def _relative_error(a, b, mask):
    return np.linalg.norm(a[mask] - b[mask]) / np.linalg.norm(b[mask])


@pytest.mark.parametrize("angles", POSES)
def test_fourier_slice_matches_exact_projection(blobs, angles):
    vol, desc, vft = blobs
    a = cv.euler_to_matrix(np.array(angles))
    freqs = pj.nyquist_disk_frequencies(SIZE)
    inside = np.sqrt(np.sum(freqs**2, -1)) <= 0.45
    values = np.asarray(pj.fourier_slice(vft, jnp.asarray(a, jnp.float32), jnp.asarray(freqs, jnp.float32)))
    exact = cv.centred_fft2(analytic_projection(SIZE, desc, a)).ravel()
    assert _relative_error(values, exact, inside) < 0.01


@pytest.mark.parametrize("angles", POSES[1:4])
def test_fourier_slice_matches_real_space_projection(blobs, angles):
    vol, desc, vft = blobs
    a = jnp.asarray(cv.euler_to_matrix(np.array(angles)), jnp.float32)
    freqs = pj.nyquist_disk_frequencies(SIZE)
    inside = np.sqrt(np.sum(freqs**2, -1)) <= 0.45
    values = np.asarray(pj.fourier_slice(vft, a, jnp.asarray(freqs, jnp.float32)))
    real_space = np.asarray(pj.real_space_projection(jnp.asarray(vol, jnp.float32), a))
    assert _relative_error(values, cv.centred_fft2(real_space).ravel(), inside) < 0.02


def test_real_space_projection_matches_exact_line_integral(blobs):
    vol, desc, _ = blobs
    a = cv.euler_to_matrix(np.array([30.0, 60.0, -20.0]))
    img = np.asarray(pj.real_space_projection(jnp.asarray(vol, jnp.float32), jnp.asarray(a, jnp.float32)))
    exact = analytic_projection(SIZE, desc, a)
    assert np.linalg.norm(img - exact) / np.linalg.norm(exact) < 0.03


def test_slice_adjoint_identity():
    rng = np.random.default_rng(0)
    padded = 2 * 12
    x = jnp.asarray(rng.normal(size=(padded,) * 3) + 1j * rng.normal(size=(padded,) * 3), jnp.complex64)
    freqs = jnp.asarray(pj.nyquist_disk_frequencies(12), jnp.float32)
    y = jnp.asarray(rng.normal(size=len(freqs)) + 1j * rng.normal(size=len(freqs)), jnp.complex64)
    a = jnp.asarray(cv.euler_to_matrix(np.array([20.0, 50.0, 80.0])), jnp.float32)
    px = pj.fourier_slice(x, a, freqs)
    pty = pj.backproject(y, a, freqs, padded)
    lhs = jnp.vdot(y, px)  # <y, P x>
    rhs = jnp.vdot(pty, x)  # <P^T y, x>
    assert abs(lhs - rhs) / abs(lhs) < 1e-4


def test_inplane_rotation_equals_rotated_frequencies(blobs):
    _, _, vft = blobs
    freqs = pj.nyquist_disk_frequencies(SIZE)[::7]
    psi = 33.0
    a0 = cv.euler_to_matrix(np.array([15.0, 70.0, 0.0]))
    a1 = cv.euler_to_matrix(np.array([15.0, 70.0, psi]))
    # A(psi) = Rz'(psi) A(0): sampling A(psi)^T k = A(0)^T Rz'(psi)^T k.
    c, s = np.cos(np.radians(psi)), np.sin(np.radians(psi))
    rotated = freqs @ np.array([[c, s], [-s, c]])  # rows k^T Rz'(psi)[:2,:2]
    v1 = pj.fourier_slice(vft, jnp.asarray(a1, jnp.float32), jnp.asarray(freqs, jnp.float32))
    v0 = pj.fourier_slice(vft, jnp.asarray(a0, jnp.float32), jnp.asarray(rotated, jnp.float32))
    np.testing.assert_allclose(np.asarray(v1), np.asarray(v0), rtol=1e-4, atol=1e-3 * float(jnp.abs(v0).max()))


def test_particle_image_equals_ctf_times_shifted_real_space_projection(blobs):
    """The whole forward model against an independent path: real-space projection, np.roll shift, CTF."""
    vol, desc, vft = blobs
    pixel = 3.0
    angles = np.array([40.0, 120.0, -60.0])
    origin_px = np.array([2.0, -3.0])
    ctf = make_ctf_params(15000.0, 14000.0, 20.0, 300.0, 2.7, 0.1)
    img = np.asarray(pj.particle_image(vft, jnp.asarray(cv.euler_to_matrix(angles), jnp.float32),
                                       jnp.asarray(origin_px * pixel, jnp.float32),
                                       type(ctf)(*(jnp.asarray(f, jnp.float32) for f in ctf)), SIZE, pixel))
    proj = analytic_projection(SIZE, desc, cv.euler_to_matrix(angles))
    proj = np.roll(proj, shift=(-int(origin_px[1]), -int(origin_px[0])), axis=(0, 1))  # particle at centre - o
    k = cv.image_frequency_grid(SIZE, pixel)
    from recon.ctf import ctf_value
    nyq = np.sqrt(np.sum((k * pixel) ** 2, -1)) <= 0.5
    ref = cv.centred_ifft2(cv.centred_fft2(proj) * ctf_value(k, ctf) * nyq).real
    assert np.linalg.norm(img - ref) / np.linalg.norm(ref) < 0.01


def test_slicing_is_jittable_and_vmappable(blobs):
    _, _, vft = blobs
    freqs = jnp.asarray(pj.nyquist_disk_frequencies(SIZE), jnp.float32)
    mats = jnp.asarray(cv.euler_to_matrix(np.array(POSES)), jnp.float32)
    batched = jax.jit(jax.vmap(pj.fourier_slice, in_axes=(None, 0, None)))(vft, mats, freqs)
    single = pj.fourier_slice(vft, mats[2], freqs)
    np.testing.assert_allclose(np.asarray(batched[2]), np.asarray(single), rtol=1e-5, atol=1e-4)
