"""cryoSPARC ``.cs`` particle files (numpy structured arrays saved with ``np.save``).

Fields used: ``blob/path`` (stack, relative to the cryoSPARC project folder), ``blob/idx`` (0-based),
``blob/shape``, ``blob/psize_A``, ``blob/sign`` (optional; -1 means dark particles), and the CTF fields
``ctf/accel_kv``, ``ctf/cs_mm``, ``ctf/amp_contrast``, ``ctf/df1_A`` (RELION's DefocusU), ``ctf/df2_A``
(DefocusV), ``ctf/df_angle_rad``, optional ``ctf/phase_shift_rad``, ``ctf/bfactor``, ``ctf/scale``.
Poses, when present: ``alignments3D/pose`` is a rotation vector whose matrix is the transpose of RELION's ``A``,
and ``alignments3D/shift`` (pixels, of ``alignments3D/psize_A`` when present) equals RELION's origin -- the
conversion used by the public cryoSPARC-to-RELION converters.

Every field is one recon reads (``READ_FIELDS``), a common cryoSPARC field safe to ignore for ab initio work
(``IGNORED_FIELDS``, or any field of a group in ``IGNORED_GROUPS``), or is named in one warning per file read,
with "did you mean" for near misses of fields recon reads.
"""

from __future__ import annotations

import os
import re
import sys

import numpy as np

from recon import conventions
from recon.ctf import CTFParams
from recon.errors import fail
from recon.io.metadata import ParticleMetadata
from recon.io.names import nearest, unknown_names, unknown_names_warning

REQUIRED = ("blob/path", "blob/idx", "blob/psize_A", "ctf/accel_kv", "ctf/cs_mm", "ctf/amp_contrast", "ctf/df1_A",
            "ctf/df2_A", "ctf/df_angle_rad")
READ_FIELDS = REQUIRED + ("blob/shape", "blob/sign", "ctf/phase_shift_rad", "ctf/bfactor", "ctf/scale",
                          "alignments3D/pose", "alignments3D/shift", "alignments3D/psize_A")
# Common cryoSPARC fields recon ignores without a word: bookkeeping, alignment and classification statistics,
# and the optical corrections that matter only well past ab initio resolutions (beam tilt, trefoil, tetrafoil,
# anisotropic magnification); and whole groups recon never reads (numbered groups such as alignments_class_3
# are matched without their number).
IGNORED_FIELDS = frozenset("""
    uid blob/import_sig ctf/type ctf/exp_group_id ctf/scale_const ctf/shift_A ctf/tilt_A ctf/trefoil_A
    ctf/tetra_A ctf/anisomag alignments3D/split alignments3D/error alignments3D/error_min alignments3D/resid_pow
    alignments3D/slice_pow alignments3D/image_pow alignments3D/cross_cor alignments3D/alpha alignments3D/alpha_min
    alignments3D/weight alignments3D/pose_ess alignments3D/shift_ess alignments3D/class_posterior
    alignments3D/class alignments3D/class_ess alignments3D/localpose alignments3D/localshift
    alignments3D/localfulcrum""".split())
IGNORED_GROUPS = frozenset(
    "location pick_stats alignments2D alignments3D_multi alignments_class motion sym_expand ml_properties "
    "filament".split())


def _ignored(field: str) -> bool:
    return field in IGNORED_FIELDS or re.sub(r"_\d+$", "", field.split("/")[0]) in IGNORED_GROUPS


def rotvec_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues' formula, ``(N, 3)`` -> ``(N, 3, 3)`` active rotation matrices."""
    theta = np.linalg.norm(rotvec, axis=-1, keepdims=True)
    safe = np.where(theta > 1e-12, theta, 1.0)
    k = rotvec / safe
    kx, ky, kz = k[:, 0], k[:, 1], k[:, 2]
    zero = np.zeros_like(kx)
    kmat = np.stack([np.stack([zero, -kz, ky], -1), np.stack([kz, zero, -kx], -1),
                     np.stack([-ky, kx, zero], -1)], -2)
    t = theta[:, :, None]
    return np.eye(3) + np.sin(t) * kmat + (1 - np.cos(t)) * (kmat @ kmat)


def _matrix_to_rotvec(matrix: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_rotvec_to_matrix` (angles in ``[0, pi]``)."""
    cos = np.clip((np.trace(matrix, axis1=-2, axis2=-1) - 1) / 2, -1, 1)
    theta = np.arccos(cos)
    axis = np.stack([matrix[:, 2, 1] - matrix[:, 1, 2], matrix[:, 0, 2] - matrix[:, 2, 0],
                     matrix[:, 1, 0] - matrix[:, 0, 1]], -1)
    s = np.sin(theta)
    small = s < 1e-6
    axis = np.where(small[:, None], 0.0, axis / (2 * np.where(small, 1.0, s))[:, None])
    # Near pi, recover the axis from the symmetric part.
    near_pi = small & (theta > 1.0)
    if np.any(near_pi):
        for i in np.nonzero(near_pi)[0]:
            b = (matrix[i] + np.eye(3)) / 2
            j = int(np.argmax(np.diag(b)))
            v = b[:, j] / np.sqrt(max(b[j, j], 1e-12))
            axis[i] = v
    return axis * theta[:, None]


def _resolve(path: str, cs_dir: str, data_dir: str | None) -> str:
    path = path.lstrip(">")
    if os.path.isabs(path) and os.path.exists(path):
        return path
    candidates = []
    if data_dir:
        candidates += [os.path.join(data_dir, path), os.path.join(data_dir, os.path.basename(path))]
    # Stacks are relative to the cryoSPARC project folder: try the .cs file's folder and its ancestors.
    d = cs_dir
    for _ in range(4):
        candidates.append(os.path.join(d, path))
        d = os.path.dirname(d)
    candidates.append(os.path.join(cs_dir, os.path.basename(path)))
    for c in candidates:
        if os.path.exists(c):
            return os.path.abspath(c)
    return os.path.abspath(os.path.join(cs_dir, path))


def read_cs(path, data_dir: str | None = None) -> ParticleMetadata:
    path = os.path.abspath(os.fspath(path))
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:
        raise fail(path, f"not a readable cryoSPARC .cs file ({type(e).__name__})") from None
    if not isinstance(data, np.ndarray) or data.dtype.names is None:
        raise fail(path, "not a cryoSPARC .cs file (expected a numpy structured array)")
    names = set(data.dtype.names)
    ignored = {f for f in data.dtype.names if _ignored(f)}
    for field in REQUIRED:
        if field not in names:
            guess = nearest(field, unknown_names(data.dtype.names, READ_FIELDS, ignored))
            raise fail(path, f"missing field {field}" + (f" (the file has {guess})" if guess else ""))
    n = len(data)
    if n == 0:
        raise fail(path, "contains no particles")

    def get(field, default=None):
        if field in names:
            values = np.asarray(data[field], dtype=np.float64)
            if not np.all(np.isfinite(values)):
                raise fail(path, f"field {field} has non-finite values")
            return values
        return np.full(n, float(default))

    raw_paths = [p.decode() if isinstance(p, bytes) else str(p) for p in data["blob/path"]]
    cs_dir = os.path.dirname(path)
    resolved = {p: _resolve(p, cs_dir, data_dir) for p in set(raw_paths)}
    stacks = np.array([resolved[p] for p in raw_paths], dtype=object)
    indices = np.asarray(data["blob/idx"], dtype=np.int64)
    pixel = get("blob/psize_A")
    box = (np.asarray(data["blob/shape"])[:, -1].astype(int) if "blob/shape" in names else np.zeros(n, int))
    ctf = CTFParams(
        defocus_u_angstrom=get("ctf/df1_A"), defocus_v_angstrom=get("ctf/df2_A"),
        defocus_angle_degrees=np.degrees(get("ctf/df_angle_rad")), voltage_kv=get("ctf/accel_kv"),
        spherical_aberration_mm=get("ctf/cs_mm"), amplitude_contrast=get("ctf/amp_contrast"),
        phase_shift_degrees=np.degrees(get("ctf/phase_shift_rad", 0.0)), bfactor_angstrom2=get("ctf/bfactor", 0.0),
        scale=get("ctf/scale", 1.0))
    angles = origins = None
    if "alignments3D/pose" in names:
        matrices = np.swapaxes(rotvec_to_matrix(np.asarray(data["alignments3D/pose"], np.float64)), -1, -2)
        angles = conventions.matrix_to_euler(matrices)
        if "alignments3D/shift" in names:
            shift_pixel = get("alignments3D/psize_A", 0.0) if "alignments3D/psize_A" in names else pixel
            shift_pixel = np.where(shift_pixel > 0, shift_pixel, pixel)
            origins = np.asarray(data["alignments3D/shift"], np.float64) * shift_pixel[:, None]
    sign = get("blob/sign", 1.0)
    image_names = np.array([f"{i + 1:06d}@{p}" for i, p in zip(indices, raw_paths)], dtype=object)
    warning = unknown_names_warning(path, "fields", data.dtype.names, READ_FIELDS, ignored)
    if warning:
        print(warning, file=sys.stderr)
    return ParticleMetadata(
        source=path, stack_paths=stacks, image_indices=indices, image_names=image_names, pixel_size_angstrom=pixel,
        box_size=box, ctf=ctf, optics_group=np.ones(n, dtype=int), angles_degrees=angles, origins_angstrom=origins,
        invert_sign=sign < 0)


def write_cs(path, meta: ParticleMetadata, blob_paths=None) -> None:
    """Write a minimal cryoSPARC-style ``.cs`` (used for round-trip tests and interoperability)."""
    n = len(meta)
    blob_paths = meta.stack_paths if blob_paths is None else blob_paths
    fields = [("uid", "<u8"), ("blob/path", "S256"), ("blob/idx", "<u4"), ("blob/shape", "<u4", (2,)),
              ("blob/psize_A", "<f4"), ("blob/sign", "<f4"), ("ctf/accel_kv", "<f4"), ("ctf/cs_mm", "<f4"),
              ("ctf/amp_contrast", "<f4"), ("ctf/df1_A", "<f4"), ("ctf/df2_A", "<f4"), ("ctf/df_angle_rad", "<f4"),
              ("ctf/phase_shift_rad", "<f4"), ("ctf/bfactor", "<f4"), ("ctf/scale", "<f4")]
    has_pose = meta.angles_degrees is not None
    if has_pose:
        fields += [("alignments3D/pose", "<f4", (3,)), ("alignments3D/shift", "<f4", (2,)),
                   ("alignments3D/psize_A", "<f4")]
    out = np.zeros(n, dtype=fields)
    out["uid"] = np.arange(n)
    out["blob/path"] = [str(p).encode() for p in blob_paths]
    out["blob/idx"] = meta.image_indices
    out["blob/shape"] = np.stack([meta.box_size, meta.box_size], -1)
    out["blob/psize_A"] = meta.pixel_size_angstrom
    out["blob/sign"] = np.where(meta.invert_sign, -1.0, 1.0) if meta.invert_sign is not None else 1.0
    out["ctf/accel_kv"] = meta.ctf.voltage_kv
    out["ctf/cs_mm"] = meta.ctf.spherical_aberration_mm
    out["ctf/amp_contrast"] = meta.ctf.amplitude_contrast
    out["ctf/df1_A"] = meta.ctf.defocus_u_angstrom
    out["ctf/df2_A"] = meta.ctf.defocus_v_angstrom
    out["ctf/df_angle_rad"] = np.radians(meta.ctf.defocus_angle_degrees)
    out["ctf/phase_shift_rad"] = np.radians(meta.ctf.phase_shift_degrees)
    out["ctf/bfactor"] = meta.ctf.bfactor_angstrom2
    out["ctf/scale"] = meta.ctf.scale
    if has_pose:
        matrices = conventions.euler_to_matrix(np.asarray(meta.angles_degrees, np.float64))
        out["alignments3D/pose"] = _matrix_to_rotvec(np.swapaxes(matrices, -1, -2))
        origins = meta.origins_angstrom if meta.origins_angstrom is not None else np.zeros((n, 2))
        out["alignments3D/shift"] = origins / meta.pixel_size_angstrom[:, None]
        out["alignments3D/psize_A"] = meta.pixel_size_angstrom
    with open(path, "wb") as f:
        np.save(f, out)
