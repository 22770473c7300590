"""Per-particle metadata shared by the STAR and cryoSPARC readers (host-side numpy arrays)."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from recon.ctf import CTFParams
from recon.errors import fail


@dataclasses.dataclass
class ParticleMetadata:
    """Everything recon knows about N particles except their pixels.

    stack_paths: ``(N,)`` absolute paths of the stacks; image_indices: ``(N,)`` 0-based index into the stack.
    pixel_size_angstrom: ``(N,)``; box_size: ``(N,)`` expected image size (0 where the file does not say).
    ctf: per-particle :class:`CTFParams` (fields of shape ``(N,)``).
    angles_degrees: ``(N, 3)`` RELION (rot, tilt, psi) or None; origins_angstrom: ``(N, 2)`` RELION origins or None.
    optics_group: ``(N,)`` int; image_names: ``(N,)`` the names as written in the source file.
    invert_sign: ``(N,)`` bool, True where the stored images have dark particles (cryoSPARC ``blob/sign``).
    extra_columns: the source's other per-particle columns (``{"rlnMicrographName": (N,), ...}``), carried into the
    STAR files recon writes (micrographs, coordinates, subsets, groups) so RELION can go on from them.
    """

    source: str
    stack_paths: np.ndarray
    image_indices: np.ndarray
    image_names: np.ndarray
    pixel_size_angstrom: np.ndarray
    box_size: np.ndarray
    ctf: CTFParams
    optics_group: np.ndarray
    angles_degrees: np.ndarray | None = None
    origins_angstrom: np.ndarray | None = None
    invert_sign: np.ndarray | None = None
    extra_columns: dict | None = None

    def __len__(self) -> int:
        return len(self.image_indices)

    def subset(self, index) -> "ParticleMetadata":
        index = np.asarray(index)
        take = lambda a: None if a is None else np.asarray(a)[index]  # noqa: E731
        return dataclasses.replace(
            self, stack_paths=take(self.stack_paths), image_indices=take(self.image_indices),
            image_names=take(self.image_names), pixel_size_angstrom=take(self.pixel_size_angstrom),
            box_size=take(self.box_size), ctf=self.ctf.take(index), optics_group=take(self.optics_group),
            angles_degrees=take(self.angles_degrees), origins_angstrom=take(self.origins_angstrom),
            invert_sign=take(self.invert_sign),
            extra_columns=None if self.extra_columns is None else {k: take(v) for k, v in self.extra_columns.items()})

    def common_pixel_size(self) -> float:
        """The single pixel size of the set; an error if particles disagree by more than 0.1%."""
        p = self.pixel_size_angstrom
        if not np.all(np.isfinite(p)) or np.any(p <= 0):
            raise fail(self.source, "pixel size is unknown, zero or negative; give it with --config.pixel_size_angstrom")
        if p.max() > p.min() * 1.001:
            raise fail(self.source, f"particles have different pixel sizes ({p.min():.4g} to {p.max():.4g} A); "
                                    "rescale them to one pixel size first")
        return float(np.median(p))


def read_particles(path, pixel_size_angstrom: float | None = None, data_dir: str | None = None
                   ) -> ParticleMetadata:
    """Read a RELION ``.star`` or a cryoSPARC ``.cs`` particle file (dispatch on the extension)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise fail(path, "file not found")
    lower = path.lower()
    if lower.endswith(".cs"):
        from recon.io import cs
        meta = cs.read_cs(path, data_dir=data_dir)
    elif lower.endswith(".star"):
        from recon.io import star
        meta = star.read_star(path, data_dir=data_dir)
    else:
        raise fail(path, "unknown particle file type (expected .star or .cs)")
    if pixel_size_angstrom is not None:
        if not pixel_size_angstrom > 0:
            raise fail(path, f"pixel size override must be positive, got {pixel_size_angstrom}")
        meta.pixel_size_angstrom = np.full(len(meta), float(pixel_size_angstrom))
    if len(meta) == 0:
        raise fail(path, "contains no particles")
    return meta
