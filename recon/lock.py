"""One run per work folder: an OS-level lock on ``WORKDIR/.lock`` held for the whole run.

The lock is ``flock(LOCK_EX | LOCK_NB)`` on an open file, so the kernel releases it when its process ends in any
way (exit, SIGKILL, power loss): a killed run never blocks its own resume. The file's content (pid and host of
the holder) is only there to name the holder in the refusal; its existence means nothing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import sys

from recon.errors import fail

LOCK_NAME = ".lock"


@contextlib.contextmanager
def hold(workdir: str, writer: bool = True, agree=None):
    """Hold ``workdir``'s lock for the ``with`` block (creating the folder if needed). A folder held by another
    process raises an ``InputError`` naming the folder and that process, before anything is written.

    Multi-host: only the writing process (``writer``, process 0) takes the lock; ``agree(ok) -> ok`` (e.g. a
    broadcast from process 0) lets every process learn whether it got it, so all stop together. A file system
    without ``flock`` (some Lustre and NFS mounts) gets a warning and no lock."""
    fd = None
    held = True
    if writer:
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, LOCK_NAME)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held = False
        except OSError as error:
            if error.errno not in (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            print(f"warning: {path}: this file system cannot lock files ({error.strerror}); nothing stops a second "
                  "run on this work folder", file=sys.stderr)
    try:
        if agree is not None:
            held = bool(agree(held))
        if not held:
            holder = (os.pread(fd, 200, 0).decode(errors="replace").strip() if fd is not None else "") or \
                "another run (process 0 of this job was refused)"
            raise fail(workdir, f"this work folder is in use by {holder}; wait for it to finish, stop it, or use "
                                "another --workdir")
        if fd is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock; the file stays (removing it could race a process opening it)
