r"""The whitened likelihood on coloured noise: how far each particle's most probable pose under the TRUE map lies
from its true pose (the nearest of its C7 mates), with the likelihood assuming white noise and whitened by the spectrum estimated from the
backgrounds (recon/noise.py). A set is simulated with coloured noise whose level varies per micrograph.

    python -m experiments.noise_model_check [--particles 1000] [--exponent 1.5] [--resolution 15] \
        [--out experiments/results/noise_model_cpu.json]

Any CPU, a few minutes. Expected: the whitened likelihood places more particles within a quadrature step of their
true pose than the white one; on white noise the two agree.
"""

import json
import os
import tempfile

import numpy as np
from absl import flags

from experiments.engine_benchmark import machine
from experiments.pose_search import most_probable_rotations
from recon import cli, conventions, density, likelihood, noise, quadrature, symmetry, synthesis
from recon.data import open_dataset
from recon.errors import user_errors_exit
from recon.io import atomic, metadata

FLAGS = flags.FLAGS
MODEL = "third_party/1aon/1aon.pdb.gz"
C7 = symmetry.group_matrices("C7")


def pose_errors(dataset, volume, grid, rule, pixel) -> np.ndarray:
    """Angle (degrees) between each particle's most probable rotation under ``volume`` and its true one."""
    rows = np.arange(len(dataset))
    best = most_probable_rotations(dataset, volume, rows, grid, rule, pixel)
    truth = conventions.euler_to_matrix(dataset.meta.angles_degrees[rows])
    errors = []
    for b, t in zip(best, truth):  # the nearest of the true pose's C7 mates (GroEL-GroES is near C7)
        cos = [(np.trace(b.T @ (t @ g)) - 1) / 2 for g in C7]
        errors.append(float(np.degrees(np.arccos(np.clip(max(cos), -1, 1)))))
    return np.array(errors)


@user_errors_exit
def main(argv):
    cli.only_flags(argv)
    size, pixel = 64, 5.6
    volume = density.model_to_density(density.read_model(MODEL), size, pixel).astype(np.float32)
    rule = quadrature.make_quadrature(1.0 / FLAGS.resolution, 240.0, 12.0, 11.0)
    step = float(np.degrees(np.sqrt(4 * np.pi / len(rule.directions))))
    rows = {}
    with tempfile.TemporaryDirectory() as work:
        for name, exponent in (("white noise", 0.0), ("coloured noise", FLAGS.exponent)):
            folder = os.path.join(work, name.split()[0])
            synthesis.simulate_dataset(volume, pixel, synthesis.SimulationSpec(
                FLAGS.particles, snr=0.05, seed=3, noise_exponent=exponent, micrographs=20,
                noise_variation=0.25), folder, log=lambda *_: None)
            dataset = open_dataset(metadata.read_particles(os.path.join(folder, "particles.star")), 120.0)
            spectrum = noise.estimate(dataset)
            for model, power in (("white", None), ("whitened", spectrum)):
                grid = likelihood.make_grid(size, pixel, rule, 1.0 / FLAGS.resolution, power)
                errors = pose_errors(dataset, volume, grid, rule, pixel)
                rows[f"{name}, {model} likelihood"] = {
                    "median_error_degrees": round(float(np.median(errors)), 2),
                    "within_one_step": round(float(np.mean(errors < step)), 4)}
                print(name, model, rows[f"{name}, {model} likelihood"], flush=True)
    record = {"command": f"python -m experiments.noise_model_check --particles {FLAGS.particles} --exponent "
                         f"{FLAGS.exponent} --resolution {FLAGS.resolution}" + (f" --out {FLAGS.out}" if FLAGS.out
                                                                                 else ""),
              "machine": machine(), "set": f"GroEL-GroES, {FLAGS.particles} particles, 64 px at 5.6 A/px, SNR 0.05, "
              f"20 micrographs with noise sigma +-25 %", "resolution_angstrom": FLAGS.resolution,
              "direction_step_degrees": round(step, 2), "rows": rows}
    if FLAGS.out:
        atomic.write_text(FLAGS.out, json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    flags.DEFINE_integer("particles", 1000, "Particles per simulated set.")
    flags.DEFINE_float("exponent", 1.5, "Noise power ~ frequency^-exponent of the coloured set.")
    flags.DEFINE_float("resolution", 15.0, "The likelihood's band limit (Angstrom).")
    flags.DEFINE_string("out", None, "Write the JSON here.")
    cli.run(main)
