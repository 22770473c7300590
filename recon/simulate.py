"""Simulate a particle dataset from a map or an atomic model.

    python -m recon.simulate --model third_party/1aon/1aon.pdb.gz --box_size 64 --pixel_size_angstrom 5.6 \
        --num_particles 10000 --snr 0.05 --seed 0 --out data/groel64

writes ``OUT/particles.star`` (RELION 3.1, true poses, shifts and CTFs), ``OUT/particles.mrcs`` and
``OUT/ground_truth.mrc``. With ``--volume map.mrc`` the map is used as it is (its header pixel size, unless
``--pixel_size_angstrom`` is given).
"""

from __future__ import annotations

import math

import os

from absl import flags

from recon import cli, density, synthesis
from recon.errors import InputError, user_errors_exit
from recon.io import mrc

FLAGS = flags.FLAGS
flags.DEFINE_string("volume", None, "Density map (.mrc) to project.")
flags.DEFINE_string("model", None, "Atomic model (.pdb/.cif, optionally .gz) to turn into a density.")
flags.DEFINE_integer("box_size", None, "Box size in pixels (required with --model).")
flags.DEFINE_float("pixel_size_angstrom", None, "Pixel size (required with --model; overrides the map header).")
flags.DEFINE_integer("num_particles", 1000, "Number of particles.")
flags.DEFINE_string("snr", "0.05", "Signal-to-noise ratio (signal variance / noise variance); 'inf' for none.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_float("defocus_min_angstrom", 10000.0, "Smallest defocus (underfocus, Angstrom).")
flags.DEFINE_float("defocus_max_angstrom", 30000.0, "Largest defocus (underfocus, Angstrom).")
flags.DEFINE_float("max_astigmatism_fraction", 0.05, "DefocusV = DefocusU * (1 - U(0, this)).")
flags.DEFINE_float("voltage_kv", 300.0, "Acceleration voltage (kV).")
flags.DEFINE_float("spherical_aberration_mm", 2.7, "Spherical aberration (mm).")
flags.DEFINE_float("amplitude_contrast", 0.1, "Amplitude contrast fraction.")
flags.DEFINE_float("bfactor_angstrom2", 0.0, "CTF B-factor envelope (Angstrom^2).")
flags.DEFINE_float("shift_sigma_angstrom", None, "Standard deviation of the shifts (default: 2 pixels).")
flags.DEFINE_string("out", None, "Output folder.")
cli.define_config("config", None, "Optional dataset config (experiments/configs/*_data.py); flags "
                                "given explicitly override its fields.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARAMETERS = ("volume", "model", "box_size", "pixel_size_angstrom", "num_particles", "snr", "seed",
              "defocus_min_angstrom", "defocus_max_angstrom", "max_astigmatism_fraction", "voltage_kv",
              "spherical_aberration_mm", "amplitude_contrast", "bfactor_angstrom2", "shift_sigma_angstrom")


def _apply_config():
    """Copy config fields into the flags that were not given explicitly."""
    config = FLAGS.config
    if config is None:
        return
    for name in PARAMETERS:
        if FLAGS[name].present or name not in config:
            continue
        value = config[name]
        if name in ("volume", "model"):
            if not value:
                value = None
            elif not os.path.isabs(value) and not os.path.exists(value):
                value = os.path.join(REPO, value)
        if name == "shift_sigma_angstrom" and not value:
            value = None
        if name == "snr":
            value = str(value)
        FLAGS[name].value = value


def _load_volume():
    if bool(FLAGS.volume) == bool(FLAGS.model):
        raise InputError("give exactly one of --volume or --model")
    if FLAGS.model:
        if not FLAGS.box_size or not FLAGS.pixel_size_angstrom:
            raise InputError("--model needs --box_size and --pixel_size_angstrom")
        if FLAGS.box_size < 8 or FLAGS.pixel_size_angstrom <= 0:
            raise InputError("--box_size must be at least 8 and --pixel_size_angstrom positive")
        structure = density.read_model(FLAGS.model)
        radius = density.model_extent_angstrom(structure)
        half_box = FLAGS.box_size * FLAGS.pixel_size_angstrom / 2
        if radius > half_box:
            print(f"warning: {FLAGS.model}: the model reaches {radius:.0f} A from its centre, beyond the half box "
                  f"({half_box:.0f} A); its ends will wrap around")
        return density.model_to_density(structure, FLAGS.box_size, FLAGS.pixel_size_angstrom), \
            FLAGS.pixel_size_angstrom
    volume, header_pixel = mrc.read_map(FLAGS.volume)
    pixel = FLAGS.pixel_size_angstrom or header_pixel
    if not pixel or pixel <= 0:
        raise InputError(f"{FLAGS.volume}: the header has no pixel size; give --pixel_size_angstrom")
    return volume, pixel


@user_errors_exit
def main(argv):
    del argv
    _apply_config()
    if not FLAGS.out:
        raise InputError("--out is required")
    try:
        snr = math.inf if FLAGS.snr.strip().lower() in ("inf", "infinity") else float(FLAGS.snr)
    except ValueError:
        raise InputError(f"--snr must be a number or 'inf', got {FLAGS.snr!r}") from None
    if not snr > 0:
        raise InputError(f"--snr must be positive, got {FLAGS.snr}")
    if FLAGS.num_particles < 1:
        raise InputError("--num_particles must be at least 1")
    if not 0 < FLAGS.defocus_min_angstrom <= FLAGS.defocus_max_angstrom:
        raise InputError("need 0 < --defocus_min_angstrom <= --defocus_max_angstrom")
    volume, pixel = _load_volume()
    spec = synthesis.SimulationSpec(
        num_particles=FLAGS.num_particles, snr=snr, seed=FLAGS.seed, defocus_min_angstrom=FLAGS.defocus_min_angstrom,
        defocus_max_angstrom=FLAGS.defocus_max_angstrom, max_astigmatism_fraction=FLAGS.max_astigmatism_fraction,
        voltage_kv=FLAGS.voltage_kv, spherical_aberration_mm=FLAGS.spherical_aberration_mm,
        amplitude_contrast=FLAGS.amplitude_contrast, bfactor_angstrom2=FLAGS.bfactor_angstrom2,
        shift_sigma_angstrom=FLAGS.shift_sigma_angstrom)
    synthesis.simulate_dataset(volume, pixel, spec, FLAGS.out)
    print(f"wrote {FLAGS.out}/particles.star, particles.mrcs, ground_truth.mrc")


if __name__ == "__main__":
    cli.run(main)
