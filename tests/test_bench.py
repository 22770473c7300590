"""experiments/bench.py runs end to end on the tiny set (two levels, the second above --max_exhaustive_poses) and writes a complete record; the numbers it
reports are consistent with each other (not timed: speed targets live in the benchmark scripts)."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO
from tests.test_figures import tiny_data  # noqa: F401  (fixture)


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
