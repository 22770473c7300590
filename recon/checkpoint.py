"""Atomic, step-keyed checkpoints of arbitrary pytrees (``.npz``), written to a temporary file and renamed, the
last few kept. A checkpoint interrupted mid-write never replaces the previous one."""

from __future__ import annotations

import glob
import json
import os
import re
import tempfile

import numpy as np

import jax

PATTERN = re.compile(r"ckpt_(\d+)\.npz$")


def save(directory: str, step: int, tree, metadata: dict | None = None, keep: int = 3) -> str:
    os.makedirs(directory, exist_ok=True)
    leaves = jax.tree_util.tree_leaves(tree)
    arrays = {f"leaf_{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays["__metadata__"] = np.frombuffer(json.dumps(metadata or {}).encode(), dtype=np.uint8)
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        path = os.path.join(directory, f"ckpt_{step:08d}.npz")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    for old in list_checkpoints(directory)[:-keep]:
        os.remove(old)
    return path


def write_text(path: str, text: str) -> None:
    """Write a small text file atomically (temporary file in the same folder, fsync, rename): a crash or a full
    disk leaves the previous version, never a truncated one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def list_checkpoints(directory: str) -> list[str]:
    paths = [p for p in glob.glob(os.path.join(directory, "ckpt_*.npz")) if PATTERN.search(p)]
    return sorted(paths, key=lambda p: int(PATTERN.search(p).group(1)))


def load(path: str, template):
    """Restore a pytree with the structure (and dtypes) of ``template``; returns ``(tree, metadata)``."""
    with np.load(path) as data:
        metadata = json.loads(bytes(data["__metadata__"]).decode())
        leaves, treedef = jax.tree_util.tree_flatten(template)
        restored = []
        for i, leaf in enumerate(leaves):
            value = data[f"leaf_{i:05d}"]
            if value.shape != np.shape(leaf):
                raise ValueError(f"{path}: leaf {i} has shape {value.shape}, expected {np.shape(leaf)}")
            restored.append(value.astype(np.asarray(leaf).dtype) if hasattr(leaf, "dtype") else value)
    return jax.tree_util.tree_unflatten(treedef, restored), metadata


def load_latest(directory: str, template):
    """The newest readable checkpoint (corrupt ones are skipped), or ``(None, None)``."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return load(path, template)
        except Exception:  # an unreadable file: fall back to the one before
            continue
    return None, None
