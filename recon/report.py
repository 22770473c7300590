"""A self-contained HTML report of a reconstruction (every image embedded), written by every run at its end.

    python -m recon.report --workdir runs/groel64_is [--reference data/groel64/ground_truth.mrc]

writes ``WORKDIR/report.html`` with: a summary; a montage of particles; central slices of the initial and final
maps; an isosurface rendering; FSC curves (half maps of a gold-standard run, and against ``--reference`` after
alignment); held-out RREMSE and the resolution level against time; the fraction of the pose quadrature evaluated
against iteration; the distribution of the assigned view directions on an equal-area (Mollweide) map.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os

import numpy as np

from recon import metrics, symmetry, views
from recon.errors import InputError, fail, user_errors_exit
from recon.io import atomic, mrc, star

SECTIONS = ("Summary", "Particles", "Classes", "Central slices", "Isosurface", "FSC", "Held-out error and resolution",
            "Fraction of the quadrature evaluated", "View directions")


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except ValueError:  # blank, or the partial last line of a run killed (or out of disk) mid-write
                continue
    return records


def run_snapshots(workdir: str) -> list[tuple[float, str, int]]:
    """``(seconds, path, iteration)`` of a run's map snapshots that ``metrics.jsonl`` times, in order, with
    ``final.mrc`` last (at the last recorded iteration) when it exists."""
    import glob

    seconds = {r["iteration"]: r["seconds"] for r in read_metrics(workdir) if "iteration" in r}
    out = []
    for path in sorted(glob.glob(os.path.join(workdir, "maps", "iter_" + "[0-9]" * 8 + ".mrc"))):
        iteration = int(os.path.basename(path)[5:13])
        if iteration in seconds:
            out.append((seconds[iteration], path, iteration))
    if os.path.exists(os.path.join(workdir, "final.mrc")) and seconds:
        last = max(seconds)
        out.append((seconds[last], os.path.join(workdir, "final.mrc"), last))
    return out


def resolution_curve(workdir: str, truth: np.ndarray, max_points: int, log=None) -> list[dict]:
    """FSC against ``truth`` (after alignment over rotations, shifts and hands) of about ``max_points`` of the
    run's snapshots, evenly spaced, the last one always: a list of ``{map, iteration, seconds, fsc_0.5_angstrom,
    fsc_0.143_angstrom, hand}``. ``log`` (e.g. ``print``) gets each point as it is computed."""
    snaps = run_snapshots(workdir)
    picked = list(dict.fromkeys(snaps[:: max(1, len(snaps) // max(1, max_points))] + snaps[-1:]))
    points = []
    for seconds, path, iteration in picked:
        volume, pixel = mrc.read_map(path)
        result = metrics.evaluate_maps(volume, truth, pixel)[0]
        points.append({"map": os.path.basename(path), "iteration": iteration, "seconds": seconds,
                       "fsc_0.5_angstrom": result["fsc_0.5_angstrom"],
                       "fsc_0.143_angstrom": result["fsc_0.143_angstrom"], "hand": result["hand"]})
        if log is not None:
            log(json.dumps(points[-1]))
    return points


def isosurface_views(volume: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Shaded first-hit renderings of the surface ``volume >= threshold`` seen along -z, -y and -x: for each ray
    the depth of the first voxel above the threshold, lit by the normal estimated from the depth map (Lambert).
    Returns three ``(D, D)`` images in [0, 1] (0 where a ray misses)."""
    views = []
    for axis in (0, 1, 2):  # volume axes (z, y, x): look along each
        inside = np.moveaxis(volume >= threshold, axis, 0)
        hit = inside.any(axis=0)
        depth = np.where(hit, np.argmax(inside, axis=0), inside.shape[0]).astype(np.float64)
        filled = np.where(hit, depth, np.max(depth[hit]) if hit.any() else 0.0)
        gy, gx = np.gradient(filled)
        normal = np.stack([gx, gy, np.ones_like(gx)], -1)  # towards the viewer (depth grows away from it)
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
        light = np.array([-0.4, 0.5, 0.77])  # from the upper left of the image (drawn with origin="lower")
        shade = np.clip(normal @ (light / np.linalg.norm(light)), 0.0, 1.0)
        near = 1.0 - 0.5 * (filled - filled[hit].min()) / max(np.ptp(filled[hit]) if hit.any() else 1.0, 1.0)
        views.append(np.where(hit, 0.15 + 0.85 * shade * near, 0.0))
    return views


def surface_threshold(volume: np.ndarray, fraction: float = 0.08) -> float:
    """The level above which ``fraction`` of the voxels inside the inscribed sphere lie."""
    size = volume.shape[0]
    inside = metrics.soft_sphere_mask(size, size / 2 - 2) > 0.5
    return float(np.nanquantile(volume[inside], 1.0 - fraction))


def _particles_section(workdir: str) -> str:
    from recon.data import open_dataset
    from recon.io import metadata

    path = os.path.join(workdir, "poses.star")
    if not os.path.exists(path):
        return "<p>No poses.star in the workdir (the run has not finished).</p>"
    dataset = open_dataset(metadata.read_particles(path))
    count = min(16, len(dataset))
    images = dataset.images(np.arange(count))
    fig, axes = _figure(2, 8, figsize=(12, 3.2))
    for ax, k in zip(np.ravel(axes), range(16)):
        ax.axis("off")
        if k < count:
            ax.imshow(images[k], cmap="gray", origin="lower")
            ax.set_title(f"#{k + 1}", fontsize=8)
    return (f"<p>The first {count} of {len(dataset)} particles ({dataset.box_size} px, "
            f"{dataset.pixel_size_angstrom:.3g} Å/px), as the run read them (normalised).</p>"
            f"<img src='{_png(fig)}'>")


def _slices(maps: dict) -> str:
    fig, axes = _figure(len(maps), 3, figsize=(9, 3 * len(maps)), squeeze=False)
    for row, (name, vol) in enumerate(maps.items()):
        c = vol.shape[0] // 2
        for col, (label, img) in enumerate((("xy (z = centre)", vol[c]), ("xz (y = centre)", vol[:, c]),
                                            ("yz (x = centre)", vol[:, :, c]))):
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", origin="lower")
            ax.set_title(f"{name}: {label}", fontsize=9)
            ax.axis("off")
    return f"<img src='{_png(fig)}'>"


def rendered_views(vol: np.ndarray) -> tuple[list[np.ndarray], float]:
    """:func:`isosurface_views` of the map smoothed by a 1-voxel Gaussian and masked to the box's sphere, at
    :func:`surface_threshold`; returns the three views and the threshold."""
    from scipy import ndimage

    size = vol.shape[0]
    inside = metrics.soft_sphere_mask(size, size / 2 - 2) > 0.5
    vol = np.where(inside, ndimage.gaussian_filter(np.asarray(vol, np.float64), 1.0), -np.inf)  # smoothed, masked
    threshold = surface_threshold(np.where(inside, vol, np.nan))
    return isosurface_views(vol, threshold), threshold


def _isosurface(vol: np.ndarray) -> str:
    views, threshold = rendered_views(vol)
    fig, axes = _figure(1, 3, figsize=(10, 3.6))
    for ax, img, label in zip(axes, views, ("along z", "along y", "along x")):
        ax.imshow(img, cmap="copper", origin="lower", vmin=0, vmax=1)
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    return (f"<p>Surface of the map smoothed by a 1-voxel Gaussian, at {threshold:.3g} (8% of the voxels inside the "
            f"box's sphere lie above it), lit from the upper left; nearer parts brighter.</p><img src='{_png(fig)}'>")


def _fsc_section(workdir: str, final: np.ndarray, pixel: float, reference: str | None) -> tuple[str, dict]:
    curves, numbers = [], {}
    halves = [os.path.join(workdir, f"half{k}.mrc") for k in (1, 2)]
    if all(os.path.exists(h) for h in halves):
        a, b = (mrc.read_map(h)[0] for h in halves)
        mask = metrics.soft_sphere_mask(a.shape[0], a.shape[0] / 2 - 3)
        curve = metrics.fsc(a * mask, b * mask)
        numbers["half_maps_fsc_0.143_angstrom"] = metrics.resolution_at(curve, pixel, 0.143)
        recorded = os.path.join(workdir, "gold_standard.json")
        if os.path.exists(recorded):  # the run's number, read within the data's band (recon/gold_standard.py)
            with open(recorded) as f:
                numbers["half_maps_fsc_0.143_angstrom"] = json.load(f)["half_maps_fsc_0.143_angstrom"]
        curves.append(("half map 1 vs half map 2 (gold standard)", curve))
    if reference:
        ref, _ = mrc.read_map(reference)
        if ref.shape != final.shape:
            raise fail(reference, f"box {ref.shape[0]} differs from the map's {final.shape[0]}")
        result, curve, _ = metrics.evaluate_maps(final, ref, pixel)
        numbers["reference_fsc_0.5_angstrom"] = result["fsc_0.5_angstrom"]
        numbers["reference_fsc_0.143_angstrom"] = result["fsc_0.143_angstrom"]
        curves.append((f"final vs {os.path.basename(reference)} (aligned, hand {result['hand']})", curve))
    if not curves:
        return ("<p>No FSC: the run has no half maps (set <code>--config.gold_standard.enabled=True</code>) and no "
                "<code>--reference</code> was given to <code>python -m recon.report</code>.</p>"), numbers
    freqs = metrics.shell_frequencies(final.shape[0], pixel)
    fig, ax = _figure(figsize=(6.5, 3.6))
    for label, curve in curves:
        ax.plot(freqs[:len(curve)], curve, label=label)
    for level in (0.5, 0.143):
        ax.axhline(level, color="gray", lw=0.6, ls="--")
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC")
    ax.set_ylim(-0.1, 1.05)
    ax.legend(fontsize=8)
    rows = "".join(f"<li>{html.escape(k)}: {v:.2f} Å</li>" for k, v in numbers.items())
    return f"<ul>{rows}</ul><img src='{_png(fig)}'>", numbers


def _progress_sections(records: list[dict]) -> tuple[str, str]:
    steps = [r for r in records if "iteration" in r]
    if not steps:
        return "<p>No iterations recorded.</p>", "<p>No iterations recorded.</p>"
    minutes = np.array([r["seconds"] for r in steps]) / 60.0
    held = [(r["seconds"] / 60.0, r["heldout_rremse"]) for r in steps if "heldout_rremse" in r]
    fig, ax = _figure(figsize=(6.5, 3.4))
    ax.plot(minutes, [r["resolution_angstrom"] for r in steps], color="tab:blue")
    ax.set_xlabel("wall time (min)")
    ax.set_ylabel("resolution level (Å)", color="tab:blue")
    if held:
        twin = ax.twinx()
        twin.plot(*zip(*held), "o-", color="tab:red", ms=3)
        twin.set_ylabel("held-out RREMSE", color="tab:red")
    progress = f"<img src='{_png(fig)}'>"
    fig, ax = _figure(figsize=(6.5, 3.4))
    ax.semilogy([r["iteration"] for r in steps], [max(r.get("fraction_evaluated", 1.0), 1e-12) for r in steps], lw=0.8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("fraction of the quadrature evaluated")
    final = steps[-1].get("fraction_evaluated", 1.0)
    fraction = (f"<p>Last iteration: {final:.2e} of the {steps[-1].get('quadrature_points', 0):,} pose points of its "
                f"minibatch evaluated (1 = exhaustive sums).</p><img src='{_png(fig)}'>")
    return progress, fraction


def _views_section(workdir: str, symmetry_name: str = "C1") -> str:
    from recon.io import metadata

    path = os.path.join(workdir, "poses.star")
    if not os.path.exists(path):
        return "<p>No poses.star in the workdir.</p>"
    meta = metadata.read_particles(path)
    if meta.angles_degrees is None:
        return "<p>poses.star holds no angles.</p>"
    rot, tilt = np.radians(meta.angles_degrees[:, 0]), np.radians(meta.angles_degrees[:, 1])
    lon = (rot + np.pi) % (2 * np.pi) - np.pi
    lat = np.pi / 2 - tilt
    counts, lon_edges, lat_edges = np.histogram2d(lon, np.sin(lat), bins=(36, 18),
                                                  range=((-np.pi, np.pi), (-1, 1)))  # equal-area cells
    fig = _figure(figsize=(7, 4))[0]
    fig.clf()
    ax = fig.add_subplot(111, projection="mollweide")
    sc = ax.pcolormesh(lon_edges, np.arcsin(lat_edges), counts.T / max(counts.mean(), 1e-12), cmap="viridis")
    fig.colorbar(sc, ax=ax, orientation="horizontal", pad=0.08, label="particles per equal-area cell / mean")
    ax.grid(True, lw=0.3)
    warning = views.coverage_line(meta.angles_degrees, symmetry.group_matrices(symmetry_name))
    note = f"<p><b>{html.escape(warning)}</b></p>" if warning else ""
    return (f"<p>Beam directions (rot, tilt) of the {len(rot)} particles' most probable poses, on equal-area cells "
            f"(1 = uniform).</p>{note}<img src='{_png(fig)}'>")


def _junk_summary(workdir: str, num_classes: int = 1) -> dict:
    """The summary's junk row where poses.star holds the noise class's calls (recon/junk.py), else nothing."""
    from recon.io import metadata, star

    path = os.path.join(workdir, "poses.star")
    if not os.path.exists(path):
        return {}
    extra = metadata.read_particles(path).extra_columns or {}
    if star.JUNK_SCORE_COLUMN not in extra or "rlnClassNumber" not in extra:
        return {}
    flagged = np.asarray(extra["rlnClassNumber"]) == num_classes + 1
    return {"junk (noise alone explains them better than the map)":
            f"{int(flagged.sum())} of {len(flagged)} particles ({100 * flagged.mean():.1f} %), rlnClassNumber "
            f"{num_classes + 1} in poses.star"}


def class_maps(workdir: str) -> list[np.ndarray]:
    """A several-class run's maps (``class_NN.mrc``, or the newest ``maps/iter_N_class_NN.mrc`` while it runs);
    empty for a one-class run."""
    import glob

    paths = sorted(glob.glob(os.path.join(workdir, "class_[0-9][0-9].mrc")))
    if not paths:
        snaps = sorted(glob.glob(os.path.join(workdir, "maps", "iter_*_class_[0-9][0-9].mrc")))
        if snaps:
            newest = os.path.basename(snaps[-1])[:13]
            paths = [p for p in snaps if os.path.basename(p).startswith(newest)]
    return [mrc.read_map(p)[0] for p in paths]


def _classes_section(workdir: str, maps: list[np.ndarray], num_classes: int) -> str:
    """Per class: particles (most probable class in poses.star), median class posterior, central slices and
    isosurface; a note for a one-class run."""
    from recon.io import metadata

    if not maps:
        return "<p>One class (set <code>--config.classes=K</code> for several maps from one dataset).</p>"
    counts, sure = {}, {}
    path = os.path.join(workdir, "poses.star")
    if os.path.exists(path):
        extra = metadata.read_particles(path).extra_columns or {}
        number = np.asarray(extra["rlnClassNumber"], int)
        top = np.asarray(extra.get(star.CLASS_PROBABILITY_COLUMN, np.full(len(number), np.nan)), float)
        for c in range(1, len(maps) + 2):
            counts[c] = int(np.sum(number == c))
            sure[c] = float(np.nanmedian(top[number == c])) if np.any((number == c) & np.isfinite(top)) else np.nan
    rows = "".join(f"<tr><td>{c + 1}</td><td>{counts.get(c + 1, '?')}</td><td>{sure.get(c + 1, float('nan')):.3f}"
                   "</td></tr>" for c in range(len(maps)))
    if counts.get(len(maps) + 1):
        rows += f"<tr><td>junk ({len(maps) + 1})</td><td>{counts[len(maps) + 1]}</td><td></td></tr>"
    fig, axes = _figure(len(maps), 4, figsize=(12, 3 * len(maps)), squeeze=False)
    for row, vol in enumerate(maps):
        c = vol.shape[0] // 2
        for col, (label, img) in enumerate((("xy", vol[c]), ("xz", vol[:, c]), ("yz", vol[:, :, c]))):
            axes[row, col].imshow(img, cmap="gray", origin="lower")
            axes[row, col].set_title(f"class {row + 1}: {label} central slice", fontsize=9)
        axes[row, 3].imshow(rendered_views(vol)[0][0], cmap="copper", origin="lower", vmin=0, vmax=1)
        axes[row, 3].set_title(f"class {row + 1}: surface along z", fontsize=9)
        for ax in axes[row]:
            ax.axis("off")
    return (f"<p>{len(maps)} classes (class_NN.mrc; final.mrc is the most populous). Particles: those whose most "
            "probable class it is (rlnClassNumber in poses.star); posterior: the median over them of the class "
            "posterior's maximum (rlnReconClassPosterior).</p><table><tr><th>class</th><th>particles</th>"
            f"<th>posterior</th></tr>{rows}</table><img src='{_png(fig)}'>")


def write_report(workdir: str, reference: str | None = None) -> str:
    """Write ``workdir/report.html`` (atomically) and return its path: of the final map, or, for a run still going
    or stopped before its end, of its newest snapshot (``maps/iter_*.mrc``)."""
    import glob

    final_path = os.path.join(workdir, "final.mrc")
    snapshots = sorted(glob.glob(os.path.join(workdir, "maps", "iter_" + "[0-9]" * 8 + ".mrc")))
    several = class_maps(workdir)
    if os.path.exists(final_path):
        map_path, status = final_path, "final.mrc"
    elif several:
        map_path = None
        status = "the newest snapshot of each class (the run has not finished)"
    elif snapshots:
        map_path = snapshots[-1]
        status = f"maps/{os.path.basename(map_path)} (the run has not finished: its newest snapshot)"
    else:
        raise fail(final_path, "not found, nor any snapshot in maps/ (the run has not saved a map yet, or "
                               "--workdir is not a run's folder)")
    if map_path is None:  # a several-class run still going: its first class's newest snapshot
        map_path = sorted(glob.glob(os.path.join(workdir, "maps", "iter_*_class_01.mrc")))[-1]
    final, pixel = mrc.read_map(map_path)
    maps = {}
    initial_path = os.path.join(workdir, "maps", "initial.mrc")
    if os.path.exists(initial_path):
        maps["initial"] = mrc.read_map(initial_path)[0]
    maps["final"] = final
    records = read_metrics(workdir)
    config = {}
    if os.path.exists(os.path.join(workdir, "config.json")):
        with open(os.path.join(workdir, "config.json")) as f:
            config = json.load(f)
    steps = [r for r in records if "iteration" in r]
    held = [r["heldout_rremse"] for r in steps if "heldout_rremse" in r]
    fsc_html, numbers = _fsc_section(workdir, final, pixel, reference)
    progress_html, fraction_html = _progress_sections(records)
    summary = {
        "workdir": os.path.abspath(workdir), "map": status, "box": f"{final.shape[0]} px at {pixel:.4g} Å/px",
        "symmetry": config.get("symmetry", "C1"), "iterations": steps[-1]["iteration"] if steps else 0,
        "wall time": f"{steps[-1]['seconds'] / 60:.1f} min" if steps else "?",
        "final resolution level": f"{steps[-1]['resolution_angstrom']:.1f} Å" if steps else "?",
        "held-out RREMSE (last)": f"{held[-1]:.4f}" if held else "not evaluated",
        **{k: f"{v:.2f} Å" for k, v in numbers.items()},
        **({"classes": len(several)} if several else {}),
        **_junk_summary(workdir, max(len(several), 1)),
    }
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in summary.items())
    body = {
        "Summary": f"<table>{rows}</table>",
        "Particles": _particles_section(workdir),
        "Classes": _classes_section(workdir, several, len(several)),
        "Central slices": _slices(maps),
        "Isosurface": _isosurface(final),
        "FSC": fsc_html,
        "Held-out error and resolution": progress_html,
        "Fraction of the quadrature evaluated": fraction_html,
        "View directions": _views_section(workdir, config.get("symmetry", "C1")),
    }
    parts = [f"<h2 id='{k.lower().replace(' ', '-')}'>{html.escape(k)}</h2>\n{body[k]}" for k in SECTIONS]
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>recon report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em}"
            "th{text-align:left;padding-right:1em}img{max-width:100%}</style></head><body>"
            f"<h1>recon: {html.escape(os.path.basename(os.path.abspath(workdir)))}</h1>\n"
            + "\n".join(parts) + "</body></html>")
    path = os.path.join(workdir, "report.html")
    atomic.write_text(path, page)
    return path


@user_errors_exit
def main(argv):
    from absl import flags

    del argv
    FLAGS = flags.FLAGS
    if not FLAGS.workdir:
        raise InputError("--workdir is required")
    print(f"wrote {write_report(FLAGS.workdir, FLAGS.reference)}")


if __name__ == "__main__":
    from absl import flags

    from recon import cli

    flags.DEFINE_string("workdir", None, "A run's workdir (finished, or going: its newest snapshot).")
    flags.DEFINE_string("reference", None, "Optional reference map (e.g. the ground truth) for an FSC curve.")
    cli.run(main)
