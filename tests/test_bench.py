"""experiments.bench (run as ``python -m experiments.bench`` from the repository root) runs end to end on the tiny
set (two levels, the second above --max_exhaustive_poses) and writes a complete record; the sizes and FLOPs it
reports match independent counts (not timed: speed targets live in the benchmark scripts)."""

import json
import os
import subprocess
import sys

import numpy as np

from experiments.configs import tiny
from recon.io import mrc
from tests.conftest import REPO
from tests.test_figures import tiny_data  # noqa: F401  (fixture)
from tests.test_reconstruct import dataset_dir, finished_run  # noqa: F401  (fixtures)


def test_bench_tiny_one_level(tiny_data, tmp_path):  # noqa: F811
    result = subprocess.run(
        [sys.executable, "-m", "experiments.bench", "--particles", str(tiny_data / "particles.star"), "--map",
         str(tiny_data / "ground_truth.mrc"), "--config", "experiments/configs/tiny.py", "--max_levels", "2",
         "--max_exhaustive_poses", "1",
         "--name", "tiny", "--out", str(tmp_path)],
        cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "bench_tiny.json").read_text())
    assert record["matmul_gflops"] > 0 and record["peak_rss_mb"] > 0 and record["machine"]["devices"]
    # Independent references: the tiny data's box and pixel size, tiny.py's settings, a plain count of the grid
    # frequencies within each level's band (the Hermitian half: (disk + 1) / 2), and the textbook cost of the
    # exhaustive gradient's products, 2 M K N FLOPs for (B n_psi n_t) x (2 N_k) x n_dir ([Re; Im] stacked), once
    # forward, once backward (to the slices) and once more with remat (the forward recomputed).
    truth, pixel = mrc.read_map(tiny_data / "ground_truth.mrc")
    size = truth.shape[0]
    config = tiny.get_config()
    level, above = record["levels"]
    assert level["resolution_angstrom"] == config.schedule.start_resolution_angstrom > above["resolution_angstrom"]
    k = np.fft.fftfreq(size) * size
    radius = np.hypot(k[:, None], k[None, :]) / size  # cycles per pixel
    for row in (level, above):
        n_k = (np.sum((radius <= pixel / row["resolution_angstrom"] + 1e-9) & (radius < 0.5)) + 1) // 2
        assert row["frequencies_half_plane"] == n_k
        product = 2.0 * (config.batch_size * row["inplane"] * row["shifts"]) * (2 * n_k) * row["directions"]
        assert abs(row["exhaustive"]["matmul_gflop"] / (product * (3 if config.remat else 2) / 1e9) - 1) < 1e-9
        assert row["poses_per_particle"] == row["directions"] * row["inplane"] * row["shifts"]
        # every particle evaluates at most the slots of each factor (a factor with fewer points: all of them)
        slots = np.prod([min(row[f], n) for f, n in (("directions", config.sampling.max_directions),
                                                     ("inplane", config.sampling.max_inplane),
                                                     ("shifts", config.sampling.max_shifts))])
        assert 0 < row["importance_sampled"]["fraction_evaluated"] <= slots / row["poses_per_particle"]
    ex, est = level["exhaustive"], above["exhaustive"]
    assert abs(ex["particles_per_second"] * ex["seconds_per_minibatch"] - config.batch_size) < 1e-6
    # timed: no faster than the machine's matrix products (a timer that does not wait for the result is)
    assert 0 < ex["fraction_of_matmul_rate"] < 1.5 and "estimated" not in ex
    # the second level is over --max_exhaustive_poses: its time is the first's, scaled by the FLOPs counted above
    assert est["estimated"]
    assert abs(est["seconds_per_minibatch"] / ex["seconds_per_minibatch"] / (est["matmul_gflop"] / ex["matmul_gflop"])
               - 1) < 1e-9


def test_bench_run_stage_and_budget(finished_run, dataset_dir, tmp_path):  # noqa: F811
    """--run: the run's own rates per level and kind (checked against its metrics.jsonl) and its time to FSC 0.5;
    --budget_seconds spent before the first level: every level is listed as skipped, and the record is complete."""
    result = subprocess.run(
        [sys.executable, "-m", "experiments.bench", "--particles", str(dataset_dir / "particles.star"), "--map",
         str(dataset_dir / "ground_truth.mrc"), "--config", "experiments/configs/tiny.py", "--run", str(finished_run),
         "--truth", str(dataset_dir / "ground_truth.mrc"), "--max_points", "1", "--budget_seconds", "0.001",
         "--name", "run", "--out", str(tmp_path)],
        cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "bench_run.json").read_text())
    assert not (tmp_path / "bench_run.json.tmp").exists()
    assert record["levels"] and all("skipped" in row for row in record["levels"])
    metrics = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [m for m in metrics if "step_seconds" in m]
    assert len(steps) == 60  # tests/test_reconstruct.py: 60 iterations, every one logged
    for row in record["run_rates"]:
        for kind, sampled in (("exhaustive", False), ("sampled", True)):
            mine = [m["particles"] / m["step_seconds"] for m in steps
                    if m["level"] == row["level"] and bool(m.get("sampled")) == sampled]
            if len(mine) > 1:
                assert row[f"{kind}_iterations"] == len(mine)
                assert min(mine[1:]) <= row[f"{kind}_particles_per_second"] <= max(mine[1:])
            else:
                assert f"{kind}_particles_per_second" not in row
    assert {r["level"] for r in record["run_rates"]} == {m["level"] for m in steps}
    assert all(0 < m["particles"] <= 50 and m["step_seconds"] > 0 for m in steps)  # minibatches of 50
    timing = record["time_to_resolution"]
    assert set(timing["seconds_to_fsc_0.5"]) == {"30", "20", "15", "10"}
    # every point is timed by the run's own clock: the elapsed seconds metrics.jsonl logged at its iteration
    elapsed = {m["iteration"]: m["seconds"] for m in metrics if "seconds" in m}
    assert timing["points"] and all(abs(p["seconds"] - elapsed[p["iteration"]]) < 1e-6 for p in timing["points"])
    assert timing["run_peak_rss_mb"] == max(m["peak_rss_mb"] for m in metrics if "peak_rss_mb" in m)


def test_curve_levels_and_times_from_records():
    """engine_benchmark curve's per-level summary and first times, on hand-made records and points: medians,
    counts, the last fraction evaluated of each level, and records without a level (held-out, final) ignored."""
    from experiments.engine_benchmark import levels_from_metrics, seconds_to_resolution

    def record(level, resolution, seconds, fraction):  # 200 particles a step; the window rate deliberately off
        return {"level": level, "resolution_angstrom": resolution, "particles": 200, "step_seconds": seconds,
                "particles_per_second": 1.0, "fraction_evaluated": fraction}

    records = [record(0, 40.0, s, 1.0) for s in (20.0, 200 / 30.0, 10.0)]
    records += [{"heldout_rremse": 1.01}, record(1, 30.0, 4.0, 0.2), record(1, 30.0, 200 / 70.0, 0.05)]
    levels = levels_from_metrics(records)
    assert [(r["level"], r["iterations"]) for r in levels] == [(0, 3), (1, 2)]
    assert abs(levels[0]["particles_per_second_median"] - 20.0) < 1e-9
    assert abs(levels[1]["particles_per_second_median"] - 60.0) < 1e-9
    assert levels[0]["fraction_evaluated_last"] == 1.0 and levels[1]["fraction_evaluated_last"] == 0.05
    points = [{"seconds": 10.0, "fsc_0.5_angstrom": 35.0}, {"seconds": 20.0, "fsc_0.5_angstrom": 19.0},
              {"seconds": 30.0, "fsc_0.5_angstrom": 21.0}, {"seconds": 40.0, "fsc_0.5_angstrom": 14.0}]
    assert seconds_to_resolution(points) == {"30": 20.0, "20": 20.0, "15": 40.0, "10": None}


def test_pose_agreement_counts_the_poses_that_match_after_one_frame_rotation():
    """experiments/validate_auto's pose score: 70 % of the run's poses are the true ones seen from a rotated frame
    (R_run = R_true G^T, 2 degrees of jitter), 30 % are random: 70 % within 10 degrees, whatever G is."""
    from experiments.validate_auto import pose_agreement
    from recon import conventions

    rng = np.random.default_rng(2)
    n = 1000
    true = np.column_stack([rng.uniform(-180, 180, n), np.degrees(np.arccos(rng.uniform(-1, 1, n))),
                            rng.uniform(-180, 180, n)])
    g = conventions.euler_to_matrix(np.array([40.0, 70.0, -15.0]))
    run = []
    for i, angles in enumerate(true):
        if i < 700:
            jitter = conventions.euler_to_matrix(rng.normal(0, 1.0, 3) * np.array([1, 0, 1]) + [0, 1.5, 0])
            run.append(conventions.matrix_to_euler(conventions.euler_to_matrix(angles) @ g.T @ jitter))
        else:
            run.append([rng.uniform(-180, 180), np.degrees(np.arccos(rng.uniform(-1, 1))), rng.uniform(-180, 180)])
    got = pose_agreement(true, np.array(run))
    assert abs(got["within_10_degrees"] - 0.7) < 0.01, got
    assert got["within_45_degrees"] < 0.7 + 0.3 * 0.08, got  # random rotations: 2.5 % within 45 degrees
    # a run of the other hand: its poses are J R J of those above (J = diag(1, 1, -1))
    j = np.diag([1.0, 1.0, -1.0])
    mirrored = np.array([conventions.matrix_to_euler(j @ conventions.euler_to_matrix(a) @ j) for a in run])
    assert abs(pose_agreement(true, mirrored)["within_10_degrees"] - 0.7) < 0.01
