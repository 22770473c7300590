"""Data-parallel scaling over processes: the same run as one process on one core, as N processes under
jax.distributed with one core each (multi-host on one machine: the minibatch split, gradients reduced over gloo),
and as one process on all the cores. Prints and saves experiments/results/process_scaling_NAME.json.

    python experiments/process_scaling.py --particles data/groel64/particles.star [--processes 2] \
        [--config experiments/configs/groel64_is.py] [--iterations 40] [--name cpu_2core]

Per run: the median ``step_seconds`` of its iterations after the fifth (the first compiles), particles per
second, and the speed-up over one process on one core; and the largest difference of the final maps against the
one-process run (the same computation summed in another order). Cores are pinned with ``taskset`` (Linux,
util-linux). Forced host devices in one process (``--xla_force_host_platform_device_count``) share one thread pool and
show no gain (README "Benchmarks"), hence processes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.engine_benchmark import RESULTS, machine  # noqa: E402


def _command(args, workdir, *extra):
    return [sys.executable, "-m", "recon.reconstruct", "--particles", args.particles, "--workdir", workdir,
            "--config", args.config, "--config.stop.max_minutes=0", f"--config.stop.max_iterations={args.iterations}",
            "--config.output.final_pose_pass=False", "--quiet", *extra]


def _pinned(core: int, command: list[str]) -> list[str]:
    """``command`` on one core, through ``taskset`` (util-linux)."""
    return ["taskset", "-c", str(core), *command]


def _summary(workdir, seconds, reference=None):
    from recon.io import mrc

    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl")) if line.strip()]
    steps = np.array([r["step_seconds"] for r in records])[5:]
    particles = np.median([r["particles"] for r in records])
    out = {"wall_seconds": seconds, "iterations": len(records), "median_step_seconds": float(np.median(steps)),
           "min_step_seconds": float(steps.min()), "particles_per_second": float(particles / np.median(steps))}
    if reference is not None:
        a, b = mrc.read_map(os.path.join(workdir, "final.mrc"))[0], mrc.read_map(os.path.join(reference, "final.mrc"))[0]
        out["final_map_max_relative_difference"] = float(np.abs(a - b).max() / np.abs(b).max())
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--particles", required=True)
    parser.add_argument("--config", default="experiments/configs/groel64_is.py")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/recon_process_scaling")
    parser.add_argument("--name", default="cpu")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    if shutil.which("taskset") is None:
        raise SystemExit("error: taskset (util-linux) not found: it pins each process to one core")
    if len(cores) < args.processes:
        raise SystemExit(f"error: {args.processes} processes need as many cores; this process may use {len(cores)}")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    record = {"machine": machine(), "config": args.config, "particles": args.particles, "iterations": args.iterations,
              "processes": args.processes, "runs": {}}

    one = os.path.join(args.workdir, "one_process_one_core")
    t = time.time()
    subprocess.run(_pinned(cores[0], _command(args, one)), env=env, check=True)
    record["runs"]["one_process_one_core"] = _summary(one, time.time() - t)

    many = os.path.join(args.workdir, f"{args.processes}_processes_one_core_each")
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    t = time.time()
    procs = [subprocess.Popen(_pinned(cores[rank], _command(
        args, many, "--config.devices=0", "--distributed", f"--coordinator_address=localhost:{port}",
        f"--num_processes={args.processes}", f"--process_id={rank}")), env=env) for rank in range(args.processes)]
    if any(p.wait() for p in procs):
        raise SystemExit("error: a process of the distributed run failed")
    record["runs"][f"{args.processes}_processes_one_core_each"] = _summary(many, time.time() - t, one)

    allcores = os.path.join(args.workdir, "one_process_all_cores")
    t = time.time()
    subprocess.run(_command(args, allcores), env=env, check=True)
    record["runs"]["one_process_all_cores"] = _summary(allcores, time.time() - t, one)

    base = record["runs"]["one_process_one_core"]["median_step_seconds"]
    for run in record["runs"].values():
        run["speedup_over_one_core"] = base / run["median_step_seconds"]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"process_scaling_{args.name}.json"), "w") as f:
        json.dump(record, f, indent=1)
    print(json.dumps(record["runs"], indent=1))


if __name__ == "__main__":
    main()
