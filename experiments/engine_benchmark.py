"""Engine targets: throughput against the machine's matrix-multiply rate, and resolution against time (and peak
memory) of a GroEL-GroES run.

    python -m experiments.engine_benchmark kernel [--particles data/groel64/particles.star]
        float32 matmul rate, and per resolution level of experiments/configs/groel64.py the time of one
        minibatch gradient (200 particles), its matrix-product FLOPs and their rate as a fraction of the matmul rate.
    python -m experiments.engine_benchmark curve --workdir runs/groel64 --truth data/groel64/ground_truth.mrc
        FSC 0.5 / 0.143 against the truth (after alignment) of the map snapshots of a run, against wall time
        (--snapshots FOLDER instead of --workdir: the files experiments/gpu_paper_sized.sh brings back), the first
        time each of 30 / 20 / 15 / 10 A was reached, and per level (from metrics.jsonl) particles/s and the fraction
        of poses evaluated.

    python -m experiments.engine_benchmark sampled
        one minibatch gradient of the sampled likelihood with the minibatch's direction slices shared against one
        slice per drawn slot, at the slots of a 64-px ribosome run.

Each prints JSON and saves it (--out, default experiments/results/engine_WHAT_cpu.json). Run from the repository
root; any machine (CPU or one GPU).
"""

import glob
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from recon import cli
from recon.errors import InputError, user_errors_exit

# RESULTS, machine and matmul_rate are shared with experiments.bench and experiments.process_scaling.
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
COMMANDS = ("kernel", "curve", "sampled")
FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags (absl flags are global: defined only when this module is the entry point)."""
    flags.DEFINE_string("particles", "data/groel64/particles.star", "kernel: particle STAR/.cs file.")
    flags.DEFINE_string("workdir", "runs/groel64", "curve: the run folder.")
    flags.DEFINE_string("truth", "data/groel64/ground_truth.mrc", "curve: ground-truth map.")
    flags.DEFINE_string("snapshots", None, "folder from experiments/gpu_paper_sized.sh (instead of --workdir)")
    flags.DEFINE_integer("max_points", 8, "curve: snapshots evaluated.")
    flags.DEFINE_string("out", None, "Output JSON (default experiments/results/engine_WHAT_cpu.json).")


def machine():
    return {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "jax": jax.__version__, "devices": [str(d) for d in jax.devices()]}


def matmul_rate(n=2048, repeats=5):
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    t = time.time()
    for _ in range(repeats):
        f(a, a).block_until_ready()
    return 2 * n**3 * repeats / (time.time() - t) / 1e9


def kernel(particles: str) -> dict:
    from experiments.configs import groel64
    from recon import likelihood, training
    from recon import step as step_lib
    from recon.data import open_dataset
    from recon.io import metadata

    config = groel64.get_config()
    ds = open_dataset(metadata.read_particles(particles), config.particle_radius_angstrom)
    plan = training.make_plan(config, ds)
    peak = matmul_rate()
    rows = []
    for level, resolution in enumerate(plan.resolutions):
        rule = training.level_quadrature(plan, level)
        grid = likelihood.make_grid(ds.box_size, ds.pixel_size_angstrom, rule, 1 / resolution)
        limits = likelihood.chunk_limits(jax.default_backend(), config.max_table_elements)
        chunk = likelihood.auto_chunk_size(config.batch_size, grid, limits.table_elements, limits.matrix_rows)
        fns = step_lib.make_step_functions(grid, ds.pixel_size_angstrom, "exponential", 1.0, len(plan.batches),
                                           chunk, remat=config.remat)
        batch = training.make_batch(ds, plan.batches[0], 0)
        volume = jnp.ones((ds.box_size,) * 3, jnp.float32) * 0.01
        t = time.time()
        compiled = jax.jit(fns.gradient).lower(volume, batch).compile()
        compile_s = time.time() - t
        jax.block_until_ready(compiled(volume, batch))
        t = time.time()
        jax.block_until_ready(compiled(volume, batch))
        seconds = time.time() - t
        n_k = grid.freqs.shape[0]
        rows_per_particle = len(rule.inplane_degrees) * len(rule.shifts_angstrom)
        passes = 3 if config.remat else 2  # forward (+ recomputation) + backward matrix products
        flops = 2.0 * rows_per_particle * 2 * n_k * len(rule.directions) * config.batch_size * passes
        rows.append({"resolution_angstrom": float(resolution), "directions": len(rule.directions),
                     "inplane": len(rule.inplane_degrees), "shifts": len(rule.shifts_angstrom),
                     "frequencies_half_plane": int(n_k), "poses_per_particle": int(rule.size),
                     "seconds_per_minibatch": seconds, "compile_seconds": compile_s,
                     "particles_per_second": config.batch_size / seconds,
                     "matmul_gflop": flops / 1e9, "kernel_gflops": flops / seconds / 1e9,
                     "fraction_of_matmul_rate": flops / seconds / 1e9 / peak})
    return {"machine": machine(), "matmul_gflops": peak, "levels": rows}


# (resolution A, direction, in-plane, shift slots): the slots the plain command's 64-px ribosome run used
SAMPLED_CASES = [(33.4, 256, 32, 21), (27.9, 128, 32, 32), (23.3, 128, 32, 32), (23.3, 32, 16, 16),
                 (16.2, 16, 8, 16)]


def sampled() -> dict:
    """One minibatch (200 particles) gradient of the sampled log-likelihood at a 64-px, 5.08 A/px, 132-A-radius
    grid, every direction's slice shared by the minibatch against one slice per drawn slot (where the level has
    fewer directions than the minibatch draws), random draws, linear interpolation at 3x: seconds, best of 3."""
    from recon import likelihood, quadrature
    from recon.blobs import blob_volume
    from recon.ctf import CTFParams

    size, pixel, radius, batch = 64, 5.08, 132.0, 200
    vol = jnp.asarray(blob_volume(size, seed=1)[0], jnp.float32)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(batch, size, size)).astype(np.float32))
    ctf = CTFParams(*(jnp.asarray(np.full(batch, v), jnp.float32)
                      for v in (15000.0, 14000.0, 30.0, 300.0, 2.7, 0.1, 0.0, 0.0, 1.0)))
    rows = []
    for res, *slots in SAMPLED_CASES:
        rule = quadrature.make_quadrature(1 / res, 2 * radius, 45.0, 16.0)
        grid = likelihood.make_grid(size, pixel, rule, 1 / res)
        sizes = [len(rule.directions), len(rule.inplane_degrees), len(rule.shifts_angstrom)]
        slots = [min(k, m) for k, m in zip(slots, sizes)]
        picks = [np.stack([np.sort(rng.choice(m, k, replace=False)) for _ in range(batch)])
                 for m, k in zip(sizes, slots)]
        samples = likelihood.SampleSet(*(jnp.asarray(a) for p in picks for a in (p, np.zeros(p.shape, np.float32))))
        chunk = likelihood.sampled_chunk_size(batch, tuple(slots), grid.freqs.shape[0], 12_000_000)
        row = {"resolution_angstrom": res, "grid": sizes, "slots": slots, "frequencies": int(grid.freqs.shape[0]),
               "shared_by_default": likelihood.shares_slices(sizes[0], batch, slots[0], grid.freqs.shape[0])}
        for share in (False, True):
            f = jax.jit(jax.grad(lambda v, share=share: jnp.sum(likelihood.sampled_log_marginals(
                v, images, ctf, samples, grid, pixel, chunk, False, "linear", 3, share_slices=share).log_marginal)))
            jax.block_until_ready(f(vol))
            times = []
            for _ in range(3):
                t0 = time.time()
                jax.block_until_ready(f(vol))
                times.append(time.time() - t0)
            row["seconds_shared" if share else "seconds_per_slot"] = round(min(times), 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"machine": machine(), "batch": batch, "cases": rows}


def unpack_snapshots(folder: str, pixel: float) -> str:
    """A workdir (metrics.jsonl, maps/iter_*.mrc, final.mrc) rebuilt from the files that
    experiments/gpu_paper_sized.sh brings back (snapshots_*.npz, final_map.npz, metrics.jsonl)."""
    import shutil
    import tempfile

    from recon.io import mrc

    work = tempfile.mkdtemp(prefix="recon_snapshots_")
    os.makedirs(os.path.join(work, "maps"))
    shutil.copy(os.path.join(folder, "metrics.jsonl"), work)
    for path in sorted(glob.glob(os.path.join(folder, "snapshots_*.npz"))):
        with np.load(path) as arrays:
            for name in arrays.files:
                mrc.write_map(os.path.join(work, "maps", f"{name}.mrc"), arrays[name].astype(np.float32), pixel)
    final = os.path.join(folder, "final_map.npz")
    if os.path.exists(final):
        with np.load(final) as arrays:
            mrc.write_map(os.path.join(work, "final.mrc"), arrays["final"], pixel)
    return work


def levels_from_metrics(records: list[dict]) -> list[dict]:
    """Per level of a run, from its metrics.jsonl records (one per iteration): the resolution, the iterations, the
    median over its steps of particles per step second (each step's own rate: the records' ``particles_per_second``
    is a window that reaches back into the previous level) and the fraction of poses evaluated at its last step."""
    levels = {}
    for r in records:
        if "level" in r and r.get("step_seconds"):
            levels.setdefault(r["level"], []).append(r)
    return [{"level": level, "resolution_angstrom": rs[-1]["resolution_angstrom"], "iterations": len(rs),
             "particles_per_second_median": float(np.median([r["particles"] / r["step_seconds"] for r in rs])),
             "fraction_evaluated_last": rs[-1].get("fraction_evaluated")}
            for level, rs in sorted(levels.items())]


def seconds_to_resolution(points: list[dict], resolutions_angstrom=(30.0, 20.0, 15.0, 10.0)) -> dict:
    """The first snapshot's seconds at or below each FSC 0.5 resolution (None where none reached it)."""
    out = {}
    for target in resolutions_angstrom:
        hits = [p["seconds"] for p in points if p["fsc_0.5_angstrom"] <= target]
        out[f"{target:g}"] = min(hits) if hits else None
    return out


def curve(truth_path: str, workdir: str, snapshots: str | None, max_points: int) -> dict:
    from recon import report
    from recon.io import mrc

    truth, pixel = mrc.read_map(truth_path)
    if snapshots:
        workdir = unpack_snapshots(snapshots, pixel)
    points = report.resolution_curve(workdir, truth, max_points, log=lambda line: print(line, flush=True))
    records = report.read_metrics(workdir)
    peak = max((r.get("peak_rss_mb", 0) for r in records), default=None)
    return {"machine": machine(), "workdir": workdir, "points": points, "peak_rss_mb": peak,
            "seconds_to_fsc_0.5": seconds_to_resolution(points), "levels": levels_from_metrics(records)}


@user_errors_exit
def main(argv):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise InputError(f"expected one command, {' or '.join(COMMANDS)}, before the flags; got: "
                         f"{' '.join(argv[1:]) or 'none'}")
    what = argv[1]
    if what == "kernel":
        result = kernel(FLAGS.particles)
    elif what == "sampled":
        result = sampled()
    else:
        result = curve(FLAGS.truth, FLAGS.workdir, FLAGS.snapshots, FLAGS.max_points)
    os.makedirs(RESULTS, exist_ok=True)
    out = FLAGS.out or os.path.join(RESULTS, f"engine_{what}_cpu.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
