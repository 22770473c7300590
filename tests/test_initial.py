"""The random initial volume: seeded, non-negative, inside the particle radius, made of spheres."""

import numpy as np

import jax

from recon import initial, noise, synthesis


def test_random_spheres_are_seeded_and_inside_the_radius():
    a = np.asarray(initial.random_spheres(jax.random.PRNGKey(3), 32, 10.0))
    b = np.asarray(initial.random_spheres(jax.random.PRNGKey(3), 32, 10.0))
    c = np.asarray(initial.random_spheres(jax.random.PRNGKey(4), 32, 10.0))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.min() >= 0 and np.isclose(a.max(), 1.0)
    outside = ~initial.support_mask(32, 10.0 + 2.0)  # the soft edge reaches about a pixel beyond
    assert a[outside].max() < 0.05
    assert (a > 0.5).sum() > 100  # solid spheres, not a few voxels


def start_and_truth_band_power(folder, spec, coloured: bool = False):
    """(start's, truth's) mean band power in the first level's band and (start's, truth's) image variance, over
    the projections of 100 particles' poses: a truth with point-like features (most of its image variance beyond
    the first band) simulated with ``spec``; with ``coloured``, the dataset's noise spectrum measured first (as
    the plain command does)."""
    import jax.numpy as jnp

    from recon.configs import paper
    from recon import conventions, projection, synthesis, training
    from recon.ctf import CTFParams
    from recon.data import open_dataset
    from recon.io import metadata
    from tests.conftest import blob_volume

    size, pixel = 32, 5.0
    smooth, _ = blob_volume(size, seed=2)
    rng = np.random.default_rng(0)
    sharp = np.zeros((size,) * 3)
    for _ in range(60):  # point-like features: most of the image variance beyond the first band
        z, y, x = rng.integers(size // 2 - 7, size // 2 + 7, 3)
        sharp[z, y, x] += 25.0
    truth = (smooth + sharp).astype(np.float32)
    meta, _ = synthesis.simulate_dataset(truth, pixel, spec, str(folder), log=lambda *_: None)
    config = paper.get_config()
    config.particle_radius_angstrom = 60.0
    dataset = open_dataset(metadata.read_particles(str(folder / "particles.star")), 60.0, False)
    if coloured:
        dataset.noise_power = noise.estimate(dataset)
    plan = training.make_plan(config, dataset)
    volume, _ = training.initial_volume(config, dataset, plan)

    band = 1.0 / plan.resolutions[0]
    radius = np.linalg.norm(conventions.image_frequency_grid(size, pixel), axis=-1)
    render = synthesis.render_batch_fn(size, pixel)

    def band_power(vol, angles, origins, ctf):
        img = np.asarray(render(projection.prepare_volume_ft(jnp.asarray(vol)), jnp.asarray(angles, jnp.float32),
                                jnp.asarray(origins, jnp.float32),
                                CTFParams(*(jnp.asarray(f, jnp.float32) for f in ctf))), np.float64)
        ft = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(img, axes=(-2, -1))), axes=(-2, -1))
        return np.mean(np.sum(np.abs(ft[:, radius <= band]) ** 2, -1)), np.mean(np.var(img, axis=(1, 2)))

    idx = np.arange(100)
    truth_band, truth_var = band_power(truth / dataset.noise_sigma,
                                       meta.angles_degrees[idx], meta.origins_angstrom[idx], meta.ctf.take(idx))
    start_band, start_var = band_power(volume, meta.angles_degrees[idx], np.zeros((100, 2)), meta.ctf.take(idx))
    return start_band, truth_band, start_var, truth_var


def test_initial_volume_carries_the_data_signal_power_in_the_first_band(tmp_path):
    """The start's projections have the data's signal power within the first level's band, measured against the
    noise-free projections of the true map (rendered separately), also when most of the signal is at high
    frequency (sharp features): matching the whole image's variance would make the start several times too
    strong."""
    start_band, truth_band, start_var, truth_var = start_and_truth_band_power(
        tmp_path, synthesis.SimulationSpec(num_particles=300, snr=1.0, seed=1))
    assert 0.7 < start_band / truth_band < 1.4
    assert truth_var > 2.0 * start_var  # the whole-image variance would have scaled the start up


def test_initial_volume_subtracts_the_measured_coloured_noise(tmp_path):
    """Noise power ~ k^-1.5 (several times white's in the first band): the noise subtracted from the data's band
    power is the measured spectrum's, so the start keeps the signal's power (the noise spectrum's sampling error
    over 300 images widens the bounds a little). Subtracting white noise's instead leaves most of the coloured
    noise's excess in the 'signal': a start several times too strong."""
    start_band, truth_band, _, _ = start_and_truth_band_power(
        tmp_path, synthesis.SimulationSpec(num_particles=300, snr=1.0, seed=1, noise_exponent=1.5), coloured=True)
    assert 0.6 < start_band / truth_band < 1.6
