r"""Data-parallel scaling over processes: the same run as one process on one core, as N processes under
jax.distributed with one core each (multi-host on one machine: the minibatch split, gradients reduced over gloo),
and as one process on all the cores. Prints and saves experiments/results/process_scaling_NAME.json.
Machine: a multi-core Linux CPU (cores pinned with ``taskset``, util-linux); from the repository root:

    python -m experiments.process_scaling --particles data/groel64/particles.star [--processes 2] \
        [--config experiments/configs/groel64_is.py] [--iterations 40] [--name cpu_2core]

Per run: the median ``step_seconds`` of its iterations after the fifth (the first compiles), particles per
second, and the speed-up over one process on one core; and the largest difference of the final maps against the
one-process run (the same computation summed in another order). Forced host devices in one process
(``--xla_force_host_platform_device_count``) share one thread pool and show no gain, hence processes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
from absl import flags

from experiments.engine_benchmark import RESULTS, machine
from recon import cli
from recon.errors import InputError, user_errors_exit

FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags (absl flags are global: defined only when this module is the entry point)."""
    flags.DEFINE_string("particles", None, "Particle STAR/.cs file (required).")
    flags.DEFINE_string("config", "experiments/configs/groel64_is.py", "Run config file (passed to recon.reconstruct).")
    flags.DEFINE_integer("iterations", 40, "Iterations of each run.")
    flags.DEFINE_integer("processes", 2, "Processes of the distributed run (one core each).")
    flags.DEFINE_string("workdir", "/tmp/recon_process_scaling", "Folder for the three runs.")
    flags.DEFINE_string("name", "cpu", "Results go to OUT/process_scaling_NAME.json.")
    flags.DEFINE_string("out", RESULTS, "Folder for process_scaling_NAME.json.")


def _command(settings, workdir, *extra):
    return [sys.executable, "-m", "recon.reconstruct", "--particles", settings.particles, "--workdir", workdir,
            "--config", settings.config, "--config.stop.max_minutes=0",
            f"--config.stop.max_iterations={settings.iterations}",
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


@user_errors_exit
def main(argv):
    cli.only_flags(argv, "particles")
    cores = sorted(os.sched_getaffinity(0))
    if shutil.which("taskset") is None:
        raise InputError("taskset (util-linux) not found: it pins each process to one core")
    if len(cores) < FLAGS.processes:
        raise InputError(f"{FLAGS.processes} processes need as many cores; this process may use {len(cores)}")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    record = {"machine": machine(), "config": FLAGS.config, "particles": FLAGS.particles,
              "iterations": FLAGS.iterations, "processes": FLAGS.processes, "runs": {}}

    one = os.path.join(FLAGS.workdir, "one_process_one_core")
    t = time.time()
    subprocess.run(_pinned(cores[0], _command(FLAGS, one)), env=env, check=True)
    record["runs"]["one_process_one_core"] = _summary(one, time.time() - t)

    many = os.path.join(FLAGS.workdir, f"{FLAGS.processes}_processes_one_core_each")
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    t = time.time()
    procs = [subprocess.Popen(_pinned(cores[rank], _command(
        FLAGS, many, "--config.devices=0", "--distributed", f"--coordinator_address=localhost:{port}",
        f"--num_processes={FLAGS.processes}", f"--process_id={rank}")), env=env) for rank in range(FLAGS.processes)]
    if any(p.wait() for p in procs):
        raise SystemExit("error: a process of the distributed run failed")
    record["runs"][f"{FLAGS.processes}_processes_one_core_each"] = _summary(many, time.time() - t, one)

    allcores = os.path.join(FLAGS.workdir, "one_process_all_cores")
    t = time.time()
    subprocess.run(_command(FLAGS, allcores), env=env, check=True)
    record["runs"]["one_process_all_cores"] = _summary(allcores, time.time() - t, one)

    base = record["runs"]["one_process_one_core"]["median_step_seconds"]
    for run in record["runs"].values():
        run["speedup_over_one_core"] = base / run["median_step_seconds"]
    os.makedirs(FLAGS.out, exist_ok=True)
    with open(os.path.join(FLAGS.out, f"process_scaling_{FLAGS.name}.json"), "w") as f:
        json.dump(record, f, indent=1)
    print(json.dumps(record["runs"], indent=1))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
