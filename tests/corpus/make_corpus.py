"""Writes the malformed-input corpus (tests/corpus/cases/, committed) that tests/test_bad_inputs.py feeds to the
command line. Each case is a folder with the particle file the command is given and whatever it refers to; the
expected answer (a fragment of the one error line and the file it must name) is in tests/corpus/cases.json.

The files are written byte by byte here (struct-packed MRC headers, STAR text), not with recon's or mrcfile's
writers, so the corpus does not share the code it tests.

    python tests/corpus/make_corpus.py        # rewrites tests/corpus/cases/ and cases.json
"""

from __future__ import annotations

import json
import os
import shutil
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.path.join(HERE, "cases")
BOX = 16
PIXEL = 4.0


def mrc_header(nx: int, ny: int, nz: int, mode: int = 2, pixel: float = PIXEL, ispg: int = 0) -> bytes:
    """A 1024-byte MRC2014 header (little-endian)."""
    words = struct.pack("<10i", nx, ny, nz, mode, 0, 0, 0, nx, ny, nz)
    words += struct.pack("<6f", nx * pixel, ny * pixel, nz * pixel, 90.0, 90.0, 90.0)
    words += struct.pack("<3i", 1, 2, 3)
    words += struct.pack("<3f", 0.0, 0.0, 0.0)  # dmin, dmax, dmean
    words += struct.pack("<2i", ispg, 0)  # ispg, nsymbt
    words += b"\0" * 100  # extra (exttyp, nversion inside)
    words += struct.pack("<3f", 0.0, 0.0, 0.0)  # origin
    words += b"MAP " + bytes([0x44, 0x44, 0, 0])  # map id, little-endian machine stamp
    words += struct.pack("<f", 0.0) + struct.pack("<i", 0)  # rms, nlabl
    return words + b"\0" * (1024 - len(words))


def write_mrcs(path: str, images: np.ndarray, mode: int = 2, header_shape=None, data: bytes | None = None) -> None:
    n, ny, nx = images.shape
    hx, hy, hz = header_shape or (nx, ny, n)
    with open(path, "wb") as f:
        f.write(mrc_header(hx, hy, hz, mode))
        f.write(data if data is not None else images.astype("<f4").tobytes())


def noise(n: int, size: int = BOX, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, size, size)).astype(np.float32)


def optics(pixel: float = PIXEL, box: int | None = BOX) -> str:
    """A RELION 3.1 optics table with one group (no _rlnImageSize column when ``box`` is None)."""
    columns = ["_rlnOpticsGroup", "_rlnOpticsGroupName", "_rlnAmplitudeContrast", "_rlnSphericalAberration",
               "_rlnVoltage", "_rlnImagePixelSize"] + (["_rlnImageSize"] if box is not None else []) + \
        ["_rlnImageDimensionality"]
    values = ["1", "opticsGroup1", "0.1", "2.7", "300.0", str(pixel)] + ([str(box)] if box is not None else []) + \
        ["2"]
    return "\ndata_optics\n\nloop_\n" + "".join(f"{c} #{i + 1}\n" for i, c in enumerate(columns)) + \
        " ".join(values) + "\n"


PARTICLE_COLUMNS = ["_rlnImageName", "_rlnDefocusU", "_rlnDefocusV", "_rlnDefocusAngle", "_rlnOpticsGroup"]


def star_text(rows: list[list[str]], columns=None, optics_table: str | None = None) -> str:
    columns = columns or PARTICLE_COLUMNS
    head = "\n# version 30001\n" + (optics_table if optics_table is not None else optics())
    body = "\n# version 30001\n\ndata_particles\n\nloop_\n" + "".join(
        f"{c} #{i + 1}\n" for i, c in enumerate(columns))
    return head + body + "".join(" ".join(r) + "\n" for r in rows) + "\n"


def rows_for(n: int, stack: str = "stack.mrcs", group: str = "1") -> list[list[str]]:
    return [[f"{i + 1:06d}@{stack}", "15000.0", "14500.0", "30.0", group] for i in range(n)]


def case(name: str, particles: str, expect: str, names: str, files: dict[str, bytes | str]) -> dict:
    folder = os.path.join(CASES, name)
    os.makedirs(folder, exist_ok=True)
    for rel, content in files.items():
        path = os.path.join(folder, rel)
        if content is None:  # a folder where a file should be (with a file in it, so that git keeps it)
            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, "not_a_stack.txt"), "w") as f:
                f.write("a folder named like a particle stack\n")
            continue
        with open(path, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
    return {"particles": f"{name}/{particles}", "expect": expect, "names": names}


def stack_bytes(images: np.ndarray, **kwargs) -> bytes:
    tmp = os.path.join(CASES, ".tmp.mrcs")
    write_mrcs(tmp, images, **kwargs)
    with open(tmp, "rb") as f:
        out = f.read()
    os.remove(tmp)
    return out


def build() -> dict:
    shutil.rmtree(CASES, ignore_errors=True)
    os.makedirs(CASES)
    good = stack_bytes(noise(3))
    ok_star = star_text(rows_for(3))
    cases = {}

    def add(name, particles, expect, names, files):
        cases[name] = case(name, particles, expect, names, files)

    # --- particle files -------------------------------------------------------------------------------------
    add("missing_particle_file", "particles.star", "file not found", "particles.star", {"stack.mrcs": good})
    add("empty_star", "particles.star", "STAR", "particles.star", {"particles.star": "", "stack.mrcs": good})
    add("binary_garbage_star", "particles.star", "STAR", "particles.star",
        {"particles.star": bytes(range(256)) * 8, "stack.mrcs": good})
    add("unknown_extension", "particles.txt", "unknown particle file type", "particles.txt",
        {"particles.txt": ok_star, "stack.mrcs": good})
    add("missing_image_name_column", "particles.star", "_rlnImageName", "particles.star",
        {"particles.star": star_text([r[1:] for r in rows_for(3)], PARTICLE_COLUMNS[1:]), "stack.mrcs": good})
    add("misspelled_defocus_column", "particles.star", "missing column _rlnDefocusU", "particles.star",
        {"particles.star": star_text(rows_for(3), ["_rlnImageName", "_rlnDefocusUU", "_rlnDefocusV",
                                                    "_rlnDefocusAngle", "_rlnOpticsGroup"]), "stack.mrcs": good})
    add("zero_particles", "particles.star", "no particles", "particles.star",
        {"particles.star": star_text([]), "stack.mrcs": good})
    add("non_numeric_defocus", "particles.star", "_rlnDefocusU", "particles.star",
        {"particles.star": star_text([[r[0], "abc", *r[2:]] for r in rows_for(3)]), "stack.mrcs": good})
    add("negative_defocus", "particles.star", "_rlnDefocusU", "particles.star",
        {"particles.star": star_text([[r[0], "-15000.0", "-14500.0", *r[3:]] for r in rows_for(3)]),
         "stack.mrcs": good})
    add("negative_pixel_size", "particles.star", "pixel size is unknown, zero or negative", "particles.star",
        {"particles.star": star_text(rows_for(3), optics_table=optics(pixel=-1.5)), "stack.mrcs": good})
    add("zero_pixel_size", "particles.star", "pixel size is unknown, zero or negative", "particles.star",
        {"particles.star": star_text(rows_for(3), optics_table=optics(pixel=0.0)), "stack.mrcs": good})
    add("zero_voltage", "particles.star", "_rlnVoltage", "particles.star",
        {"particles.star": star_text(rows_for(3)).replace(" 300.0 ", " 0.0 "), "stack.mrcs": good})
    add("undefined_optics_group", "particles.star", "optics group 2", "particles.star",
        {"particles.star": star_text(rows_for(3, group="2")), "stack.mrcs": good})
    add("image_number_zero", "particles.star", "bad image number", "particles.star",
        {"particles.star": star_text([["000000@stack.mrcs", *r[1:]] for r in rows_for(1)]), "stack.mrcs": good})
    add("box_size_disagrees_with_optics", "particles.star", "20", "stack.mrcs",
        {"particles.star": star_text(rows_for(3), optics_table=optics(box=20)), "stack.mrcs": good})
    # --- references to stacks -------------------------------------------------------------------------------
    add("missing_stack", "particles.star", "missing.mrcs, which does not exist", "particles.star",
        {"particles.star": star_text(rows_for(3, stack="missing.mrcs"))})
    add("image_index_out_of_range", "particles.star", "image 5", "stack.mrcs",
        {"particles.star": star_text(rows_for(3) + [["000005@stack.mrcs", "15000.0", "14500.0", "30.0", "1"]]),
         "stack.mrcs": good})
    add("mixed_box_sizes", "particles.star", "different box sizes", "particles.star",
        {"particles.star": star_text(rows_for(3) + rows_for(2, stack="big.mrcs"),
                                     optics_table=optics(box=None)),
         "stack.mrcs": good, "big.mrcs": stack_bytes(noise(2, 20))})
    add("stack_is_a_directory", "particles.star", "directory", "stack.mrcs",
        {"particles.star": ok_star, "stack.mrcs": None})
    # --- damaged stacks -------------------------------------------------------------------------------------
    add("truncated_stack", "particles.star", "truncated", "stack.mrcs",
        {"particles.star": ok_star, "stack.mrcs": stack_bytes(noise(3), header_shape=(BOX, BOX, 10))})
    add("header_shorter_than_1024_bytes", "particles.star", "1024-byte header", "stack.mrcs",
        {"particles.star": ok_star, "stack.mrcs": good[:500]})
    add("header_lies_about_image_size", "particles.star", "truncated", "stack.mrcs",
        {"particles.star": ok_star, "stack.mrcs": stack_bytes(noise(3), header_shape=(64, 64, 3))})
    add("unsupported_mode_complex", "particles.star", "unsupported MRC mode 4", "stack.mrcs",
        {"particles.star": ok_star, "stack.mrcs": stack_bytes(noise(3), mode=4,
                                                              data=noise(6).astype("<f4").tobytes())})
    add("invalid_mode", "particles.star", "mode 77", "stack.mrcs",
        {"particles.star": ok_star, "stack.mrcs": stack_bytes(noise(3), mode=77)})
    add("zero_images_in_header", "particles.star", "dimensions 16 x 16 x 0", "stack.mrcs",
        {"particles.star": ok_star, "stack.mrcs": stack_bytes(noise(3), header_shape=(BOX, BOX, 0))})
    add("non_square_images", "particles.star", "not square", "stack.mrcs",
        {"particles.star": star_text(rows_for(3), optics_table=optics(box=None)),
         "stack.mrcs": stack_bytes(np.zeros((3, 20, BOX), np.float32))})
    nan = noise(3)
    nan[2, 5, 7] = np.nan
    add("nan_pixels", "particles.star", "NaN", "stack.mrcs", {"particles.star": ok_star, "stack.mrcs": stack_bytes(nan)})
    inf = noise(3)
    inf[1, 0, 0] = np.inf
    add("infinite_pixels", "particles.star", "infinite", "stack.mrcs",
        {"particles.star": ok_star, "stack.mrcs": stack_bytes(inf)})
    add("constant_images", "particles.star", "zero variance", "particles.star",
        {"particles.star": ok_star, "stack.mrcs": stack_bytes(np.ones((3, BOX, BOX), np.float32))})
    # --- cryoSPARC ------------------------------------------------------------------------------------------
    fields = [("uid", "<u8"), ("blob/path", "S32"), ("blob/idx", "<u4"), ("blob/shape", "<u4", (2,)),
              ("blob/psize_A", "<f4"), ("ctf/accel_kv", "<f4"), ("ctf/cs_mm", "<f4"), ("ctf/amp_contrast", "<f4")]
    table = np.zeros(3, dtype=fields)
    table["blob/path"] = b"stack.mrcs"
    table["blob/idx"] = np.arange(3)
    table["blob/shape"] = BOX
    table["blob/psize_A"] = PIXEL
    table["ctf/accel_kv"] = 300
    table["ctf/cs_mm"] = 2.7
    table["ctf/amp_contrast"] = 0.1
    tmp = os.path.join(CASES, ".tmp.npy")
    np.save(tmp, table)
    with open(tmp, "rb") as f:
        cs_bytes = f.read()
    os.remove(tmp)
    add("cs_missing_defocus_fields", "particles.cs", "missing field ctf/df1_A", "particles.cs",
        {"particles.cs": cs_bytes, "stack.mrcs": good})
    add("cs_not_a_numpy_file", "particles.cs", "not a readable cryoSPARC", "particles.cs",
        {"particles.cs": "uid,blob/path\n1,stack.mrcs\n", "stack.mrcs": good})
    with open(os.path.join(HERE, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1, sort_keys=True)
    return cases


if __name__ == "__main__":
    print(f"{len(build())} cases in {CASES}")
