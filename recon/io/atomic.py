"""Atomic file writes: every file recon writes goes through ``replacing``: written to a temporary file in the same
folder, flushed to disk, then renamed over the target, so a crash or a full disk leaves the previous version (or
nothing), never a truncated file."""

from __future__ import annotations

import contextlib
import os
import tempfile


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def replacing(path, suffix: str = ""):
    """``with replacing(path) as tmp:`` write the file ``tmp`` (by name); on leaving the block it is fsynced, given
    the permissions a new file would have, and renamed to ``path``; on an error it is removed and ``path`` left as
    it was. ``suffix``: the temporary name's ending, for writers that infer the format from it."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text(path, text: str) -> None:
    """A text file written atomically."""
    with replacing(path) as tmp, open(tmp, "w") as f:
        f.write(text)
