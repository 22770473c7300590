"""Simulate a particle dataset from a map or an atomic model.

    python -m recon.simulate [--config DATA_CONFIG.py] [--config.KEY=VALUE ...] --out DIR
    python -m recon.simulate --config.model=third_party/1aon/1aon.pdb.gz --config.box_size=64 \
        --config.pixel_size_angstrom=5.6 --config.num_particles=10000 --out data/groel64

writes ``OUT/particles.star`` (RELION 3.1, true poses, shifts and CTFs), ``OUT/particles.mrcs`` and
``OUT/ground_truth.mrc``. The keys and their defaults are in ``recon/configs/simulate.py`` (``--help`` lists them).
With ``--config.volume=map.mrc`` the map is used as it is (its header pixel size, unless
``--config.pixel_size_angstrom`` is given); ``--config.snr=inf`` gives noise-free images.

Mixtures: several comma-separated models (or maps) and ``--config.class_proportions``, e.g.
``--config.model=third_party/1aon/1aon.pdb.gz,third_party/1aon/1aon.pdb.gz#ABCDEFGHIJKLMN
--config.class_proportions=0.5,0.5`` (GroEL-GroES and GroEL alone: ``#`` keeps the chains named after it). Models
share the first one's frame (its centre of mass at the box centre); ``rlnClassNumber`` holds each particle's map.
"""

from __future__ import annotations

import math

import os

from absl import flags

import numpy as np

from recon import cli, density, synthesis
from recon.errors import InputError, user_errors_exit
from recon.io import mrc

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output folder.")
cli.define_config("config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "simulate.py"),
                  "Dataset config (ml_collections): recon/configs/simulate.py or one derived from it.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EFFECTS = ("envelope_bfactor_min_angstrom2", "envelope_bfactor_max_angstrom2", "amplitude_spread", "junk_fraction",
           "preferred_view_fraction", "preferred_view_sigma_degrees", "noise_exponent", "micrographs",
           "noise_variation", "dark_particles")


def _path(value: str) -> str | None:
    """A config path as given (absolute or relative to the working folder), else relative to the repository."""
    if not value:
        return None
    if os.path.isabs(value) or os.path.exists(value) or not os.path.exists(os.path.join(REPO, value)):
        return value
    return os.path.join(REPO, value)


def _load_volume(c):
    """The map ``(D, D, D)``, or the maps ``(K, D, D, D)`` of a mixture, and the pixel size."""
    models = [m.strip() for m in c.model.split(",") if m.strip()]
    volumes = [_path(v.strip()) for v in c.volume.split(",") if v.strip()]
    if bool(volumes) == bool(models):
        raise InputError("give exactly one of --config.volume or --config.model")
    if models:
        if not c.box_size or not c.pixel_size_angstrom:
            raise InputError("--config.model needs --config.box_size and --config.pixel_size_angstrom")
        if c.box_size < 8 or c.pixel_size_angstrom <= 0:
            raise InputError("--config.box_size must be at least 8 and --config.pixel_size_angstrom positive")
        maps, centre = [], None
        for spec in models:
            model, _, chains = spec.partition("#")
            structure = density.read_model(_path(model), chains)
            centre = structure[0].calculate_center_of_mass() if centre is None else centre  # the first's frame
            radius = density.model_extent_angstrom(structure)
            half_box = c.box_size * c.pixel_size_angstrom / 2
            if radius > half_box:
                print(f"warning: {model}: the model reaches {radius:.0f} A from its centre, beyond the half box "
                      f"({half_box:.0f} A); its ends will wrap around")
            maps.append(density.model_to_density(structure, c.box_size, c.pixel_size_angstrom, centre=centre))
        return (maps[0] if len(maps) == 1 else np.stack(maps)), c.pixel_size_angstrom
    if c.pixel_size_angstrom < 0:
        raise InputError(f"--config.pixel_size_angstrom must be positive (or 0: the map header's), got "
                         f"{c.pixel_size_angstrom}")
    maps = []
    for volume_path in volumes:
        volume, header_pixel = mrc.read_map(volume_path)
        pixel = c.pixel_size_angstrom or header_pixel
        if not pixel or pixel <= 0:
            raise InputError(f"{volume_path}: the header has no pixel size; give --config.pixel_size_angstrom")
        if maps and volume.shape != maps[0].shape:
            raise InputError(f"{volume_path}: box {volume.shape} differs from the first map's {maps[0].shape}")
        maps.append(volume)
    return (maps[0] if len(maps) == 1 else np.stack(maps)), pixel


def _proportions(c, num_maps: int) -> tuple:
    """``--config.class_proportions`` as a tuple (empty: equal shares), checked against the number of maps."""
    text = str(c.class_proportions).strip()
    if not text:
        return ()
    try:
        shares = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"--config.class_proportions must be comma-separated numbers, got {text!r}") from None
    if len(shares) != num_maps or any(not x >= 0 for x in shares) or not sum(shares) > 0:
        raise InputError(f"--config.class_proportions={text!r}: need {num_maps} non-negative shares (one per map)")
    return shares


@user_errors_exit
def main(argv):
    del argv
    c = FLAGS.config
    if not FLAGS.out:
        raise InputError("--out is required")
    try:
        snr = math.inf if str(c.snr).strip().lower() in ("inf", "infinity") else float(c.snr)
    except ValueError:
        raise InputError(f"--config.snr must be a number or 'inf', got {c.snr!r}") from None
    if not snr > 0:
        raise InputError(f"--config.snr must be positive, got {c.snr}")
    if c.num_particles < 1:
        raise InputError("--config.num_particles must be at least 1")
    for key in ("junk_fraction", "preferred_view_fraction"):
        if not 0.0 <= c[key] <= 1.0:
            raise InputError(f"--config.{key} must lie in [0, 1], got {c[key]}")
    if c.amplitude_spread < 0 or c.noise_variation < 0 or not c.noise_variation < 1 or c.micrographs < 0:
        raise InputError("--config.amplitude_spread, noise_variation (< 1) and micrographs must not be negative")
    if not 0 < c.defocus_min_angstrom <= c.defocus_max_angstrom:
        raise InputError("need 0 < --config.defocus_min_angstrom <= --config.defocus_max_angstrom")
    volume, pixel = _load_volume(c)
    spec = synthesis.SimulationSpec(
        num_particles=c.num_particles, snr=snr, seed=c.seed, defocus_min_angstrom=c.defocus_min_angstrom,
        defocus_max_angstrom=c.defocus_max_angstrom, max_astigmatism_fraction=c.max_astigmatism_fraction,
        voltage_kv=c.voltage_kv, spherical_aberration_mm=c.spherical_aberration_mm,
        amplitude_contrast=c.amplitude_contrast, bfactor_angstrom2=c.bfactor_angstrom2,
        shift_sigma_angstrom=c.shift_sigma_angstrom or None,
        class_proportions=_proportions(c, 1 if volume.ndim == 3 else len(volume)),
        **{key: c[key] for key in EFFECTS})
    synthesis.simulate_dataset(volume, pixel, spec, FLAGS.out)
    print(f"wrote {FLAGS.out}/particles.star, particles.mrcs, ground_truth.mrc")

if __name__ == "__main__":
    cli.run(main)
