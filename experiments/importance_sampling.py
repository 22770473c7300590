r"""Importance-sampling experiments: the paper's Figs. 6, 7, 3 and 8 (Sec. 3.3, Sec. 4).

    # Fig. 6: accuracy of log p(I | V) with IS against the exact sum, and the fraction evaluated, against s0
    python -m experiments.importance_sampling fig6 --particles data/groel64/particles.star \
        --config experiments/configs/groel64_is.py --previous_map runs/groel64_is/maps/iter_00000400.mrc \
        --map runs/groel64_is/maps/iter_00000450.mrc --previous_resolution 20.6 --resolution 17.5
    # Figs. 7, 3, 8 from a finished (or running) reconstruction's workdir
    python -m experiments.importance_sampling fig7 --workdir runs/groel64_is
    python -m experiments.importance_sampling fig3 --workdir runs/groel64_is
    python -m experiments.importance_sampling fig8 --workdir runs/groel64_is --particles data/groel64/particles.star
    # Speed-up at full size: the samplers' chain through every level (40 A -> 10 A) with a fixed map
    python -m experiments.importance_sampling chain --particles data/groel128/particles.star \
        --config experiments/configs/groel128_is.py --map data/groel128/ground_truth.mrc --num_particles 200

``chain`` measures the fraction of the quadrature evaluated at each level when every particle's samplers are
carried from 40 A to the final resolution the way a run carries them (exhaustive first visit, then IS), with a
fixed map (the ground truth: the converged case, as at the end of a run); it also reports how far the most probable
sampled pose is from the true one. Each writes a PNG and a JSON of the plotted numbers under ``--out`` (default
experiments/results/). Run from the repository root.
Fig. 6 builds each particle's proposal the way a run does: from the exact marginals of its previous visit (the
earlier map, one level coarser), annealed as at a late iteration, then samples at the finer level with the later
map; the exact sum at the finer level is the reference.
"""

from __future__ import annotations

import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from recon import checkpoint, cli, likelihood, quadrature, sampling, training
from recon.data import open_dataset
from recon.errors import InputError, user_errors_exit
from recon.io import metadata, mrc

FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags (absl flags are global: defined only when this module is the entry point)."""
    flags.DEFINE_string("particles", None, "particle STAR/.cs file")
    flags.DEFINE_string("config", "experiments/configs/groel64_is.py", "run config (radius, shifts, kernel)")
    flags.DEFINE_string("map", None, "fig6: the partly converged map")
    flags.DEFINE_string("previous_map", None, "fig6: the map at the particles' previous visit")
    flags.DEFINE_float("resolution", 17.5, "fig6: resolution (A) of the evaluated level")
    flags.DEFINE_float("previous_resolution", 20.6, "fig6: resolution (A) of the previous visit")
    flags.DEFINE_integer("num_particles", 50, "fig6: particles evaluated")
    flags.DEFINE_list("s0", ["0.5", "1", "2", "5", "10", "20", "50"], "fig6: ESS scaling factors")
    flags.DEFINE_integer("repeats", 3, "fig6: independent draws per particle and s0")
    flags.DEFINE_string("run_config", None, "fig6: a run's config.json (or workdir): its radius, shifts, kernel and "
                        "sampler settings (bandwidth, annealing, the points its state keeps) instead of --config's; "
                        "--resolution and --previous_resolution snap to its levels. Give the slots and draws its "
                        "run.log reports for the level with --slots and --buffers")
    flags.DEFINE_list("slots", None, "fig6: distinct points per factor (directions,inplane,shifts); default "
                      "1024,128,128 (rarely capped), or the config's max_* with --run_config")
    flags.DEFINE_list("buffers", None, "fig6: most draws per factor (default: the slots)")
    flags.DEFINE_list("state_capacity", None, "fig6: points kept per factor between visits (default: the slots)")
    flags.DEFINE_float("bandwidth_factor", 0.0, "fig6: kernel sigma in previous spacings (0: the config's)")
    flags.DEFINE_float("temperature_min", 0.0, "fig6: the annealing's final temperature (0: the config's)")
    flags.DEFINE_float("alpha_min", -1.0, "fig6: the annealing's final uniform share (-1: the config's)")
    flags.DEFINE_integer("visits_per_level", 2, "chain: visits of every particle per level")
    flags.DEFINE_integer("symmetry_order", 7, "chain: C_n order of the particle for the pose check (1: none)")
    flags.DEFINE_string("workdir", None, "figs 7, 3, 8: a reconstruction workdir")
    flags.DEFINE_string("out", "experiments/results", "output folder")
    flags.DEFINE_string("tag", "", "suffix for the output names")


def load_config(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def save(name, record, fig):
    os.makedirs(FLAGS.out, exist_ok=True)
    base = os.path.join(FLAGS.out, name + FLAGS.tag)
    with open(base + ".json", "w") as f:
        json.dump(record, f, indent=1)
    fig.savefig(base + ".png", dpi=120, bbox_inches="tight")
    print(json.dumps({k: v for k, v in record.items() if not isinstance(v, list) or len(v) < 20}, indent=1))
    print(f"wrote {base}.png and {base}.json")


def level_setup(config, dataset, resolution):
    plan = training.make_plan(config, dataset)
    rule = quadrature.make_quadrature(1.0 / resolution, plan.extent_angstrom, plan.max_shift_angstrom,
                                      plan.shift_sigma_angstrom)
    grid = likelihood.make_grid(dataset.box_size, dataset.pixel_size_angstrom, rule, 1.0 / resolution)
    return plan, rule, grid


def run_config(workdir_or_json):
    """A run's full config from its config.json (a workdir or the file)."""
    import ml_collections

    path = workdir_or_json
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def factor_ints(values, default):
    return dict(zip(sampling.FACTORS, [int(v) for v in values])) if values else dict(default)


def fig6(config):
    import matplotlib.pyplot as plt

    if FLAGS.run_config:
        config = run_config(FLAGS.run_config)
    c = config.sampling
    wide = {"directions": 1024, "inplane": 128, "shifts": 128}
    run_slots = training.sampler_capacities(config) if FLAGS.run_config else wide
    caps = factor_ints(FLAGS.slots, run_slots)  # distinct points per visit
    buffers = factor_ints(FLAGS.buffers, caps)
    state_caps = factor_ints(FLAGS.state_capacity, training.sampler_capacities(config) if FLAGS.run_config else caps)
    bandwidth = FLAGS.bandwidth_factor or c.bandwidth_factor

    dataset = open_dataset(metadata.read_particles(FLAGS.particles), config.particle_radius_angstrom or None,
                           config.invert_contrast)
    pixel = dataset.pixel_size_angstrom
    kernel, over = config.likelihood_kernel, config.likelihood_oversampling
    volume = jnp.asarray(mrc.read_map(FLAGS.map)[0])
    previous_volume = jnp.asarray(mrc.read_map(FLAGS.previous_map)[0])
    resolution, previous_resolution = FLAGS.resolution, FLAGS.previous_resolution
    if FLAGS.run_config:  # the run's own levels (17.4 means the level printed as 17.4 A)
        levels = np.asarray(training.make_plan(config, dataset).resolutions, np.float64)
        resolution, previous_resolution = (float(levels[np.argmin(np.abs(levels - r))])
                                           for r in (resolution, previous_resolution))
    plan, prev_rule, prev_grid = level_setup(config, dataset, previous_resolution)
    _, rule, grid = level_setup(config, dataset, resolution)
    n = FLAGS.num_particles
    rows = plan.train[np.random.default_rng(0).choice(len(plan.train), n, replace=False)]
    batch = training.make_batch(dataset, rows, 0)
    exact_fns = {id(g): jax.jit(lambda v, im, c, g=g: likelihood.batch_log_marginals(v, im, c, g, pixel, 1, False,
                                                                                    kernel, over))
                 for g in (prev_grid, grid)}
    exact_fn = lambda v, im, c, g: exact_fns[id(g)](v, im, c)  # noqa: E731
    settings = dict(tau0=c.tau0 or 1.0, alpha_min=c.alpha_min if FLAGS.alpha_min < 0 else FLAGS.alpha_min,
                    temperature_min=FLAGS.temperature_min or c.temperature_min,
                    bandwidth_factor=bandwidth)
    prev_sampler = sampling.make_level_sampler(prev_rule, sampling.Settings(**settings), state_caps)
    empty = sampling.init_state(n, state_caps)
    old = tuple(sampling.FactorState(*(jnp.asarray(a) for a in getattr(empty, f))) for f in sampling.FACTORS)
    exact, states, moved, mass = [], [], [], []
    for i in range(n):
        one = lambda a: a[i:i + 1]  # noqa: E731
        prev = exact_fn(previous_volume, batch.images[i:i + 1], jax.tree_util.tree_map(one, batch.ctf), prev_grid)
        state, _ = prev_sampler.record_exhaustive(prev, jax.tree_util.tree_map(one, old))
        states.append(state)
        now = exact_fn(volume, batch.images[i:i + 1], jax.tree_util.tree_map(one, batch.ctf), grid)
        exact.append(float(now.log_marginal[0]))
        # how far the most probable direction moved between the two maps, and the share of the previous direction
        # marginal (smoothed onto this level's directions as the proposal is) at the new most probable direction
        before, after = np.asarray(prev.post_dir[0], np.float64), np.asarray(now.post_dir[0], np.float64)
        d_before, d_after = prev_rule.directions[np.argmax(before)], rule.directions[np.argmax(after)]
        moved.append(float(np.degrees(np.arccos(np.clip(np.dot(d_before, d_after), -1.0, 1.0)))))
        smoothed = np.asarray(sampling.proposal(
            sampling.FactorState(jnp.asarray(prev_rule.directions, jnp.float32),
                                 jnp.asarray(np.log(np.maximum(before / before.sum(), 1e-38)), jnp.float32),
                                 jnp.asarray(np.radians(prev_rule.angular_step_degrees), jnp.float32)),
            jnp.asarray(rule.directions, jnp.float32), "vmf", bandwidth, 0.0, 1.0))
        mass.append(float(smoothed[np.argmax(after)]))
        print(f"exact sums: particle {i + 1}/{n}", end="\r", flush=True)
    exact = np.array(exact)
    states = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *states)
    late = jnp.full((n,), 10_000)  # annealed as late in a run: alpha = alpha_min, T = T_min
    full_size = rule.size
    rows_out = []
    for s0 in [float(s) for s in FLAGS.s0]:
        sampler = sampling.make_level_sampler(rule, sampling.Settings(s0=s0, **settings), state_caps, caps, buffers)
        propose = jax.jit(sampler.propose)
        evaluate = jax.jit(lambda v, im, c, s: likelihood.sampled_log_marginals(v, im, c, s, grid, pixel, 1, False,
                                                                               kernel, over))
        rel, absolute, signed, frac, capped, capped_any = [], [], [], [], [], []
        for r in range(FLAGS.repeats):
            keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.PRNGKey(100 + r), jnp.arange(n))
            samples, stats = propose(states, late, keys)
            est = np.asarray(evaluate(volume, batch.images, batch.ctf, samples).log_marginal, np.float64)
            absolute.append(np.abs(est - exact))
            signed.append((est - exact) / np.mean(np.abs(exact)))
            rel.append(np.abs(est - exact) / np.abs(exact))
            count = np.prod([np.asarray(stats[f"{f}_count"], np.float64) for f in sampling.FACTORS], axis=0)
            frac.append(count / full_size)
            by_factor = np.array([np.asarray(stats[f"{f}_wanted"]) > np.asarray(stats[f"{f}_num_draws"])
                                  for f in sampling.FACTORS])  # (3, particles)
            capped.append(np.mean(by_factor))
            capped_any.append(np.mean(np.any(by_factor, axis=0)))
        row = {"s0": s0, "relative_error_mean": float(np.mean(rel)), "relative_error_median": float(np.median(rel)),
               "relative_bias": float(np.mean(signed)),
               "abs_error_nats_mean": float(np.mean(absolute)), "fraction_evaluated_mean": float(np.mean(frac)),
               "capped_fraction": float(np.mean(capped)), "particles_capped": float(np.mean(capped_any))}
        rows_out.append(row)
        print(row)
    record = {"map": FLAGS.map, "previous_map": FLAGS.previous_map, "resolution_angstrom": resolution,
              "previous_resolution_angstrom": previous_resolution, "num_particles": n,
              "best_direction_moved_degrees": moved, "previous_marginal_at_new_best_direction": mass,
              "particles_best_direction_moved_over_10_degrees": int(np.sum(np.asarray(moved) > 10.0)),
              "repeats": FLAGS.repeats, "full_quadrature_points": int(full_size), "slots": caps,
              "buffers": buffers, "state_capacity": state_caps, "bandwidth_factor": bandwidth,
              "alpha_min": settings["alpha_min"], "temperature_min": settings["temperature_min"],
              "run_config": FLAGS.run_config,
              "mean_abs_log_likelihood": float(np.mean(np.abs(exact))), "rows": rows_out}
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    s0s = [r["s0"] for r in rows_out]
    ax.loglog(s0s, [r["relative_error_mean"] for r in rows_out], "o-", color="tab:blue")
    ax.set_xlabel("ESS scaling factor s0")
    ax.set_ylabel("relative error of log p(I|V)", color="tab:blue")
    ax.axhline(1e-3, color="tab:blue", ls=":", lw=0.8)
    ax2 = ax.twinx()
    ax2.loglog(s0s, [r["fraction_evaluated_mean"] for r in rows_out], "s-", color="tab:red")
    ax2.set_ylabel("fraction of quadrature evaluated", color="tab:red")
    ax.set_title(f"Fig. 6: IS accuracy at {resolution:.1f} A ({n} particles)")
    save("fig6_is_accuracy", record, fig)


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def fig7(config):
    import matplotlib.pyplot as plt

    del config
    records = [r for r in read_metrics(FLAGS.workdir) if "fraction_evaluated" in r]
    it = [r["iteration"] for r in records]
    frac = [r["fraction_evaluated"] for r in records]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.semilogy(it, frac, lw=0.8, label="overall")
    for f in sampling.FACTORS:
        ax.semilogy(it, [r[f"fraction_{f}"] for r in records], lw=0.6, alpha=0.7, label=f)
    ax.set_xlabel("iteration")
    ax.set_ylabel("fraction of quadrature points evaluated")
    ax.legend(fontsize=8)
    ax.set_title("Fig. 7: importance sampling speed-up during a run")
    levels = {}
    for r in records:
        levels.setdefault(r["resolution_angstrom"], []).append(r["fraction_evaluated"])
    per_level = {f"{k:.1f}": {"mean_fraction": float(np.mean(v)), "last_fraction": float(v[-1]),
                              "iterations": len(v)} for k, v in levels.items()}
    rates = {}
    for r in records:
        rates.setdefault(f"{r['resolution_angstrom']:.1f}", []).append(r["particles_per_second"])
    record = {"workdir": FLAGS.workdir, "per_level": per_level,
              "particles_per_second_per_level": {k: float(np.median(v)) for k, v in rates.items()},
              "final_fraction_mean_last_20": float(np.mean(frac[-20:])), "iteration": it, "fraction": frac}
    save("fig7_fraction_evaluated", record, fig)


def fig3(config):
    import matplotlib.pyplot as plt

    records = read_metrics(FLAGS.workdir)
    with open(os.path.join(FLAGS.workdir, "config.json")) as f:
        run_config = json.load(f)
    del config
    del run_config
    import re

    with open(os.path.join(FLAGS.workdir, "run.log")) as f:  # "... 50 minibatches of 200 ..."
        n_batches = int(re.search(r"(\d+) minibatches of", f.read()).group(1))
    epochs = {}
    for r in records:
        if "kl_directions" in r:
            epochs.setdefault(r.get("epoch", (r["iteration"] - 1) // n_batches), []).append(r["kl_directions"])
    e = sorted(epochs)
    kl = [float(np.mean(epochs[k])) for k in e]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.semilogy([k + 1 for k in e], kl, "o-")
    ax.set_xlabel("epoch")
    ax.set_ylabel("KL(phi_R now || phi_R previous visit) [nats]")
    ax.set_title("Fig. 3: stability of the direction marginals")
    save("fig3_kl_directions", {"workdir": FLAGS.workdir, "iterations_per_epoch": n_batches,
                                "epoch": [k + 1 for k in e], "mean_kl_nats": kl}, fig)


def fig8(config):
    import matplotlib.pyplot as plt

    del config
    with open(os.path.join(FLAGS.workdir, "config.json")) as f:
        run_config = json.load(f)
    cfg = load_config(FLAGS.config)
    cfg.update_from_flattened_dict({})
    for key, value in run_config.items():
        if key in cfg and not hasattr(cfg[key], "keys"):
            cfg[key] = value
        elif key in cfg:
            for k2, v2 in value.items():
                cfg[key][k2] = v2
    dataset = open_dataset(metadata.read_particles(FLAGS.particles), cfg.particle_radius_angstrom or None,
                           cfg.invert_contrast)
    caps = training.sampler_capacities(cfg)
    host = sampling.init_state(len(dataset), caps)
    template = {"best_pose": np.zeros((len(dataset), 3), np.int32), "best_level": np.zeros(len(dataset), np.int32),
                "sampler": host}
    files = checkpoint.list_checkpoints(os.path.join(FLAGS.workdir, "checkpoints"))
    if not files:
        raise InputError(f"{FLAGS.workdir}: no checkpoint to read the sampler state from")
    data = np.load(files[-1])
    leaves, treedef = jax.tree_util.tree_flatten(template)
    count = sum(k.startswith("leaf_") for k in data.files)
    # the host tree is the last part of the checkpointed (optimiser, host) pair
    host_leaves = [data[f"leaf_{i:05d}"] for i in range(count - len(leaves), count)]
    tree = jax.tree_util.tree_unflatten(treedef, host_leaves)
    state = tree["sampler"]
    seen = np.asarray(state.last_visit) >= 0
    plan = training.make_plan(cfg, dataset)
    level = int(np.max(tree["best_level"]))
    rule = training.level_quadrature(plan, level)
    sampler_settings = training.sampler_settings(cfg)
    targets = jnp.asarray(rule.directions, jnp.float32)

    def q_of(points, log_phi, spacing, last):
        alpha, inv_t = sampling.annealing(last, sampler_settings.tau0, sampler_settings.alpha_min,
                                          sampler_settings.temperature_min)
        return sampling.proposal(sampling.FactorState(points, log_phi, spacing), targets, "vmf",
                                 sampler_settings.bandwidth_factor, alpha, inv_t)

    q_fn = jax.jit(jax.vmap(q_of))
    d = state.directions
    idx = np.nonzero(seen)[0]
    total = np.zeros(len(rule.directions))
    for start in range(0, len(idx), 500):
        sel = idx[start:start + 500]
        total += np.asarray(q_fn(jnp.asarray(d.points[sel]), jnp.asarray(d.log_phi[sel]), jnp.asarray(d.spacing[sel]),
                                 jnp.asarray(state.last_visit[sel]))).sum(0)
    mean_q = total / max(len(idx), 1)
    angles = quadrature.directions_to_angles(rule.directions)
    lon = np.radians(angles[:, 0])
    lat = np.pi / 2 - np.radians(angles[:, 1])
    fig = plt.figure(figsize=(7, 4))
    ax = fig.add_subplot(111, projection="mollweide")
    sc = ax.scatter(lon, lat, c=mean_q * len(mean_q), s=4, cmap="viridis")
    fig.colorbar(sc, ax=ax, orientation="horizontal", pad=0.08, label="mean q_R x number of directions")
    ax.set_title(f"Fig. 8: average direction proposal over {len(idx)} particles (Mollweide, equal-area)")
    ax.grid(True, lw=0.3)
    ratio = float(mean_q.max() / mean_q.min())
    save("fig8_direction_proposal", {"workdir": FLAGS.workdir, "particles": int(len(idx)),
                                     "directions": int(len(mean_q)), "resolution_angstrom": float(plan.resolutions[level]),
                                     "max_over_min": ratio, "entropy_ratio": float(
                                         -np.sum(mean_q * np.log(mean_q)) / math.log(len(mean_q)))}, fig)


def rotation_error_degrees(a, b):
    """Angles (degrees) of ``a b^T`` for rotation stacks ``(n, 3, 3)``."""
    cos = (np.einsum("nij,nij->n", a, b) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def chain(config):
    import matplotlib.pyplot as plt

    from recon import conventions

    meta = metadata.read_particles(FLAGS.particles)
    dataset = open_dataset(meta, config.particle_radius_angstrom or None, config.invert_contrast)
    pixel = dataset.pixel_size_angstrom
    kernel, over = config.likelihood_kernel, config.likelihood_oversampling
    volume = jnp.asarray(mrc.read_map(FLAGS.map)[0])
    plan = training.make_plan(config, dataset)
    n = FLAGS.num_particles
    rows = np.sort(plan.train[np.random.default_rng(0).choice(len(plan.train), n, replace=False)])
    batch = training.make_batch(dataset, rows, 0)
    caps = training.sampler_capacities(config)
    settings = training.sampler_settings(config)
    state = sampling.init_state(n, caps)
    factors = lambda: tuple(sampling.FactorState(*(jnp.asarray(a) for a in getattr(state, f)))  # noqa: E731
                            for f in sampling.FACTORS)
    true_rot = conventions.euler_to_matrix(meta.angles_degrees[rows]) if meta.angles_degrees is not None else None
    levels_out = []
    visit = 0
    for level, resolution in enumerate(plan.resolutions):
        rule = training.level_quadrature(plan, level)
        grid = likelihood.make_grid(dataset.box_size, pixel, rule, 1.0 / resolution)
        sampler = sampling.make_level_sampler(rule, settings, caps)
        limits = likelihood.chunk_limits(jax.default_backend(), config.max_table_elements)
        chunk = likelihood.sampled_chunk_size(n, sampler.capacities, grid.freqs.shape[0], limits.sampled_elements)
        sampled_eval = jax.jit(lambda v, im, c, s, g=grid, ch=chunk: likelihood.sampled_log_marginals(
            v, im, c, s, g, pixel, ch, False, kernel, over))
        for _ in range(FLAGS.visits_per_level):
            t0 = time.time()
            if visit == 0:
                ex_chunk = likelihood.auto_chunk_size(n, grid, limits.table_elements, limits.matrix_rows)
                res = jax.jit(lambda v, im, c: likelihood.batch_log_marginals(v, im, c, grid, pixel, ex_chunk, False,
                                                                             kernel, over))(volume, batch.images,
                                                                                            batch.ctf)
                new, _ = jax.jit(sampler.record_exhaustive)(res, factors())
                fraction, stats = 1.0, None
            else:
                keys = training.particle_keys(config.seed, 0, visit, jnp.asarray(rows, jnp.int32))
                samples, stats = jax.jit(sampler.propose)(factors(), jnp.full((n,), 10_000), keys)
                res = sampled_eval(volume, batch.images, batch.ctf, samples)
                new, _ = jax.jit(sampler.record_sampled)(samples, res, factors())
                count = np.prod([np.asarray(stats[f"{f}_count"], np.float64) for f in sampling.FACTORS], axis=0)
                fraction = float(np.mean(count / rule.size))
            jax.block_until_ready(res.best)
            seconds = time.time() - t0
            training.scatter_factors(state, np.arange(n), new, np.ones(n, bool))
            best = np.asarray(res.best)
            row = {"level": level, "resolution_angstrom": float(resolution), "visit": visit,
                   "quadrature_points": int(rule.size), "fraction_evaluated": fraction,
                   "particles_per_second": n / seconds}
            if stats is not None:
                for f, m in zip(sampling.FACTORS, sampler.sizes):
                    row[f"distinct_{f}"] = float(np.mean(np.asarray(stats[f"{f}_count"])))
                    row[f"ess_{f}"] = float(np.mean(np.asarray(stats[f"{f}_ess"])))
                    row[f"size_{f}"] = int(m)
            if true_rot is not None:
                angles = np.concatenate([quadrature.directions_to_angles(rule.directions[best[:, 0]]),
                                         rule.inplane_degrees[best[:, 1]][:, None]], -1)
                err = rotation_error_degrees(conventions.euler_to_matrix(angles), true_rot)
                row["median_pose_error_degrees"] = float(np.median(err))
                # a C_n-symmetric particle (GroEL-GroES: n = 7) has n equally good poses, R S_k, whose error
                # angle is exactly k 360/n degrees: count a pose as right when within 2 steps of such an angle
                period = 360.0 / FLAGS.symmetry_order
                off = np.abs(err - period * np.round(err / period))
                row["pose_right_modulo_symmetry"] = float(np.mean(off < 2.0 * rule.angular_step_degrees))
                row["angular_step_degrees"] = float(rule.angular_step_degrees)
            print(row, flush=True)
            levels_out.append(row)
            visit += 1
    record = {"particles": FLAGS.particles, "map": FLAGS.map, "num_particles": n,
              "capacities": caps, "s0": settings.s0, "rows": levels_out}
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.semilogy([r["resolution_angstrom"] for r in levels_out], [r["fraction_evaluated"] for r in levels_out], "o-")
    ax.invert_xaxis()
    ax.set_xlabel("resolution of the level (A)")
    ax.set_ylabel("fraction of quadrature evaluated")
    ax.set_title(f"IS speed-up along the levels ({dataset.box_size} px, {n} particles)")
    save("is_chain_" + os.path.splitext(os.path.basename(FLAGS.config))[0], record, fig)


@user_errors_exit
def main(argv):
    commands = {"fig6": fig6, "fig7": fig7, "fig3": fig3, "fig8": fig8, "chain": chain}
    if len(argv) != 2 or argv[1] not in commands:
        raise InputError(f"expected one command ({', '.join(commands)}) before the flags; got: "
                         f"{' '.join(argv[1:]) or 'none'}")
    commands[argv[1]](load_config(FLAGS.config))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
