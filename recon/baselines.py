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


def _resume_point(workdir: str) -> tuple[int, float]:
    """(epochs done, seconds they took) of an earlier run in ``workdir``: the last epoch whose map was written (an
    epoch's map is the whole state of these batch methods; a record without its map is redone)."""
    from recon import report

    done, seconds = 0, 0.0
    for record in report.read_metrics(workdir):
        epoch = int(record.get("epoch", -1)) + 1
        if epoch == done + 1 and os.path.exists(os.path.join(workdir, "maps", f"iter_{epoch:08d}.mrc")):
            done, seconds = epoch, float(record.get("seconds", 0.0))
    return done, seconds


def _run(kind: str, config, dataset: ParticleDataset, workdir: str, quiet: bool, notes) -> dict:
    done, seconds_before = _resume_point(workdir)
    training.prepare_workdir(config, workdir, resuming=done > 0)
    progress = training.Progress(workdir, quiet)
    plan = training.make_plan(config, dataset)
    size, pixel = dataset.box_size, dataset.pixel_size_angstrom
    epochs = config.baselines.epochs_per_level * len(plan.resolutions)
    final = os.path.join(workdir, "final.mrc")
    out_of_time = config.stop.max_minutes and seconds_before >= 60 * config.stop.max_minutes
    if os.path.exists(final) and (done >= epochs or out_of_time):  # finished, or stopped at this time limit
        progress.line(f"{workdir} holds a finished run; final.mrc is there")
        progress.close()
        return {"final_map": final, "elapsed_seconds": seconds_before, "epochs": done}
    if done:
        volume, _ = mrc.read_map(os.path.join(workdir, "maps", f"iter_{done:08d}.mrc"))
        progress.line(f"resumed after epoch {done} ({workdir}/maps)")
    else:
        for note in notes:
            progress.line(f"settings: {note}")
        volume, _ = training.initial_volume(config, dataset, plan)  # the SAGD run's random start, same seed
        mrc.write_map(os.path.join(workdir, "maps", "initial.mrc"), volume, pixel)
    k = 1 if kind == "projection_matching" else int(config.baselines.em_top_poses)
    criterion = "correlation" if kind == "projection_matching" else "likelihood"
    batch = config.batch_size
    rows = plan.batches  # (n_batches, B) training particles, -1 padded
    accumulate, _ = backprojection.accumulate_fn(size, pixel)
    limits = likelihood.chunk_limits(jax.default_backend(), config.max_table_elements)
    compiled_level = None
    start = time.time() - seconds_before
    progress.line(f"{kind}: {len(plan.train)} particles, {len(plan.resolutions)} levels x "
                  f"{config.baselines.epochs_per_level} epochs, top {k} poses per particle")
    epoch = done - 1
    for epoch in range(done, epochs):
        if config.stop.max_minutes and time.time() - start > 60 * config.stop.max_minutes:
            progress.line(f"stopped: reached {config.stop.max_minutes} minutes")
            epoch -= 1
            break
        level = min(epoch // config.baselines.epochs_per_level, len(plan.resolutions) - 1)
        if level != compiled_level:
            rule = training.level_quadrature(plan, level)
            grid = likelihood.make_grid(size, pixel, rule, 1.0 / plan.resolutions[level], dataset.noise_power)
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
        progress.metrics(record)
        progress.line(f"epoch {epoch + 1:4d}  {plan.resolutions[level]:5.1f} A  {rule.size:,} poses per particle  "
                      f"posterior mass in the top {k}: {record['posterior_mass_in_top_poses']:.3f}  "
                      f"elapsed {seconds:7.1f} s")
    mrc.write_map(final, volume, pixel)
    progress.line(f"wrote {final}")
    progress.close()
    return {"final_map": final, "elapsed_seconds": time.time() - start, "epochs": epoch + 1}
