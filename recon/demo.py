"""The default demo (``./run.sh``): simulate a small GroEL-GroES dataset from the bundled atomic model (PDB 1AON),
reconstruct it AB INITIO from a random volume (recon/configs/demo.py), and evaluate the map against the
ground truth (after alignment over rotations, shifts and hands). As a reference point it also reconstructs the
same data from the TRUE poses (direct Fourier inversion), the best any method could do with these particles.

    python -m recon.demo [--workdir demo_output] [--num_particles 4000]
"""

from __future__ import annotations

import json
import os
import time

from absl import flags

from recon import backprojection, cli, compile_stats, density, lock, metrics, synthesis, training
from recon.configs import demo as demo_config
from recon.data import open_dataset
from recon.errors import user_errors_exit
from recon.io import metadata, mrc

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "demo_output", "Where the demo writes its data, maps, plots and log.")
flags.DEFINE_integer("num_particles", 4000, "Particles to simulate.")
flags.DEFINE_integer("seed", 0, "Random seed.")

MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "third_party", "1aon",
                     "1aon.pdb.gz")
BOX_SIZE, PIXEL_SIZE_ANGSTROM, SNR = 64, 5.6, 0.05


@user_errors_exit
def main(argv):
    del argv
    workdir = os.path.abspath(FLAGS.workdir)
    compile_stats.use_persistent_cache(compile_stats.default_cache_folder())
    with lock.hold(workdir):  # one demo per folder: its data and log are rewritten (recon/lock.py)
        demo(workdir)


def demo(workdir: str):
    os.makedirs(workdir, exist_ok=True)
    log_path = os.path.join(workdir, "demo.log")
    log_file = open(log_path, "w")

    def log(message):
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    start = time.time()
    log(f"GroEL-GroES (PDB 1AON) -> {BOX_SIZE}^3 map at {PIXEL_SIZE_ANGSTROM} A/px")
    structure = density.read_model(MODEL)
    truth = density.model_to_density(structure, BOX_SIZE, PIXEL_SIZE_ANGSTROM)
    data_dir = os.path.join(workdir, "data")
    spec = synthesis.SimulationSpec(num_particles=FLAGS.num_particles, snr=SNR, seed=FLAGS.seed)
    synthesis.simulate_dataset(truth, PIXEL_SIZE_ANGSTROM, spec, data_dir, log=log)
    log(f"dataset: {data_dir}/particles.star ({time.time() - start:.0f} s)")

    config = demo_config.get_config()
    config.seed = FLAGS.seed
    dataset = open_dataset(metadata.read_particles(os.path.join(data_dir, "particles.star")),
                           config.particle_radius_angstrom)
    log(f"noise sigma estimated from the background: {dataset.noise_sigma:.4g}")
    run_dir = os.path.join(workdir, "run")
    log(f"ab-initio reconstruction from a random volume into {run_dir} (progress in {run_dir}/run.log)")
    summary = training.run(config, dataset, run_dir)
    final = os.path.join(run_dir, "final.mrc")
    volume, _ = mrc.read_map(final)
    result, curve, aligned = metrics.evaluate_maps(volume, truth, PIXEL_SIZE_ANGSTROM)
    aligned_path = os.path.join(workdir, "final_aligned.mrc")
    mrc.write_map(aligned_path, aligned, PIXEL_SIZE_ANGSTROM)
    png = os.path.join(workdir, "fsc.png")
    metrics.plot_fsc(png, curve, PIXEL_SIZE_ANGSTROM, title="ab initio (aligned) vs ground truth")

    known = backprojection.reconstruct_known_poses(dataset, snr=SNR * BOX_SIZE)
    known_result, _, _ = metrics.evaluate_maps(known, truth, PIXEL_SIZE_ANGSTROM, do_align=False)
    result["true_pose_fsc_0.5_angstrom"] = known_result["fsc_0.5_angstrom"]
    result["reconstruction_seconds"] = summary["elapsed_seconds"]
    result["heldout_rremse"] = summary["heldout_rremse"]
    result["fsc_png"] = png
    with open(os.path.join(workdir, "evaluation.json"), "w") as f:
        json.dump(result, f, indent=1)
    log(f"ab initio: FSC 0.5 {result['fsc_0.5_angstrom']:.1f} A, FSC 0.143 {result['fsc_0.143_angstrom']:.1f} A "
        f"(hand {result['hand']}) after {summary['elapsed_seconds'] / 60:.1f} min; held-out RREMSE "
        f"{summary['heldout_rremse']:.3f}; from the true poses: FSC 0.5 {known_result['fsc_0.5_angstrom']:.1f} A")
    log(f"map: {final} (aligned to the ground truth: {aligned_path})")
    log(f"ground truth: {data_dir}/ground_truth.mrc")
    log(f"FSC plot: {png}")
    log(f"log: {log_path} and {run_dir}/run.log; metrics: {run_dir}/metrics.jsonl")
    log(f"done in {time.time() - start:.0f} s")
    log_file.close()


if __name__ == "__main__":
    cli.run(main)
