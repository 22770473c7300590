"""Settings derived from the data (recon/auto_settings.py): the particle radius from the images, the schedule in
passes, the choices by box size, overrides kept, resolving twice changes nothing, too few particles refused."""

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from recon import auto_settings, synthesis
from recon.data import open_dataset
from recon.errors import InputError
from recon.io import metadata
from recon.configs import default, paper
from tests.conftest import REPO

PIXEL = 5.0
BOX = 48


def ball(radius_pixels: float) -> np.ndarray:
    c = np.arange(BOX) - BOX // 2
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    return (r <= radius_pixels).astype(np.float32)


@pytest.fixture(scope="module")
def balls(tmp_path_factory):
    """Two datasets of a uniform ball (radius 8 and 12 px) at SNR 0.05, 1 px shifts, 1-3 um defocus."""
    out = {}
    for radius in (8, 12):
        folder = tmp_path_factory.mktemp(f"ball{radius}")
        synthesis.simulate_dataset(ball(radius), PIXEL, synthesis.SimulationSpec(
            num_particles=1000, snr=0.05, seed=radius, shift_sigma_angstrom=PIXEL), str(folder), log=lambda *_: None)
        out[radius] = folder / "particles.star"
    return out


def open_raw(path):
    return open_dataset(metadata.read_particles(str(path)), estimate_noise=False)


def test_particle_radius_comes_from_the_images(balls):
    """The ball's edge, widened by at most its shifts (1 px), the 20-A low-pass (2 px) and the CTF's spread
    (delocalisation of ~6 px at 3 um and 1/20 A, of which the 5 % threshold keeps a little): within -1 / +6 px;
    and it follows the ball: the two estimates differ by the 4 px between the balls, within 2 px."""
    estimates = {}
    for radius in (8, 12):
        config, lines = auto_settings.prepare(default.get_config(), open_raw(balls[radius]))
        estimates[radius] = config.particle_radius_angstrom / PIXEL
        assert radius - 1 <= estimates[radius] <= radius + 6, estimates
        assert any("particle radius" in line for line in lines)
    assert abs(estimates[12] - estimates[8] - 4.0) <= 2.0, estimates


def test_the_particle_radius_is_not_widened_by_coloured_noise(tmp_path):
    """Noise whose power falls as k^-1.5 (the lowest rings ~10x white, recon.synthesis) is stationary: the estimate
    keeps the bounds of the white-noise test above. (Subtracting each image's corner mean instead leaves the centre
    more variable than the corners and read the whole box as particle: 0.45 of it, the cap.)"""
    synthesis.simulate_dataset(ball(8), PIXEL, synthesis.SimulationSpec(
        num_particles=1000, snr=0.05, seed=3, shift_sigma_angstrom=PIXEL, noise_exponent=1.5), str(tmp_path),
        log=lambda *_: None)
    config, _ = auto_settings.prepare(default.get_config(), open_raw(tmp_path / "particles.star"))
    assert 8 - 1 <= config.particle_radius_angstrom / PIXEL <= 8 + 6, config.particle_radius_angstrom


def test_the_schedule_is_counted_in_passes_and_the_choices_follow_the_box(balls):
    dataset = open_raw(balls[12])
    config, _ = auto_settings.resolve(default.get_config(), dataset)
    n_train = len(dataset) - min(config.num_heldout, len(dataset) // 10)
    n_batches = -(-n_train // config.batch_size)
    assert n_batches >= 8  # enough minibatches for SAGD's average of stored gradients
    passes = config.schedule.iterations_per_level / n_batches
    wanted = min(max(auto_settings.PARTICLES_PER_LEVEL / n_train, 0.05), 10.0)  # 900 particles: capped at 10 passes
    assert wanted == 10.0 and passes == pytest.approx(wanted, abs=1.0 / n_batches)
    assert config.schedule.target_resolution_angstrom >= 2 * PIXEL / 0.9  # within Nyquist
    assert config.schedule.start_resolution_angstrom == 40.0
    assert config.likelihood_kernel == "linear" and config.likelihood_oversampling == 3 and config.remat is False
    assert config.optimizer.line_search == "minibatch"
    assert config.sampling.start_iteration % config.schedule.iterations_per_level == 0
    assert config.sampling.tau0 == pytest.approx(max(1.0, 0.1 * n_batches), rel=0.01)
    assert config.quadrature.max_shift_angstrom == pytest.approx(0.12 * BOX * PIXEL, abs=0.05)
    assert config.automatic is False
    again, lines = auto_settings.resolve(config, dataset)  # a resumed run resolves to the same settings
    assert again.to_dict() == config.to_dict() and lines == []


def test_given_values_are_kept(balls):
    dataset = open_raw(balls[8])
    c = default.get_config()
    c.batch_size, c.particle_radius_angstrom, c.likelihood_kernel = 20, 70.0, "kaiser_bessel"
    c.schedule.iterations_per_level, c.sampling.start_iteration, c.sampling.tau0 = 33, 7, 12.0
    config, _ = auto_settings.prepare(c, dataset)
    assert (config.batch_size, config.particle_radius_angstrom, config.likelihood_kernel) == (20, 70.0, "kaiser_bessel")
    assert (config.schedule.iterations_per_level, config.sampling.start_iteration) == (33, 7)
    assert config.sampling.tau0 == 12.0 and config.likelihood_oversampling == 2  # Kaiser-Bessel's own
    c = default.get_config()
    c.likelihood_oversampling = 4
    assert auto_settings.resolve(c, dataset)[0].likelihood_oversampling == 4
    assert dataset.particle_radius_angstrom == 70.0


def test_passes_turn_into_iterations_in_fixed_configs_too(balls):
    dataset = open_raw(balls[8])
    c = paper.get_config()
    c.batch_size, c.schedule.passes_per_level, c.sampling.tau0_passes = 50, 2.0, 0.5
    config, lines = auto_settings.resolve(c, dataset)
    assert lines == [] and config.schedule.iterations_per_level == 2 * 18  # 900 train particles: 18 minibatches
    assert config.sampling.tau0 == 9.0
    assert paper.get_config().schedule.iterations_per_level == auto_settings.resolve(
        paper.get_config(), dataset)[0].schedule.iterations_per_level  # nothing set in passes: unchanged


def test_too_few_particles_get_one_line(tmp_path):
    synthesis.simulate_dataset(ball(6), PIXEL, synthesis.SimulationSpec(num_particles=30, seed=1), str(tmp_path),
                               log=lambda *_: None)
    with pytest.raises(InputError, match=r"particles.star: 30 particles: too few"):
        auto_settings.resolve(default.get_config(), open_raw(tmp_path / "particles.star"))


def test_the_plain_command_records_its_settings(balls, tmp_path):
    workdir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "recon.reconstruct", "--particles", str(balls[12]), "--workdir",
                             str(workdir), "--quiet", "--config.stop.max_iterations=3"], cwd=REPO,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    stored = json.loads((workdir / "config.json").read_text())
    assert stored["automatic"] is False and stored["likelihood_kernel"] == "linear"
    assert stored["schedule"]["iterations_per_level"] > 0 and stored["particle_radius_angstrom"] > 0
    log = (workdir / "run.log").read_text()
    for what in ("particle radius", "shifts up to", "schedule", "importance sampling from", "interpolation"):
        assert f"settings: {what}" in log
