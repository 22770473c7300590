"""Gold-standard refinement: a shared low-resolution start, then two independent half-set refinements, their FSC.

With ``config.gold_standard.enabled``, ``WORKDIR`` holds::

    shared/      the run on all particles through the levels coarser than gold_standard.split_resolution_angstrom
    half1/, half2/   the two halves (a seeded random split of the particles), each refined from shared/final.mrc
                 low-passed at the shared run's last level (so nothing finer is common to both) through the
                 remaining levels, independently (own SAGD, sampler and held-out set)
    half1.mrc, half2.mrc   the half maps;   final.mrc   their average
    gold_standard.json     the half-map FSC curve and its 0.143 and 0.5 resolutions (the RELION convention:
                 0.143 between independent halves), read within the data's band (the finest level plus the kernels'
                 2 shells, ``data_band_angstrom``: beyond it the halves share only what the prior makes of similar
                 maps), with each half's held-out RREMSE (App. C, the paper's measure)
    metrics.jsonl, poses.star, run.log, report.html    shared + half 1 progress, every particle's pose from its half

With several classes (``classes = K``) the shared run reconstructs K maps and each half refines all K from them
(low-passed as above; a class keeps its number in both halves, since both start from the same class maps):
``halfH_class_NN.mrc`` per half and class, ``class_NN.mrc`` their averages (final.mrc the most populous class's),
and gold_standard.json holds each class's half-map FSC (``classes``).

Each part resumes on its own (running the command again continues where it stopped).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os

import numpy as np

import jax

from recon import auto_settings, lock, metrics, report, training
from recon.data import ParticleDataset
from recon.errors import fail
from recon.io import atomic, metadata, mrc, star


def split_halves(num_particles: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``range(num_particles)`` into two sorted halves (sizes differ by at most one)."""
    order = np.random.default_rng([seed, 1]).permutation(num_particles)
    return np.sort(order[: num_particles // 2]), np.sort(order[num_particles // 2:])


def part_configs(config, dataset: ParticleDataset):
    """The configs of the shared start and of the halves, from the run's config and the data's levels."""
    levels = training.make_plan(config, dataset).resolutions
    split = config.gold_standard.split_resolution_angstrom
    shared_levels = [r for r in levels if r > split + 1e-6] or [levels[0]]
    if len(shared_levels) == len(levels):
        raise fail(dataset.meta.source, f"gold_standard.split_resolution_angstrom = {split} leaves no level for the "
                                        f"halves (levels {', '.join(f'{r:.1f}' for r in levels)} A)")
    shared = copy.deepcopy(config)
    shared.gold_standard.enabled = False
    shared.schedule.target_resolution_angstrom = float(shared_levels[-1])
    shared.stop.max_iterations = len(shared_levels) * config.schedule.iterations_per_level
    shared.output.final_pose_pass = False
    half = copy.deepcopy(config)
    half.gold_standard.enabled = False
    if config.get("classes", 1) > 1:  # the shared run parts the maps; each half refines them by their posteriors
        half.class_mixture.tied_fraction, half.class_mixture.random_split_levels = 0.0, 0
    half.schedule.start_resolution_angstrom = float(levels[len(shared_levels)])
    half.sampling.start_iteration = 0  # a particle's first visit in its half sums exhaustively anyway
    if half.schedule.get("passes_per_level") or half.sampling.get("tau0_passes"):
        auto_settings.in_passes(half, len(dataset) - len(dataset) // 2)  # levels in passes over a half, not the set
    return shared, half


def run(config, dataset: ParticleDataset, workdir: str, quiet: bool = False, notes=()) -> dict:
    """``notes``: lines for the shared run's log (the settings derived from the data)."""
    training.device_mesh(config)  # settings checked before anything is written
    with lock.hold(workdir, jax.process_index() == 0, training.process_zero_says):  # one run per folder
        return _run(config, dataset, workdir, quiet, notes)


def _run(config, dataset: ParticleDataset, workdir: str, quiet: bool, notes) -> dict:
    writer = jax.process_index() == 0  # under jax.distributed every process refines, the first one writes
    if writer:
        atomic.write_text(os.path.join(workdir, "config.json"),
                              config.to_json_best_effort(indent=1, sort_keys=True))
    shared_config, half_config = part_configs(config, dataset)
    shared = training.run(shared_config, dataset, os.path.join(workdir, "shared"), quiet, notes=notes)
    several = len(shared["class_maps"]) > 1
    starts = [mrc.read_map(p)[0] for p in (shared["class_maps"] if several else [shared["final_map"]])]
    # Only what the shared run fitted is common to the halves: its map beyond its last level and the kernels'
    # spread (the random start's fine detail) is cut, so that the halves' FSC past the split measures what each
    # half learnt on its own.
    starts = [metrics.lowpass_volume(v, dataset.pixel_size_angstrom, shared_config.schedule.target_resolution_angstrom)
              for v in starts]
    start = np.stack(starts) if several else starts[0]
    halves = split_halves(len(dataset), config.seed)
    summaries = []
    for k, particles in enumerate(halves, start=1):
        part_config = copy.deepcopy(half_config)
        part_config.seed = config.seed + k
        # the shift disk as the shared run left it (widened to the measured offsets), not the config's start
        part_config.quadrature.max_shift_angstrom = max(part_config.quadrature.max_shift_angstrom,
                                                        shared["shift_disk_angstrom"])
        summaries.append(training.run(part_config, dataset, os.path.join(workdir, f"half{k}"), quiet, particles,
                                      start_volume=start))
    pixel = dataset.pixel_size_angstrom
    mask = metrics.soft_sphere_mask(dataset.box_size, dataset.box_size / 2 - 3)
    # Past the finest level's band (and the kernels' spread of 2 shells) no data reached the halves: what they
    # share there is the prior acting on similar maps, not signal, so the resolutions are read within the band.
    band_shells = dataset.box_size * pixel / float(half_config.schedule.target_resolution_angstrom) + 2.0

    def half_fsc(pair):
        curve = metrics.fsc(pair[0] * mask, pair[1] * mask)
        in_band = np.where(np.arange(len(curve)) <= band_shells, curve, 0.0)
        return curve, metrics.resolution_at(in_band, pixel, 0.143), metrics.resolution_at(in_band, pixel, 0.5)

    per_class = []
    if several:
        class_halves = [[mrc.read_map(p)[0] for p in s["class_maps"]] for s in summaries]  # [half][class]
        shares = np.mean([s["class_shares"] for s in summaries], axis=0)
        for c in range(len(starts)):
            curve_c, res143, res5 = half_fsc((class_halves[0][c], class_halves[1][c]))
            per_class.append({"class": c + 1, "share": float(shares[c]), "half_maps_fsc_0.143_angstrom": res143,
                              "half_maps_fsc_0.5_angstrom": res5, "fsc": [float(x) for x in curve_c]})
        main_class = int(np.argmax(shares))
        maps = [class_halves[0][main_class], class_halves[1][main_class]]
    else:
        maps = [mrc.read_map(s["final_map"])[0] for s in summaries]
    curve, res143, res5 = half_fsc(maps)
    result = {
        "half_maps_fsc_0.143_angstrom": res143,
        "half_maps_fsc_0.5_angstrom": res5,
        "data_band_angstrom": dataset.box_size * pixel / band_shells,
        "heldout_rremse_halves": [s["heldout_rremse"] for s in summaries],
        "particles_per_half": [int(len(h)) for h in halves],
        "fsc": [float(c) for c in curve],
        "frequencies_per_angstrom": [float(f) for f in metrics.shell_frequencies(dataset.box_size, pixel)[:len(curve)]],
        **({"classes": per_class} if per_class else {}),
    }
    line = (f"gold standard: half-map FSC 0.143 at {result['half_maps_fsc_0.143_angstrom']:.2f} A (0.5 at "
            f"{result['half_maps_fsc_0.5_angstrom']:.2f} A); held-out RREMSE of the halves "
            f"{', '.join(f'{r:.4f}' for r in result['heldout_rremse_halves'] if r is not None)}")
    if writer:
        for k, vol in enumerate(maps, start=1):
            mrc.write_map(os.path.join(workdir, f"half{k}.mrc"), vol, pixel)
        for c in range(len(per_class)):
            for k in (0, 1):
                mrc.write_map(os.path.join(workdir, f"half{k + 1}_class_{c + 1:02d}.mrc"), class_halves[k][c], pixel)
            mrc.write_map(os.path.join(workdir, f"class_{c + 1:02d}.mrc"),
                          (class_halves[0][c] + class_halves[1][c]) / 2, pixel)
        if per_class:
            line += "; per class (half-map FSC 0.143): " + ", ".join(
                f"class {r['class']} {r['half_maps_fsc_0.143_angstrom']:.2f} A (share {100 * r['share']:.0f} %)"
                for r in per_class)
        mrc.write_map(os.path.join(workdir, "final.mrc"), (maps[0] + maps[1]) / 2, pixel)
        atomic.write_text(os.path.join(workdir, "gold_standard.json"), json.dumps(result, indent=1))
        _merge_outputs(workdir, halves, shared["elapsed_seconds"], config.output.get("names_relative_to"))
        with open(os.path.join(workdir, "run.log"), "a") as f:
            f.write(line + "\n")
        if not quiet:
            print(line, flush=True)
        report.write_report(workdir)
    return {**{k: v for k, v in result.items() if k not in ("fsc", "frequencies_per_angstrom", "classes")},
            "final_map": os.path.join(workdir, "final.mrc"), "half_maps": [os.path.join(workdir, "half1.mrc"),
                                                                            os.path.join(workdir, "half2.mrc")]}


def _merge_outputs(workdir: str, halves, shared_seconds: float, relative_to: str | None = None) -> None:
    """Top-level metrics.jsonl (the shared run, then half 1 with its times offset), run.log (both parts' lines)
    and poses.star (each particle's pose from its own half)."""
    records = report.read_metrics(os.path.join(workdir, "shared"))
    offset = max((r.get("iteration", 0) for r in records), default=0)
    for r in report.read_metrics(os.path.join(workdir, "half1")):
        records.append({**r, "iteration": r.get("iteration", 0) + offset, "seconds": r.get("seconds", 0.0) + shared_seconds,
                        "part": "half1"})
    atomic.write_text(os.path.join(workdir, "metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in records))
    logs = []
    for part in ("shared", "half1", "half2"):
        path = os.path.join(workdir, part, "run.log")
        if os.path.exists(path):
            with open(path) as f:
                logs.append(f"--- {part} ---\n" + f.read())
    atomic.write_text(os.path.join(workdir, "run.log"), "".join(logs))
    metas = [metadata.read_particles(os.path.join(workdir, f"half{k}", "poses.star")) for k in (1, 2)]
    first = np.zeros(len(metas[0]), bool)
    first[halves[0]] = True
    extra = {k: np.where(first, v, (metas[1].extra_columns or {}).get(k, v))
             for k, v in (metas[0].extra_columns or {}).items()}  # each particle's own half's (classes, scores)
    merged = dataclasses.replace(
        metas[0],
        angles_degrees=np.where(first[:, None], metas[0].angles_degrees, metas[1].angles_degrees),
        origins_angstrom=np.where(first[:, None], metas[0].origins_angstrom, metas[1].origins_angstrom),
        extra_columns=extra or None)
    path = os.path.join(workdir, "poses.star")
    star.write_star(path, merged, image_names=training.image_names_relative(merged, path, relative_to))
