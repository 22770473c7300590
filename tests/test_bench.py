"""experiments/bench.py runs end to end on the tiny set (two levels, the second above --max_exhaustive_poses) and writes a complete record; the numbers it
reports are consistent with each other (not timed: speed targets live in the benchmark scripts)."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO
from tests.test_figures import tiny_data  # noqa: F401  (fixture)
from tests.test_reconstruct import dataset_dir, finished_run  # noqa: F401  (fixtures)


def test_bench_tiny_one_level(tiny_data, tmp_path):  # noqa: F811
    result = subprocess.run(
        [sys.executable, "experiments/bench.py", "--particles", str(tiny_data / "particles.star"), "--map",
         str(tiny_data / "ground_truth.mrc"), "--config", "experiments/configs/tiny.py", "--max_levels", "2",
         "--max_exhaustive_poses", "1",
         "--name", "tiny", "--out", str(tmp_path)],
        cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "bench_tiny.json").read_text())
    assert record["matmul_gflops"] > 0 and record["peak_rss_mb"] > 0 and record["machine"]["devices"]
    level, above = record["levels"]
    assert level["poses_per_particle"] == level["directions"] * level["inplane"] * level["shifts"]
    ex, sampled = level["exhaustive"], level["importance_sampled"]
    assert 0 < ex["fraction_of_matmul_rate"] < 1.5
    assert abs(ex["particles_per_second"] * ex["seconds_per_minibatch"] - 50) < 1e-6  # tiny.py: minibatches of 50
    assert 0 < sampled["fraction_evaluated"] < 1
    assert abs(sampled["speedup_over_exhaustive"] - ex["seconds_per_minibatch"] / sampled["seconds_per_minibatch"]) \
        < 1e-9
    # the second level is over --max_exhaustive_poses: estimated from its FLOPs at the first level's rate
    est = above["exhaustive"]
    assert est["estimated"] and "estimated" not in ex
    assert abs(est["fraction_of_matmul_rate"] - ex["fraction_of_matmul_rate"]) < 1e-12
    assert abs(est["seconds_per_minibatch"] * est["fraction_of_matmul_rate"] * record["matmul_gflops"]
               - est["matmul_gflop"]) < 1e-6 * est["matmul_gflop"]
    assert 0 < above["importance_sampled"]["fraction_evaluated"] < 1


def test_bench_run_stage_and_budget(finished_run, dataset_dir, tmp_path):  # noqa: F811
    """--run: the run's own rates per level and kind (checked against its metrics.jsonl) and its time to FSC 0.5;
    --budget_seconds spent before the first level: every level is listed as skipped, and the record is complete."""
    result = subprocess.run(
        [sys.executable, "experiments/bench.py", "--particles", str(dataset_dir / "particles.star"), "--map",
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
