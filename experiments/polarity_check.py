"""Polarity read from the data (recon/polarity.py) on the real stacks in tests/data and on simulated white and
dark sets, with the particle radius estimated from the images as the plain command does.

    python -m experiments.polarity_check [--sets data/validate/trpv1_64,...] \
        [--out experiments/results/polarity_cpu.json]

Any CPU, under a minute. A simulated set (a folder with particles.star) is scored as written (white) and
inverted (dark). Expected: simulated sets white and dark as made; real stacks white or undetermined (RELION's and
ASPIRE's files hold white particles; a handful of images may not decide).
"""

import json

from absl import flags

from experiments.engine_benchmark import machine
from recon import auto_settings, cli, polarity
from recon.data import open_dataset
from recon.errors import user_errors_exit
from recon.io import atomic, metadata

FLAGS = flags.FLAGS
REAL = ["tests/data/particles/cryodrgn_relion31/relion31.star",
        "tests/data/particles/aspire_sample/sample_relion_data.star",
        "tests/data/particles/cryodrgn_sta_ribosome_tilts/sta_testing_bin8.star"]


def score(star: str, invert: bool) -> dict:
    dataset = open_dataset(metadata.read_particles(star), invert_contrast=invert, estimate_noise=False)
    pixel = dataset.pixel_size_angstrom
    radius = auto_settings.particle_radius_pixels(dataset, 0)
    dataset.particle_radius_angstrom = float(radius * pixel)
    found = polarity.detect(dataset)
    return {"file": star, "inverted": invert, "particles": len(dataset), "radius_angstrom": round(radius * pixel, 1),
            "verdict": found.verdict, "t": round(found.t, 2), "images": found.images}


@user_errors_exit
def main(argv):
    cli.only_flags(argv)
    rows = [score(star, False) for star in REAL]
    for folder in FLAGS.sets:
        rows += [score(f"{folder}/particles.star", invert) for invert in (False, True)]
    for row in rows:
        print(f"{row['file']}{' (inverted)' if row['inverted'] else ''}: {row['verdict']} (t = {row['t']}, "
              f"{row['images']} images)")
    if FLAGS.out:
        command = "python -m experiments.polarity_check" + (f" --sets {','.join(FLAGS.sets)}" if FLAGS.sets else "")
        atomic.write_text(FLAGS.out, json.dumps({"command": command + f" --out {FLAGS.out}", "machine": machine(),
                                                 "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    flags.DEFINE_list("sets", [], "Simulated set folders (each with particles.star) to score as made and inverted.")
    flags.DEFINE_string("out", None, "Write the rows as JSON here.")
    cli.run(main)
