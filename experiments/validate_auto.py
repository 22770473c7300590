"""The plain command (no --config: settings derived from the data) on molecules it was not tuned on.

    python -m experiments.validate_auto --sets trpv1_64,betagal_64 --out experiments/results/validate_auto_cpu.json

For each set: simulate it (recon.simulate; 10,000 particles, SNR 0.05, offsets of sigma 11 A, unless the set says
otherwise) if its folder is missing, reconstruct from the true poses (the oracle), run
``python -m recon.reconstruct --particles P --workdir W`` with nothing else but a time limit, and score the run's
snapshots against the truth: FSC 0.5 of the final map and the first time it came within 1.2x of the oracle's.
The JSON is rewritten after every set. Machine, time: 2-core CPU, up to --max_minutes per set plus ~5 minutes.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time

import numpy as np
from absl import flags

from recon import cli
from recon.io import atomic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")

FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags (absl flags are global: defined only when this module is the entry point)."""
    flags.DEFINE_list("sets", ["groel_64", "trpv1_64", "betagal_64", "atpase_64"], "Sets to run (names in SETS).")
    flags.DEFINE_string("data_root", "data/validate", "Where the simulated sets live (made if missing).")
    flags.DEFINE_string("run_root", "runs/validate", "Where the runs go (a finished run is scored again, not rerun).")
    flags.DEFINE_float("max_minutes", 30.0, "Time limit of each run (--config.stop.max_minutes).")
    flags.DEFINE_integer("max_points", 10, "Snapshots scored per run.")
    flags.DEFINE_string("out", "experiments/results/validate_auto_cpu.json", "Results JSON.")
    flags.DEFINE_list("overrides", [], "Config settings for every run, KEY=VALUE (passed as --config.KEY=VALUE; for "
                      "example junk.model=noise_class).")
    flags.DEFINE_bool("score_only", False, "Score the runs already in --run_root as they are (stopped by hand "
                      "included).")
    flags.DEFINE_bool("logs_only", False, "Only (re)record each row's run.log events (levels, sampling decisions, "
                      "final pass, stop) from its run folder; nothing rerun or rescored.")

# name -> recon.simulate config keys (a map: its path and pixel size, cropped in Fourier space to `box` first).
SETS = {
    "groel_64": {"model": "third_party/1aon/1aon.pdb.gz", "box_size": 64, "pixel_size_angstrom": 5.6},  # tuned on
    "trpv1_64": {"model": f"{SHARED}/structures/3j5p_trpv1.pdb", "box_size": 64, "pixel_size_angstrom": 3.5},
    "betagal_64": {"map": f"{SHARED}/maps/betagal_ngl.mrc", "map_pixel": 3.54, "box_size": 64},
    "atpase_64": {"map": f"{SHARED}/maps/atpase_chlamy_insitu.mrc", "map_pixel": 7.84, "box_size": 64},
    # the map's header has no pixel size: 5 A/px makes the 70S ribosome ~250 A across, as it is
    "ribosome_64": {"map": f"{SHARED}/maps/clean70SRibosome_vol_65p.mrc", "map_pixel": 5.0, "box_size": 64},
    "trpv1_64_1k": {"model": f"{SHARED}/structures/3j5p_trpv1.pdb", "box_size": 64, "pixel_size_angstrom": 3.5,
                    "num_particles": 1000},
    "trpv1_128": {"model": f"{SHARED}/structures/3j5p_trpv1.pdb", "box_size": 128, "pixel_size_angstrom": 2.8},
    "hpv16_128": {"model": f"{SHARED}/structures/3j6r_hpv16_capsid_asu.pdb", "box_size": 128,
                  "pixel_size_angstrom": 2.8},
    "trpv1_64_100k": {"model": f"{SHARED}/structures/3j5p_trpv1.pdb", "box_size": 64, "pixel_size_angstrom": 3.5,
                      "num_particles": 100_000},
    # every effect of real data at once (recon/synthesis.py); the oracle reads the polarity from the data too
    "trpv1_64_realistic": {"model": f"{SHARED}/structures/3j5p_trpv1.pdb", "box_size": 64, "pixel_size_angstrom": 3.5,
                           "noise_exponent": 1.5, "micrographs": 200, "noise_variation": 0.25,
                           "envelope_bfactor_min_angstrom2": 50.0, "envelope_bfactor_max_angstrom2": 150.0,
                           "amplitude_spread": 0.2, "junk_fraction": 0.15, "preferred_view_fraction": 0.3,
                           "dark_particles": True},
    # each effect of the realistic set alone, for its cost against trpv1_64 (white noise, no effect)
    **{f"trpv1_64_only_{effect}": {"model": f"{SHARED}/structures/3j5p_trpv1.pdb", "box_size": 64,
                                   "pixel_size_angstrom": 3.5, **keys}
       for effect, keys in {"noise": {"noise_exponent": 1.5, "micrographs": 200, "noise_variation": 0.25},
                            "envelope": {"envelope_bfactor_min_angstrom2": 50.0,
                                         "envelope_bfactor_max_angstrom2": 150.0},
                            "amplitude": {"amplitude_spread": 0.2}, "junk": {"junk_fraction": 0.15},
                            "views": {"preferred_view_fraction": 0.3}, "dark": {"dark_particles": True}}.items()},
    "ribosome_64_1k": {"map": f"{SHARED}/maps/clean70SRibosome_vol_65p.mrc", "map_pixel": 5.0, "box_size": 64,
                       "num_particles": 1000},
}
COMMON = {"num_particles": 10_000, "snr": 0.05, "shift_sigma_angstrom": 11.0, "seed": 1}


def fourier_crop(volume: np.ndarray, box: int) -> np.ndarray:
    """``volume`` (D^3) resampled to ``box``^3 over the same extent by keeping the central box^3 of its transform."""
    size = volume.shape[0]
    if size == box:
        return volume
    ft = np.fft.fftshift(np.fft.fftn(volume))
    lo = size // 2 - box // 2
    cropped = ft[lo:lo + box, lo:lo + box, lo:lo + box]
    return np.real(np.fft.ifftn(np.fft.ifftshift(cropped))).astype(np.float32) * (box / size) ** 3


def simulate(name: str, folder: str) -> str:
    from recon.io import mrc

    star = os.path.join(folder, "particles.star")
    if os.path.exists(star):
        return star
    spec = {**COMMON, **SETS[name]}
    args = []
    if "map" in spec:
        volume, _ = mrc.read_map(spec.pop("map"))
        pixel = spec.pop("map_pixel") * volume.shape[0] / spec["box_size"]
        os.makedirs(folder + ".src", exist_ok=True)
        source = os.path.join(folder + ".src", "volume.mrc")
        mrc.write_map(source, fourier_crop(volume, spec.pop("box_size")), pixel)
        args += [f"--config.volume={source}", f"--config.pixel_size_angstrom={pixel:.4f}"]
    args += [f"--config.{key}={value}" for key, value in spec.items()]
    subprocess.run([sys.executable, "-m", "recon.simulate", *args, "--out", folder], cwd=REPO, check=True)
    return star


def oracle_fsc(star: str, truth: np.ndarray, pixel: float) -> float:
    from recon import backprojection, metrics, polarity
    from recon.data import open_dataset
    from recon.io import metadata

    dataset = open_dataset(metadata.read_particles(star))
    polarity.follow(dataset)[0]  # dark stacks read white, as the plain command reads them
    known = backprojection.reconstruct_known_poses(dataset, snr=COMMON["snr"] * dataset.box_size)
    return float(metrics.evaluate_maps(known, truth, pixel, do_align=False)[0]["fsc_0.5_angstrom"])


def plain_run(star: str, workdir: str) -> float:
    """The plain command (resumes or returns at once if the run is there); its wall time in seconds."""
    start = time.time()
    subprocess.run([sys.executable, "-m", "recon.reconstruct", "--particles", star, "--workdir", workdir, "--quiet",
                    f"--config.stop.max_minutes={FLAGS.max_minutes}", *(f"--config.{o}" for o in FLAGS.overrides)],
                   cwd=REPO, check=True)
    return time.time() - start


def run_log_events(workdir: str) -> list[str]:
    """The run's run.log without its per-iteration progress lines: settings, levels, sampling decisions, the final
    pass and the stop, with their times."""
    with open(os.path.join(workdir, "run.log")) as f:
        return [line.rstrip("\n") for line in f if line.strip() and not re.match(r"\[[\d:]+\] it +\d", line)]


def junk_calls(star: str, workdir: str) -> dict | None:
    """Where the set marks its junk (rlnClassNumber 2, recon.simulate) and the run called junk (poses.star): the
    share of the junk called (recall) and of the good particles called junk."""
    from recon.io import metadata
    from recon.io import star as star_io

    poses_path = os.path.join(workdir, "poses.star")
    truth = (metadata.read_particles(star).extra_columns or {}).get("rlnClassNumber")
    if truth is None or not os.path.exists(poses_path):
        return None
    called = (metadata.read_particles(poses_path).extra_columns or {})
    if star_io.JUNK_SCORE_COLUMN not in called:
        return None
    bad, flagged = np.asarray(truth) == 2, np.asarray(called["rlnClassNumber"]) == 2
    return {"junk_particles": int(bad.sum()), "recall": float(flagged[bad].mean()) if bad.any() else None,
            "good_flagged": float(flagged[~bad].mean())}


ASYMMETRIC = {"ribosome_64", "ribosome_64_1k"}  # sets whose poses are compared with the truth (no symmetry mates)


def pose_agreement(true_angles_degrees: np.ndarray, run_angles_degrees: np.ndarray) -> dict:
    """Share of particles whose pose (RELION Euler angles ``(N, 3)``) lies within 10 / 20 / 45 degrees of its true
    pose (:func:`pose_errors_degrees`)."""
    errors = pose_errors_degrees(true_angles_degrees, run_angles_degrees)
    return {f"within_{d}_degrees": float(np.mean(errors < d)) for d in (10, 20, 45)}


def pose_errors_degrees(true_angles_degrees: np.ndarray, run_angles_degrees: np.ndarray) -> np.ndarray:
    """Each particle's angle between its pose and its true pose, after the one rotation between the run's frame and
    the truth's (the consensus of ``R_run^T R_true`` over particles: the most popular of 50 candidates, refined by
    the mean of its inliers), of the hand that fits more particles. For sets without symmetry."""
    from recon import conventions

    def matrices(angles):
        return np.stack([conventions.euler_to_matrix(a) for a in angles])

    run, true = matrices(run_angles_degrees), matrices(true_angles_degrees)
    mirror = np.diag([1.0, 1.0, -1.0])  # a map of the other hand explains the images at J R J
    best = None
    for truth in (true, mirror @ true @ mirror):
        relative = np.einsum("nji,njk->nik", run, truth)

        def angles(g):
            return np.degrees(np.arccos(np.clip((np.einsum("nij,ij->n", relative, g) - 1) / 2, -1, 1)))

        rng = np.random.default_rng(0)
        g = max((relative[i] for i in rng.integers(len(relative), size=50)), key=lambda c: np.mean(angles(c) < 10))
        for _ in range(3):
            u, _, vt = np.linalg.svd(relative[angles(g) < 10].mean(axis=0))
            g = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt  # a rotation, not a reflection
        a = angles(g)
        if best is None or np.mean(a < 10) > np.mean(best < 10):
            best = a
    return best


def score(name: str) -> dict:
    from recon import report
    from recon.io import metadata, mrc

    folder = os.path.join(FLAGS.data_root, name)
    star = simulate(name, folder)
    truth, pixel = mrc.read_map(os.path.join(folder, "ground_truth.mrc"))
    oracle = oracle_fsc(star, truth, pixel)
    workdir = os.path.join(FLAGS.run_root, name)
    if not FLAGS.score_only:
        plain_run(star, workdir)
    points = report.resolution_curve(workdir, truth, FLAGS.max_points, log=print)
    config = json.load(open(os.path.join(workdir, "config.json")))
    within = [p["seconds"] for p in points if p["fsc_0.5_angstrom"] <= 1.2 * oracle]
    metrics = report.read_metrics(workdir)
    return {"set": name, "particles": {**COMMON, **SETS[name]}["num_particles"], "box": int(truth.shape[0]),
            "pixel_angstrom": pixel,
            "oracle_fsc_0.5_angstrom": oracle, "fsc_0.5_angstrom": points[-1]["fsc_0.5_angstrom"],
            "seconds": metrics[-1]["seconds"] if metrics else None,
            "iterations": max((r.get("iteration", 0) for r in metrics), default=0), "log": run_log_events(workdir),
            "seconds_to_1.2x_oracle": min(within) if within else None, "points": points,
            "settings": {"particle_radius_angstrom": config["particle_radius_angstrom"],
                         "max_shift_angstrom": config["quadrature"]["max_shift_angstrom"],
                         "target_resolution_angstrom": config["schedule"]["target_resolution_angstrom"],
                         "iterations_per_level": config["schedule"]["iterations_per_level"],
                         "batch_size": config["batch_size"], "kernel": config["likelihood_kernel"]},
            "junk": junk_calls(star, workdir),
            "poses": pose_agreement(metadata.read_particles(star).angles_degrees, metadata.read_particles(
                os.path.join(workdir, "poses.star")).angles_degrees) if name in ASYMMETRIC else None,
            "fraction_evaluated_last": next((r["fraction_evaluated"] for r in reversed(metrics)
                                             if r.get("sampled")), None),
            "probe_log_p": [{k: r.get(k) for k in ("iteration", "resolution_angstrom", "probe_log_p_relative_error",
                                                   "probe_log_p_relative_bias", "probe_log_p_error_nats",
                                                   "probe_log_p_bias_nats")}
                            for r in metrics if "probe_log_p_relative_error" in r]}


def main(argv):
    del argv
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.system()}",
           "command": "python -m recon.reconstruct --particles P --workdir W "
                      f"--config.stop.max_minutes={FLAGS.max_minutes}"
                      + "".join(f" --config.{o}" for o in FLAGS.overrides), "rows": []}
    if os.path.exists(FLAGS.out):
        out["rows"] = [r for r in json.load(open(FLAGS.out))["rows"]
                       if FLAGS.logs_only or r["set"] not in FLAGS.sets]
    if FLAGS.logs_only:
        for row in out["rows"]:
            if row["set"] in FLAGS.sets or not FLAGS["sets"].present:
                row["log"] = run_log_events(os.path.join(FLAGS.run_root, row["set"]))
        atomic.write_text(FLAGS.out, json.dumps(out, indent=1))
        return
    for name in FLAGS.sets:
        out["rows"].append(score(name))
        atomic.write_text(FLAGS.out, json.dumps(out, indent=1))
        row = out["rows"][-1]
        print(f"{name}: FSC 0.5 {row['fsc_0.5_angstrom']:.1f} A (oracle {row['oracle_fsc_0.5_angstrom']:.1f} A) "
              f"after {row['seconds'] / 60:.1f} min; 1.2x oracle at {row['seconds_to_1.2x_oracle']} s", flush=True)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
