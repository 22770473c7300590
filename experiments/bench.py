r"""Benchmark harness: one command, one JSON with the machine's description, saved as --out/bench_NAME.json
(default experiments/results/) and printed. Run from the repository root:

    python -m experiments.bench --particles data/groel64/particles.star --map data/groel64/ground_truth.mrc \
        [--config experiments/configs/groel64_is.py] [--run runs/figures/sagd --truth data/groel64/ground_truth.mrc]
        [--name cpu_2core]

Measures
- ``matmul_gflops``: the float32 matrix-multiply rate of the default device (2048 x 2048, jitted);
- per resolution level of the config's schedule, one minibatch of the data at the map ``--map``: the exhaustive
  gradient's time (up to ``--max_exhaustive_poses`` poses per particle; above, estimated from its FLOPs at the last
  timed level's fraction of the matmul rate), its matrix-product FLOPs and their rate as a fraction of the matmul
  rate, particles per second; and the importance-sampled gradient's time, particles per second and the fraction of
  the quadrature it evaluates (proposals built from that level's exact marginals);
- with ``--run`` (a finished run folder) and ``--truth``: the run's own particles per second per level, exhaustive
  and importance-sampled apart, the wall time at which its snapshots first reach FSC 0.5 against the truth at 30,
  20, 15 and 10 A (aligned; ``null`` when never), and its peak memory;
- with ``--scaling 1,2,4``: one minibatch gradient split over that many devices (data parallelism);
- ``peak_rss_mb`` of this process, and ``device_peak_memory_mb`` where the backend reports it (GPU, TPU).

``--budget_seconds`` starts no level after that many seconds (skipped levels are listed as such). The JSON is
rewritten atomically after every level and stage, so a bench killed at its time limit keeps what it measured.
Machine: any (CPU or one GPU); on a GPU, ``experiments/gpu_bench.sh`` runs the simulation, a paper-sized run and
this bench within one 10-minute command.
"""

from __future__ import annotations

import json
import os
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from experiments.engine_benchmark import RESULTS, machine, matmul_rate
from recon import cli, training
from recon.errors import InputError, user_errors_exit

THRESHOLDS_ANGSTROM = (30.0, 20.0, 15.0, 10.0)
FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags (absl flags are global: defined only when this module is the entry point)."""
    flags.DEFINE_string("particles", None, "Particle STAR/.cs file (required).")
    flags.DEFINE_string("map", None, "map at which to evaluate the gradients (e.g. the truth; required)")
    flags.DEFINE_string("config", "experiments/configs/groel64_is.py", "Run config file (its schedule and settings).")
    flags.DEFINE_string("run", None, "a finished run folder, for the time to 30/20/15/10 A")
    flags.DEFINE_string("truth", None, "ground-truth map for --run")
    flags.DEFINE_integer("max_points", 12, "Snapshots of --run evaluated against --truth.")
    flags.DEFINE_integer("max_levels", 0, "0: all levels of the schedule")
    flags.DEFINE_float("max_exhaustive_poses", 6e6,
                       "time the exhaustive gradient only up to this many poses per particle (above: estimated)")
    flags.DEFINE_string("name", None, "results/bench_NAME.json (default: the JAX backend)")
    flags.DEFINE_string("scaling", "", "e.g. 1,2,4: also time one minibatch gradient split over that many devices "
                        "(CPU: XLA_FLAGS=--xla_force_host_platform_device_count=4)")
    flags.DEFINE_integer("scaling_level", 0, "Level of the schedule timed by --scaling.")
    flags.DEFINE_string("out", RESULTS, "folder for bench_NAME.json")
    flags.DEFINE_float("budget_seconds", 0.0,
                       "start no further level after this many seconds (0: no limit); skipped levels say so")


def load_config(path: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def timed(fn, *args):
    """(seconds of the second call, compile seconds, output) of a jitted function."""
    t = time.time()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.time() - t
    jax.block_until_ready(compiled(*args))
    t = time.time()
    out = jax.block_until_ready(compiled(*args))
    return time.time() - t, compile_s, out


def levels(config, particles: str, map_path: str, peak_gflops: float, max_levels: int,
           max_exhaustive_poses: float, deadline: float = float("inf"), on_row=None) -> list[dict]:
    """One row per level. The exhaustive gradient is timed where a particle has at most ``max_exhaustive_poses``
    poses (above that, training never takes it: importance sampling has started, and on a 2-core CPU with 24 GB
    the gradient's stored intermediates need tens of GB); its time there is estimated from the FLOPs at the
    last timed level's fraction of the matmul rate. The importance-sampled gradient is timed at every level.
    No level is started after ``deadline`` (``time.time()``); ``on_row(rows)`` is called after each level."""
    from recon import likelihood, sampling
    from recon import step as step_lib
    from recon.data import open_dataset
    from recon.io import metadata, mrc

    ds = open_dataset(metadata.read_particles(particles, config.pixel_size_angstrom or None),
                      config.particle_radius_angstrom or None, config.invert_contrast)
    volume = jnp.asarray(mrc.read_map(map_path)[0], jnp.float32)
    if volume.shape[0] != ds.box_size:
        raise InputError(f"{map_path}: box {volume.shape[0]} differs from the particles' {ds.box_size}")
    plan = training.make_plan(config, ds)
    pixel = ds.pixel_size_angstrom
    batch_size = plan.batches.shape[1]
    batch = training.make_batch(ds, plan.batches[0], 0)
    limits = likelihood.chunk_limits(jax.default_backend(), config.max_table_elements)
    caps = training.sampler_capacities(config)
    rows = []
    fraction = None  # of the matmul rate, at the last timed level
    for level, resolution in enumerate(plan.resolutions[:max_levels or None]):
        if time.time() > deadline:
            rows.append({"level": level, "resolution_angstrom": float(resolution),
                         "skipped": "--budget_seconds spent before this level"})
            continue
        rule = training.level_quadrature(plan, level)
        grid = likelihood.make_grid(ds.box_size, pixel, rule, 1.0 / resolution)
        chunk = likelihood.auto_chunk_size(batch_size, grid, limits.table_elements, limits.matrix_rows)
        sampler = sampling.make_level_sampler(rule, training.sampler_settings(config), caps)
        s_chunk = likelihood.sampled_chunk_size(batch_size, sampler.capacities, grid.freqs.shape[0],
                                                limits.sampled_elements)
        fns = step_lib.make_step_functions(grid, pixel, config.prior.kind, 1.0, len(plan.batches), chunk,
                                           config.optimizer.kind, None, config.remat, config.likelihood_kernel,
                                           s_chunk, config.likelihood_oversampling)
        n_k = grid.freqs.shape[0]
        passes = 3 if config.remat else 2  # forward (+ recomputation) + backward matrix products
        flops = 2.0 * len(rule.inplane_degrees) * len(rule.shifts_angstrom) * 2 * n_k * len(rule.directions) \
            * batch_size * passes
        row = {"level": level, "resolution_angstrom": float(resolution), "poses_per_particle": int(rule.size),
               "directions": len(rule.directions), "inplane": len(rule.inplane_degrees),
               "shifts": len(rule.shifts_angstrom), "frequencies_half_plane": int(n_k)}
        if rule.size <= max_exhaustive_poses or fraction is None:
            seconds, compile_s, ((_, result), _) = timed(fns.gradient, volume, batch)
            fraction = flops / seconds / 1e9 / peak_gflops
            row["exhaustive"] = {"seconds_per_minibatch": seconds, "compile_seconds": compile_s,
                                 "particles_per_second": batch_size / seconds, "matmul_gflop": flops / 1e9,
                                 "fraction_of_matmul_rate": fraction}
        else:
            result = jax.jit(fns.evaluate)(volume, batch.images, batch.ctf)  # exact marginals, no gradient
            seconds = flops / 1e9 / (fraction * peak_gflops)
            row["exhaustive"] = {"estimated": True, "seconds_per_minibatch": seconds,
                                 "particles_per_second": batch_size / seconds, "matmul_gflop": flops / 1e9,
                                 "fraction_of_matmul_rate": fraction,
                                 "note": f"not timed: {rule.size} poses per particle > --max_exhaustive_poses; "
                                         "FLOPs at the last timed level's fraction of the matmul rate"}
        # The state a particle has after an exact visit at this level, previous visit late enough in the run for
        # the annealing (alpha, T) to be at its floor: the steady state of Sec. 3.3.
        state = sampling.init_state(batch_size, caps)
        old = tuple(sampling.FactorState(*(jnp.asarray(a) for a in getattr(state, f))) for f in sampling.FACTORS)
        new, _ = jax.jit(sampler.record_exhaustive)(result, old)
        keys = training.particle_keys(config.seed, 0, 1, jnp.arange(batch_size, dtype=jnp.int32))
        samples, stats = jax.jit(sampler.propose)(new, jnp.full((batch_size,), 10_000, jnp.int32), keys)
        count = np.prod([np.asarray(stats[f"{f}_count"], np.float64) for f in sampling.FACTORS], axis=0)
        s_seconds, s_compile, _ = timed(fns.gradient_sampled, volume, batch, samples)
        row["importance_sampled"] = {"seconds_per_minibatch": s_seconds, "compile_seconds": s_compile,
                                     "particles_per_second": batch_size / s_seconds,
                                     "fraction_evaluated": float(np.mean(count / rule.size)),
                                     "speedup_over_exhaustive": seconds / s_seconds}
        print(json.dumps(row), flush=True)
        rows.append(row)
        if on_row is not None:
            on_row(rows)
    return rows


def scaling(config, particles: str, map_path: str, counts: list[int], level: int) -> list[dict]:
    """Seconds per minibatch gradient (exhaustive, level ``level``) with the minibatch split over 1, 2, ...
    devices (recon/step.py's data parallelism)."""
    from recon import likelihood
    from recon import step as step_lib
    from recon.data import open_dataset
    from recon.io import metadata, mrc

    ds = open_dataset(metadata.read_particles(particles, config.pixel_size_angstrom or None),
                      config.particle_radius_angstrom or None, config.invert_contrast)
    plan = training.make_plan(config, ds)
    resolution = plan.resolutions[level]
    rule = training.level_quadrature(plan, level)
    grid = likelihood.make_grid(ds.box_size, ds.pixel_size_angstrom, rule, 1.0 / resolution)
    limits = likelihood.chunk_limits(jax.default_backend(), config.max_table_elements)
    batch_size = plan.batches.shape[1]
    volume = jnp.asarray(mrc.read_map(map_path)[0], jnp.float32)
    batch = training.make_batch(ds, plan.batches[0], 0)
    rows = []
    for n in counts:
        mesh = step_lib.make_mesh(n)
        chunk = likelihood.auto_chunk_size(batch_size // n, grid, limits.table_elements, limits.matrix_rows)
        fns = step_lib.make_step_functions(grid, ds.pixel_size_angstrom, config.prior.kind, 1.0, len(plan.batches),
                                           chunk, remat=config.remat, kernel=config.likelihood_kernel,
                                           oversampling=config.likelihood_oversampling, mesh=mesh)
        placed, _ = step_lib.place_batch(batch, mesh)
        seconds, compile_s, _ = timed(fns.gradient, step_lib.replicate(volume, mesh), placed)
        rows.append({"devices": n, "resolution_angstrom": float(resolution), "seconds_per_minibatch": seconds,
                     "compile_seconds": compile_s, "particles_per_second": batch_size / seconds})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def time_to_resolution(run: str, metrics: list[dict], truth_path: str, max_points: int) -> dict:
    from recon import report
    from recon.io import mrc

    points = report.resolution_curve(run, mrc.read_map(truth_path)[0], max_points, log=print)
    reached = {}
    for threshold in THRESHOLDS_ANGSTROM:
        hits = [p["seconds"] for p in points if p["fsc_0.5_angstrom"] <= threshold]
        reached[f"{threshold:g}"] = min(hits) if hits else None
    return {"run": run, "seconds_to_fsc_0.5": reached, "points": points,
            "run_peak_rss_mb": max((r.get("peak_rss_mb", 0) for r in metrics), default=None),
            "run_device_peak_mb": max((r["device_peak_mb"] for r in metrics if "device_peak_mb" in r), default=None)}


def run_rates(metrics: list[dict]) -> list[dict]:
    """Particles per second of a run's own minibatches, per level, exhaustive and importance-sampled apart: the
    median over the level's iterations of that kind of ``particles / step_seconds`` (the first of each kind left
    out: it compiles); runs from before ``step_seconds`` was logged give the logged 20-iteration average.
    ``metrics``: the run's ``metrics.jsonl`` records."""
    by_level: dict = {}
    for r in metrics:
        if "particles_per_second" not in r or "level" not in r:
            continue
        rate = r["particles"] / r["step_seconds"] if r.get("step_seconds") else r["particles_per_second"]
        entry = by_level.setdefault(r["level"], {"resolution_angstrom": r.get("resolution_angstrom")})
        entry.setdefault("sampled" if r.get("sampled") else "exhaustive", []).append(rate)
    rows = []
    for level in sorted(by_level):
        row = {"level": level, "resolution_angstrom": by_level[level]["resolution_angstrom"]}
        for kind in ("exhaustive", "sampled"):
            rates = by_level[level].get(kind, [])
            if len(rates) > 1:
                row[f"{kind}_particles_per_second"] = float(np.median(rates[1:]))
                row[f"{kind}_iterations"] = len(rates)
        rows.append(row)
    return rows


def save(record: dict, path: str) -> None:
    """Write the record atomically (a killed bench leaves the last complete stage, never a half-written file)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)


@user_errors_exit
def main(argv):
    cli.only_flags(argv, "particles", "map")
    if FLAGS.run and not FLAGS.truth:
        raise InputError("--run needs --truth")
    config = load_config(FLAGS.config)
    start = time.time()
    name = FLAGS.name or jax.default_backend()
    os.makedirs(FLAGS.out, exist_ok=True)
    path = os.path.join(FLAGS.out, f"bench_{name}.json")
    peak = matmul_rate()
    record = {"machine": machine(), "config": FLAGS.config, "particles": FLAGS.particles, "map": FLAGS.map,
              "matmul_gflops": peak, "levels": []}

    def stage_done():  # the JSON is rewritten after every stage and level
        record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        record["device_peak_memory_mb"] = training.device_peak_mb()
        record["bench_seconds"] = time.time() - start
        save(record, path)

    def level_done(rows):
        record["levels"] = rows
        stage_done()

    deadline = start + FLAGS.budget_seconds if FLAGS.budget_seconds > 0 else float("inf")
    if FLAGS.run:  # first: on a time-limited machine the run's numbers matter most
        from recon import report

        metrics = report.read_metrics(FLAGS.run)
        record["run_rates"] = run_rates(metrics)
        stage_done()
        record["time_to_resolution"] = time_to_resolution(FLAGS.run, metrics, FLAGS.truth, FLAGS.max_points)
        stage_done()
    level_done(levels(config, FLAGS.particles, FLAGS.map, peak, FLAGS.max_levels, FLAGS.max_exhaustive_poses, deadline,
                      on_row=level_done))
    if FLAGS.scaling:
        record["scaling"] = scaling(config, FLAGS.particles, FLAGS.map, [int(n) for n in FLAGS.scaling.split(",")],
                                    FLAGS.scaling_level)
        stage_done()
    print(json.dumps({k: v for k, v in record.items() if k != "levels"}, indent=1))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
