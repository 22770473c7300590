"""Are a run's wrong poses a search failure? Each sampled particle's most probable pose under the run's own final
map, summed exhaustively over a quadrature grid and frequency band, against the pose the run wrote and the true pose.

    python -m experiments.pose_search --run runs/validate/ribosome_64 \
        --particles data/validate/ribosome_64/particles.star --bands 23.3:23.3,40:40,40:23.3 \
        --out experiments/results/pose_search_ribosome64_cpu.json

Each band is GRID:BAND in Angstrom: the quadrature of that resolution (directions, in-plane angles, shifts within the
run's final shift disk) and the likelihood's frequencies up to the band. Poses are compared after the one rotation
between the run's frame and the truth's, for sets without symmetry (experiments/validate_auto.pose_agreement).
Any CPU, a minute per band for 300 particles. If the exhaustive poses under the run's map are right where the run's
are wrong, the map was good enough and the run's proposals did not reach those poses.
"""

import json
import os

import jax.numpy as jnp
import numpy as np
from absl import flags

from experiments.engine_benchmark import machine
from experiments.validate_auto import pose_errors_degrees
from recon import baselines, cli, conventions, likelihood, quadrature
from recon.data import open_dataset
from recon.errors import user_errors_exit
from recon.io import atomic, metadata, mrc

FLAGS = flags.FLAGS


def most_probable_rotations(dataset, volume, rows, grid, rule, pixel) -> np.ndarray:
    """RELION matrices ``(n, 3, 3)`` of the most probable pose of each of ``rows`` under ``volume``, every pose of
    ``rule`` summed over ``grid``'s frequencies (linear interpolation at 3x), 50 particles at a time."""
    out = []
    for start in range(0, len(rows), 50):
        r = rows[start:start + 50]
        ctf = likelihood.CTFParams(*(jnp.asarray(f, jnp.float32) for f in dataset.ctf(r)))
        idx, _ = likelihood.batch_top_poses(jnp.asarray(volume), jnp.asarray(dataset.images(r)), ctf, grid, pixel, 1,
                                            10, "linear", 3)
        out.append(baselines.pose_parameters(rule, np.asarray(idx)[:, 0])[0])
    return np.concatenate(out)


def exhaustive_poses(dataset, volume, rows, grid_angstrom, band_angstrom, radius, disk, sigma, pixel):
    """RELION Euler angles (degrees) of the most probable pose of each of ``rows``, every pose of the grid summed."""
    rule = quadrature.make_quadrature(1.0 / grid_angstrom, 2.0 * radius, disk, sigma)
    grid = likelihood.make_grid(dataset.box_size, pixel, rule, 1.0 / band_angstrom, dataset.noise_power)
    matrices = most_probable_rotations(dataset, volume, rows, grid, rule, pixel)
    return np.array([conventions.matrix_to_euler(m) for m in matrices]), len(rule.directions)


@user_errors_exit
def main(argv):
    cli.only_flags(argv, "run", "particles")
    config = json.load(open(os.path.join(FLAGS.run, "config.json")))
    volume, pixel = mrc.read_map(os.path.join(FLAGS.run, "final.mrc"))
    dataset = open_dataset(metadata.read_particles(FLAGS.particles), config["particle_radius_angstrom"])
    truth = metadata.read_particles(FLAGS.particles).angles_degrees
    written = metadata.read_particles(os.path.join(FLAGS.run, "poses.star")).angles_degrees
    rows = np.sort(np.random.default_rng(0).choice(len(dataset), min(FLAGS.num_particles, len(dataset)), False))
    run_right = float(np.mean(pose_errors_degrees(truth, written) < 20))
    disks = [r for r in open(os.path.join(FLAGS.run, "run.log")) if "shift disk widened to" in r]
    disk = float(disks[-1].split("widened to ")[1].split(" A")[0]) if disks else config["quadrature"]["max_shift_angstrom"]
    record = {"command": f"python -m experiments.pose_search --run {FLAGS.run} --particles {FLAGS.particles} "
                         f"--bands {','.join(FLAGS.bands)} --num_particles {FLAGS.num_particles}",
              "machine": machine(), "particles": int(len(rows)),
              "run_within_20_degrees_all_particles": run_right, "bands": []}
    for spec in FLAGS.bands:
        grid_a, band_a = (float(x) for x in spec.split(":"))
        angles, n_dir = exhaustive_poses(dataset, volume, rows, grid_a, band_a, config["particle_radius_angstrom"],
                                         disk, config["quadrature"]["shift_sigma_angstrom"], pixel)
        # one frame rotation for both (the same map): estimated from the run's poses of the whole set and these
        errors = pose_errors_degrees(np.concatenate([truth, truth[rows]]), np.concatenate([written, angles]))
        run_errors, found = errors[rows], errors[len(written):]
        row = {"grid_angstrom": grid_a, "band_angstrom": band_a, "directions": n_dir,
               "run_within_20_degrees": round(float(np.mean(run_errors < 20)), 4),
               "exhaustive_within_20_degrees": round(float(np.mean(found < 20)), 4),
               "exhaustive_within_20_degrees_where_run_off_by_45": round(float(np.mean(found[run_errors > 45] < 20)),
                                                                         4)}
        record["bands"].append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps(record, indent=1))
    if FLAGS.out:
        atomic.write_text(FLAGS.out, json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    flags.DEFINE_string("run", None, "A finished run folder (final.mrc, poses.star, config.json, run.log).")
    flags.DEFINE_string("particles", None, "The set's particle file with the true poses.")
    flags.DEFINE_list("bands", ["23.3:23.3", "40:40", "40:23.3"], "GRID:BAND resolutions (Angstrom) to search.")
    flags.DEFINE_integer("num_particles", 300, "Particles searched (a seeded sample).")
    flags.DEFINE_string("out", None, "Write the JSON here.")
    cli.run(main)
