"""The tiny config's map at this checkout against an earlier revision's: does a change leave one-class runs as
they were?

    python -m experiments.same_map --base 9564192 --out experiments/results/same_map_k1_cpu.json

Simulates the tiny set (experiments/configs/tiny_data.py) once, runs ``recon.reconstruct`` with
experiments/configs/tiny.py from a checkout of ``--base`` (a git worktree) and from this one, and records the
largest voxel difference of the two final maps relative to the map's largest value (float32 rounding: ~1e-6).
Machine, time: 2-core CPU, about 3 minutes.
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

from recon import cli
from recon.io import atomic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("base", None, "The git revision to compare with.")
    flags.DEFINE_string("out", "experiments/results/same_map_k1_cpu.json", "Results JSON.")


def reconstruct(checkout: str, star: str, workdir: str) -> None:
    subprocess.run([sys.executable, "-m", "recon.reconstruct", "--particles", star, "--workdir", workdir, "--quiet",
                    "--config", os.path.join(checkout, "experiments/configs/tiny.py")], cwd=checkout, check=True,
                   env=dict(os.environ, PYTHONPATH=checkout))


def main(argv):
    from recon.io import mrc

    del argv
    if not FLAGS.base:
        raise SystemExit("--base is required")
    base = subprocess.run(["git", "rev-parse", FLAGS.base], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout.strip()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "recon.simulate", "--config",
                        os.path.join(REPO, "experiments/configs/tiny_data.py"), "--out", f"{tmp}/data"], cwd=REPO,
                       check=True)
        old = os.path.join(tmp, "base")
        subprocess.run(["git", "worktree", "add", "--detach", old, base], cwd=REPO, check=True, capture_output=True)
        try:
            reconstruct(old, f"{tmp}/data/particles.star", f"{tmp}/run_base")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", old], cwd=REPO, check=True)
        reconstruct(REPO, f"{tmp}/data/particles.star", f"{tmp}/run_head")
        a, b = (mrc.read_map(f"{tmp}/run_{name}/final.mrc")[0] for name in ("base", "head"))
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "base": base, "head": head,
           "config": "experiments/configs/tiny.py", "max_abs_difference_relative": float(
               np.max(np.abs(a - b)) / np.max(np.abs(a))), "identical": bool(np.array_equal(a, b))}
    atomic.write_text(FLAGS.out, json.dumps(out, indent=1))
    print(json.dumps(out))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
