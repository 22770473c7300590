"""Peak memory against dataset size: the same reconstruction command on 10k, 40k and 160k particles
that reuse one stack's images (a STAR file listing them over and over: memory does not depend on whether the
images are distinct, and no 10 GB stack has to be simulated), a few iterations each, float32 and bfloat16 stored
SAGD gradients. Prints and saves experiments/results/memory_scaling_NAME.json with the measured peak resident
memory, the accounted parts (per-particle state, SAGD's stored gradients: one map per minibatch) and the projection
for 1,000,000 particles at 128 x 128. Machine: any CPU (runs recon.reconstruct as subprocesses); from the
repository root:

    python -m experiments.memory_benchmark --particles data/groel64/particles.star [--counts 10000,40000,160000]
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np
from absl import flags

from recon import cli, sampling
from recon.errors import user_errors_exit
from recon.io import metadata, star

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "experiments", "results")
FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags (absl flags are global: defined only when this module is the entry point)."""
    flags.DEFINE_string("particles", None, "Particle STAR/.cs file whose images are repeated (required).")
    flags.DEFINE_string("counts", "10000,40000,160000", "Comma-separated particle counts.")
    flags.DEFINE_integer("iterations", 4, "Iterations of each run.")
    flags.DEFINE_string("name", "cpu", "Results go to experiments/results/memory_scaling_NAME.json.")


def repeated_star(source: str, count: int, out_path: str) -> None:
    """A STAR file of ``count`` particles cycling through the particles of ``source`` (stack paths absolute)."""
    meta = metadata.read_particles(source)
    meta = meta.subset(np.arange(count) % len(meta))
    star.write_star(out_path, meta, image_names=[f"{i + 1:06d}@{p}" for i, p in
                                                 zip(meta.image_indices, meta.stack_paths)])


def per_particle_bytes(capacities: dict) -> int:
    """Bytes of recon's state per particle: the three samplers' slots (points, log posteriors, spacing), the
    previous visit, the best pose and its level (training.RunState)."""
    state = sampling.init_state(1, capacities)
    sampler = sum(a.nbytes for f in sampling.FACTORS for a in getattr(state, f)) + state.last_visit.nbytes
    return int(sampler + 3 * 4 + 4)


def run_one(particles: str, count: int, grad_dtype: str, workdir: str, iterations: int) -> dict:
    cmd = [sys.executable, "-m", "recon.reconstruct", "--particles", particles, "--workdir", workdir, "--quiet",
           "--config", os.path.join(REPO, "experiments/configs/groel64_is.py"),
           f"--config.stop.max_iterations={iterations}", f"--config.optimizer.stored_grad_dtype={grad_dtype}",
           "--config.output.heldout_every=1000000", "--config.output.save_map_every=1000000",
           "--config.output.checkpoint_every=1000000", "--config.output.final_pose_pass=False"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr[-2000:])
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    summary = json.loads(result.stdout.strip().splitlines()[-1])  # at the end: after the final checkpoint too
    return {"particles": count, "stored_grad_dtype": grad_dtype, "iterations": iterations,
            "peak_rss_mb_during_steps": max(r["peak_rss_mb"] for r in records),
            "peak_rss_mb": summary["peak_rss_mb"]}


@user_errors_exit
def main(argv):
    cli.only_flags(argv, "particles")
    from experiments.configs import groel64_is

    config = groel64_is.get_config()
    caps = {"directions": config.sampling.max_directions, "inplane": config.sampling.max_inplane,
            "shifts": config.sampling.max_shifts}
    box = metadata.read_particles(FLAGS.particles)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in [int(c) for c in FLAGS.counts.split(",")]:
            path = os.path.join(tmp, f"p{count}.star")
            repeated_star(FLAGS.particles, count, path)
            for dtype in ("float32", "bfloat16"):
                row = run_one(path, count, dtype, os.path.join(tmp, f"run_{count}_{dtype}"), FLAGS.iterations)
                print(json.dumps(row), flush=True)
                rows.append(row)
    from recon.data import open_dataset

    size = open_dataset(box, estimate_noise=False, check_pixels=False).box_size
    per_particle = per_particle_bytes(caps)
    fit = {}
    for dtype, nbytes in (("float32", 4), ("bfloat16", 2)):
        sel = [r for r in rows if r["stored_grad_dtype"] == dtype]
        n = np.array([r["particles"] for r in sel], float)
        mb = np.array([r["peak_rss_mb"] for r in sel], float)
        slope, intercept = np.polyfit(n, mb, 1) if len(sel) > 1 else (float("nan"), float("nan"))
        accounted = (per_particle + nbytes * size ** 3 / config.batch_size) / 1e6  # MB per particle
        projected = (per_particle + nbytes * 128 ** 3 / config.batch_size) * 1e6 / 1e9  # GB at 1M, 128 px
        fit[dtype] = {"measured_mb_per_1000_particles": slope * 1000, "intercept_mb": intercept,
                      "accounted_mb_per_1000_particles": accounted * 1000,
                      "projected_gb_for_1e6_particles_128px": projected}
    record = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "source": FLAGS.particles,
              "box": size, "batch_size": config.batch_size, "per_particle_state_bytes": per_particle, "runs": rows,
              "fit": fit}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"memory_scaling_{FLAGS.name}.json"), "w") as f:
        json.dump(record, f, indent=1)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
