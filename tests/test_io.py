"""STAR / MRC / .cs readers and writers: round trips, RELION 3.0 and 3.1 dialects, real files, bad input."""

import dataclasses
import os
import textwrap

import mrcfile
import numpy as np
import pytest

from recon.ctf import make_ctf_params
from recon.errors import InputError
from recon.io import cs, metadata, mrc, star
from recon.io.metadata import ParticleMetadata
from recon.io.names import edit_distance


def _meta(tmp_path, n=7, size=16, pixel=2.5, with_pose=True):
    rng = np.random.default_rng(0)
    stack = tmp_path / "stack.mrcs"
    with mrcfile.new(stack, rng.normal(size=(n, size, size)).astype(np.float32), overwrite=True) as m:
        m.voxel_size = pixel
    ctf = make_ctf_params(rng.uniform(1e4, 3e4, n), rng.uniform(1e4, 3e4, n), rng.uniform(-90, 90, n),
                          300.0, 2.7, 0.1, rng.uniform(0, 30, n), rng.uniform(0, 50, n), 1.0)
    return ParticleMetadata(
        source=str(tmp_path / "p.star"), stack_paths=np.full(n, str(stack), dtype=object), image_indices=np.arange(n),
        image_names=np.array([f"{i + 1:06d}@stack.mrcs" for i in range(n)], dtype=object),
        pixel_size_angstrom=np.full(n, pixel), box_size=np.full(n, size), ctf=ctf, optics_group=np.ones(n, int),
        angles_degrees=np.stack([rng.uniform(-179, 179, n), rng.uniform(1, 179, n), rng.uniform(-179, 179, n)], -1)
        if with_pose else None,
        origins_angstrom=rng.normal(0, 3, (n, 2)) if with_pose else None)


def test_star_round_trip(tmp_path):
    meta = _meta(tmp_path)
    star.write_star(tmp_path / "p.star", meta)
    back = metadata.read_particles(tmp_path / "p.star")
    for a, b in zip(meta.ctf, back.ctf):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(back.angles_degrees, meta.angles_degrees, atol=1e-5)
    np.testing.assert_allclose(back.origins_angstrom, meta.origins_angstrom, atol=1e-5)
    np.testing.assert_allclose(back.pixel_size_angstrom, 2.5)
    assert list(back.image_indices) == list(range(7))
    assert back.stack_paths[0] == str(tmp_path / "stack.mrcs")


RELION30 = """
data_

loop_
_rlnImageName #1
_rlnDefocusU #2
_rlnDefocusV #3
_rlnDefocusAngle #4
_rlnVoltage #5
_rlnSphericalAberration #6
_rlnAmplitudeContrast #7
_rlnMagnification #8
_rlnDetectorPixelSize #9
_rlnOriginX #10
_rlnOriginY #11
_rlnAngleRot #12
_rlnAngleTilt #13
_rlnAnglePsi #14
000002@stack.mrcs 12000.0 11000.0 10.0 200 2.0 0.07 50000 10.0 1.5 -2.0 10 20 30
000001@stack.mrcs 13000.0 12500.0 -5.0 200 2.0 0.07 50000 10.0 0.0 0.5 40 50 60
"""


def test_relion30_pixel_from_detector_and_magnification_and_origins_in_pixels(tmp_path):
    _meta(tmp_path)
    (tmp_path / "old.star").write_text(textwrap.dedent(RELION30))
    m = metadata.read_particles(tmp_path / "old.star")
    np.testing.assert_allclose(m.pixel_size_angstrom, 2.0)  # 10 um * 1e4 / 50000
    np.testing.assert_allclose(m.origins_angstrom, [[3.0, -4.0], [0.0, 1.0]])  # pixels * 2 A
    assert list(m.image_indices) == [1, 0]
    np.testing.assert_allclose(m.ctf.voltage_kv, 200.0)
    np.testing.assert_allclose(m.ctf.amplitude_contrast, 0.07)


def test_relion31_optics_groups_are_joined(tmp_path):
    _meta(tmp_path)
    (tmp_path / "new.star").write_text(textwrap.dedent("""
        data_optics

        loop_
        _rlnOpticsGroup
        _rlnVoltage
        _rlnSphericalAberration
        _rlnAmplitudeContrast
        _rlnImagePixelSize
        _rlnImageSize
        1 300 2.7 0.1 2.5 16
        2 200 2.0 0.07 2.5 16

        data_particles

        loop_
        _rlnImageName
        _rlnOpticsGroup
        _rlnDefocusU
        _rlnDefocusV
        _rlnDefocusAngle
        1@stack.mrcs 2 10000 10000 0
        2@stack.mrcs 1 20000 19000 0
        """))
    m = metadata.read_particles(tmp_path / "new.star")
    np.testing.assert_allclose(m.ctf.voltage_kv, [200.0, 300.0])
    np.testing.assert_allclose(m.ctf.spherical_aberration_mm, [2.0, 2.7])
    assert m.angles_degrees is None and m.origins_angstrom is None


def test_every_real_particle_file_reads(real_files):
    files = sorted((real_files / "particles").glob("*/*.star"))
    assert len(files) >= 5
    reader = mrc.StackReader()
    for f in files:
        m = metadata.read_particles(f)
        assert len(m) > 0
        assert np.all(m.ctf.defocus_u_angstrom > 1000)
        assert np.all(m.pixel_size_angstrom > 0)
        images = reader.read(m.stack_paths[0], m.image_indices[:3])
        assert images.ndim == 3 and np.all(np.isfinite(images))
    known = metadata.read_particles(real_files / "particles/cryodrgn_relion31/relion31.star")
    np.testing.assert_allclose(known.pixel_size_angstrom, 2.806)
    assert np.allclose(known.ctf.defocus_angle_degrees, known.ctf.defocus_angle_degrees[0])
    aspire = metadata.read_particles(real_files / "particles/aspire_sample/sample_relion_data.star")
    np.testing.assert_allclose(aspire.pixel_size_angstrom, 5.0 * 1e4 / 37369.2, rtol=1e-5)
    groups = metadata.read_particles(real_files / "particles/aspire_sample/sample_particles_relion31.star")
    assert set(groups.ctf.voltage_kv) == {300.0, 200.0}
    six = metadata.read_particles(real_files / "star_metadata_only/relion31.6opticsgroups.star")
    assert len(set(six.optics_group)) == 6 and len(six) == 139


def test_mrc_round_trip_and_validates(tmp_path):
    vol = np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32)
    mrc.write_map(tmp_path / "m.mrc", vol, 1.75)
    assert mrcfile.validate(str(tmp_path / "m.mrc"), print_file=open(os.devnull, "w"))
    back, pixel = mrc.read_map(tmp_path / "m.mrc")
    np.testing.assert_array_equal(back, vol)
    assert np.isclose(pixel, 1.75)
    with mrcfile.open(tmp_path / "m.mrc") as m:
        assert tuple(m.header.origin.tolist()) == (0.0, 0.0, 0.0)


def test_cs_round_trip_with_poses(tmp_path):
    meta = _meta(tmp_path)
    meta.invert_sign = np.array([True] * 7)
    cs.write_cs(tmp_path / "p.cs", meta, blob_paths=["stack.mrcs"] * 7)
    back = metadata.read_particles(tmp_path / "p.cs")
    for a, b in zip(meta.ctf, back.ctf):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-3)
    from recon import conventions as cv
    np.testing.assert_allclose(cv.euler_to_matrix(back.angles_degrees), cv.euler_to_matrix(meta.angles_degrees),
                               atol=1e-5)
    np.testing.assert_allclose(back.origins_angstrom, meta.origins_angstrom, atol=1e-4)
    assert back.stack_paths[0] == str(tmp_path / "stack.mrcs")
    assert np.all(back.invert_sign)


def test_cs_pose_is_transposed_rotation_vector():
    # A rotation vector of 90 degrees about z is the active matrix [[0,-1,0],[1,0,0],[0,0,1]]; RELION's A is its
    # transpose, which is Rz'(90) = RELION (rot=90, tilt=0, psi=0).
    m = cs.rotvec_to_matrix(np.array([[0.0, 0.0, np.pi / 2]]))
    from recon import conventions as cv
    np.testing.assert_allclose(m[0].T, cv.euler_to_matrix(np.array([90.0, 0.0, 0.0])), atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# Columns and fields recon does not know: one warning line per file, "did you mean" for near misses.


@pytest.mark.parametrize("a, b, distance", [
    ("kitten", "sitting", 3), ("flaw", "lawn", 2), ("book", "back", 2), ("", "abc", 3), ("abc", "abc", 0),
    ("ab", "ba", 1), ("abcdef", "abdcef", 1), ("ca", "abc", 3),  # optimal string alignment: no edit of an edit
    ("rlnDefocusVV", "rlnDefocusV", 1), ("rlnAmplitudeContrst", "rlnAmplitudeContrast", 1)])
def test_edit_distance_textbook_pairs(a, b, distance):
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


OPTICS = {"rlnOpticsGroup": 1, "rlnOpticsGroupName": "opticsGroup1", "rlnVoltage": 300,
          "rlnSphericalAberration": 2.7, "rlnAmplitudeContrast": 0.1, "rlnImagePixelSize": 2.5, "rlnImageSize": 16,
          "rlnImageDimensionality": 2}
PARTICLES = {"rlnImageName": ["1@stack.mrcs", "2@stack.mrcs"], "rlnOpticsGroup": [1, 1],
             "rlnDefocusU": [12000, 15000], "rlnDefocusV": [11000, 14000], "rlnDefocusAngle": [10, 20],
             "rlnAngleRot": [10, 20], "rlnAngleTilt": [30, 40], "rlnAnglePsi": [50, 60]}


def _star31(path, optics=OPTICS, particles=PARTICLES):
    """A RELION 3.1 STAR file from ``{label: value or per-particle values}`` for each table."""
    def loop(name, table):
        rows = zip(*[np.atleast_1d(v) for v in table.values()])
        return (f"data_{name}\n\nloop_\n" + "".join(f"_{label}\n" for label in table)
                + "".join(" ".join(map(str, row)) + "\n" for row in rows) + "\n")
    path.write_text(loop("optics", optics) + loop("particles", particles))
    return path


def _renamed(table, old, new):
    return {new if label == old else label: value for label, value in table.items()}


def test_misspelled_defocus_v_is_named_once_with_its_correction(tmp_path, capsys):
    optics = dict(OPTICS, rlnMyCustomScore=1)
    particles = dict(_renamed(PARTICLES, "rlnDefocusV", "rlnDefocusVV"), rlnMyCustomScore=[1, 2])
    path = _star31(tmp_path / "p.star", optics, particles)
    m = metadata.read_particles(path)
    np.testing.assert_allclose(m.ctf.defocus_v_angstrom, m.ctf.defocus_u_angstrom)  # what RELION does, too
    assert capsys.readouterr().err == (f"warning: {path}: columns recon does not read, ignored: rlnMyCustomScore, "
                                       "rlnDefocusVV (did you mean rlnDefocusV?)\n")


def test_misspelled_optics_column_and_case_slip_get_suggestions(tmp_path, capsys):
    optics = _renamed(_renamed(OPTICS, "rlnAmplitudeContrast", "rlnAmplitudeContrst"), "rlnImagePixelSize",
                      "rlnimagepixelsize")  # 3 edits with case, 0 without
    path = _star31(tmp_path / "p.star", optics)
    m = metadata.read_particles(path)
    assert np.all(np.isnan(m.pixel_size_angstrom))  # no _rlnImagePixelSize, so no pixel size
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "no _rlnAmplitudeContrast column; using 0.1" in lines[0]
    assert lines[1] == (f"warning: {path}: columns recon does not read, ignored: rlnAmplitudeContrst (did you mean "
                        "rlnAmplitudeContrast?), rlnimagepixelsize (did you mean rlnImagePixelSize?)")


def test_near_miss_of_a_column_the_file_has_gets_no_suggestion(tmp_path, capsys):
    path = _star31(tmp_path / "p.star", particles=dict(PARTICLES, rlnDefocusUU=[1, 2], rlnVoltag=[300, 300]))
    metadata.read_particles(path)
    assert capsys.readouterr().err == (f"warning: {path}: columns recon does not read, ignored: rlnDefocusUU, "
                                       "rlnVoltag\n")


def test_missing_column_error_names_its_misspelling_and_prints_no_warning(tmp_path, capsys):
    path = _star31(tmp_path / "p.star", particles=_renamed(PARTICLES, "rlnDefocusU", "rlnDefocusUU"))
    msg = _expect("missing column _rlnDefocusU", metadata.read_particles, path)
    assert msg.endswith("missing column _rlnDefocusU (the file has _rlnDefocusUU)")
    assert capsys.readouterr().err == ""


def test_clean_and_real_star_files_get_no_column_warning(tmp_path, capsys, real_files):
    _star31(tmp_path / "clean.star")
    star.write_star(tmp_path / "written.star", _meta(tmp_path))
    (tmp_path / "old.star").write_text(textwrap.dedent(RELION30))
    for name in ("clean.star", "written.star", "old.star"):
        metadata.read_particles(tmp_path / name)
    for f in sorted((real_files / "particles").glob("*/*.star")):
        metadata.read_particles(f)
    assert capsys.readouterr().err == ""
    # Beam tilt, Zernike terms and the magnification matrix pass quietly; premultiplied CTF does not.
    metadata.read_particles(real_files / "star_metadata_only/relion31.6opticsgroups.star")
    assert capsys.readouterr().err.endswith("ignored: rlnCtfDataAreCtfPremultiplied\n")


def _cs_file(tmp_path, rename=None, add=()):
    """A .cs written by recon, fields renamed (``{old: new}``) and float fields added."""
    cs.write_cs(tmp_path / "p.cs", _meta(tmp_path), blob_paths=["stack.mrcs"] * 7)
    arr = np.load(tmp_path / "p.cs")
    dtype = [((rename or {}).get(name, name), arr.dtype[name]) for name in arr.dtype.names]
    out = np.zeros(len(arr), dtype=dtype + [(name, "<f4") for name in add])
    for name, (new, _) in zip(arr.dtype.names, dtype):
        out[new] = arr[name]
    with open(tmp_path / "q.cs", "wb") as f:
        np.save(f, out)
    return tmp_path / "q.cs"


def test_cs_misspelled_field_is_named_with_its_correction(tmp_path, capsys):
    path = _cs_file(tmp_path, {"ctf/phase_shift_rad": "ctf/phase_shft_rad"},
                    add=("my/score", "ctf/tilt_A", "location/micrograph_uid", "alignments_class_2/class_posterior"))
    metadata.read_particles(path)
    assert capsys.readouterr().err == (f"warning: {path}: fields recon does not read, ignored: ctf/phase_shft_rad "
                                       "(did you mean ctf/phase_shift_rad?), my/score\n")


def test_cs_clean_file_gets_no_warning_and_missing_field_names_its_misspelling(tmp_path, capsys):
    metadata.read_particles(_cs_file(tmp_path))
    assert capsys.readouterr().err == ""
    msg = _expect("missing field ctf/df1_A", metadata.read_particles, _cs_file(tmp_path, {"ctf/df1_A": "ctf/df1_a"}))
    assert msg.endswith("(the file has ctf/df1_a)")
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------------------
# Bad input: one InputError naming the file and the problem.


def _expect(match, fn, *args, **kwargs):
    with pytest.raises(InputError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_missing_file(tmp_path):
    msg = _expect("file not found", metadata.read_particles, tmp_path / "nope.star")
    assert "nope.star" in msg


def test_missing_column_is_named(tmp_path):
    (tmp_path / "bad.star").write_text("data_\nloop_\n_rlnImageName\n_rlnDefocusU\n_rlnVoltage\n1@s.mrcs 10000 300\n")
    _expect("_rlnSphericalAberration", metadata.read_particles, tmp_path / "bad.star")


def test_missing_image_name_column(tmp_path):
    (tmp_path / "bad.star").write_text("data_\nloop_\n_rlnDefocusU\n_rlnVoltage\n10000 300\n")
    _expect("_rlnImageName", metadata.read_particles, tmp_path / "bad.star")


def test_unknown_optics_group(tmp_path):
    (tmp_path / "bad.star").write_text(textwrap.dedent("""
        data_optics
        loop_
        _rlnOpticsGroup
        _rlnVoltage
        _rlnSphericalAberration
        _rlnImagePixelSize
        1 300 2.7 1.0
        data_particles
        loop_
        _rlnImageName
        _rlnOpticsGroup
        _rlnDefocusU
        1@s.mrcs 3 10000
        """))
    _expect("optics group 3", metadata.read_particles, tmp_path / "bad.star")


def test_empty_particle_table(tmp_path):
    (tmp_path / "empty.star").write_text("data_particles\nloop_\n_rlnImageName\n_rlnDefocusU\n")
    _expect("no particles", metadata.read_particles, tmp_path / "empty.star")


def test_truncated_mrc(tmp_path):
    vol = np.zeros((8, 16, 16), np.float32)
    with mrcfile.new(tmp_path / "t.mrcs", vol, overwrite=True):
        pass
    data = (tmp_path / "t.mrcs").read_bytes()
    (tmp_path / "t.mrcs").write_bytes(data[:-500])
    _expect("truncated", mrc.StackReader().shape, str(tmp_path / "t.mrcs"))
    (tmp_path / "tiny.mrc").write_bytes(b"not an mrc")
    _expect("not an MRC file", mrc.read_map, tmp_path / "tiny.mrc")


def test_nan_map(tmp_path):
    vol = np.zeros((8, 8, 8), np.float32)
    vol[1, 2, 3] = np.nan
    with mrcfile.new(tmp_path / "nan.mrc", vol, overwrite=True):
        pass
    _expect("NaN", mrc.read_map, tmp_path / "nan.mrc")


def test_non_cubic_map(tmp_path):
    with mrcfile.new(tmp_path / "flat.mrc", np.zeros((4, 8, 8), np.float32), overwrite=True):
        pass
    _expect("cubic", mrc.read_map, tmp_path / "flat.mrc")


def test_cs_missing_field(tmp_path):
    meta = _meta(tmp_path, with_pose=False)
    cs.write_cs(tmp_path / "p.cs", meta)
    arr = np.load(tmp_path / "p.cs")
    names = [n for n in arr.dtype.names if n != "ctf/df1_A"]
    with open(tmp_path / "q.cs", "wb") as f:
        np.save(f, arr[names])
    _expect("ctf/df1_A", metadata.read_particles, tmp_path / "q.cs")


def test_project_relative_stack_names_are_found_from_the_star_files_parent_folders(tmp_path, monkeypatch):
    """RELION writes `Extract/job007/Movies/a.mrcs` in Extract/job007/particles.star: found from any folder."""
    job = tmp_path / "project" / "Extract" / "job007"
    (job / "Movies").mkdir(parents=True)
    with mrcfile.new(job / "Movies" / "a.mrcs") as m:
        m.set_data(np.zeros((2, 8, 8), np.float32))
    (job / "particles.star").write_text(
        "data_particles\nloop_\n_rlnImageName\n_rlnDefocusU\n_rlnVoltage\n_rlnSphericalAberration\n"
        "_rlnPixelSize\n1@Extract/job007/Movies/a.mrcs 10000 300 2.7 2.0\n")
    monkeypatch.chdir(tmp_path)  # neither the project folder nor the job folder
    meta = star.read_star(job / "particles.star")
    assert os.path.samefile(meta.stack_paths[0], job / "Movies" / "a.mrcs")


def test_written_star_files_carry_the_particle_files_other_columns(real_files, tmp_path):
    """A RELION 3.1 file's micrograph names, coordinates, original image names, CTF-fit scores and classes reach the
    STAR files recon writes unchanged (checked with starfile against the input, not through recon's reader), so
    RELION's CtfRefine, Polish or re-extraction can start from poses.star; a previous refinement's statistics
    (rlnNormCorrection) and the columns recon rewrites (angles, CTF) are not copied as they were."""
    import starfile

    source = real_files / "particles/cryodrgn_relion31/relion31.star"
    meta = metadata.read_particles(source)
    moved = dataclasses.replace(meta, angles_degrees=np.zeros((len(meta), 3)))
    star.write_star(tmp_path / "out.star", moved)
    given = starfile.read(source, always_dict=True)["particles"]
    written = starfile.read(tmp_path / "out.star", always_dict=True)["particles"]
    for name in ("rlnCoordinateX", "rlnCoordinateY", "rlnImageOriginalName", "rlnMicrographName",
                 "rlnCtfMaxResolution", "rlnCtfFigureOfMerit", "rlnClassNumber"):
        assert list(written[name]) == list(given[name]), name
    assert "rlnNormCorrection" not in written.columns
    assert np.all(written["rlnAngleRot"] == 0) and not np.all(given["rlnAngleRot"] == 0)
    assert len(metadata.read_particles(tmp_path / "out.star").subset([1, 3]).extra_columns["rlnMicrographName"]) == 2


def test_image_names_can_be_written_relative_to_a_relion_project(tmp_path):
    """poses.star names its stacks relative to its own folder by default, or to a given project folder (RELION
    resolves ``Extract/job007/x.mrcs`` from its project folder); recon reads such a file back from inside the job
    folder (the parent folders are searched)."""
    from recon import training

    project = tmp_path / "project"
    job = project / "Extract" / "job007"
    job.mkdir(parents=True)
    stack = job / "x.mrcs"
    with mrcfile.new(stack) as m:
        m.set_data(np.zeros((2, 16, 16), np.float32))
    meta = dataclasses.replace(_meta(tmp_path, n=2), stack_paths=np.array([str(stack)] * 2, dtype=object))
    out = project / "Refine" / "poses.star"
    out.parent.mkdir()
    assert list(training.image_names_relative(meta, out)) == ["000001@../Extract/job007/x.mrcs",
                                                                 "000002@../Extract/job007/x.mrcs"]
    names = training.image_names_relative(meta, job / "poses.star", project)
    assert list(names) == ["000001@Extract/job007/x.mrcs", "000002@Extract/job007/x.mrcs"]
    star.write_star(job / "poses.star", meta, image_names=names)
    back = metadata.read_particles(job / "poses.star")
    assert list(back.stack_paths) == [str(stack)] * 2
