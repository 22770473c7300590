"""Conventions against independent references: scipy's rotations, numpy's FFT and roll, RELION's documentation."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from recon import conventions as cv


def test_euler_matches_scipy_intrinsic_zyz_transposed():
    rng = np.random.default_rng(1)
    angles = np.stack([rng.uniform(-180, 180, 50), rng.uniform(0, 180, 50), rng.uniform(-180, 180, 50)], -1)
    ours = cv.euler_to_matrix(angles)
    reference = Rotation.from_euler("ZYZ", angles, degrees=True).as_matrix().transpose(0, 2, 1)
    np.testing.assert_allclose(ours, reference, atol=1e-12)


def test_euler_special_cases_by_hand():
    # rot = 90 only: A = [[0, 1, 0], [-1, 0, 0], [0, 0, 1]] (RELION's Euler_angles2matrix with alpha = 90).
    np.testing.assert_allclose(cv.euler_to_matrix(np.array([90.0, 0, 0])),
                               [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-12)
    # tilt = 90 only: the beam direction (third row) is the map's +x axis.
    a = cv.euler_to_matrix(np.array([0.0, 90.0, 0.0]))
    np.testing.assert_allclose(cv.projection_direction(a), [1, 0, 0], atol=1e-12)
    # (rot, tilt) = (90, 90): beam along the map's +y axis.
    a = cv.euler_to_matrix(np.array([90.0, 90.0, 0.0]))
    np.testing.assert_allclose(cv.projection_direction(a), [0, 1, 0], atol=1e-12)


@pytest.mark.parametrize("tilt", [0.0, 1e-9, 37.0, 90.0, 179.0, 180.0])
def test_matrix_to_euler_round_trip(tilt):
    rng = np.random.default_rng(2)
    for rot, psi in rng.uniform(-179, 179, (20, 2)):
        m = cv.euler_to_matrix(np.array([rot, tilt, psi]))
        back = cv.euler_to_matrix(cv.matrix_to_euler(m))
        np.testing.assert_allclose(back, m, atol=1e-9)


def test_rotation_matrices_are_proper():
    rng = np.random.default_rng(3)
    m = cv.euler_to_matrix(rng.uniform(-180, 180, (30, 3)))
    np.testing.assert_allclose(m @ m.transpose(0, 2, 1), np.broadcast_to(np.eye(3), m.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=1e-12)


@pytest.mark.parametrize("size", [16, 17])
def test_centred_fft_origin_and_frequencies(size):
    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1.0  # the origin
    np.testing.assert_allclose(cv.centred_fft2(delta), np.ones((size, size)), atol=1e-12)
    # A delta at x = +1 has transform exp(-2 pi i kx) with kx from image_frequency_grid (cycles/pixel).
    delta = np.zeros((size, size))
    delta[size // 2, size // 2 + 1] = 1.0
    k = cv.image_frequency_grid(size)
    np.testing.assert_allclose(cv.centred_fft2(delta), np.exp(-2j * np.pi * k[..., 0]), atol=1e-12)
    img = np.random.default_rng(0).normal(size=(size, size))
    np.testing.assert_allclose(cv.centred_ifft2(cv.centred_fft2(img)).real, img, atol=1e-12)


def test_positive_origin_moves_particle_to_centre_minus_origin():
    """RELION: the particle's centre lies at (image centre - origin); applying origin o = translating by -o."""
    size, pixel = 32, 2.0
    img = np.zeros((size, size))
    img[size // 2, size // 2] = 1.0
    origin = np.array([3.0, -2.0]) * pixel  # (ox, oy) Angstrom
    k = cv.image_frequency_grid(size, pixel)
    shifted = cv.centred_ifft2(cv.centred_fft2(img) * cv.shift_phase(k, origin)).real
    expected = np.roll(img, shift=(2, -3), axis=(0, 1))  # y by -oy = +2 px, x by -ox = -3 px
    np.testing.assert_allclose(shifted, expected, atol=1e-12)


def test_shift_then_unshift_is_identity():
    k = cv.image_frequency_grid(24, 1.3)
    t = np.array([1.7, -4.2])
    np.testing.assert_allclose(cv.shift_phase(k, t) * cv.shift_phase(k, -t), 1.0, atol=1e-12)


def test_electron_wavelength_textbook_values():
    # Textbook relativistic wavelengths: 300 kV -> 0.01969 A, 200 kV -> 0.02508 A, 100 kV -> 0.03701 A.
    np.testing.assert_allclose(cv.electron_wavelength_angstrom(np.array([300.0, 200.0, 100.0])),
                               [0.019687, 0.025079, 0.037014], rtol=2e-4)
