"""Data parallelism (recon/step.py): the particles of a minibatch split over several devices give the same
objective, gradient, per-particle results and evaluations as one device, to float32 tolerance, exhaustive and
importance-sampled; a whole run with --config.devices=2 (50 particles a minibatch) ends at the map of the one-device run, and so does
a run of two processes under jax.distributed (multi-host, on one machine). CPU devices are
forced with XLA_FLAGS (fixed when JAX starts, hence subprocesses)."""

import json
import os
import subprocess
import sys

import numpy as np

from recon.io import mrc
from tests.conftest import REPO
from tests.test_reconstruct import OVERRIDES, dataset_dir, finished_run  # noqa: F401  (fixtures)

FORCED = "--xla_force_host_platform_device_count=4"


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + FORCED).strip())


def _reconstruct(dataset_dir, workdir, *extra):
    """The tiny reconstruction command of tests/test_reconstruct.py (its OVERRIDES) with ``extra`` flags."""
    return [sys.executable, "-m", "recon.reconstruct", "--particles", str(dataset_dir / "particles.star"),
            "--workdir", str(workdir), "--config", str(REPO / "experiments/configs/tiny.py"), "--quiet", *OVERRIDES,
            *extra]


def _assert_same_map(workdir, finished_run):
    """Sums in another order: float32 rounding, amplified a little by 60 steps and their line searches."""
    other, _ = mrc.read_map(workdir / "final.mrc")
    one, _ = mrc.read_map(finished_run / "final.mrc")
    assert np.max(np.abs(other - one)) < 1e-3 * np.max(np.abs(one))
    assert np.corrcoef(other.ravel(), one.ravel())[0, 1] > 0.99999


def test_split_minibatch_equals_one_device():
    result = subprocess.run([sys.executable, "-m", "tests.devices_check", "4"], cwd=REPO, env=_env(),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out.pop("grad_sharding_replicated") and out.pop("result_replicated")
    for key, relative in out.items():
        assert relative < 2e-5, (key, relative)


def test_two_device_run_ends_at_the_one_device_map(finished_run, dataset_dir, tmp_path):  # noqa: F811
    workdir = tmp_path / "two"
    result = subprocess.run(_reconstruct(dataset_dir, workdir, "--config.devices=2"), cwd=REPO, env=_env(),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_map(workdir, finished_run)


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def test_two_process_run_ends_at_the_one_device_map(finished_run, dataset_dir, tmp_path):  # noqa: F811
    """Multi-host through jax.distributed, on one machine: two processes of one CPU device each (cross-process
    collectives over gloo), the same command on each, one work folder written by process 0."""
    workdir = tmp_path / "hosts"
    address = f"localhost:{_free_port()}"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    procs = [subprocess.Popen(_reconstruct(dataset_dir, workdir, "--config.devices=0", "--distributed",
                                           f"--coordinator_address={address}", "--num_processes=2",
                                           f"--process_id={rank}"),
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    summaries = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert summaries[0]["iterations"] == summaries[1]["iterations"] == 60
    _assert_same_map(workdir, finished_run)
    assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 60  # written once, not once per process


def test_batch_not_divisible_by_devices_is_one_line(dataset_dir, tmp_path):  # noqa: F811
    result = subprocess.run(_reconstruct(dataset_dir, tmp_path / "three", "--config.devices=3"), cwd=REPO,
                            env=_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "not a multiple of the 3 devices" in result.stderr
    assert not (tmp_path / "three").exists()
