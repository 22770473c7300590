"""Crash safety: checkpoints are atomic and the last few kept; a checkpoint interrupted mid-write (full disk) never
replaces the previous one; a NaN stops the run before anything poisoned is written; an unwritable work folder gets
one error line; a partial last line of metrics.jsonl (a kill mid-write) is skipped."""

import errno
import os
import subprocess
import sys

import numpy as np
import pytest

from recon import checkpoint, report, schedules, synthesis, training
from recon.data import open_dataset
from recon.errors import InputError
from recon.io import atomic, metadata, mrc
from experiments.configs import tiny
from tests.conftest import REPO, blob_volume


def _tree(value):
    return {"a": np.full((4, 4), value, np.float32), "b": np.arange(3) * value}


def test_keeps_the_last_few_and_loads_the_newest(tmp_path):
    for step in range(1, 6):
        checkpoint.save(str(tmp_path), step, _tree(step), {"step": step}, keep=3)
    names = [os.path.basename(p) for p in checkpoint.list_checkpoints(str(tmp_path))]
    assert names == ["ckpt_00000003.npz", "ckpt_00000004.npz", "ckpt_00000005.npz"]
    tree, meta = checkpoint.load_latest(str(tmp_path), _tree(0))
    assert meta == {"step": 5} and np.all(tree["a"] == 5)


def test_checkpoint_interrupted_mid_write_never_replaces_the_previous(tmp_path, monkeypatch):
    checkpoint.save(str(tmp_path), 1, _tree(1.0), {"step": 1})

    def disk_full(path, **arrays):  # half the bytes reach the disk, then it is full
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04" + b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.np, "savez", disk_full)
    with pytest.raises(OSError):
        checkpoint.save(str(tmp_path), 2, _tree(2.0), {"step": 2})
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["ckpt_00000001.npz"]  # no temporary file left, step 1 untouched
    tree, meta = checkpoint.load_latest(str(tmp_path), _tree(0))
    assert meta == {"step": 1} and np.all(tree["a"] == 1.0)


def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
    checkpoint.save(str(tmp_path), 1, _tree(1.0), {"step": 1})
    (tmp_path / "ckpt_00000002.npz").write_bytes(b"PK\x03\x04 not really a zip")
    _, meta = checkpoint.load_latest(str(tmp_path), _tree(0))
    assert meta == {"step": 1}


def test_text_and_map_writes_are_atomic_under_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    atomic.write_text(str(path), '{"old": 1}')
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", full)
    with pytest.raises(OSError):
        atomic.write_text(str(path), '{"new": 2}' * 1000)
    monkeypatch.setattr(checkpoint.os, "fsync", real_fsync)
    assert path.read_text() == '{"old": 1}' and os.listdir(tmp_path) == ["config.json"]

    old = np.ones((8, 8, 8), np.float32)
    mrc.write_map(tmp_path / "m.mrc", old, 2.0)

    def broken(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mrc.mrcfile, "new", broken)
    with pytest.raises(OSError):
        mrc.write_map(tmp_path / "m.mrc", np.zeros((8, 8, 8), np.float32), 2.0)
    monkeypatch.undo()
    np.testing.assert_array_equal(mrc.read_map(tmp_path / "m.mrc")[0], old)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "m.mrc"]


def test_partial_last_metrics_line_is_skipped(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 1}\n{"iteration": 2}\n{"iteration": 3, "obj')
    assert [r["iteration"] for r in report.read_metrics(str(tmp_path))] == [1, 2]


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("crash")
    vol, _ = blob_volume(16, seed=3)
    synthesis.simulate_dataset(vol.astype(np.float32), 8.0, synthesis.SimulationSpec(
        num_particles=120, snr=1.0, seed=2), str(out), log=lambda *_: None)
    return out


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(small_dataset, tmp_path, monkeypatch):
    config = tiny.get_config()
    config.output.checkpoint_every = 5
    config.output.save_map_every = 1
    config.stop.max_iterations = 20
    real_step_size = schedules.step_size
    # A NaN step at iteration 9: the update that makes the map NaN comes right before the checkpoint of iteration 10.
    monkeypatch.setattr(training.schedules, "step_size",
                        lambda it: float("nan") if it == 9 else real_step_size(it))
    dataset = open_dataset(metadata.read_particles(small_dataset / "particles.star"))
    workdir = tmp_path / "run"
    with pytest.raises(InputError, match="NaN or infinite at iteration 9.*last checkpoint here is intact"):
        training.run(config, dataset, str(workdir), quiet=True)
    names = [os.path.basename(p) for p in checkpoint.list_checkpoints(str(workdir / "checkpoints"))]
    assert names[-1] == "ckpt_00000005.npz"
    assert not (workdir / "final.mrc").exists()
    for path in (workdir / "maps").glob("*.mrc"):  # no poisoned snapshot
        assert np.all(np.isfinite(mrc.read_map(path)[0])), path


def test_divergence_stops_the_run_and_keeps_the_last_checkpoint(small_dataset, tmp_path, monkeypatch):
    """A finite but exploding map (a step 10^4 times too long at iteration 7) is caught by its objective: far above
    an empty map's, the run stops with one line at the next iteration, before the checkpoint of iteration 10."""
    config = tiny.get_config()
    config.output.checkpoint_every = 5
    config.output.save_map_every = 5
    config.stop.max_iterations = 20
    real_step_size = schedules.step_size
    monkeypatch.setattr(training.schedules, "step_size", lambda it: 1e4 if it == 7 else real_step_size(it))
    dataset = open_dataset(metadata.read_particles(small_dataset / "particles.star"))
    workdir = tmp_path / "run"
    with pytest.raises(InputError, match=r"diverged at iteration 8: .* times that of an empty map .*"
                                         r"ckpt_00000005.npz\) is intact"):
        training.run(config, dataset, str(workdir), quiet=True)
    names = [os.path.basename(p) for p in checkpoint.list_checkpoints(str(workdir / "checkpoints"))]
    assert names[-1] == "ckpt_00000005.npz"
    assert not (workdir / "final.mrc").exists()
    # without the blow-up the same run goes past iteration 8 (the guard does not fire on a sane run)
    monkeypatch.setattr(training.schedules, "step_size", real_step_size)
    config.stop.max_iterations = 10
    summary = training.run(config, dataset, str(tmp_path / "sane"), quiet=True)
    assert summary["iterations"] == 10


def test_unwritable_work_folder_gets_one_line(small_dataset, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = subprocess.run(
        [sys.executable, "-m", "recon.reconstruct", "--particles", str(small_dataset / "particles.star"),
         "--workdir", str(blocker / "run"), "--config", "experiments/configs/tiny.py"],
        cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "a_file" in lines[0], result.stderr
    assert blocker.read_text() == "not a folder"


def test_a_line_cut_off_by_a_kill_does_not_swallow_the_next_record(tmp_path):
    """metrics.jsonl ends mid-record (a kill during a write): the next run's first record is on its own line and is
    read back; the cut one is skipped."""
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 1}\n{"itera')
    progress = training.Progress(str(tmp_path), quiet=True)
    progress.metrics({"iteration": 2})
    progress.close()
    assert [r["iteration"] for r in report.read_metrics(str(tmp_path))] == [1, 2]
