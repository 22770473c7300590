"""RELION STAR files (3.0 single block, 3.1+ optics + particles blocks), read and written with ``starfile``.

Column meanings are RELION's (see :mod:`recon.conventions`): angles in degrees (rot, tilt, psi), origins in
Angstrom (``rlnOriginXAngst``, 3.1) or pixels (``rlnOriginX``, 3.0), defocus in Angstrom, voltage in kV, Cs in
mm. Image names ``N@stack.mrcs`` (N from 1) are resolved relative to the STAR file's folder, then to
``data_dir`` and the working directory.

Every ``_rln`` column of the optics and particle tables is one recon reads (``READ_COLUMNS``; none is passed
through to recon's output), a standard RELION label that is safe to ignore for ab initio work
(``IGNORED_COLUMNS``), or is named in one warning per file read, with "did you mean" for near misses.
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pandas as pd
import starfile

from recon.ctf import CTFParams
from recon.errors import InputError, fail
from recon.io import atomic
from recon.io.metadata import ParticleMetadata
from recon.io.names import nearest, unknown_names, unknown_names_warning

DEFAULT_AMPLITUDE_CONTRAST = 0.1

READ_COLUMNS = (
    "rlnImageName", "rlnOpticsGroup", "rlnImagePixelSize", "rlnPixelSize", "rlnDetectorPixelSize", "rlnMagnification",
    "rlnImageSize", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnVoltage", "rlnSphericalAberration",
    "rlnAmplitudeContrast", "rlnPhaseShift", "rlnCtfBfactor", "rlnCtfScalefactor", "rlnAngleRot", "rlnAngleTilt",
    "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginX", "rlnOriginY")

# Standard RELION labels recon ignores without a word: bookkeeping, picking and CTF-fit scores, refinement
# statistics, priors, 3D-only origins, and the optical corrections that matter only well past ab initio
# resolutions (beam tilt, higher-order aberrations, anisotropic magnification). Not _rlnCtfDataAreCtfPremultiplied:
# premultiplied images would need recon's attention, so that one is reported.
IGNORED_COLUMNS = frozenset(f"rln{label}" for label in """
    MicrographName MicrographMovieName MicrographOriginalPixelSize MicrographPixelSize CoordinateX CoordinateY
    CoordinateZ AutopickFigureOfMerit ImageOriginalName ReconstructImageName ImageDimensionality OpticsGroupName
    GroupNumber GroupName MtfFileName RandomSubset ClassNumber HelicalTubeID HelicalTrackLength
    HelicalTrackLengthAngst CtfImage CtfMaxResolution CtfFigureOfMerit CtfAstigmatism LogLikeliContribution
    MaxValueProbDistribution NrOfSignificantSamples NormCorrection NrOfFrames AverageNrOfFrames AngleRotPrior
    AngleTiltPrior AnglePsiPrior AnglePsiFlipRatio AnglePsiFlip OriginXPrior OriginYPrior OriginXPriorAngst
    OriginYPriorAngst OriginZ OriginZAngst BeamTiltX BeamTiltY BeamTiltClass OddZernike EvenZernike MagMat00
    MagMat01 MagMat10 MagMat11 CtfIceRingDensity ParticleSelectZScore ImageSizeX ImageSizeY ImageSizeZ MicrographId
    TomoName ReconJunkLogBayesFactor ReconAmplitudeScale ReconClassPosterior""".split())
JUNK_SCORE_COLUMN = "rlnReconJunkLogBayesFactor"  # recon's own: log p(I | V) - log p(I | 0) (recon/junk.py)
AMPLITUDE_COLUMN = "rlnReconAmplitudeScale"  # recon's own: the particle's amplitude scale (recon/amplitude.py)
CLASS_PROBABILITY_COLUMN = "rlnReconClassPosterior"  # recon's own: the class posterior's maximum (classes > 1)

# Not carried into the files recon writes: a previous refinement's per-particle results (the poses recon writes
# replace them), 3D origins, and optics-level corrections a RELION 3.0 file keeps per particle.
NOT_CARRIED = frozenset(f"rln{label}" for label in """
    LogLikeliContribution MaxValueProbDistribution NrOfSignificantSamples NormCorrection AngleRotPrior AngleTiltPrior
    AnglePsiPrior AnglePsiFlipRatio AnglePsiFlip OriginXPrior OriginYPrior OriginXPriorAngst OriginYPriorAngst
    ImageDimensionality OpticsGroupName OriginZ OriginZAngst BeamTiltX BeamTiltY BeamTiltClass MagMat00 MagMat01
    MagMat10 MagMat11 ImageSizeX ImageSizeY ImageSizeZ OddZernike EvenZernike""".split())


def _read_blocks(path) -> dict:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blocks = starfile.read(path, always_dict=True)
    except Exception as e:  # starfile raises many types on malformed text
        raise fail(path, f"not a readable STAR file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                   ) from None
    blocks = {k: v for k, v in blocks.items() if isinstance(v, pd.DataFrame)}
    if not blocks:
        raise fail(path, "no data loop found in STAR file")
    return blocks


def _strip(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.columns = [c[3:] if c.startswith("rln") else c for c in df.columns]
    return df


def _resolve_stack(name: str, star_dir: str, data_dir: str | None) -> str:
    """A stack named in a STAR file: next to the file, then in ``data_dir``, the working directory, and the STAR
    file's parent folders (RELION names stacks relative to its project folder: ``Extract/job007/...`` in a file
    inside ``Extract/job007/``)."""
    if os.path.isabs(name):
        return name
    candidates = [os.path.join(star_dir, name)]
    if data_dir:
        candidates += [os.path.join(data_dir, name), os.path.join(data_dir, os.path.basename(name))]
    candidates.append(os.path.abspath(name))
    parent = os.path.dirname(star_dir)
    while parent != os.path.dirname(parent):
        candidates.append(os.path.join(parent, name))
        parent = os.path.dirname(parent)
    for c in candidates:
        if os.path.exists(c):
            return os.path.abspath(c)
    return os.path.abspath(candidates[0])


def parse_image_name(name: str) -> tuple[int, str]:
    """``"000012@stack.mrcs"`` -> ``(11, "stack.mrcs")`` (0-based); a bare file name is image 0."""
    name = str(name).strip()
    if "@" in name:
        number, path = name.split("@", 1)
        if not number.strip().isdigit() or int(number) < 1:
            raise ValueError(f"bad image number in {name!r}")
        return int(number) - 1, path.strip()
    return 0, name


def read_star(path, data_dir: str | None = None) -> ParticleMetadata:
    """Particle metadata from a RELION 3.0 or 3.1+ STAR file. One error line for each kind of problem."""
    path = os.path.abspath(os.fspath(path))
    blocks = _read_blocks(path)
    optics = blocks.get("optics")
    particles = blocks.get("particles")
    if particles is None:
        candidates = [b for b in blocks.values() if "rlnImageName" in b.columns]
        if not candidates:
            raise fail(path, "no particle table with an _rlnImageName column")
        particles = candidates[0]
    labels = [c for table in (optics, particles) if table is not None for c in table.columns if c.startswith("rln")]
    extra = {c: particles[c].to_numpy() for c in particles.columns
             if c.startswith("rln") and c not in READ_COLUMNS and c not in NOT_CARRIED}
    unknown = unknown_names(labels, READ_COLUMNS, IGNORED_COLUMNS)
    optics = None if optics is None else _strip(optics)
    particles = _strip(particles)

    def missing_column(name):
        guess = nearest(f"rln{name}", unknown)
        return fail(path, f"missing column _rln{name}" + (f" (the file has _{guess})" if guess else ""))

    n = len(particles)
    if "ImageName" not in particles.columns:
        raise missing_column("ImageName")
    if n == 0:
        raise fail(path, "contains no particles")

    if optics is not None and n:
        if "OpticsGroup" not in optics.columns:
            raise fail(path, "optics table lacks column _rlnOpticsGroup")
        if "OpticsGroup" not in particles.columns:
            raise fail(path, "particles lack column _rlnOpticsGroup, which the optics table requires")
        known = set(pd.to_numeric(optics["OpticsGroup"], errors="coerce").dropna().astype(int))
        groups = pd.to_numeric(particles["OpticsGroup"], errors="coerce")
        if groups.isna().any():
            raise fail(path, "non-numeric _rlnOpticsGroup values")
        groups = groups.astype(int).to_numpy()
        missing = sorted(set(groups) - known)
        if missing:
            raise fail(path, f"particles refer to optics group {missing[0]}, which the optics table does not define")
        optics_by_group = optics.assign(OpticsGroup=optics["OpticsGroup"].astype(int)).set_index("OpticsGroup")
    else:
        groups = (pd.to_numeric(particles["OpticsGroup"], errors="coerce").fillna(1).astype(int).to_numpy()
                  if "OpticsGroup" in particles.columns else np.ones(n, dtype=int))
        optics_by_group = None

    def column(name, default=None, required=True):
        if name in particles.columns:
            values = particles[name]
        elif optics_by_group is not None and name in optics_by_group.columns:
            values = optics_by_group[name].reindex(groups)
        elif default is not None or not required:
            return None if default is None else np.full(n, float(default))
        else:
            raise missing_column(name)
        numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        if np.any(~np.isfinite(numeric)):
            raise fail(path, f"column _rln{name} has non-numeric or missing values")
        return numeric

    # Pixel size: RELION 3.1 rlnImagePixelSize; older files rlnPixelSize or detector pixel / magnification.
    pixel = column("ImagePixelSize", required=False)
    if pixel is None:
        pixel = column("PixelSize", required=False)
    if pixel is None:
        detector = column("DetectorPixelSize", required=False)
        magnification = column("Magnification", required=False)
        if detector is not None and magnification is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                pixel = detector * 1e4 / magnification
        else:
            pixel = np.full(n, np.nan)
    box = column("ImageSize", required=False)
    box = np.zeros(n, dtype=int) if box is None else box.astype(int)

    defocus_u = column("DefocusU")
    ctf = CTFParams(
        defocus_u_angstrom=defocus_u,
        defocus_v_angstrom=column("DefocusV", required=False) if "DefocusV" in particles.columns else defocus_u,
        defocus_angle_degrees=column("DefocusAngle", default=0.0),
        voltage_kv=column("Voltage"),
        spherical_aberration_mm=column("SphericalAberration"),
        amplitude_contrast=column("AmplitudeContrast", default=DEFAULT_AMPLITUDE_CONTRAST),
        phase_shift_degrees=column("PhaseShift", default=0.0),
        bfactor_angstrom2=column("CtfBfactor", default=0.0),
        scale=column("CtfScalefactor", default=1.0),
    )
    if np.any(ctf.voltage_kv <= 0):
        raise fail(path, "_rlnVoltage must be positive")
    if np.any(ctf.defocus_u_angstrom <= 0) or np.any(ctf.defocus_v_angstrom <= 0):
        raise fail(path, "_rlnDefocusU/V must be positive (underfocus, Angstrom)")
    if "AmplitudeContrast" not in particles.columns and (
            optics_by_group is None or "AmplitudeContrast" not in optics_by_group.columns):
        print(f"warning: {path}: no _rlnAmplitudeContrast column; using {DEFAULT_AMPLITUDE_CONTRAST}",
              file=sys.stderr)

    angles = None
    if all(c in particles.columns for c in ("AngleRot", "AngleTilt", "AnglePsi")):
        angles = np.stack([column("AngleRot"), column("AngleTilt"), column("AnglePsi")], axis=-1)
    origins = None
    if "OriginXAngst" in particles.columns and "OriginYAngst" in particles.columns:
        origins = np.stack([column("OriginXAngst"), column("OriginYAngst")], axis=-1)
    elif "OriginX" in particles.columns and "OriginY" in particles.columns:
        origins = np.stack([column("OriginX"), column("OriginY")], axis=-1) * pixel[:, None]

    star_dir = os.path.dirname(path)
    names = particles["ImageName"].astype(str).to_numpy()
    indices = np.empty(n, dtype=np.int64)
    stacks = np.empty(n, dtype=object)
    resolved = {}
    for i, name in enumerate(names):
        try:
            index, stack = parse_image_name(name)
        except ValueError as e:
            raise fail(path, f"row {i + 1}: {e}") from None
        if stack not in resolved:
            resolved[stack] = _resolve_stack(stack, star_dir, data_dir)
        indices[i], stacks[i] = index, resolved[stack]
    warning = unknown_names_warning(path, "columns", labels, READ_COLUMNS, IGNORED_COLUMNS)
    if warning:
        print(warning, file=sys.stderr)
    return ParticleMetadata(
        source=path, stack_paths=stacks, image_indices=indices, image_names=names, pixel_size_angstrom=pixel,
        box_size=box, ctf=ctf, optics_group=groups, angles_degrees=angles, origins_angstrom=origins,
        extra_columns=extra or None)


def write_star(path, meta: ParticleMetadata, image_names=None, extra_columns: dict | None = None) -> None:
    """Write RELION 3.1 STAR (optics + particles) for ``meta``; optics groups by (voltage, Cs, Q, pixel, box).

    ``image_names`` overrides the names written (e.g. relative to the output file). Atomic (temp + rename).
    """
    path = os.fspath(path)
    n = len(meta)
    pixel = np.asarray(meta.pixel_size_angstrom, dtype=np.float64)
    keys = np.stack([meta.ctf.voltage_kv, meta.ctf.spherical_aberration_mm, meta.ctf.amplitude_contrast, pixel,
                     meta.box_size.astype(np.float64)], axis=-1)
    unique, group_index = np.unique(keys, axis=0, return_inverse=True)
    group_index = group_index.reshape(-1)
    optics = pd.DataFrame({
        "rlnOpticsGroup": np.arange(1, len(unique) + 1),
        "rlnOpticsGroupName": [f"opticsGroup{i + 1}" for i in range(len(unique))],
        "rlnVoltage": unique[:, 0], "rlnSphericalAberration": unique[:, 1], "rlnAmplitudeContrast": unique[:, 2],
        "rlnImagePixelSize": unique[:, 3], "rlnImageSize": unique[:, 4].astype(int),
        "rlnImageDimensionality": np.full(len(unique), 2),
    })
    names = meta.image_names if image_names is None else image_names
    columns = {"rlnImageName": np.asarray(names, dtype=object)}
    if meta.angles_degrees is not None:
        columns.update(rlnAngleRot=meta.angles_degrees[:, 0], rlnAngleTilt=meta.angles_degrees[:, 1],
                       rlnAnglePsi=meta.angles_degrees[:, 2])
    if meta.origins_angstrom is not None:
        columns.update(rlnOriginXAngst=meta.origins_angstrom[:, 0], rlnOriginYAngst=meta.origins_angstrom[:, 1])
    columns.update(
        rlnDefocusU=meta.ctf.defocus_u_angstrom, rlnDefocusV=meta.ctf.defocus_v_angstrom,
        rlnDefocusAngle=meta.ctf.defocus_angle_degrees, rlnPhaseShift=meta.ctf.phase_shift_degrees,
        rlnCtfBfactor=meta.ctf.bfactor_angstrom2, rlnCtfScalefactor=meta.ctf.scale,
        rlnOpticsGroup=group_index + 1)
    for name, values in (meta.extra_columns or {}).items():
        columns.setdefault(name, values)
    if extra_columns:
        columns.update(extra_columns)
    particles = pd.DataFrame({k: np.asarray(v) for k, v in columns.items()}, index=np.arange(n))
    with atomic.replacing(path, suffix=".star") as tmp:
        starfile.write({"optics": optics, "particles": particles}, tmp, float_format="%.6f", overwrite=True)


__all__ = ["read_star", "write_star", "parse_image_name", "InputError"]
