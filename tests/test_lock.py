"""One run per work folder (recon/lock.py): a second holder is refused with the holder named; a killed holder's
lock is released by the kernel, so its stale lock file blocks nothing."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from recon import baselines, gold_standard, lock, synthesis, training
from recon.data import open_dataset
from recon.errors import InputError
from recon.io import metadata
from experiments.configs import tiny
from tests.conftest import REPO, blob_volume

HOLDER = "import sys, time; from recon import lock\nwith lock.hold(sys.argv[1]):\n    print('held', flush=True)\n" \
         "    time.sleep(600)\n"


def start_holder(workdir):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_folder_is_refused_naming_the_holder_and_freed_by_sigkill(tmp_path):
    proc = start_holder(tmp_path / "w")
    try:
        with pytest.raises(InputError) as error:
            with lock.hold(str(tmp_path / "w")):
                pass
        message = str(error.value)
        assert str(tmp_path / "w") in message and f"process {proc.pid} " in message and "\n" not in message
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (tmp_path / "w" / lock.LOCK_NAME).exists()  # the stale file is still there ...
    with lock.hold(str(tmp_path / "w")):  # ... and blocks nothing
        pass


def test_one_process_cannot_hold_a_folder_twice(tmp_path):
    """flock, not POSIX record locks (which a process never refuses itself): two runs in one process conflict."""
    with lock.hold(str(tmp_path)):
        with pytest.raises(InputError, match="in use by process"):
            with lock.hold(str(tmp_path)):
                pass
    with lock.hold(str(tmp_path)):  # released on leaving the block
        pass


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("lockdata")
    vol, _ = blob_volume(16, seed=3)
    synthesis.simulate_dataset(vol.astype(np.float32), 8.0, synthesis.SimulationSpec(
        num_particles=60, snr=1.0, seed=2), str(out), log=lambda *_: None)
    return open_dataset(metadata.read_particles(str(out / "particles.star")))


@pytest.mark.parametrize("method", ["sagd", "gold_standard", "projection_matching"])
def test_every_kind_of_run_refuses_a_held_folder_and_writes_nothing(dataset, tmp_path, method):
    workdir = tmp_path / "w"
    proc = start_holder(workdir)
    try:
        before = sorted(os.listdir(workdir))
        config = tiny.get_config()
        with pytest.raises(InputError, match="in use by process"):
            if method == "sagd":
                training.run(config, dataset, str(workdir), quiet=True)
            elif method == "gold_standard":
                gold_standard.run(config, dataset, str(workdir), quiet=True)
            else:
                baselines.run(method, config, dataset, str(workdir), quiet=True)
        assert sorted(os.listdir(workdir)) == before == [lock.LOCK_NAME]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_a_file_system_without_locks_warns_and_runs(tmp_path, monkeypatch, capsys):
    import errno
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    ran = False
    with lock.hold(str(tmp_path)):
        ran = True
    assert ran and "cannot lock files" in capsys.readouterr().err


def test_every_process_of_a_job_stops_when_process_0_is_refused(tmp_path):
    """Multi-host: process 0 tries the lock and the others follow its answer (here the answer is given directly)."""
    proc = start_holder(tmp_path)
    try:
        with pytest.raises(InputError, match="in use by another run"):
            with lock.hold(str(tmp_path), writer=False, agree=lambda ok: False):  # process 1 hears "refused"
                pass
        with lock.hold(str(tmp_path / "free"), writer=False, agree=lambda ok: True):  # and "granted"
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
