"""One run per work folder: an OS-level lock on ``WORKDIR/.lock`` held for the whole run.

The lock is ``flock(LOCK_EX | LOCK_NB)`` on an open file, so the kernel releases it when its process ends in any
way (exit, SIGKILL, power loss): a killed run never blocks its own resume. The file's content (pid and host of
the holder) is only there to name the holder in the refusal; its existence means nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket

from recon.errors import fail

LOCK_NAME = ".lock"


@contextlib.contextmanager
def hold(workdir: str, writer: bool = True):
    """Hold ``workdir``'s lock for the ``with`` block (creating the folder if needed). A folder held by another
    process raises an ``InputError`` naming the folder and that process, before anything is written.

    ``writer=False`` (the processes other than the first of a multi-host run) holds nothing: process 0 does."""
    if not writer:
        yield
        return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise fail(workdir, f"this work folder is in use by {holder}; wait for it to finish, stop it, or use "
                                "another --workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it could race a process opening it)
