"""Multi-class ab initio on two-state GroEL-GroES / GroEL sets: class assignment and each class's map.

    python -m experiments.multiclass --sets mix50,mix80,mix50_junk15 --out experiments/results/multiclass_cpu.json

For each set: simulate it (experiments/configs/groel_mixture_data.py with the set's overrides) if its folder is
missing; reconstruct each true class from its true poses (the oracle); run the plain command with
``--config.classes=K`` (and, with --one_class, the same command with one class, for the time ratio) under a time
limit; score the assignment (poses.star rlnClassNumber against the truth, after the best one-to-one matching of
classes), each class's map against its matched truth (aligned: FSC 0.5 and correlation), and the junk recall where
a set has junk (the share of junk particles in the class matched to junk); and, as the ceiling, the accuracy of
assigning particles by the two true maps at their true poses. The JSON is rewritten after every run.
Machine, time: 2-core CPU, up to --max_minutes per run plus a few minutes of scoring.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
from absl import flags

from recon import cli
from recon.io import atomic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS

# name -> (classes K, recon.simulate overrides of experiments/configs/groel_mixture_data.py)
SETS = {
    "mix50": (2, {}),
    "mix80": (2, {"class_proportions": "0.8,0.2"}),
    "mix50_junk15": (3, {"junk_fraction": 0.15}),
}


def define_flags():
    flags.DEFINE_list("sets", list(SETS), "Sets to run (names in SETS).")
    flags.DEFINE_string("data_root", "data/multiclass", "Where the simulated sets live (made if missing).")
    flags.DEFINE_string("run_root", "runs/multiclass", "Where the runs go (a finished run is scored, not rerun).")
    flags.DEFINE_float("max_minutes", 40.0, "Time limit of each run (--config.stop.max_minutes).")
    flags.DEFINE_bool("one_class", False, "Also run each set with one class (the time reference).")
    flags.DEFINE_list("overrides", [], "Config settings for every multi-class run, KEY=VALUE.")
    flags.DEFINE_string("out", "experiments/results/multiclass_cpu.json", "Results JSON.")


def simulate(name: str) -> str:
    folder = os.path.join(FLAGS.data_root, name)
    star = os.path.join(folder, "particles.star")
    if not os.path.exists(star):
        args = [f"--config.{k}={v}" for k, v in SETS[name][1].items()]
        subprocess.run([sys.executable, "-m", "recon.simulate", "--config",
                        os.path.join(REPO, "experiments/configs/groel_mixture_data.py"), *args, "--out", folder],
                       cwd=REPO, check=True)
    return star


def run(star: str, workdir: str, classes: int) -> float:
    start = time.time()
    extra = [f"--config.{o}" for o in FLAGS.overrides] if classes > 1 else []
    subprocess.run([sys.executable, "-m", "recon.reconstruct", "--particles", star, "--workdir", workdir, "--quiet",
                    f"--config.classes={classes}", f"--config.stop.max_minutes={FLAGS.max_minutes}", *extra],
                   cwd=REPO, check=True)
    return time.time() - start


def oracle(star: str, truth_class: np.ndarray, klass: int, reference: np.ndarray, pixel: float) -> float:
    """FSC 0.5 of the map backprojected from the true poses of the particles of true class ``klass``."""
    from recon import backprojection, metrics
    from recon.data import open_dataset
    from recon.io import metadata

    dataset = open_dataset(metadata.read_particles(star))
    known = backprojection.reconstruct_known_poses(dataset, np.flatnonzero(truth_class == klass),
                                                   snr=0.05 * dataset.box_size)
    return float(metrics.evaluate_maps(known, reference, pixel, do_align=False)[0]["fsc_0.5_angstrom"])


def known_accuracy(star: str, truth: np.ndarray, count: int = 2000, resolution_angstrom: float = 0.0) -> dict:
    """The ceiling: each of the first ``count`` good particles assigned by the likelihood of the two true maps at
    its true pose, shift and CTF (white noise, its variance from the residuals at the true state); with
    ``resolution_angstrom``, from the images' and projections' frequencies up to it only."""
    import jax.numpy as jnp
    import mrcfile

    from recon import projection, synthesis
    from recon.ctf import CTFParams
    from recon.io import metadata, mrc

    meta = metadata.read_particles(star)
    rows = np.flatnonzero(truth < 2)[:count]
    folder = os.path.dirname(star)
    maps = [mrc.read_map(os.path.join(folder, f"ground_truth_class_{c:02d}.mrc")) for c in (1, 2)]
    pixel, size = maps[0][1], maps[0][0].shape[0]
    render = synthesis.render_batch_fn(size, pixel)
    ctf = CTFParams(*(jnp.asarray(np.asarray(f)[rows], jnp.float32) for f in meta.ctf))
    with mrcfile.mmap(os.path.join(folder, "particles.mrcs"), permissive=True) as f:
        images = np.asarray(f.data[rows], np.float64)
    projections = [np.asarray(render(projection.prepare_volume_ft(jnp.asarray(m, jnp.float32)),
                                     jnp.asarray(meta.angles_degrees[rows], jnp.float32),
                                     jnp.asarray(meta.origins_angstrom[rows], jnp.float32), ctf), np.float64)
                   for m, _ in maps]
    difference = images - np.stack(projections)  # (2, n, D, D)
    if resolution_angstrom:
        from recon import conventions

        k = np.linalg.norm(conventions.image_frequency_grid(size), axis=-1) / pixel  # 1/A
        band = k <= 1.0 / resolution_angstrom
        difference = conventions.centred_ifft2(conventions.centred_fft2(difference) * band).real
    residual = np.sum(difference ** 2, axis=(2, 3))  # (2, n)
    noise_var = np.mean(residual[truth[rows], np.arange(len(rows))]) / (size**2 if not resolution_angstrom
                                                                         else np.sum(band))
    log_ratio = (residual[1] - residual[0]) / (2 * noise_var)  # log p(a) - log p(b)
    return {"particles": int(len(rows)), "accuracy": float(np.mean((log_ratio < 0) == (truth[rows] == 1))),
            "mean_abs_log_ratio_nats": float(np.mean(np.abs(log_ratio)))}


def score(name: str, workdir: str, star: str, classes_k: int) -> dict:
    from recon import classes, metrics, report
    from recon.io import metadata, mrc

    folder = os.path.dirname(star)
    truth = np.asarray(metadata.read_particles(star).extra_columns["rlnClassNumber"], int) - 1  # junk: last
    called = np.asarray(metadata.read_particles(os.path.join(workdir, "poses.star")).extra_columns["rlnClassNumber"],
                        int) - 1
    accuracy, match = classes.matched_accuracy(np.minimum(called, classes_k - 1), truth)
    maps_true = [mrc.read_map(os.path.join(folder, f"ground_truth_class_{c + 1:02d}.mrc")) for c in range(2)]
    pixel = maps_true[0][1]
    rows = []
    for c in range(classes_k):
        row = {"class": c + 1, "particles": int(np.sum(called == c)), "matched_truth": int(match[c]) + 1}
        if match[c] < 2:  # a true map (the junk has none)
            volume = mrc.read_map(os.path.join(workdir, f"class_{c + 1:02d}.mrc"))[0]
            fit = metrics.evaluate_maps(volume, maps_true[match[c]][0], pixel)[0]
            row.update({"fsc_0.5_angstrom": fit["fsc_0.5_angstrom"], "correlation": fit["correlation"],
                        "oracle_fsc_0.5_angstrom": oracle(star, truth, match[c], maps_true[match[c]][0], pixel),
                        "true_particles": int(np.sum(truth == match[c])),
                        "recall": float(np.mean(called[truth == match[c]] == c))})
        rows.append(row)
    out = {"set": name, "classes": classes_k, "assignment_accuracy": accuracy, "per_class": rows,
           "known_maps_and_poses": known_accuracy(star, truth),
           "known_maps_and_poses_by_resolution": {f"{r:g}": known_accuracy(star, truth, resolution_angstrom=r)
                                                  for r in (30.0, 20.0, 15.0)}}
    if np.any(truth == 2):
        junk_class = match.index(2) if 2 in match else None
        out["junk_recall"] = float(np.mean(called[truth == 2] == junk_class)) if junk_class is not None else 0.0
    metrics_rows = report.read_metrics(workdir)
    out["seconds"] = metrics_rows[-1]["seconds"] if metrics_rows else None
    out["iterations"] = max((r.get("iteration", 0) for r in metrics_rows), default=0)
    return out


def main(argv):
    from recon import report

    del argv
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.system()}",
           "command": "python -m recon.reconstruct --particles P --workdir W --config.classes=K "
                      f"--config.stop.max_minutes={FLAGS.max_minutes}" + "".join(f" --config.{o}"
                                                                                for o in FLAGS.overrides),
           "rows": []}
    for name in FLAGS.sets:
        classes_k = SETS[name][0]
        star = simulate(name)
        workdir = os.path.join(FLAGS.run_root, f"{name}_k{classes_k}")
        wall = run(star, workdir, classes_k)
        row = {**score(name, workdir, star, classes_k), "wall_seconds": wall}
        if FLAGS.one_class:
            one = os.path.join(FLAGS.run_root, f"{name}_k1")
            run(star, one, 1)
            row["one_class_seconds"] = report.read_metrics(one)[-1]["seconds"]
            if row["seconds"]:
                row["time_ratio"] = row["seconds"] / row["one_class_seconds"]
        out["rows"].append(row)
        atomic.write_text(FLAGS.out, json.dumps(out, indent=1))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
