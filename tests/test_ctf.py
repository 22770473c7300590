"""CTF against a hand-written textbook formula, its zero crossings and RELION's sign conventions."""

import numpy as np

from recon import ctf as ctf_lib


def textbook_ctf(k, defocus, voltage_kv, cs_mm, q, bfactor=0.0):
    """sqrt(1-Q^2) sin(chi) + Q cos(chi), chi = pi lambda df k^2 - pi/2 Cs lambda^3 k^4 (white particles)."""
    v = voltage_kv * 1e3
    lam = 12.2643247 / np.sqrt(v * (1 + 0.978466e-6 * v))
    chi = np.pi * lam * defocus * k**2 - 0.5 * np.pi * cs_mm * 1e7 * lam**3 * k**4
    return (np.sqrt(1 - q * q) * np.sin(chi) + q * np.cos(chi)) * np.exp(-bfactor * k**2 / 4)


def test_ctf_at_zero_frequency_is_amplitude_contrast_and_lowest_lobe_positive():
    p = ctf_lib.make_ctf_params(15000.0, 14000.0, 30.0, 300.0, 2.7, 0.1)
    assert np.isclose(ctf_lib.ctf_value(np.zeros((1, 2)), p)[0], 0.1)
    k = np.stack([np.linspace(0, 0.005, 20), np.zeros(20)], -1)
    assert np.all(ctf_lib.ctf_value(k, p) > 0)


def test_ctf_matches_textbook_formula_isotropic():
    k = np.linspace(0, 0.3, 400)
    freqs = np.stack([k * np.cos(0.3), k * np.sin(0.3)], -1)
    p = ctf_lib.make_ctf_params(21000.0, 21000.0, 0.0, 300.0, 2.7, 0.07, bfactor_angstrom2=50.0)
    np.testing.assert_allclose(ctf_lib.ctf_value(freqs, p), textbook_ctf(k, 21000.0, 300.0, 2.7, 0.07, 50.0),
                               atol=1e-10)


def test_astigmatism_defocus_u_along_angle_v_across():
    k = np.linspace(0, 0.25, 200)
    angle = 35.0
    p = ctf_lib.make_ctf_params(20000.0, 15000.0, angle, 200.0, 2.0, 0.1)
    a = np.radians(angle)
    along = np.stack([k * np.cos(a), k * np.sin(a)], -1)
    across = np.stack([k * np.cos(a + np.pi / 2), k * np.sin(a + np.pi / 2)], -1)
    np.testing.assert_allclose(ctf_lib.ctf_value(along, p), textbook_ctf(k, 20000.0, 200.0, 2.0, 0.1), atol=1e-10)
    np.testing.assert_allclose(ctf_lib.ctf_value(across, p), textbook_ctf(k, 15000.0, 200.0, 2.0, 0.1), atol=1e-10)


def test_zero_crossings_without_cs_and_amplitude_contrast():
    defocus, kv = 18000.0, 300.0
    v = kv * 1e3
    lam = 12.2643247 / np.sqrt(v * (1 + 0.978466e-6 * v))
    p = ctf_lib.make_ctf_params(defocus, defocus, 0.0, kv, 0.0, 0.0)
    for n in range(1, 6):
        k0 = np.sqrt(n / (lam * defocus))  # pi lambda df k^2 = n pi
        vals = ctf_lib.ctf_value(np.array([[k0, 0.0], [k0 * 0.995, 0.0], [k0 * 1.005, 0.0]]), p)
        assert abs(vals[0]) < 1e-9
        assert np.sign(vals[1]) != np.sign(vals[2])


def test_phase_shift_of_90_degrees_turns_sine_into_cosine_like_start():
    # With a 90 degree phase plate and Q = 0 the CTF at k = 0 is -sin(-pi/2) = 1.
    p = ctf_lib.make_ctf_params(5000.0, 5000.0, 0.0, 300.0, 2.7, 0.0, phase_shift_degrees=90.0)
    assert np.isclose(ctf_lib.ctf_value(np.zeros((1, 2)), p)[0], 1.0)
