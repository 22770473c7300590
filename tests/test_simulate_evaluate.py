"""recon.simulate and recon.evaluate end to end, the simulated images against an independent forward model, and
one-line errors from the command line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage

from recon import conventions as cv
from recon import metrics, synthesis
from recon.ctf import ctf_value
from recon.data import open_dataset
from recon.io import metadata, mrc
from tests.conftest import REPO, analytic_projection, blob_volume


def run_cli(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=600)


def test_noise_free_simulation_matches_independent_forward_model(tmp_path):
    size, pixel = 32, 3.0
    vol, desc = blob_volume(size, seed=7, spread=0.15)
    spec = synthesis.SimulationSpec(num_particles=6, snr=float("inf"), seed=5)
    meta, sigma = synthesis.simulate_dataset(vol, pixel, spec, str(tmp_path), log=lambda *_: None)
    assert sigma == 0.0
    ds = open_dataset(metadata.read_particles(tmp_path / "particles.star"), estimate_noise=False)
    images = ds.raw_images(np.arange(6))
    k = cv.image_frequency_grid(size, pixel)
    nyquist = np.sqrt(np.sum((k * pixel) ** 2, -1)) <= 0.5
    for i in range(6):
        a = cv.euler_to_matrix(ds.meta.angles_degrees[i])
        proj = analytic_projection(size, desc, a)
        # RELION: the particle centre is at (centre - origin), i.e. the projection moves by -origin.
        ox, oy = ds.meta.origins_angstrom[i] / pixel
        proj = scipy.ndimage.shift(proj, (-oy, -ox), order=5, mode="constant")
        ctf = ds.meta.ctf.take(i)
        expected = cv.centred_ifft2(cv.centred_fft2(proj) * ctf_value(k, ctf) * nyquist).real
        assert np.linalg.norm(images[i] - expected) / np.linalg.norm(expected) < 0.02


def test_snr_is_as_requested(tmp_path):
    vol, _ = blob_volume(24, seed=2, spread=0.12)
    clean, _ = synthesis.simulate_dataset(vol, 4.0, synthesis.SimulationSpec(200, snr=float("inf"), seed=1),
                                          str(tmp_path / "a"), log=lambda *_: None)
    noisy, sigma = synthesis.simulate_dataset(vol, 4.0, synthesis.SimulationSpec(200, snr=0.05, seed=1),
                                              str(tmp_path / "b"), log=lambda *_: None)
    a = mrc.StackReader().read(str(tmp_path / "a/particles.mrcs"), np.arange(200)).astype(np.float64)
    b = mrc.StackReader().read(str(tmp_path / "b/particles.mrcs"), np.arange(200)).astype(np.float64)
    signal = np.mean(np.var(a, axis=(1, 2)))
    noise = np.var(b - a)
    assert abs(signal / noise / 0.05 - 1) < 0.02


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("groel")
    result = run_cli("recon.simulate", "--config.model=third_party/1aon/1aon.pdb.gz", "--config.box_size=32",
                     "--config.pixel_size_angstrom=8", "--config.num_particles=20", "--config.snr=0.05",
                     "--config.seed=1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_simulate_writes_dataset_and_ground_truth(simulated):
    for name in ("particles.star", "particles.mrcs", "ground_truth.mrc"):
        assert (simulated / name).exists()
    meta = metadata.read_particles(simulated / "particles.star")
    assert len(meta) == 20 and meta.angles_degrees is not None
    assert np.all((meta.ctf.defocus_u_angstrom >= 1e4) & (meta.ctf.defocus_u_angstrom <= 3e4))
    truth, pixel = mrc.read_map(simulated / "ground_truth.mrc")
    assert truth.shape == (32,) * 3 and np.isclose(pixel, 8.0)
    assert truth.max() > 0 and not (simulated / ".simulate-").exists()


def test_evaluate_reports_the_fsc_of_a_noisy_copy(simulated, tmp_path):
    """recon.evaluate --noalign on the truth and a copy with white noise (4x the map's standard deviation) against a
    textbook FSC: numpy's FFT of the same masked maps (the soft sphere recon.metrics.evaluate_maps applies), summed
    in shells of one Fourier voxel, Re sum F1 F2* / sqrt(sum |F1|^2 sum |F2|^2), and its first crossing of 0.5
    interpolated linearly in frequency. The copy's FSC falls from 1 to ~0.25, so an FSC blind to its second map, or
    one that bins the shells wrongly, fails. Tolerances: "fsc" is printed to 4 decimals; the resolution comes from
    the unrounded curve, which differs from this one by the float32 rounding of the masked maps (~1e-7)."""
    gt = str(simulated / "ground_truth.mrc")
    truth, pixel = mrc.read_map(gt)
    rng = np.random.default_rng(0)
    mrc.write_map(str(tmp_path / "noisy.mrc"), truth + 4.0 * truth.std() * rng.normal(size=truth.shape), pixel)
    result = run_cli("recon.evaluate", "--map", str(tmp_path / "noisy.mrc"), "--reference", gt, "--noalign",
                     "--fsc_png", str(tmp_path / "fsc.png"))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])

    size = truth.shape[0]
    mask = metrics.soft_sphere_mask(size, size / 2 - 3).astype(np.float64)
    f1 = np.fft.fftn(mrc.read_map(str(tmp_path / "noisy.mrc"))[0] * mask)
    f2 = np.fft.fftn(truth * mask)
    k = np.fft.fftfreq(size) * size
    shell = np.rint(np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)).astype(int)
    n = size // 2 + 1
    inside = shell < n
    sums = [np.bincount(shell[inside], v[inside], n) for v in ((f1 * f2.conj()).real, np.abs(f1) ** 2, np.abs(f2) ** 2)]
    expected = sums[0] / np.sqrt(sums[1] * sums[2])
    assert expected[1] > 0.95 and expected[-1] < 0.4  # informative: the curve crosses 0.5 inside the band
    np.testing.assert_allclose(out["fsc"], expected, atol=1e-4)
    freqs = np.arange(n) / (size * pixel)
    i = 1 + np.nonzero(expected[1:] < 0.5)[0][0]
    crossing = freqs[i - 1] + (expected[i - 1] - 0.5) / (expected[i - 1] - expected[i]) * (freqs[i] - freqs[i - 1])
    assert np.isclose(out["fsc_0.5_angstrom"], 1.0 / crossing, rtol=1e-5), (out["fsc_0.5_angstrom"], 1.0 / crossing)
    assert (tmp_path / "fsc.png").stat().st_size > 1000


@pytest.mark.parametrize("euler,flipped", [((40.0, 70.0, -100.0), True), ((-152.3, 123.7, 17.1), False),
                                           ((88.8, 9.4, 161.6), True)])
def test_alignment_recovers_rotated_mirrored_copy(euler, flipped):
    size, pixel = 32, 4.0
    vol, _ = blob_volume(size, seed=11, n_blobs=7, spread=0.18)
    r = cv.euler_to_matrix(np.array(euler))
    s = np.array([1.5, -1.0, 0.5])  # pixels
    if not flipped:  # the same check without the mirror: F = identity below
        moved = metrics.transform_volume(vol, r, s)
        result, _, _ = metrics.evaluate_maps(moved, vol, pixel)
        assert result["hand"] == "original"
        found = cv.euler_to_matrix(np.array(result["rotation_relion_degrees"]))
        angle = np.degrees(np.arccos(np.clip((np.trace(found @ r) - 1) / 2, -1, 1)))  # expected: R^T
        assert angle < 1.0
        np.testing.assert_allclose(result["shift_angstrom"], -r.T @ s * pixel, atol=0.3 * pixel)
        return
    moved = metrics.transform_volume(metrics.flip_hand(vol), r, s)
    result, curve, aligned = metrics.evaluate_maps(moved, vol, pixel)
    assert result["hand"] == "flipped"
    # Hand-derived inverse: with F = diag(1, 1, -1), R' = F R^T F and t = -F R^T s.
    f = np.diag([1.0, 1.0, -1.0])
    expected = f @ r.T @ f
    found = cv.euler_to_matrix(np.array(result["rotation_relion_degrees"]))
    angle = np.degrees(np.arccos(np.clip((np.trace(found @ expected.T) - 1) / 2, -1, 1)))
    assert angle < 1.0
    np.testing.assert_allclose(result["shift_angstrom"], -f @ r.T @ s * pixel, atol=0.3 * pixel)
    assert result["fsc_0.5_angstrom"] < 2.3 * pixel


def test_alignment_search_helpers():
    """The neighbourhood of a rotation: 27 rotations within sqrt(3) steps of it, itself included; the distinct
    best: in score order, none closer than the minimum angle to one chosen before."""
    step = 7.5
    base = cv.euler_to_matrix(np.array([[10.0, 50.0, -30.0], [100.0, 120.0, 60.0]]))
    near = metrics._neighbourhood(base, step)
    assert near.shape == (54, 3, 3)
    np.testing.assert_allclose(near @ np.swapaxes(near, 1, 2), np.broadcast_to(np.eye(3), (54, 3, 3)), atol=1e-12)
    for i in range(2):
        angles = metrics._rotation_angle_degrees(base[i], near[27 * i:27 * (i + 1)])
        assert np.sum(angles < 1e-6) == 1 and angles.max() < np.sqrt(3) * step + 1e-6
    rng = np.random.default_rng(0)
    rotations = metrics._rotation_grid(15.0)
    scores = rng.normal(size=len(rotations))
    chosen = metrics._distinct_best(scores, rotations, 8, 30.0)
    assert chosen[0] == int(np.argmax(scores)) and len(chosen) == 8
    assert list(scores[chosen]) == sorted(scores[chosen], reverse=True)
    for a in range(8):
        for b in range(a):
            assert metrics._rotation_angle_degrees(rotations[chosen[a]], rotations[chosen[b]][None])[0] >= 30.0
    # every rotation scoring higher than a chosen one is within 30 degrees of one chosen before it
    for k, c in enumerate(chosen):
        for i in np.flatnonzero(scores > scores[c]):
            assert min(metrics._rotation_angle_degrees(rotations[j], rotations[i][None])[0] for j in chosen[:k]) < 30


@pytest.mark.parametrize("args,needle", [
    (("recon.simulate", "--config.model=missing.pdb", "--config.box_size=32", "--config.pixel_size_angstrom=4",
      "--out", "x"), "missing.pdb: file not found"),
    (("recon.simulate", "--config.volume=pyproject.toml", "--out", "x"), "pyproject.toml: not"),
    (("recon.simulate", "--config.model=third_party/1aon/1aon.pdb.gz", "--out", "x"), "--config.box_size"),
    (("recon.simulate", "--config.model=third_party/1aon/1aon.pdb.gz", "--config.box_size=32",
      "--config.pixel_size_angstrom=4", "--config.snr=-1", "--out", "x"), "--config.snr must be positive"),
    (("recon.simulate", "--config.modle=third_party/1aon/1aon.pdb.gz", "--out", "x"), "did you mean --config.model"),
    (("recon.evaluate", "--map", "nope.mrc", "--reference", "nope2.mrc"), "nope.mrc: file not found"),
    (("recon.reconstruct", "--particles", "missing.star", "--workdir", "x"), "missing.star: file not found"),
    (("recon.reconstruct", "--particles", "pyproject.toml", "--workdir", "x"), "unknown particle file type"),
])
def test_command_line_errors_are_one_line(args, needle, tmp_path):
    args = tuple(str(tmp_path / "x") if a == "x" else a for a in args)
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0]
    assert not (tmp_path / "x").exists()


def _simulate(tmp_path, name, **effects):
    vol, _ = blob_volume(24, seed=2, spread=0.12)
    spec = synthesis.SimulationSpec(400, snr=effects.pop("snr", float("inf")), seed=5, **effects)
    meta, sigma = synthesis.simulate_dataset(vol.astype(np.float32), 4.0, spec, str(tmp_path / name),
                                             log=lambda *_: None)
    images = mrc.StackReader().read(str(tmp_path / name / "particles.mrcs"), np.arange(400)).astype(np.float64)
    return spec, meta, sigma, images


def test_realistic_effects_are_what_they_say(tmp_path):
    """Each effect of recon.simulate against its definition, on the same particles with and without it (the
    effects draw from their own stream, so poses, CTFs and white noise are unchanged): dark particles are the same
    stack negated; an envelope and an amplitude multiply each particle's transform by a * exp(-B k^2 / 4) (B and a
    as drawn, k in 1/A); junk is about its fraction, marked class 2, and its images are empty or not the particle's;
    preferred views put the fraction asked within a few sigma of the z axis; coloured noise has the power law asked
    (its mean over the box as white noise's), and each micrograph its own level."""
    _, plain_meta, sigma, plain = _simulate(tmp_path, "plain", snr=0.1)
    _, _, dark_sigma, dark = _simulate(tmp_path, "dark", snr=0.1, dark_particles=True)
    assert dark_sigma == sigma and np.array_equal(dark, -plain)

    _, _, _, clean = _simulate(tmp_path, "clean")
    spec, _, _, shaped = _simulate(tmp_path, "shaped", envelope_bfactor_min_angstrom2=100.0,
                                   envelope_bfactor_max_angstrom2=300.0, amplitude_spread=0.2)
    effects = synthesis.draw_effects(spec, 400, plain_meta.angles_degrees.copy())
    assert 0.15 < effects.amplitude.std() < 0.25 and 100 <= effects.envelope_bfactor.min() < 300
    k2 = np.sum(cv.image_frequency_grid(24, 4.0) ** 2, axis=-1)
    for i in range(0, 400, 40):
        expected = effects.amplitude[i] * np.exp(-effects.envelope_bfactor[i] * k2 / 4) * cv.centred_fft2(clean[i])
        assert np.linalg.norm(cv.centred_fft2(shaped[i]) - expected) < 1e-4 * np.linalg.norm(expected)

    spec, meta, _, junk = _simulate(tmp_path, "junk", junk_fraction=0.3)
    bad = meta.extra_columns["rlnClassNumber"] == 2
    assert abs(bad.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 400)
    assert np.array_equal(junk[~bad], clean[~bad])
    empty = np.all(junk[bad] == 0, axis=(1, 2))
    assert 0.3 < empty.mean() < 0.7 and not np.any(np.isclose(junk[bad][~empty], clean[bad][~empty]).all((1, 2)))

    _, meta, _, _ = _simulate(tmp_path, "views", preferred_view_fraction=0.5, preferred_view_sigma_degrees=5.0)
    near = np.mean(meta.angles_degrees[:, 1] < 15.0)  # 3 sigma; a uniform view lands there with chance 1.7 %
    expected = 0.5 + 0.5 * (1 - np.cos(np.radians(15.0))) / 2
    assert abs(near - expected) < 4 * np.sqrt(expected * (1 - expected) / 400), near

    spec, meta, sigma, noisy = _simulate(tmp_path, "coloured", snr=0.1, noise_exponent=1.0, micrographs=4,
                                         noise_variation=0.25)
    noise = noisy - clean
    effects = synthesis.draw_effects(spec, 400, plain_meta.angles_degrees.copy())
    power = np.mean(np.abs(cv.centred_fft2(noise / (sigma * effects.noise_scale[effects.micrograph])[:, None, None]))
                    ** 2, axis=0) / 24**2
    k = np.linalg.norm(cv.image_frequency_grid(24), axis=-1)
    for low, high in ((0.05, 0.15), (0.15, 0.3), (0.3, 0.5)):  # shell means of the power against (k + 1/24)^-1
        shell = (k >= low) & (k < high)
        target = np.mean(synthesis.noise_shape(24, 1.0)[shell] ** 2)
        assert abs(np.mean(power[shell]) / target - 1) < 0.05, (low, np.mean(power[shell]), target)
    assert abs(np.mean(synthesis.noise_shape(24, 1.0) ** 2) - 1) < 1e-9
    names = meta.extra_columns["rlnMicrographName"]
    for m in range(4):
        rows = names == f"micrograph_{m + 1:04d}.mrc"
        assert abs(noise[rows].std() / (sigma * effects.noise_scale[m]) - 1) < 0.03, m
    assert np.ptp(effects.noise_scale) > 0.1
