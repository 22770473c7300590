"""Engine targets: throughput against the machine's matrix-multiply rate, resolution against time of a
GroEL-GroES run, and memory.

    python experiments/engine_benchmark.py kernel [--particles data/groel64/particles.star]
        float32 matmul rate, and per resolution level of experiments/configs/groel64.py the time of one
        minibatch gradient (200 particles), its matrix-product FLOPs and their rate as a fraction of the matmul rate.
    python experiments/engine_benchmark.py curve --workdir runs/groel64 --truth data/groel64/ground_truth.mrc
        FSC 0.5 / 0.143 against the truth (after alignment) of the map snapshots of a run, against wall time
        (--snapshots FOLDER instead of --workdir: the files experiments/gpu_paper_sized.sh brings back).

Both print JSON and save it under experiments/results/.
"""

import argparse
import glob
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


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


def kernel(args):
    from experiments.configs import groel64
    from recon import likelihood, training
    from recon import step as step_lib
    from recon.data import open_dataset
    from recon.io import metadata

    config = groel64.get_config()
    ds = open_dataset(metadata.read_particles(args.particles), config.particle_radius_angstrom)
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


def curve(args):
    from recon import report
    from recon.io import mrc

    truth, pixel = mrc.read_map(args.truth)
    if args.snapshots:
        args.workdir = unpack_snapshots(args.snapshots, pixel)
    points = report.resolution_curve(args.workdir, truth, args.max_points, log=lambda line: print(line, flush=True))
    peak = max((r.get("peak_rss_mb", 0) for r in report.read_metrics(args.workdir)), default=None)
    return {"machine": machine(), "workdir": args.workdir, "points": points, "peak_rss_mb": peak}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["kernel", "curve"])
    parser.add_argument("--particles", default="data/groel64/particles.star")
    parser.add_argument("--workdir", default="runs/groel64")
    parser.add_argument("--truth", default="data/groel64/ground_truth.mrc")
    parser.add_argument("--snapshots", default=None, help="folder from experiments/gpu_paper_sized.sh (instead of "
                        "--workdir)")
    parser.add_argument("--max_points", type=int, default=8)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result = kernel(args) if args.what == "kernel" else curve(args)
    os.makedirs(RESULTS, exist_ok=True)
    out = args.out or os.path.join(RESULTS, f"engine_{args.what}_cpu.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
