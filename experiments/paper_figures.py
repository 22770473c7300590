r"""The paper's Figs. 5, 9, 10, 11 and the s0 / optimiser ablations, each from one figure config.

    python -m experiments.paper_figures --config experiments/configs/fig9.py \
        --particles data/groel64/particles.star --truth data/groel64/ground_truth.mrc --workdir runs/fig9

Run from the repository root. A figure config (``experiments/configs/fig*.py``, ``ablation_*.py``) is a
reconstruction config plus ``figure.kind`` and ``figure.runs``: a list of runs, each a dict of ``label``,
``method`` (``sagd``, ``projection_matching`` or ``em``) and ``overrides`` (``{"key.path": value}`` on the config;
``experiments/configs/figures.py: run``). Each run goes
to a normal run folder under ``WORKDIR`` named for what it computes (``sagd``, ``sagd__prior.kind=uniform``,
``em``; see ``run_folder_name``), so an interrupted figure resumes and figures run into the same ``WORKDIR`` share
their common runs (the default SAGD run serves Figs. 5, 9, 10, 11 and the s0 ablation); then the figure is drawn:

- ``snapshots`` (Fig. 5): the map at ``figure.snapshot_minutes`` of the one run: isosurface and central slice.
- ``compare`` (Fig. 9 and the ablations): FSC 0.5 against ``--truth`` (after alignment) against wall time for
  every run, and each run's final central slice.
- ``slices`` (Fig. 10): each run's final central slices side by side (aligned to the truth and with its FSC when
  ``--truth`` is given).
- ``summary`` (Fig. 11): sample particles, isosurface and slices of the final map, with its held-out RREMSE.

Writes ``WORKDIR/NAME.png`` and ``WORKDIR/NAME.json`` (the plotted numbers, commands and machine) and prints the
JSON. ``--out`` also copies both (e.g. to experiments/results/).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys

import numpy as np
from absl import flags

from recon import baselines, cli, metrics, report, training
from recon.data import open_dataset
from recon.errors import InputError, user_errors_exit
from recon.io import metadata, mrc

FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags (absl flags are global: defined only when this module is the entry point)."""
    cli.define_config("config", None, "Figure config (experiments/configs/fig*.py or ablation_*.py).")
    flags.DEFINE_string("particles", None, "Particle STAR/.cs file.")
    flags.DEFINE_string("truth", None, "Ground-truth map for FSC curves (compare figures).")
    flags.DEFINE_string("workdir", None, "Folder for the runs and the figure.")
    flags.DEFINE_string("out", None, "Optional folder to copy the figure and its JSON to.")
    flags.DEFINE_integer("max_points", 6, "Snapshots evaluated per run for the FSC-against-time curves.")
    flags.DEFINE_bool("quiet", True, "No per-iteration progress lines.")


def _typed(old, value):
    """``value`` (as written in a figure config, or a string) in the type of the field it replaces."""
    if isinstance(old, bool):
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
    return type(old)(value)


def _node(config, key: str):
    *path, last = key.split(".")
    node = config
    for p in path:
        if p not in node:
            raise InputError(f"figure run override {key!r}: the config has no section {p!r}")
        node = node[p]
    if last not in node:
        raise InputError(f"figure run override {key!r}: the config has no field {last!r}")
    return node, last


def configured(config, overrides: dict):
    """A copy of the reconstruction config (without ``figure``) with the overrides applied (typed like the
    field they replace)."""
    c = config.copy_and_resolve_references()
    with c.unlocked():
        del c["figure"]
    for key, value in overrides.items():
        node, last = _node(c, key)
        node[last] = _typed(node[last], value)
    return c


def run_folder_name(config, method: str, overrides: dict) -> str:
    """The folder of a run, named by what it computes rather than by the figure that asks for it: the method plus
    the overrides that change the base config (``sagd``, ``sagd__prior.kind=uniform``). Figures that need the same
    run (Figs. 5, 9 and 11 and the ablations all contain the default SAGD run) share one folder in ``--workdir``."""
    changed = []
    for key, value in sorted(overrides.items()):
        node, last = _node(config, key)
        if _typed(node[last], value) != node[last]:
            changed.append(f"{key}={value}")
    name = "__".join([method] + changed)
    return "".join(ch if ch.isalnum() or ch in "._=-" else "_" for ch in name)


def run_all(config, dataset, workdir: str) -> dict:
    runs = {}
    for entry in config.figure.runs:
        label, method, overrides = entry["label"], entry["method"], dict(entry["overrides"])
        c = configured(config, overrides)
        folder = os.path.join(workdir, run_folder_name(config, method, overrides))
        if method == "sagd":
            training.run(c, dataset, folder, quiet=FLAGS.quiet)
        elif method in ("projection_matching", "em"):
            if not os.path.exists(os.path.join(folder, "final.mrc")):
                baselines.run(method, c, dataset, folder, quiet=FLAGS.quiet)
        else:
            raise InputError(f"figure run {label!r}: unknown method {method!r} (sagd, projection_matching, em)")
        runs[label] = {"folder": folder, "method": method, "overrides": overrides}
    return runs


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_compare(config, runs: dict, truth_path: str | None):
    plt = _plt()
    fig, (ax, *slice_axes) = plt.subplots(1, 1 + len(runs), figsize=(4.5 + 2.6 * len(runs), 3.6))
    numbers = {}
    truth = mrc.read_map(truth_path)[0] if truth_path else None
    by_iteration = config.figure.get("x_axis", "time") == "iteration"  # both are in the JSON either way
    for (label, run), sax in zip(runs.items(), slice_axes):
        snaps = report.run_snapshots(run["folder"])
        curve = []  # (seconds, resolution, iteration)
        if truth is not None:
            curve = [(p["seconds"], p["fsc_0.5_angstrom"], p["iteration"])
                     for p in report.resolution_curve(run["folder"], truth, FLAGS.max_points)]
            x = [c[2] for c in curve] if by_iteration else [c[0] / 60 for c in curve]
            ax.plot(x, [c[1] for c in curve], "o-", ms=3, label=label)
        final, _ = mrc.read_map(os.path.join(run["folder"], "final.mrc"))
        sax.imshow(final[final.shape[0] // 2], cmap="gray", origin="lower")
        sax.set_title(label, fontsize=9)
        sax.axis("off")
        held = [r["heldout_rremse"] for r in report.read_metrics(run["folder"]) if "heldout_rremse" in r]
        numbers[label] = {"method": run["method"], "overrides": run["overrides"],
                          "minutes": round(snaps[-1][0] / 60, 2) if snaps else None,
                          "fsc_0.5_against_time": [(round(c[0] / 60, 2), round(c[1], 2)) for c in curve],
                          "fsc_0.5_against_iteration": [(c[2], round(c[1], 2)) for c in curve],
                          "iterations": snaps[-1][2] if snaps else None,
                          "final_fsc_0.5_angstrom": round(curve[-1][1], 2) if curve else None,
                          "final_heldout_rremse": held[-1] if held else None}
    if truth is not None:
        ax.set_xlabel("iteration (minibatches of 200)" if by_iteration else "wall time (min)")
        ax.set_ylabel("FSC 0.5 vs truth (Å)")
        ax.invert_yaxis()
        ax.legend(fontsize=8)
    else:
        ax.axis("off")
    ax.set_title(config.figure.title, fontsize=10)
    return fig, numbers


def draw_slices(config, runs: dict, truth_path: str | None):
    """Each run's final central slices side by side; with the truth, each map aligned to it first (a map from a
    random start comes out in an arbitrary orientation and hand), its FSC against it recorded, and the truth's
    slices drawn in the last column."""
    plt = _plt()
    truth, pixel = mrc.read_map(truth_path) if truth_path else (None, None)
    columns = len(runs) + (truth is not None)
    fig, axes = plt.subplots(3, columns, figsize=(2.8 * columns, 8), squeeze=False)
    numbers = {}
    maps = {}
    for label, run in runs.items():
        final, _ = mrc.read_map(os.path.join(run["folder"], "final.mrc"))
        held = [r["heldout_rremse"] for r in report.read_metrics(run["folder"]) if "heldout_rremse" in r]
        numbers[label] = {"overrides": run["overrides"], "final_heldout_rremse": held[-1] if held else None}
        if truth is not None:
            result, _, final = metrics.evaluate_maps(final, truth, pixel)
            numbers[label].update({"fsc_0.5_angstrom": round(result["fsc_0.5_angstrom"], 2),
                                   "fsc_0.143_angstrom": round(result["fsc_0.143_angstrom"], 2)})
        maps[label] = final
    if truth is not None:
        maps["truth"] = truth
    for col, (label, volume) in enumerate(maps.items()):
        c = volume.shape[0] // 2
        for row, img in enumerate((volume[c], volume[:, c], volume[:, :, c])):
            axes[row, col].imshow(img, cmap="gray", origin="lower")
            axes[row, col].axis("off")
        title = label if "fsc_0.5_angstrom" not in numbers.get(label, {}) else \
            f"{label}\nFSC 0.5 {numbers[label]['fsc_0.5_angstrom']:.1f} Å"
        axes[0, col].set_title(title, fontsize=10)
    fig.suptitle(config.figure.title + (" (aligned to the truth)" if truth is not None else ""))
    return fig, numbers


def draw_snapshots(config, runs: dict):
    plt = _plt()
    (label, run), = runs.items()
    snaps = [(seconds, path) for seconds, path, _ in report.run_snapshots(run["folder"])]
    initial = os.path.join(run["folder"], "maps", "initial.mrc")
    wanted = list(config.figure.snapshot_minutes)
    chosen = []
    for minutes in wanted:
        if minutes == 0 and os.path.exists(initial):
            chosen.append((0.0, initial))
        elif snaps:
            chosen.append(min(snaps, key=lambda s: abs(s[0] / 60 - minutes)))
    fig, axes = plt.subplots(2, len(chosen), figsize=(2.6 * len(chosen), 5.4), squeeze=False)
    for col, (seconds, path) in enumerate(chosen):
        vol, _ = mrc.read_map(path)
        axes[0, col].imshow(report.rendered_views(vol)[0][0], cmap="copper", origin="lower", vmin=0, vmax=1)
        axes[0, col].set_title(f"{seconds / 60:.1f} min", fontsize=9)
        axes[1, col].imshow(vol[vol.shape[0] // 2], cmap="gray", origin="lower")
        for ax in axes[:, col]:
            ax.axis("off")
    fig.suptitle(config.figure.title)
    return fig, {label: {"snapshots": [(round(s / 60, 2), os.path.basename(p)) for s, p in chosen]}}


def draw_summary(config, runs: dict, dataset):
    plt = _plt()
    (label, run), = runs.items()
    final, _ = mrc.read_map(os.path.join(run["folder"], "final.mrc"))
    fig, axes = plt.subplots(2, 4, figsize=(11, 5.6))
    images = dataset.images(np.arange(min(4, len(dataset))))
    for ax, img in zip(axes[0], images):
        ax.imshow(img, cmap="gray", origin="lower")
        ax.axis("off")
    axes[0, 0].set_title("particles", fontsize=9)
    axes[1, 0].imshow(report.rendered_views(final)[0][0], cmap="copper", origin="lower", vmin=0, vmax=1)
    c = final.shape[0] // 2
    for ax, img in zip(axes[1, 1:], (final[c], final[:, c], final[:, :, c])):
        ax.imshow(img, cmap="gray", origin="lower")
    for ax in axes[1]:
        ax.axis("off")
    held = [r["heldout_rremse"] for r in report.read_metrics(run["folder"]) if "heldout_rremse" in r]
    rremse = held[-1] if held else float("nan")
    fig.suptitle(f"{config.figure.title}: held-out RREMSE {rremse:.3f} (the paper: 0.99, 0.96, 0.98)")
    return fig, {label: {"final_heldout_rremse": rremse}}


@user_errors_exit
def main(argv):
    cli.only_flags(argv)
    config = FLAGS.config
    if config is None or "figure" not in config:
        raise InputError("--config must be a figure config (with a 'figure' section)")
    if not FLAGS.particles or not FLAGS.workdir:
        raise InputError("--particles and --workdir are required")
    meta = metadata.read_particles(FLAGS.particles, config.pixel_size_angstrom or None)
    dataset = open_dataset(meta, config.particle_radius_angstrom or None, config.invert_contrast)
    os.makedirs(FLAGS.workdir, exist_ok=True)
    runs = run_all(config, dataset, FLAGS.workdir)
    kind = config.figure.kind
    if kind == "compare":
        fig, numbers = draw_compare(config, runs, FLAGS.truth)
    elif kind == "slices":
        fig, numbers = draw_slices(config, runs, FLAGS.truth)
    elif kind == "snapshots":
        fig, numbers = draw_snapshots(config, runs)
    elif kind == "summary":
        fig, numbers = draw_summary(config, runs, dataset)
    else:
        raise InputError(f"unknown figure.kind {kind!r} (compare, slices, snapshots, summary)")
    for label, run in runs.items():
        numbers.setdefault(label, {})["run_folder"] = os.path.basename(run["folder"])
    name = config.figure.name
    png = os.path.join(FLAGS.workdir, f"{name}.png")
    fig.savefig(png, dpi=110, bbox_inches="tight")
    import jax
    record = {"figure": name, "title": config.figure.title, "runs": numbers,
              "command": " ".join(["python -m experiments.paper_figures", *sys.argv[1:]]),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "jax": jax.__version__,
                          "devices": [str(d) for d in jax.devices()]}}
    with open(os.path.join(FLAGS.workdir, f"{name}.json"), "w") as f:
        json.dump(record, f, indent=1)
    if FLAGS.out:
        os.makedirs(FLAGS.out, exist_ok=True)
        for ext in ("png", "json"):
            shutil.copy(os.path.join(FLAGS.workdir, f"{name}.{ext}"), FLAGS.out)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
