"""End to end: ab initio from a random volume on a tiny high-SNR dataset; kill and resume; no recompiles."""

import json
import re
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from recon import likelihood, metrics, report, sampling, synthesis, training
from recon import step as step_lib
from recon.data import open_dataset
from recon.io import metadata, mrc, star
from tests.conftest import REPO, blob_volume, spherical_average

OVERRIDES = ["--config.schedule.start_resolution_angstrom=40", "--config.schedule.target_resolution_angstrom=20",
             "--config.schedule.level_ratio=1.45", "--config.schedule.iterations_per_level=24",
             "--config.stop.max_iterations=60", "--config.batch_size=50", "--config.num_heldout=20",
             "--config.output.checkpoint_every=10", "--config.output.heldout_every=12",
             "--config.output.save_map_every=30", "--config.output.log_every=10", "--config.prior.scale=0.001"]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e")
    vol, _ = blob_volume(24, seed=21, n_blobs=10, spread=0.17, sigma_range=(0.07, 0.1))
    synthesis.simulate_dataset(vol.astype(np.float32), 6.0, synthesis.SimulationSpec(
        num_particles=300, snr=1.0, seed=4, shift_sigma_angstrom=4.0), str(out), log=lambda *_: None)
    return out


def run_reconstruct(particles, workdir, wait=True, extra=()):
    cmd = [sys.executable, "-m", "recon.reconstruct", "--particles", str(particles), "--workdir", str(workdir),
           "--config", str(REPO / "experiments/configs/tiny.py"), "--quiet", *OVERRIDES, *extra]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def finished_run(dataset_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    run_reconstruct(dataset_dir / "particles.star", workdir)
    return workdir


def test_reconstruction_beats_the_random_start(finished_run, dataset_dir):
    truth, pixel = mrc.read_map(dataset_dir / "ground_truth.mrc")
    final, final_pixel = mrc.read_map(finished_run / "final.mrc")
    start, _ = mrc.read_map(finished_run / "maps" / "initial.mrc")
    assert np.isclose(final_pixel, 6.0)
    got = metrics.evaluate_maps(final, truth, pixel)[0]["correlation"]
    baseline = metrics.evaluate_maps(start, truth, pixel)[0]["correlation"]
    assert got > 0.8 and got > baseline + 0.2, (got, baseline)


def test_workdir_layout_metrics_and_poses(finished_run, dataset_dir):
    config = json.loads((finished_run / "config.json").read_text())
    assert config["batch_size"] == 50
    records = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == list(range(1, 61))
    for key in ("max_freq_per_angstrom", "objective", "step_size", "seconds", "quadrature_points"):
        assert all(key in r for r in records)
    assert sum("heldout_rremse" in r for r in records) >= 4
    # importance sampling is on by default: first visits exhaustive, later ones sampled (a fraction evaluated)
    assert not records[0]["sampled"] and records[0]["fraction_evaluated"] == 1.0
    sampled = [r for r in records if r["sampled"]]
    assert len(sampled) >= 40 and all(0 < r["fraction_evaluated"] < 1 for r in sampled)
    assert all(r["ess_directions"] >= 1 for r in sampled) and any("kl_directions" in r for r in sampled)
    log = (finished_run / "run.log").read_text()
    assert " of poses (ESS " in log  # the progress line reports the sampling
    rremse = [r["heldout_rremse"] for r in records if "heldout_rremse" in r]
    assert rremse[-1] < rremse[0] - 0.1 and 0.8 < rremse[-1] < 1.3  # the held-out error improves towards 1
    poses = star.read_star(finished_run / "poses.star")
    assert len(poses) == 300 and poses.angles_degrees is not None
    original = metadata.read_particles(dataset_dir / "particles.star")
    np.testing.assert_allclose(poses.ctf.defocus_u_angstrom, original.ctf.defocus_u_angstrom, rtol=1e-5)
    assert os.path.samefile(poses.stack_paths[0], original.stack_paths[0])
    assert (finished_run / "maps" / "iter_00000030.mrc").exists()


def test_killed_run_resumes_to_the_same_map(finished_run, dataset_dir, tmp_path):
    """SIGKILL twice at random moments (after a random number of checkpoints, a random delay into the next
    iterations), then the same command: the same map as the uninterrupted run."""
    workdir = tmp_path / "killed"
    rng = np.random.default_rng(int(time.time()))  # a different moment on every run of the suite
    for kill in range(2):
        proc = run_reconstruct(dataset_dir / "particles.star", workdir, wait=False)
        wanted = kill + 1 + int(rng.integers(0, 2))  # checkpoints (every 10 iterations) to wait for
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and \
                len(list((workdir / "checkpoints").glob("ckpt_*.npz"))) < min(wanted, 3):
            time.sleep(0.2)
        time.sleep(float(rng.uniform(0.0, 1.5)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (workdir / ".lock").exists()  # the killed holder's lock file, which must not block the resume
    result = run_reconstruct(dataset_dir / "particles.star", workdir)
    if not (workdir / "final.mrc").exists() or "resumed from iteration" not in (workdir / "run.log").read_text():
        raise AssertionError((workdir / "run.log").read_text())
    resumed, _ = mrc.read_map(workdir / "final.mrc")
    reference, _ = mrc.read_map(finished_run / "final.mrc")
    np.testing.assert_allclose(resumed, reference, rtol=1e-4, atol=1e-5 * np.abs(reference).max())
    assert json.loads(result.stdout.strip().splitlines()[-1])["iterations"] == 60


def test_a_second_run_on_a_busy_folder_is_refused_and_the_first_is_unharmed(finished_run, dataset_dir, tmp_path):
    """The same command submitted twice: the second stops with one line naming the folder and the first process
    (exit 2) and writes nothing; the first ends at the uninterrupted run's map, its record written once."""
    workdir = tmp_path / "busy"
    first = run_reconstruct(dataset_dir / "particles.star", workdir, wait=False)
    deadline = time.time() + 600
    while time.time() < deadline and first.poll() is None and not (workdir / "metrics.jsonl").exists():
        time.sleep(0.2)
    assert first.poll() is None, "the first run ended before the second could start"
    cmd = [sys.executable, "-m", "recon.reconstruct", "--particles", str(dataset_dir / "particles.star"),
           "--workdir", str(workdir), "--config", str(REPO / "experiments/configs/tiny.py"), "--quiet", *OVERRIDES]
    second = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                            text=True, timeout=600)
    assert second.returncode == 2 and second.stdout == ""
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and str(workdir) in lines[0] and f"process {first.pid} " in lines[0], second.stderr
    out, err = first.communicate(timeout=900)
    assert first.returncode == 0, err[-3000:]
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == list(range(1, 61))
    assert (workdir / "run.log").read_text().count("particles (") == 1  # one header: one run wrote here
    reference, _ = mrc.read_map(finished_run / "final.mrc")
    np.testing.assert_allclose(mrc.read_map(workdir / "final.mrc")[0], reference, rtol=1e-4,
                               atol=1e-5 * np.abs(reference).max())


def test_same_command_on_a_finished_run_does_nothing_new(finished_run, dataset_dir):
    before = (finished_run / "final.mrc").stat().st_mtime
    run_reconstruct(dataset_dir / "particles.star", finished_run)
    assert (finished_run / "final.mrc").stat().st_mtime == before
    assert "holds a finished run" in (finished_run / "run.log").read_text()


def test_a_run_from_before_the_junk_and_amplitude_settings_resumes_as_it_began(finished_run, dataset_dir, tmp_path):
    """A run whose checkpoints lack the junk scores and amplitude scales and whose config.json lacks their
    settings (as runs written before them do) is restored, not started again, and resumes with them off."""
    import shutil

    from recon import checkpoint
    from recon.configs import default

    old = tmp_path / "old"
    shutil.copytree(finished_run, old)
    stored = json.loads((old / "config.json").read_text())
    for key, value in training.PREDATED_SETTINGS.items():
        if isinstance(value, dict) and len(stored.get(key, {})) > len(value):  # a section older than some keys
            for sub in value:
                stored[key].pop(sub, None)
        else:
            stored.pop(key, None)
    (old / "config.json").write_text(json.dumps(stored))
    for path in checkpoint.list_checkpoints(str(old / "checkpoints")):
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        leaves = sorted(k for k in arrays if k.startswith("leaf_"))
        # the host tree's leaves come last in sorted-key order: amplitude, best_level, best_pose, junk_score, ...
        n_opt = len(leaves) - 4 - len(jax.tree_util.tree_leaves(sampling.init_state(1, {
            "directions": 1, "inplane": 1, "shifts": 1})))
        host = leaves[n_opt:]
        kept = [arrays[k] for k in leaves[:n_opt]] + [arrays[host[1]], arrays[host[2]]] + [arrays[k] for k in host[4:]]
        legacy = {f"leaf_{i:05d}": a for i, a in enumerate(kept)}
        legacy["__metadata__"] = arrays["__metadata__"]
        np.savez(path, **legacy)
    config = training.as_stored_run(default.get_config(), str(old))
    assert (config.junk.model, config.amplitude.model, config.noise_per_micrograph) == ("off", "off", False)
    assert tuple(config.sampling.loose_capped_shares) == () and config.sampling.search_again is False
    before = (old / "final.mrc").stat().st_mtime
    run_reconstruct(dataset_dir / "particles.star", old)
    assert (old / "final.mrc").stat().st_mtime == before
    assert "holds a finished run" in (old / "run.log").read_text()
    assert json.loads((old / "config.json").read_text())["junk"]["model"] == "off"
    assert training.as_stored_run(default.get_config(), str(tmp_path / "new")).noise_per_micrograph is True


def test_finished_run_continues_when_its_limit_is_raised(dataset_dir, tmp_path):
    workdir = tmp_path / "extend"
    particles = dataset_dir / "particles.star"
    run_reconstruct(particles, workdir, extra=["--config.stop.max_iterations=30"])
    first, _ = mrc.read_map(workdir / "final.mrc")
    result = run_reconstruct(particles, workdir, extra=["--config.stop.max_iterations=40"])
    assert json.loads(result.stdout.strip().splitlines()[-1])["iterations"] == 40
    assert "now raise: continuing" in (workdir / "run.log").read_text()
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == list(range(1, 41))
    assert not np.allclose(mrc.read_map(workdir / "final.mrc")[0], first)
    # any other change of the config is still refused, with one line naming the file
    cmd = [sys.executable, "-m", "recon.reconstruct", "--particles", str(particles), "--workdir", str(workdir),
           "--config", str(REPO / "experiments/configs/tiny.py"), "--quiet", *OVERRIDES,
           "--config.stop.max_iterations=50", "--config.prior.scale=0.01"]
    refused = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "config.json" in refused.stderr and "different config" in refused.stderr
    assert "prior.scale" in refused.stderr  # names the setting that differs


def test_a_run_stopped_for_time_stays_finished_until_the_limit_is_raised(dataset_dir, tmp_path):
    """0.01 minutes end the training after its first (compiling) step; the final pass still runs. The same command
    leaves the run as it is (training stopped before the limit to leave the pass its time, so the elapsed time
    alone would reopen it); a higher limit continues it."""
    workdir = tmp_path / "timed"
    particles = dataset_dir / "particles.star"
    run_reconstruct(particles, workdir, extra=["--config.stop.max_minutes=0.01"])
    log = (workdir / "run.log").read_text()
    assert "stopped: reached 0.01 minutes" in log, log
    before = (workdir / "final.mrc").stat().st_mtime
    run_reconstruct(particles, workdir, extra=["--config.stop.max_minutes=0.01"])
    assert (workdir / "final.mrc").stat().st_mtime == before
    assert "holds a finished run" in (workdir / "run.log").read_text()
    run_reconstruct(particles, workdir, extra=["--config.stop.max_minutes=0.03"])
    assert "now raise: continuing" in (workdir / "run.log").read_text()


def test_a_final_pass_too_long_for_the_limit_assigns_only_particles_never_visited(dataset_dir, tmp_path,
                                                                                   monkeypatch):
    """With no share of the limit allowed for the final pass, a run stopped after 3 of its 6 minibatches assigns the
    particles it never visited (and the held-out ones, unless an evaluation saw them) and no others: every row of
    poses.star has a pose, none left at the empty (0, 0, 0), (0, 0)."""
    from experiments.configs import tiny

    config = tiny.get_config()
    config.stop.max_iterations, config.stop.max_minutes = 3, 60.0
    monkeypatch.setattr(training, "FINAL_PASS_SHARE", 0.0)
    dataset = open_dataset(metadata.read_particles(str(dataset_dir / "particles.star")))
    workdir = tmp_path / "partial"
    training.run(config, dataset, str(workdir), quiet=True)
    log = (workdir / "run.log").read_text()
    found = re.search(r"final pose pass over (\d+) particles never visited only", log)
    assert found, log
    assert 20 < int(found.group(1)) <= len(dataset) - 3 * config.batch_size + config.batch_size, found.group(1)
    poses = star.read_star(workdir / "poses.star")
    empty = np.all(poses.angles_degrees == 0, axis=1) & np.all(poses.origins_angstrom == 0, axis=1)
    assert not np.any(empty), int(np.sum(empty))


def test_particles_never_visited_are_assigned_at_a_coarser_level_when_the_pass_would_not_fit(dataset_dir, tmp_path,
                                                                                             monkeypatch):
    """Two minibatches per level, stopped in level 2 after 4 of the 6 minibatches: with no share of the limit for the
    final pass, not even level 2's exhaustive pass over the never-visited particles fits, so they are assigned at
    level 1 (the coarsest): their in-plane angles lie on level 1's grid, and every row of poses.star has a pose."""
    from experiments.configs import tiny

    config = tiny.get_config()
    config.schedule.iterations_per_level, config.sampling.enabled = 2, False
    config.stop.max_iterations, config.stop.max_minutes = 4, 60.0
    monkeypatch.setattr(training, "FINAL_PASS_SHARE", 0.0)
    dataset = open_dataset(metadata.read_particles(str(dataset_dir / "particles.star")))
    workdir = tmp_path / "coarse"
    training.run(config, dataset, str(workdir), quiet=True)
    log = (workdir / "run.log").read_text()
    assert re.search(r"final pose pass over \d+ particles never visited only at level 1 ", log), log
    plan = training.make_plan(config, dataset)
    coarse, fine = training.level_quadrature(plan, 0), training.level_quadrature(plan, 1)
    assert len(coarse.inplane_degrees) < len(fine.inplane_degrees)
    poses = star.read_star(workdir / "poses.star")
    visited = np.unique(plan.batches[training.batch_order(config.seed, 0, len(plan.batches))[:4]])
    never = np.setdiff1d(plan.train, visited)
    assert len(never) >= config.batch_size
    on_coarse = np.isclose(poses.angles_degrees[never, 2, None] % 360, np.asarray(coarse.inplane_degrees) % 360,
                           atol=1e-3).any(axis=1)
    assert np.all(on_coarse), np.mean(on_coarse)
    empty = np.all(poses.angles_degrees == 0, axis=1) & np.all(poses.origins_angstrom == 0, axis=1)
    assert not np.any(empty), int(np.sum(empty))


def test_config_differences_name_changed_settings_only():
    stored = {"seed": 0, "prior": {"kind": "exponential", "scale": 0.1}, "stop": {"max_minutes": 10.0}}
    current = {"seed": 0, "prior": {"kind": "car", "scale": 0.1, "new_option": 3},
               "stop": {"max_minutes": 20.0}, "symmetry": "C7"}
    assert training.config_differences(stored, current) == ["prior.kind: 'exponential' -> 'car'"]
    current["prior"]["kind"] = "exponential"
    assert training.config_differences(stored, current) == []  # stop.* and settings added later are not compared


def first_level(dataset_dir):
    """The tiny config with minibatches of 50 on the e2e dataset: (config, dataset, plan, rule, grid) of level 1."""
    from experiments.configs import tiny
    config = tiny.get_config()
    config.batch_size = 50
    ds = open_dataset(metadata.read_particles(dataset_dir / "particles.star"))
    plan = training.make_plan(config, ds)
    rule = training.level_quadrature(plan, 0)
    grid = likelihood.make_grid(ds.box_size, ds.pixel_size_angstrom, rule, 1 / 40.0)
    return config, ds, plan, rule, grid


def test_step_does_not_recompile_within_a_level(dataset_dir):
    config, ds, plan, rule, grid = first_level(dataset_dir)
    fns = step_lib.make_step_functions(grid, ds.pixel_size_angstrom, "exponential", 1.0, len(plan.batches), 25)
    gradient = jax.jit(fns.gradient)
    volume = jnp.ones((24,) * 3, jnp.float32)
    last = len(plan.batches) - 1
    assert np.any(plan.batches[last] < 0)  # the last minibatch is padded
    for slot in (0, 1, last):
        jax.block_until_ready(gradient(volume, training.make_batch(ds, plan.batches[slot], slot)))
    assert gradient._cache_size() == 1


def test_sampled_step_does_not_recompile_within_a_level(dataset_dir):
    config, ds, plan, rule, grid = first_level(dataset_dir)
    sampler = sampling.make_level_sampler(rule, training.sampler_settings(config), training.sampler_capacities(config))
    assert sampler.capacities[0] < sampler.sizes[0]  # directions really are sampled
    fns = step_lib.make_step_functions(grid, ds.pixel_size_angstrom, "exponential", 1.0, len(plan.batches), 25,
                                       kernel="kaiser_bessel", sampled_chunk_size=25)
    evaluate, record = jax.jit(fns.evaluate), jax.jit(sampler.record_exhaustive)
    propose, gradient = jax.jit(sampler.propose), jax.jit(fns.gradient_sampled)
    state = sampling.init_state(len(ds), training.sampler_capacities(config))
    volume = jnp.asarray(blob_volume(24, seed=2)[0], jnp.float32)
    last = len(plan.batches) - 1
    for iteration, slot in enumerate((0, 1, last, 0)):
        rows = plan.batches[slot]
        real = rows >= 0
        safe = np.where(real, rows, rows[real][0])
        batch = training.make_batch(ds, rows, slot)
        old = training.gather_factors(state, safe)
        new, _ = record(evaluate(volume, batch.images, batch.ctf), old)  # a first, exhaustive visit
        training.scatter_factors(state, safe, new, real)
        keys = training.particle_keys(0, 0, iteration, jnp.asarray(safe))
        samples, _ = propose(training.gather_factors(state, safe), jnp.full((len(rows),), 100 * iteration), keys)
        jax.block_until_ready(gradient(volume, batch, samples))
    assert gradient._cache_size() == 1 and propose._cache_size() == 1 and record._cache_size() == 1


def images_and_sections(path):
    text = path.read_text()
    return (text, re.findall(r"<h2[^>]*>([^<]*)</h2>", text), re.findall(r"src='data:image/png;base64,", text))


def test_every_run_writes_a_self_contained_report(finished_run):
    text, sections, images = images_and_sections(finished_run / "report.html")
    assert sections == list(report.SECTIONS)
    assert len(images) >= 6  # particles, slices, isosurface, progress, fraction, views (no FSC without halves)
    assert "http://" not in text and "https://" not in text  # nothing fetched from elsewhere
    assert "No FSC" in text  # explains how to get one
    assert f"wrote {finished_run}/report.html" in (finished_run / "run.log").read_text()


def test_report_command_with_a_reference_adds_the_fsc(finished_run, dataset_dir):
    result = subprocess.run([sys.executable, "-m", "recon.report", "--workdir", str(finished_run), "--reference",
                             str(dataset_dir / "ground_truth.mrc")], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    text, sections, images = images_and_sections(finished_run / "report.html")
    assert sections == list(report.SECTIONS) and len(images) >= 7
    match = re.search(r"reference_fsc_0.5_angstrom: ([0-9.]+) Å", text)
    truth, pixel = mrc.read_map(dataset_dir / "ground_truth.mrc")
    final, _ = mrc.read_map(finished_run / "final.mrc")
    # the number is the final map's FSC against the reference, aligned (as printed: two decimals): the report's
    # wiring (which map, which reference, which threshold); metrics.evaluate_maps has its own tests ...
    assert match and float(match.group(1)) == pytest.approx(
        metrics.evaluate_maps(final, truth, pixel)[0]["fsc_0.5_angstrom"], abs=0.006)
    # ... and the run learnt the shape: finer than a map with the truth's radial profile and nothing else
    blob = metrics.evaluate_maps(spherical_average(truth), truth, pixel, do_align=False)[0]["fsc_0.5_angstrom"]
    assert float(match.group(1)) < blob


def test_gold_standard_run_writes_half_maps_and_their_fsc(dataset_dir, tmp_path):
    from recon import gold_standard
    first, second = gold_standard.split_halves(301, 0)
    assert len(first) == 150 and len(second) == 151 and not set(first) & set(second)
    assert sorted(set(first) | set(second)) == list(range(301))

    workdir = tmp_path / "gold"
    run_reconstruct(dataset_dir / "particles.star", workdir,
                    extra=["--config.gold_standard.enabled=True", "--config.gold_standard.split_resolution_angstrom=30",
                           "--config.schedule.iterations_per_level=12",
                           "--config.stop.max_iterations=24", "--config.output.final_pose_pass=False"])
    halves = [mrc.read_map(workdir / f"half{k}.mrc")[0] for k in (1, 2)]
    final, _ = mrc.read_map(workdir / "final.mrc")
    assert np.allclose(final, (halves[0] + halves[1]) / 2, atol=1e-6)
    assert not np.allclose(halves[0], halves[1])  # refined independently
    shared = json.loads((workdir / "shared" / "config.json").read_text())
    half = json.loads((workdir / "half1" / "config.json").read_text())
    assert shared["schedule"]["target_resolution_angstrom"] > 30 >= half["schedule"]["start_resolution_angstrom"]
    result = json.loads((workdir / "gold_standard.json").read_text())
    assert result["particles_per_half"] == [150, 150]
    # the recorded curve is the textbook FSC of the written halves under the documented mask (radius D/2 - 3,
    # cosine edge of 3 px), computed here with numpy's uncentred transforms
    size = halves[0].shape[0]
    grid = np.meshgrid(*[np.arange(size) - size // 2] * 3, indexing="ij")
    radius = np.sqrt(sum(g ** 2 for g in grid))
    mask = 0.5 + 0.5 * np.cos(np.pi * np.clip((radius - (size / 2 - 3)) / 3.0, 0, 1))
    fa, fb = (np.fft.fftn(h.astype(np.float64) * mask) for h in halves)
    k = np.sqrt(sum(f ** 2 for f in np.meshgrid(*[np.fft.fftfreq(size) * size] * 3, indexing="ij")))
    shells = np.round(k).astype(int)
    textbook = [np.sum((fa * fb.conj()).real[shells == s]) / np.sqrt(np.sum(np.abs(fa[shells == s]) ** 2) *
                                                                      np.sum(np.abs(fb[shells == s]) ** 2))
                for s in range(size // 2 + 1)]
    np.testing.assert_allclose(result["fsc"], textbook, atol=1e-4)
    # Both halves start from the shared map with nothing finer than its last level: past the split, what they
    # share is only what each learnt from its own particles.
    starts = [mrc.read_map(workdir / f"half{k}" / "maps" / "initial.mrc")[0] for k in (1, 2)]
    np.testing.assert_array_equal(starts[0], starts[1])
    shared_map = mrc.read_map(workdir / "shared" / "final.mrc")[0].astype(np.float64)
    cutoff = size * 6.0 / shared["schedule"]["target_resolution_angstrom"]  # Fourier pixels
    start_ft, shared_ft = np.fft.fftn(starts[0]), np.fft.fftn(shared_map)
    assert np.sum(np.abs(start_ft[k > cutoff + 2.5]) ** 2) <= 1e-8 * np.sum(np.abs(start_ft) ** 2)  # edge: 2 px
    inside = k <= cutoff  # kept as the shared run fitted it
    np.testing.assert_allclose(start_ft[inside], shared_ft[inside], atol=1e-4 * np.abs(shared_ft).max())
    assert np.sum(np.abs(shared_ft[k > cutoff + 2.5]) ** 2) > 1e-4 * np.sum(np.abs(shared_ft) ** 2)  # cut: not 0
    # The resolutions are read within the data's band (the halves' 20 A target + 2 shells): the curve is zero
    # from the first shell outside it, so the 0.143 crossing is never finer than that shell.
    band = result["data_band_angstrom"]
    assert band == pytest.approx(24 * 6.0 / (24 * 6.0 / half["schedule"]["target_resolution_angstrom"] + 2.0))
    shells = np.arange(len(textbook))
    first_outside = int(np.floor(24 * 6.0 / band + 1e-9)) + 1  # the crossing lies at most at this shell
    assert result["half_maps_fsc_0.143_angstrom"] >= 24 * 6.0 / first_outside - 1e-6
    in_band = np.where(shells <= 24 * 6.0 / band + 1e-9, np.asarray(textbook), 0.0)
    assert result["half_maps_fsc_0.143_angstrom"] == pytest.approx(metrics.resolution_at(in_band, 6.0, 0.143))
    text = (workdir / "report.html").read_text()
    assert f"<li>half_maps_fsc_0.143_angstrom: {result['half_maps_fsc_0.143_angstrom']:.2f} Å</li>" in text
    assert "gold standard: half-map FSC 0.143" in (workdir / "run.log").read_text()


def test_gold_standard_halves_keep_the_passes_per_level(dataset_dir):
    """Levels counted in passes (the plain command's schedule): a half has half the particles, so a level of the
    same passes is half the minibatches; with a fixed iteration count the halves keep it."""
    from recon import gold_standard, schedules
    from experiments.configs import tiny

    dataset = open_dataset(metadata.read_particles(str(dataset_dir / "particles.star")))
    config = tiny.get_config()
    config.gold_standard.split_resolution_angstrom = 30.0
    config.schedule.target_resolution_angstrom = 20.0
    config.schedule.passes_per_level = 2.0
    config.schedule.iterations_per_level = 2 * int(np.ceil((300 - schedules.heldout_count(300, 20)) / 50))
    _, half = gold_standard.part_configs(config, dataset)
    half_train = 150 - schedules.heldout_count(150, 20)
    assert half.schedule.iterations_per_level == 2 * int(np.ceil(half_train / 50))
    config.schedule.passes_per_level = 0.0
    _, half = gold_standard.part_configs(config, dataset)
    assert half.schedule.iterations_per_level == config.schedule.iterations_per_level


def test_a_second_run_reuses_the_persistent_compilation_cache(dataset_dir, tmp_path):
    """metrics.jsonl counts the compilations and their seconds; a second run of the same shapes with the same
    --compilation_cache folder reads its programs from the cache (hits) and spends at most half the time compiling
    (the many small programs that compile in under 0.1 s are compiled again; they are not cached)."""
    cache = tmp_path / "cache"
    counts = []
    for name in ("first", "second"):
        run_reconstruct(dataset_dir / "particles.star", tmp_path / name,
                        extra=[f"--compilation_cache={cache}", "--config.stop.max_iterations=12"])
        last = json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[-1])
        counts.append(last)
    assert counts[0]["compilations"] >= 5 and counts[0]["compile_seconds"] > 0 and counts[0]["cache_hits"] == 0
    assert counts[1]["cache_hits"] >= 5, counts[1]
    assert counts[1]["compile_seconds"] <= 0.5 * counts[0]["compile_seconds"], counts
