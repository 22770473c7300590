"""MRC maps and ``.mrcs`` particle stacks (host side). Arrays are ``[z, y, x]`` / ``[n, y, x]``."""

from __future__ import annotations

import os
import warnings

import mrcfile
import numpy as np

from recon.errors import fail
from recon.io import atomic

SUPPORTED_MODES = {0: "int8", 1: "int16", 2: "float32", 6: "uint16", 12: "float16"}


def _open(path, mmap: bool):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise fail(path, "file not found")
    if os.path.isdir(path):
        raise fail(path, "is a directory, not an MRC file")
    if os.path.getsize(path) < 1024:
        raise fail(path, f"not an MRC file (only {os.path.getsize(path)} bytes, shorter than the 1024-byte header)")
    try:
        # Permissive: many real files lack the "MAP " id or machine stamp; the checks below catch real damage.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            handle = (mrcfile.mmap(path, mode="r", permissive=True) if mmap
                      else mrcfile.open(path, mode="r", permissive=True))
    except PermissionError:
        raise fail(path, "permission denied") from None
    except (ValueError, OSError, EOFError, TypeError) as e:
        raise fail(path, f"not a readable MRC file ({str(e).splitlines()[0]})") from None
    mode = int(handle.header.mode)
    dims = int(handle.header.nx), int(handle.header.ny), int(handle.header.nz)
    if mode not in (0, 1, 2, 3, 4, 6, 12, 101):
        handle.close()
        raise fail(path, f"not an MRC file (invalid header: mode {mode})")
    if min(dims) < 1:
        handle.close()
        raise fail(path, "invalid MRC header: dimensions {} x {} x {} (every one must be at least 1)".format(*dims))
    if mode not in SUPPORTED_MODES:
        handle.close()
        raise fail(path, f"unsupported MRC mode {mode} (supported: {sorted(SUPPORTED_MODES)})")
    if handle.data is None:
        nx, ny, nz = int(handle.header.nx), int(handle.header.ny), int(handle.header.nz)
        handle.close()
        raise fail(path, f"truncated or corrupt MRC file (header says {nx} x {ny} x {nz} of mode {mode}, "
                         f"but the data block is shorter or unreadable)")
    return handle


def header_pixel_size(handle) -> float | None:
    """Voxel size from the header (Angstrom), or None when absent (0 or 1 with an unset cell count)."""
    size = float(handle.voxel_size.x)
    if not np.isfinite(size) or size <= 0:
        return None
    return size


def read_map(path) -> tuple[np.ndarray, float | None]:
    """A cubic 3D map as float32 ``[z, y, x]`` and its header voxel size (None if unset)."""
    with _open(path, mmap=False) as handle:
        data = np.asarray(handle.data, dtype=np.float32)
        pixel = header_pixel_size(handle)
    if data.ndim != 3 or len(set(data.shape)) != 1:
        raise fail(path, f"expected a cubic 3D map, found shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise fail(path, "map contains NaN or infinite values")
    return data.copy(), pixel


def write_map(path, volume: np.ndarray, pixel_size_angstrom: float) -> None:
    """Write a float32 ``[z, y, x]`` map with its voxel size, origin 0; atomic (temp file, then rename)."""
    with atomic.replacing(path, suffix=".mrc") as tmp, mrcfile.new(tmp, overwrite=True) as handle:
        handle.set_data(np.ascontiguousarray(volume, dtype=np.float32))
        handle.voxel_size = float(pixel_size_angstrom)
        handle.header.origin = (0.0, 0.0, 0.0)
        handle.update_header_stats()


class StackReader:
    """Lazy access to the images of ``.mrcs`` stacks: each file is memory-mapped once, images read on demand."""

    def __init__(self):
        self._handles = {}

    def shape(self, path) -> tuple[int, int, int]:
        """``(n_images, ny, nx)`` of a stack (a single 2D image counts as one)."""
        data = self._handle(path).data
        return (1, *data.shape) if data.ndim == 2 else tuple(data.shape)

    def _handle(self, path):
        handle = self._handles.get(path)
        if handle is None:
            handle = _open(path, mmap=True)
            data = handle.data
            if data.ndim not in (2, 3):
                handle.close()
                raise fail(path, f"expected a stack of 2D images, found data of shape {data.shape}")
            self._handles[path] = handle
        return handle

    def read(self, path, indices) -> np.ndarray:
        """Images ``indices`` (0-based) of stack ``path`` as float32 ``(k, ny, nx)``."""
        data = self._handle(path).data
        if data.ndim == 2:
            data = data[None]
        indices = np.asarray(indices)
        if indices.size and (indices.min() < 0 or indices.max() >= data.shape[0]):
            bad = int(indices.max() if indices.max() >= data.shape[0] else indices.min())
            raise fail(path, f"image index {bad + 1} out of range (the stack holds {data.shape[0]} images)")
        return np.asarray(data[indices], dtype=np.float32)

    def close(self):
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()


def write_stack(path, num_images: int, size: int, pixel_size_angstrom: float):
    """Create a float32 ``.mrcs`` stack memory-mapped for writing; returns the open handle (close it)."""
    handle = mrcfile.new_mmap(os.fspath(path), shape=(num_images, size, size), mrc_mode=2, overwrite=True)
    handle.set_image_stack()
    handle.voxel_size = float(pixel_size_angstrom)
    return handle
