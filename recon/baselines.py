"""The two baselines of the paper's Fig. 9, from the same random start as the SAGD run:

- **projection matching** (``kind="projection_matching"``): each epoch, every particle's single best pose under
  the current map (a global search over the level's whole quadrature for the highest cross-correlation of the
  image with the CTF-modulated projection, blind to the map's amplitude), then the map rebuilt from those fixed
  poses by Wiener-filtered direct Fourier inversion;
- **batch expectation-maximisation** (``kind="em"``, RELION-style): each epoch, every particle's posterior over
  poses under the current map (all particles every iteration), then the map that maximises the expected
  log-likelihood: the same inversion with each particle added at its ``em_top_poses`` most probable poses,
  weighted by their posterior probabilities (renormalised over those poses; the mass they hold is recorded).

Both reuse the likelihood table (:func:`recon.likelihood.batch_top_poses`) and the inversion of
:mod:`recon.backprojection`; resolution levels follow the run's schedule, ``baselines.epochs_per_level`` epochs
each. The workdir gets ``metrics.jsonl`` (one line per epoch), ``maps/iter_NNNNNNNN.mrc`` (per epoch),
``final.mrc`` and ``run.log``, the layout of a reconstruction work folder.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

import jax
import jax.numpy as jnp

from recon import backprojection, likelihood, lock, quadrature, training
from recon.data import ParticleDataset
from recon.errors import InputError
from recon.io import mrc

KINDS = ("projection_matching", "em")


def pose_parameters(rule: quadrature.Quadrature, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature indices ``(..., 3)`` (direction, in-plane, shift) -> RELION matrices ``(..., 3, 3)`` and origins
    ``(..., 2)`` in Angstrom."""
    from recon import conventions

    rot_tilt = quadrature.directions_to_angles(rule.directions[indices[..., 0]])
    angles = np.concatenate([rot_tilt, rule.inplane_degrees[indices[..., 1]][..., None]], -1)
    return conventions.euler_to_matrix(angles), rule.shifts_angstrom[indices[..., 2]]


def run(kind: str, config, dataset: ParticleDataset, workdir: str, quiet: bool = False, notes=()) -> dict:
    """``notes``: lines for run.log before the run's own (the settings derived from the data)."""
    if kind not in KINDS:
        raise InputError(f"unknown baseline {kind!r} ({', '.join(KINDS)})")
    with lock.hold(workdir, jax.process_index() == 0, training.process_zero_says):  # one run per folder
        return _run(kind, config, dataset, workdir, quiet, notes)


def _run(kind: str, config, dataset: ParticleDataset, workdir: str, quiet: bool, notes) -> dict:
    os.makedirs(os.path.join(workdir, "maps"), exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=1, sort_keys=True))
    log = open(os.path.join(workdir, "run.log"), "w")
    metrics_file = open(os.path.join(workdir, "metrics.jsonl"), "w")

    def say(text):
        log.write(text + "\n")
        log.flush()
        if not quiet:
            print(text, flush=True)

    for note in notes:
        say(f"settings: {note}")
    plan = training.make_plan(config, dataset)
    volume, _ = training.initial_volume(config, dataset, plan)  # the SAGD run's random start, same seed
    mrc.write_map(os.path.join(workdir, "maps", "initial.mrc"), volume, dataset.pixel_size_angstrom)
    size, pixel = dataset.box_size, dataset.pixel_size_angstrom
    k = 1 if kind == "projection_matching" else int(config.baselines.em_top_poses)
    criterion = "correlation" if kind == "projection_matching" else "likelihood"
    batch = config.batch_size
    rows = plan.batches  # (n_batches, B) training particles, -1 padded
    accumulate, _ = backprojection.accumulate_fn(size, pixel)
    epochs = config.baselines.epochs_per_level * len(plan.resolutions)
    limits = likelihood.chunk_limits(jax.default_backend(), config.max_table_elements)
    compiled_level = None
    start = time.time()
    say(f"{kind}: {len(plan.train)} particles, {len(plan.resolutions)} levels x "
        f"{config.baselines.epochs_per_level} epochs, top {k} poses per particle")
    for epoch in range(epochs):
        if config.stop.max_minutes and time.time() - start > 60 * config.stop.max_minutes:
            say(f"stopped: reached {config.stop.max_minutes} minutes")
            break
        level = min(epoch // config.baselines.epochs_per_level, len(plan.resolutions) - 1)
        if level != compiled_level:
            rule = training.level_quadrature(plan, level)
            grid = likelihood.make_grid(size, pixel, rule, 1.0 / plan.resolutions[level])
            chunk = likelihood.auto_chunk_size(batch, grid, limits.table_elements, limits.matrix_rows)
            search = jax.jit(lambda v, im, c, g=grid, ch=chunk: likelihood.batch_top_poses(
                v, im, c, g, pixel, k, ch, config.likelihood_kernel, config.likelihood_oversampling, criterion))
            compiled_level = level
        sums = backprojection.empty_sums(size)
        held_mass = []
        for indices in rows:
            b = training.make_batch(dataset, indices, 0)
            idx, values = (np.asarray(a) for a in search(jnp.asarray(volume), b.images, b.ctf))
            if kind == "projection_matching":  # the one best pose, weight 1
                mass = np.ones(len(idx))
                weights = np.ones((len(idx), 1))
            else:  # the top poses' posterior probabilities, renormalised over them
                mass = np.exp(values).sum(-1)
                weights = np.exp(values - np.log(mass)[:, None])
            weights = weights * np.asarray(b.mask)[:, None]
            held_mass.append(mass[np.asarray(b.mask) > 0])
            rotations, origins = pose_parameters(rule, idx)
            sums = accumulate(sums, b.images, jnp.asarray(rotations, jnp.float32), jnp.asarray(origins, jnp.float32),
                              jnp.asarray(weights, jnp.float32), b.ctf)
        volume = backprojection.invert(sums, size, config.baselines.wiener_snr)
        seconds = time.time() - start
        mrc.write_map(os.path.join(workdir, "maps", f"iter_{epoch + 1:08d}.mrc"), volume, pixel)
        record = {"iteration": epoch + 1, "epoch": epoch, "level": level,
                  "resolution_angstrom": float(plan.resolutions[level]), "seconds": round(seconds, 3),
                  "quadrature_points": int(rule.size), "particles": int(len(plan.train)),
                  "posterior_mass_in_top_poses": float(np.mean(np.concatenate(held_mass)))}
        metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()
        say(f"epoch {epoch + 1:4d}  {plan.resolutions[level]:5.1f} A  {rule.size:,} poses per particle  "
            f"posterior mass in the top {k}: {record['posterior_mass_in_top_poses']:.3f}  elapsed {seconds:7.1f} s")
    mrc.write_map(os.path.join(workdir, "final.mrc"), volume, pixel)
    say(f"wrote {workdir}/final.mrc")
    log.close()
    metrics_file.close()
    return {"final_map": os.path.join(workdir, "final.mrc"), "elapsed_seconds": time.time() - start,
            "epochs": epoch + 1 if epochs else 0}

