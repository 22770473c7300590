"""Atomic, step-keyed checkpoints of arbitrary pytrees (``.npz``), written atomically (recon.io.atomic), the
last few kept. A checkpoint interrupted mid-write never replaces the previous one."""

from __future__ import annotations

import glob
import json
import os
import re

import numpy as np

import jax

from recon.io import atomic

PATTERN = re.compile(r"ckpt_(\d+)\.npz$")


def save(directory: str, step: int, tree, metadata: dict | None = None, keep: int = 3) -> str:
    os.makedirs(directory, exist_ok=True)
    leaves = jax.tree_util.tree_leaves(tree)
    arrays = {f"leaf_{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays["__metadata__"] = np.frombuffer(json.dumps(metadata or {}).encode(), dtype=np.uint8)
    path = os.path.join(directory, f"ckpt_{step:08d}.npz")
    with atomic.replacing(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    for old in list_checkpoints(directory)[:-keep]:
        os.remove(old)
    return path


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
