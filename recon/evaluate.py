"""Compare a map with a reference after alignment over rotations, shifts and both hands.

    python -m recon.evaluate --map final.mrc --reference ground_truth.mrc [--fsc_png fsc.png]

prints one JSON line with ``fsc_0.5_angstrom``, ``fsc_0.143_angstrom``, ``hand``, ``rotation_relion_degrees`` and
``shift_angstrom`` (the transform ``aligned(x) = map_hand(R^T (x - t))``, see :mod:`recon.metrics`), and writes
the FSC plot. ``--aligned_map`` also writes the aligned map.
"""

from __future__ import annotations

import json
import os

from absl import flags

from recon import cli, metrics
from recon.errors import InputError, user_errors_exit
from recon.io import mrc

FLAGS = flags.FLAGS
flags.DEFINE_string("map", None, "Map to evaluate (.mrc).")
flags.DEFINE_string("reference", None, "Reference map (.mrc), e.g. the ground truth.")
flags.DEFINE_float("pixel_size_angstrom", None, "Pixel size of --map when its header has none.")
flags.DEFINE_float("reference_pixel_size_angstrom", None, "Pixel size of --reference when its header has none.")
flags.DEFINE_string("fsc_png", None, "Where to write the FSC plot (default: next to --map, *_fsc.png).")
flags.DEFINE_string("aligned_map", None, "Optionally write the aligned map here.")
flags.DEFINE_bool("align", True, "Search rotations, shifts and hands before the FSC.")


def _pixel(path, header, override):
    pixel = override or header
    if not pixel or pixel <= 0:
        raise InputError(f"{path}: the header has no pixel size; give it with a --*pixel_size_angstrom flag")
    return pixel


@user_errors_exit
def main(argv):
    del argv
    if not FLAGS.map or not FLAGS.reference:
        raise InputError("--map and --reference are required")
    moving, moving_header = mrc.read_map(FLAGS.map)
    reference, reference_header = mrc.read_map(FLAGS.reference)
    moving_pixel = _pixel(FLAGS.map, moving_header, FLAGS.pixel_size_angstrom)
    pixel = _pixel(FLAGS.reference, reference_header, FLAGS.reference_pixel_size_angstrom)
    if moving.shape != reference.shape or abs(moving_pixel - pixel) > 1e-4 * pixel:
        moving = metrics.resample_to(moving, moving_pixel, reference.shape[0], pixel)
    result, curve, aligned = metrics.evaluate_maps(moving, reference, pixel, do_align=FLAGS.align)
    png = FLAGS.fsc_png or os.path.splitext(FLAGS.map)[0] + "_fsc.png"
    metrics.plot_fsc(png, curve, pixel, title=f"{os.path.basename(FLAGS.map)} vs {os.path.basename(FLAGS.reference)}")
    result["fsc_png"] = os.path.abspath(png)
    result["fsc"] = [round(float(v), 4) for v in curve]
    if FLAGS.aligned_map:
        mrc.write_map(FLAGS.aligned_map, aligned, pixel)
        result["aligned_map"] = os.path.abspath(FLAGS.aligned_map)
    print(json.dumps(result))


if __name__ == "__main__":
    cli.run(main)
