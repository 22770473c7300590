"""Baselines of Fig. 9 (recon/baselines.py): the pose search against known poses, the top-pose posteriors against
a float64 brute force, and both baselines end to end."""

import json
import os
import subprocess
import sys

import numpy as np

import jax.numpy as jnp

from experiments.configs import tiny
from recon import baselines, conventions, likelihood, metrics, quadrature, synthesis, training
from recon.data import open_dataset
from recon.io import metadata, mrc
from tests.conftest import REPO, blob_volume


def rotation_error_degrees(a, b):
    cos = (np.trace(np.swapaxes(a, -1, -2) @ b, axis1=-2, axis2=-1) - 1) / 2
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def test_projection_matching_recovers_the_poses_of_noise_free_particles(tmp_path):
    vol, _ = blob_volume(32, seed=7, n_blobs=8, spread=0.2)
    pixel = 5.0
    synthesis.simulate_dataset(vol.astype(np.float32), pixel, synthesis.SimulationSpec(
        num_particles=20, snr=float("inf"), seed=2, shift_sigma_angstrom=4.0), str(tmp_path), log=lambda *_: None)
    ds = open_dataset(metadata.read_particles(tmp_path / "particles.star"))
    rule = quadrature.make_quadrature(1 / 14.0, 32 * pixel * 0.8, 12.0, 8.0)
    grid = likelihood.make_grid(32, pixel, rule, 1 / 14.0)
    images = jnp.asarray(ds.images(np.arange(20)))
    ctf = ds.meta.ctf.take(np.arange(20))
    from recon.ctf import CTFParams
    # normalised images (unit noise scale) and the map at its own scale: correlation is blind to the amplitude
    idx, score = likelihood.batch_top_poses(jnp.asarray(vol, jnp.float32), images,
                                            CTFParams(*(jnp.asarray(f, jnp.float32) for f in ctf)), grid, pixel, 1,
                                            20, criterion="correlation")
    rotations, origins = baselines.pose_parameters(rule, np.asarray(idx)[:, 0])
    truth = conventions.euler_to_matrix(ds.meta.angles_degrees)
    errors = rotation_error_degrees(rotations, truth)
    # the nearest quadrature pose is within about one angular step of any rotation
    assert np.median(errors) < 1.5 * rule.angular_step_degrees and np.max(errors) < 3 * rule.angular_step_degrees
    shift_errors = np.linalg.norm(origins - ds.meta.origins_angstrom, axis=-1)
    assert np.max(shift_errors) <= 1.5 * rule.shift_step_angstrom
    assert np.all(np.asarray(score) > 0)


def test_top_poses_are_the_largest_posteriors_float64():
    rng = np.random.default_rng(0)
    rule = quadrature.make_quadrature(1 / 30.0, 100.0, 10.0, 5.0)
    grid = likelihood.make_grid(16, 5.0, rule, 1 / 30.0)
    table = rng.normal(0, 3, (len(rule.inplane_degrees), len(rule.shifts_angstrom), len(rule.directions)))
    idx, logp = likelihood.top_poses(jnp.asarray(table, jnp.float32), grid, 5)
    joint = (table + np.log(rule.inplane_weights)[:, None, None] + np.log(rule.shift_weights)[None, :, None]
             + np.log(rule.direction_weights)[None, None, :])
    post = np.exp(joint - joint.max())
    post /= post.sum()
    order = np.argsort(-post.ravel())[:5]
    p, t, d = np.unravel_index(order, post.shape)
    assert np.array_equal(np.asarray(idx), np.stack([d, p, t], -1))
    assert np.allclose(np.exp(np.asarray(logp)), post.ravel()[order], rtol=1e-3)


def lowpass(volume: np.ndarray, pixel_angstrom: float, resolution_angstrom: float) -> np.ndarray:
    """``volume`` with every Fourier component above ``1 / resolution_angstrom`` set to zero."""
    k = np.fft.fftfreq(volume.shape[0], pixel_angstrom)
    radius = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    return np.fft.ifftn(np.fft.fftn(volume) * (radius <= 1 / resolution_angstrom)).real.astype(np.float32)


def test_both_baselines_run_end_to_end(tmp_path, monkeypatch):
    """Both baselines, two epochs (40 and 25 A): from the command line with the random start (records and maps), and
    in process from the truth low-passed to 40 A, from which a working baseline resolves the map to about the last
    level. Its search puts each particle within half a step of the 25 A quadrature, and one step moves the outermost
    frequency used by about one Fourier pixel of the particle (recon/quadrature.py), so 25 A stays coherent: the
    final map must reach FSC 0.5 against the truth near 25 A; allowed 30 A, a fifth beyond. (The same inversion at
    the true poses reaches 25 A, the runs 26-27 A; keeping the start map stays at 40 A; rotations transposed on
    their way to the inversion reach 34-36 A; another particle's poses, or in-plane angles of the wrong sign,
    58-75 A.)"""
    vol, _ = blob_volume(24, seed=21, n_blobs=10, spread=0.17, sigma_range=(0.07, 0.1))
    synthesis.simulate_dataset(vol.astype(np.float32), 6.0, synthesis.SimulationSpec(
        num_particles=200, snr=1.0, seed=4, shift_sigma_angstrom=4.0), str(tmp_path / "data"), log=lambda *_: None)
    overrides = {"schedule.start_resolution_angstrom": 40.0, "schedule.target_resolution_angstrom": 25.0,
                 "schedule.level_ratio": 1.6, "batch_size": 50, "baselines.em_top_poses": 4}
    for method in ("projection_matching", "em"):
        workdir = tmp_path / method
        cmd = [sys.executable, "-m", "recon.reconstruct", "--particles", str(tmp_path / "data" / "particles.star"),
               "--workdir", str(workdir), "--config", str(REPO / "experiments/configs/tiny.py"), "--quiet",
               "--method", method] + [f"--config.{key}={value}" for key, value in overrides.items()]
        result = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                                text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in records] == [0, 1] and records[1]["resolution_angstrom"] == 25.0
        mass = records[-1]["posterior_mass_in_top_poses"]
        assert (mass <= 1.0 + 1e-6) and (mass > 0)
        assert (workdir / "maps" / "iter_00000002.mrc").exists()
    # Resume: a run killed after its first epoch's map (the second epoch's record cut off) redoes only the second,
    # appending to its logs; run once more, the finished run is left as it is.
    (workdir / "metrics.jsonl").write_text((workdir / "metrics.jsonl").read_text().splitlines()[0] + "\n")
    (workdir / "final.mrc").unlink()
    first_log = (workdir / "run.log").read_text()
    for _ in range(2):
        result = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                                text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
    log = (workdir / "run.log").read_text()
    assert log.startswith(first_log) and "resumed after epoch 1" in log and "holds a finished run" in log
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1] and (workdir / "final.mrc").exists()

    truth, pixel = mrc.read_map(tmp_path / "data" / "ground_truth.mrc")
    start = lowpass(truth, pixel, 40.0)
    random_start = training.initial_volume

    def truth_start(config, dataset, plan):  # the shape of the truth at the scale of the random start (the data's)
        volume, density = random_start(config, dataset, plan)
        return start * np.float32(np.linalg.norm(volume) / np.linalg.norm(start)), density

    monkeypatch.setattr(training, "initial_volume", truth_start)
    config = tiny.get_config()
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        setattr(config[section] if section else config, name, value)
    dataset = open_dataset(metadata.read_particles(tmp_path / "data" / "particles.star"))
    for method in ("projection_matching", "em"):
        baselines.run(method, config, dataset, str(tmp_path / f"{method}_from_truth"), quiet=True,
                      notes=["particle radius 60.0 A (given)"])
        assert "settings: particle radius 60.0 A (given)" in (tmp_path / f"{method}_from_truth" / "run.log").read_text()
        final, _ = mrc.read_map(tmp_path / f"{method}_from_truth" / "final.mrc")
        resolution = metrics.resolution_at(metrics.fsc(final, truth), pixel, 0.5)
        assert resolution <= 30.0, (method, resolution)
