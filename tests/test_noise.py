"""The noise power spectrum from the backgrounds (recon/noise.py) against the simulator's definition of coloured
noise (recon.synthesis.noise_shape), and the whitened likelihood's weights."""

import numpy as np
import pytest

from recon import likelihood, noise, quadrature, synthesis
from recon.data import open_dataset
from recon.io import metadata
from tests.conftest import blob_volume


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    out = tmp_path_factory.mktemp("noise")
    vol, _ = blob_volume(32, seed=2, spread=0.1)
    sets = {}
    for exponent in (0.0, 1.0, 2.0):
        folder = out / f"e{exponent}"
        synthesis.simulate_dataset(vol.astype(np.float32), 4.0, synthesis.SimulationSpec(
            1000, snr=0.05, seed=5, noise_exponent=exponent, micrographs=1 if exponent else 0), str(folder),
            log=lambda *_: None)
        sets[exponent] = open_dataset(metadata.read_particles(folder / "particles.star"),
                                      particle_radius_angstrom=0.3 * 32 * 4)
    return sets


def ring_means(values, size):
    rings = np.minimum(noise.ring_index(size), size // 2)
    return np.bincount(rings.ravel(), values.ravel()) / np.bincount(rings.ravel())


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0])
def test_background_spectrum_follows_the_noise_simulated(stacks, exponent):
    """From ring 2 on (rings 0-1 are smoothed by the mask's transform and lose the removed mean), the estimate has
    the simulated spectrum's shape: its ratio to ring means of noise_shape^2 is flat within 4 % (the estimate's
    statistical error over 1,000 images is ~1 % per ring). White noise reads 1 within 8 % in every ring from 1."""
    estimate = noise.estimate(stacks[exponent])
    target = ring_means(synthesis.noise_shape(32, exponent) ** 2, 32)
    ratio = estimate[2:] / target[2:]
    assert np.all(np.abs(ratio / np.median(ratio) - 1) < 0.04), np.round(ratio, 3)
    if exponent == 0.0:
        assert np.all(np.abs(estimate[1:] - 1) < 0.08), np.round(estimate, 3)
    else:  # power falls: a white estimate would fail
        assert estimate[3] > 2 * estimate[15]


def test_whitened_grid_divides_each_weight_by_the_noise_power():
    rule = quadrature.make_quadrature(1 / 20.0, 100.0, 10.0, 5.0)
    white = likelihood.make_grid(32, 4.0, rule, 1 / 10.0)
    spectrum = 1.0 + np.arange(17) / 4.0
    coloured = likelihood.make_grid(32, 4.0, rule, 1 / 10.0, spectrum)
    k = np.linalg.norm(np.asarray(white.freqs), axis=-1) * 32
    np.testing.assert_allclose(np.asarray(coloured.freq_weights), np.asarray(white.freq_weights) / (1 + k / 4.0),
                               rtol=1e-6)


def test_noise_level_per_micrograph_follows_the_simulated_variation(tmp_path):
    """40 micrographs, their noise sigma times 1 + U(-0.4, 0.4) (recon.synthesis, coloured k^-1): each particle's
    level is its micrograph's factor relative to the set's median sigma, so level / factor is one constant across
    micrographs, within 6 % (the median of 20 backgrounds' standard deviations: ~1 % statistical error; the
    particle's signal leaking past the radius adds a little), and the normalised images' backgrounds then have the
    same standard deviation in every micrograph; their CTF is divided by the same level. Without micrograph names
    or several optics groups there is one level."""
    from recon.configs import default
    from recon import auto_settings

    vol, _ = blob_volume(32, seed=2, spread=0.1)
    spec = synthesis.SimulationSpec(800, snr=0.05, seed=6, noise_exponent=1.0, micrographs=40, noise_variation=0.4)
    synthesis.simulate_dataset(vol.astype(np.float32), 4.0, spec, str(tmp_path), log=lambda *_: None)
    dataset = open_dataset(metadata.read_particles(tmp_path / "particles.star"), 0.3 * 32 * 4)
    config, lines = auto_settings.prepare(default.get_config(), dataset)
    truth = synthesis.draw_effects(spec, 800, np.zeros((800, 3)))
    factor = truth.noise_scale[truth.micrograph]
    ratio = dataset.noise_level / factor
    assert np.ptp(ratio) / np.median(ratio) < 0.06, (ratio.min(), ratio.max())
    assert np.ptp(factor) > 0.5  # the levels had something to follow
    assert any(line.startswith("noise level per micrograph: 40 of 40 measured") for line in lines)
    from recon.data import background_mask

    mask = background_mask(32, dataset.radius_pixels)
    by_micrograph = [np.median(dataset.images(np.flatnonzero(truth.micrograph == m))[:, mask].std(axis=1))
                     for m in range(40)]
    assert np.ptp(by_micrograph) / np.median(by_micrograph) < 0.1
    assert abs(np.median(dataset.noise_level) - 1) < 0.05  # relative to the set's sigma (a median over images)
    np.testing.assert_allclose(dataset.ctf(np.arange(5)).scale, 1.0 / dataset.noise_level[:5], rtol=1e-6)
    # a minibatch pairs the levelled images with the levelled CTF (times the amplitude scale), and carries the
    # noise class's prior log-odds
    from recon import junk, training

    amplitude = np.full(800, np.nan, np.float32)
    amplitude[1] = 1.5
    batch = training.make_batch(dataset, np.array([0, 1, -1]), 0, 0.2, amplitude)
    np.testing.assert_allclose(np.asarray(batch.ctf.scale), [1 / dataset.noise_level[0], 1.5 / dataset.noise_level[1],
                                                           1 / dataset.noise_level[0]], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(batch.images[:2]), dataset.images(np.arange(2)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(batch.junk_logit), junk.logit(0.2), rtol=1e-6)
    plain = open_dataset(metadata.read_particles(tmp_path / "particles.star"), 0.3 * 32 * 4)
    plain.meta.extra_columns.pop("rlnMicrographName")
    assert noise.group_levels(plain)[0] is None
