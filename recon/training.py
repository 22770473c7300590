"""The reconstruction loop (host side): data, schedules, the jitted step, held-out error, outputs, resume.

Workdir layout::

    config.json        the full config of the run
    metrics.jsonl      one JSON line per iteration (and one per held-out evaluation)
    maps/iter_NNNNNNNN.mrc   snapshots;   final.mrc   the result (with the data's pixel size)
    class_NN.mrc       with classes = K > 1: each class's map (final.mrc: the most populous class's);
                       snapshots maps/iter_NNNNNNNN_class_NN.mrc
    poses.star         per particle: most probable rotation and shift (RELION convention) + CTF columns
    checkpoints/ckpt_NNNNNNNN.npz        the last few checkpoints (running the command again resumes)
    run.log            the progress lines
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import types

import numpy as np

import jax
import jax.numpy as jnp
import optax

from recon import amplitude, checkpoint, classes, conventions, initial, likelihood, lock, noise, priors, projection
from recon import compile_stats, junk, metrics, quadrature, sagd, sampling, report, schedules, symmetry, synthesis
from recon import views
from recon import step as step_lib
from recon.ctf import CTFParams
from recon.data import ParticleDataset
from recon.errors import InputError, fail
from recon.io import atomic, mrc, star


# ----------------------------------------------------------------------------------------------------------
# Static plan of a run: split, minibatches, levels.


@dataclasses.dataclass
class Plan:
    train: np.ndarray  # (n_train,) particle indices
    heldout: np.ndarray  # (n_heldout,)
    batches: np.ndarray  # (n_batches, B) particle indices, padded with -1
    resolutions: np.ndarray  # (n_levels,) Angstrom
    extent_angstrom: float
    max_shift_angstrom: float
    shift_sigma_angstrom: float
    symmetry_matrices: np.ndarray  # (|G|, 3, 3), identity first (C1: just the identity)
    probe: np.ndarray  # particles whose log p the sampler estimates against the exhaustive sum, once per level


def make_plan(config, dataset: ParticleDataset, particles: np.ndarray | None = None) -> Plan:
    """Split, minibatches and levels; ``particles`` restricts the run to those indices (e.g. a half set)."""
    indices = np.arange(len(dataset)) if particles is None else np.asarray(particles)
    n = len(indices)
    rng = np.random.default_rng(config.seed)
    order = indices[rng.permutation(n)]
    num_heldout = schedules.heldout_count(n, config.num_heldout)
    heldout, train = np.sort(order[:num_heldout]), order[num_heldout:]
    if len(train) == 0:
        raise fail(dataset.meta.source, "no particles left for training")
    b = config.batch_size
    num_batches = math.ceil(len(train) / b)
    batches = np.full((num_batches, b), -1, dtype=np.int64)
    batches.reshape(-1)[:len(train)] = train
    pixel = dataset.pixel_size_angstrom
    box_angstrom = dataset.box_size * pixel
    nyquist = 2.0 * pixel
    target = max(config.schedule.target_resolution_angstrom, nyquist / 0.9)
    start = max(config.schedule.start_resolution_angstrom, target)
    resolutions = schedules.resolution_levels(start, target, config.schedule.level_ratio)
    extent = 2.0 * dataset.particle_radius_angstrom if config.quadrature.angular_extent == "particle" else box_angstrom
    max_shift = config.quadrature.max_shift_angstrom or 0.1 * box_angstrom
    sigma = config.quadrature.shift_sigma_angstrom or 0.05 * box_angstrom
    probe = (heldout if len(heldout) else np.sort(train))[:config.sampling.get("probe_particles", 0)]
    return Plan(train=np.sort(train), heldout=heldout, batches=batches, resolutions=resolutions, extent_angstrom=extent,
                max_shift_angstrom=max_shift, shift_sigma_angstrom=sigma,
                symmetry_matrices=symmetry.group_matrices(config.symmetry), probe=probe)


def level_quadrature(plan: Plan, level: int, max_shift_angstrom: float | None = None) -> quadrature.Quadrature:
    """The level's quadrature; with a symmetry, its view directions restricted to the asymmetric unit.
    ``max_shift_angstrom``: the level's shift disk where the run widened it (default: the plan's)."""
    omega = 1.0 / plan.resolutions[level]
    rule = quadrature.make_quadrature(omega, plan.extent_angstrom, max_shift_angstrom or plan.max_shift_angstrom,
                                      plan.shift_sigma_angstrom)
    if len(plan.symmetry_matrices) > 1:
        rule = quadrature.restrict_directions(rule, symmetry.asymmetric_unit(rule.directions, plan.symmetry_matrices))
    return rule


def batch_order(seed: int, epoch: int, num_batches: int) -> np.ndarray:
    """The order in which minibatches are visited in ``epoch`` (deterministic, so resuming replays it)."""
    return np.random.default_rng([seed, epoch]).permutation(num_batches)


def make_batch(dataset: ParticleDataset, indices: np.ndarray, slot: int, junk_share: float = 0.0,
               amplitude: np.ndarray | None = None) -> step_lib.Batch:
    """A padded minibatch (entries ``-1`` become zero images with mask 0 and a copy of a real CTF); every particle
    with the noise class's prior log-odds for the share ``junk_share`` (recon/junk.py; 0: none) and its CTF scaled
    by its amplitude scale (``amplitude (N,)``, NaN: not estimated, 1; recon/amplitude.py)."""
    real = indices >= 0
    safe = np.where(real, indices, indices[real][0])
    images = dataset.images(safe)
    images[~real] = 0.0
    ctf = dataset.ctf(safe)
    if amplitude is not None:
        ctf = ctf._replace(scale=ctf.scale * scales_of(amplitude, safe))
    return step_lib.Batch(images=jnp.asarray(images), ctf=CTFParams(*(jnp.asarray(f, jnp.float32) for f in ctf)),
                          mask=jnp.asarray(real, jnp.float32), batch_index=jnp.asarray(slot, jnp.int32),
                          junk_logit=jnp.full(len(indices), junk.logit(junk_share) if junk_share else -1e4,
                                              jnp.float32))


# ----------------------------------------------------------------------------------------------------------
# Initialisation.


def band_power(images: np.ndarray, pixel_size_angstrom: float, max_freq_per_angstrom: float) -> tuple[float, int]:
    """Mean over images ``(k, D, D)`` of the power ``sum |I(k)|^2 / D^2`` of their (unnormalised) transforms over
    the disk ``|k| <= max_freq_per_angstrom``: the band-limited sum of squares (Parseval); and the number of
    frequencies in the disk."""
    size = images.shape[-1]
    radius = np.linalg.norm(conventions.image_frequency_grid(size, pixel_size_angstrom), axis=-1)
    band = radius <= max_freq_per_angstrom
    ft = conventions.centred_fft2(np.asarray(images, np.float64))
    return float(np.mean(np.sum(np.abs(ft[:, band]) ** 2, axis=-1))) / size**2, int(band.sum())


def band_noise_power(dataset: ParticleDataset, max_freq_per_angstrom: float) -> float:
    """The noise's share of :func:`band_power` for the normalised images of ``dataset``: 1 per frequency of the
    disk for white noise of unit variance (Parseval), the measured relative spectrum summed over the disk where
    the dataset has one (coloured noise: often several times that at the lowest frequencies)."""
    size = dataset.box_size
    freqs = conventions.image_frequency_grid(size, dataset.pixel_size_angstrom)
    band = np.linalg.norm(freqs, axis=-1) <= max_freq_per_angstrom
    if dataset.noise_power is None:
        return float(band.sum())
    cycles = conventions.image_frequency_grid(size)[band]
    return float(np.sum(noise.at_frequencies(dataset.noise_power, cycles, size)))


def initial_volume(config, dataset: ParticleDataset, plan: Plan) -> tuple[np.ndarray, float]:
    """One random start per class (``config.classes``): ``(D, D, D)`` for one, ``(K, D, D, D)`` for several (each
    from its own key; the first is the one-class start). Returns the volume and the typical density inside the
    support of the first (for the prior strengths)."""
    k = config.get("classes", 1)
    if k > 1 and class_phases(config, len(plan.resolutions))[1]:  # one start for all: the maps part in one frame
        volume, typical = random_start(config, dataset, plan, 0)
        return np.repeat(volume[None], k, axis=0), typical
    starts = [random_start(config, dataset, plan, c) for c in range(k)]
    if len(starts) == 1:
        return starts[0]
    return np.stack([v for v, _ in starts]), starts[0][1]


def class_phases(config, levels: int) -> tuple[int, int]:
    """With several classes (recon/classes.py): the number of levels at which the maps are tied
    (``class_mixture.tied_fraction`` of them) and the level up to which each map fits its own random share
    (``class_mixture.random_split_levels`` more); the last level always has the class posteriors (the random
    shares kept before the tied levels where there are few levels); (0, 0) with one class."""
    if config.get("classes", 1) == 1:
        return 0, 0
    room = max(levels - 1, 0)
    split = min(int(config.class_mixture.get("random_split_levels", 0)), room)
    tie = min(int(round(config.class_mixture.get("tied_fraction", 0.0) * levels)), room - split)
    return tie, tie + split


CLASS_STREAM = 1000  # fold_in constant of the random starts of classes 2..K (class 1 uses 0, as a one-class run)


def random_start(config, dataset: ParticleDataset, plan: Plan, klass: int = 0) -> tuple[np.ndarray, float]:
    """Random spheres inside the particle radius (symmetrised under the plan's point group), scaled so that their projections carry the data's signal power
    within the first level's band (the data's power there minus the noise's, :func:`band_noise_power`): matching the power
    over the whole image would overweight the start on data whose signal lies mostly at high frequency, locking
    the poses onto the random spheres.
    Returns the volume and the typical density inside the support (for the prior strengths)."""
    size = dataset.box_size
    radius = dataset.radius_pixels
    pixel = dataset.pixel_size_angstrom
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0 if klass == 0 else CLASS_STREAM + klass)
    unit = initial.random_spheres(key, size, radius, config.init.num_spheres)
    if len(plan.symmetry_matrices) > 1:
        unit = symmetry.symmetrise(unit, plan.symmetry_matrices)
    unit = np.asarray(unit)
    rng = np.random.default_rng(config.seed + 1 if klass == 0 else [config.seed + 1, klass])
    sample = rng.choice(plan.train, size=min(256, len(plan.train)), replace=False)
    band = 1.0 / float(plan.resolutions[0])
    data_power, band_pixels = band_power(dataset.images(np.sort(sample)), pixel, band)
    signal_power = data_power - band_noise_power(dataset, band)
    if not signal_power > 0.01 * band_pixels:
        signal_power = 0.05 * band_pixels  # below detection: assume the paper's typical SNR in the band
    vft = projection.prepare_volume_ft(jnp.asarray(unit))
    k = min(32, len(sample))  # projections to compare with the data (fewer for a tiny dataset)
    angles = np.stack([rng.uniform(-180, 180, k), np.degrees(np.arccos(rng.uniform(-1, 1, k))),
                       rng.uniform(-180, 180, k)], -1)
    ctf = dataset.ctf(sample[:k])

    render = synthesis.render_batch_fn(size, pixel)
    predicted = np.asarray(render(vft, jnp.asarray(angles, jnp.float32), jnp.zeros((len(angles), 2), jnp.float32),
                                  CTFParams(*(jnp.asarray(f, jnp.float32) for f in ctf))))
    scale = math.sqrt(signal_power / max(band_power(predicted, pixel, band)[0], 1e-12))
    volume = (unit * scale).astype(np.float32)
    support = initial.support_mask(size, radius)
    return volume, float(volume[support].mean())


def prior_strength(config, typical_density: float) -> float:
    kind = config.prior.kind
    if kind == "exponential":
        return config.prior.scale / typical_density
    if kind == "car":
        return config.prior.scale / typical_density**2
    return 0.0


def make_optax(config):
    opt = config.optimizer
    if opt.kind == "sgd":
        return optax.sgd(opt.learning_rate, momentum=opt.momentum, nesterov=True)
    if opt.kind == "adam":
        return optax.adam(opt.learning_rate)
    raise InputError(f"unknown optimizer {opt.kind!r} (sagd, sgd, adam)")


# ----------------------------------------------------------------------------------------------------------
# Progress.


def open_appending(path: str):
    """``path`` opened to append lines; a last line cut off by a kill is ended first, so the next line stands on its
    own (readers skip the partial one)."""
    if os.path.exists(path) and os.path.getsize(path):
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            cut = f.read(1) != b"\n"
        if cut:
            with open(path, "a") as f:
                f.write("\n")
    return open(path, "a")


class Progress:
    """Progress lines (terminal and run.log) and metrics.jsonl; silent and file-less when ``writer`` is False (the
    processes other than the first of a multi-host run)."""

    def __init__(self, workdir: str, quiet: bool = False, writer: bool = True):
        self.writer = writer
        self.log_file = open_appending(os.path.join(workdir, "run.log")) if writer else None
        self.metrics_file = open_appending(os.path.join(workdir, "metrics.jsonl")) if writer else None
        self.quiet = quiet or not writer

    def line(self, text: str):
        stamp = time.strftime("%H:%M:%S")
        if not self.quiet:
            print(f"[{stamp}] {text}", flush=True)
        if self.writer:
            self.log_file.write(f"[{stamp}] {text}\n")
            self.log_file.flush()

    def metrics(self, record: dict):
        if self.writer:
            self.metrics_file.write(json.dumps(record) + "\n")
            self.metrics_file.flush()

    def close(self):
        if self.writer:
            self.log_file.close()
            self.metrics_file.close()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def device_peak_mb() -> float | None:
    """Peak memory in use on this process's first device (MB) where the backend reports it (GPU, TPU); ``None`` on
    CPU, whose arrays are in the resident memory above."""
    try:
        stats = jax.local_devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001  (a backend without memory statistics)
        return None
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**20


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# ----------------------------------------------------------------------------------------------------------
# The run.


@dataclasses.dataclass
class RunState:
    """Host-side state that is checkpointed with the optimiser state."""

    best_pose: np.ndarray  # (N, 3) int32 (direction, in-plane, shift) at the particle's last visit, -1 unseen
    best_level: np.ndarray  # (N,) int32 level of best_pose
    sampler: sampling.SamplerState  # per-particle importance-sampling state (numpy)
    elapsed: float = 0.0
    best_rremse: float = math.inf
    stale_evaluations: int = 0
    last_rremse: float = math.nan
    done: bool = False
    draw_slots: dict = dataclasses.field(default_factory=dict)  # factor -> distinct points a visit may evaluate
    draw_buffers: dict = dataclasses.field(default_factory=dict)  # factor -> draws (s0 ESS) a visit may make
    level_sampled: dict = dataclasses.field(default_factory=dict)  # str(level) -> "trial", "sampled", "exhaustive"
    level_shares: dict = dataclasses.field(default_factory=dict)  # str(level) -> capped share its slots allow
    searched_levels: list = dataclasses.field(default_factory=list)  # levels whose start searched poses again
    searched_lost_share: float = 1.0  # the share of particles the latest search found lost
    shift_disks: dict = dataclasses.field(default_factory=dict)  # str(level) -> shift disk radius (A), if widened
    exhaustive_seconds: float = 0.0  # seconds per particle, pose and frequency of the latest exhaustive minibatches
    stopped_at_minutes: float = 0.0  # the stop.max_minutes the run stopped at (0: it did not stop for time)
    # (N,) float32 log p(I | V) - log p(I | 0) at the particle's latest visit with the noise class on (NaN: none)
    junk_score: np.ndarray | None = None
    junk_share: float = 0.0  # the noise class's share (recon/junk.py); 0 until the class joins
    amplitude: np.ndarray | None = None  # (N,) float32 amplitude scale (recon/amplitude.py), NaN: not estimated
    class_log_p: np.ndarray | None = None  # (N, K) float32 log p(I | V_c) at the latest visit (K > 1), NaN: none
    class_shares: list = dataclasses.field(default_factory=list)  # the class proportions pi (recon/classes.py)

    def tree(self):
        tree = {"best_pose": self.best_pose, "best_level": self.best_level, "sampler": self.sampler,
                "junk_score": self.junk_score, "amplitude": self.amplitude}
        if self.class_log_p is not None:
            tree["class_log_p"] = self.class_log_p
        return tree


def padded_indices(indices: np.ndarray, multiple: int) -> np.ndarray:
    """``indices`` padded with -1 to a multiple of ``multiple``."""
    padded = int(math.ceil(len(indices) / multiple) * multiple)
    return np.concatenate([indices, np.full(padded - len(indices), -1)])


def rremse(expected_residual: np.ndarray, grid) -> float:
    """RREMSE (Eq. 20): sqrt(mean over held-out images of E^2 / (sigma^2 * N_k)), N_k the frequencies used."""
    num_freqs = 2.0 * len(grid.freqs) - 1.0  # the half plane's Hermitian weights: 1 at k = 0, 2 elsewhere
    return float(np.sqrt(np.mean(expected_residual) / num_freqs))


def sampler_settings(config) -> sampling.Settings:
    c = config.sampling
    return sampling.Settings(s0=c.s0, tau0=c.tau0, alpha_min=c.alpha_min, temperature_min=c.temperature_min,
                             bandwidth_factor=c.bandwidth_factor)


def sampler_capacities(config) -> dict:
    c = config.sampling
    return {"directions": c.max_directions, "inplane": c.max_inplane, "shifts": c.max_shifts}


META_KEYS = ("elapsed", "best_rremse", "stale_evaluations", "last_rremse", "done", "draw_slots", "draw_buffers",
             "level_sampled", "level_shares", "searched_levels", "searched_lost_share",
             "exhaustive_seconds", "shift_disks", "stopped_at_minutes", "junk_share", "class_shares")
SAMPLER_STREAM = 7  # fold_in constant of the sampler's keys (the initial map uses 0)
SEARCH_MASS = 0.01  # search_again: a proposal mode with less of the coarse posterior near it has lost its pose
SEARCH_DEGREES = 20.0  # ... near: within this angle, or two steps of the coarse grid if larger
SEARCH_STOP_SHARE = 0.05  # no more searches once one finds fewer particles lost than this
TRIAL_STEPS = 4  # sampled minibatches timed (after the compiling one) against the exhaustive sum's cost


def particle_keys(seed: int, stream: int, iteration, indices):
    """One key per particle: ``fold_in(fold_in(fold_in(PRNGKey(seed), SAMPLER_STREAM), stream), iteration)``
    folded with the particle index (so a particle's draws do not depend on its minibatch)."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), SAMPLER_STREAM),
                                                stream), iteration)
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)


def gather_factors(state: sampling.SamplerState, rows: np.ndarray):
    return tuple(sampling.FactorState(*(jnp.asarray(a[rows]) for a in getattr(state, f))) for f in sampling.FACTORS)


def scatter_factors(state: sampling.SamplerState, rows: np.ndarray, new, real: np.ndarray) -> None:
    for f, factor in zip(sampling.FACTORS, new):
        for target, value in zip(getattr(state, f), factor):
            target[rows[real]] = np.asarray(value)[real]


JUNK_MODELS = ("off", "noise_class")


def scales_of(amplitude: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The amplitude scales of particles ``rows`` (1 where not estimated)."""
    a = amplitude[rows]
    return np.where(np.isfinite(a), a, 1.0)


def amplitude_start_level(config, levels: int) -> int | None:
    """The first level at which particles' amplitude scales are estimated (recon/amplitude.py); None when off."""
    model = config.get("amplitude", {}).get("model", "off")
    if model not in amplitude.MODELS:
        raise InputError(f"--config.amplitude.model={model!r}: expected one of {', '.join(amplitude.MODELS)}")
    if model == "off" or levels < 2:  # as for the noise class: not on the random start
        return None
    return max(1, int(math.floor(config.amplitude.start_level_fraction * (levels - 1))))


def record_amplitudes(host, rows: np.ndarray, used: np.ndarray, fit, prior_sd: float) -> None:
    """New amplitude scales of the particles ``rows`` (padded with -1) from their pose fit ``(cross, quad)``,
    computed with the scales ``used`` (so the fit's terms are divided back to scale 1)."""
    real = rows >= 0
    cross, quad = (np.asarray(f, np.float64)[real] for f in fit)
    a = used[real]
    host.amplitude[rows[real]] = amplitude.map_scale(cross / a, quad / a**2, prior_sd)


def junk_start_level(config, levels: int) -> int | None:
    """The first level whose objective has the noise class (recon/junk.py): ``junk.start_level_fraction`` of the
    way through the levels, once the map explains the particles (from a random start it explains none, and the
    class would take them all); None when ``junk.model`` is off."""
    model = config.get("junk", {}).get("model", "off")
    if model not in JUNK_MODELS:
        raise InputError(f"--config.junk.model={model!r}: expected one of {', '.join(JUNK_MODELS)}")
    if model == "off" or levels < 2:  # from a random start the map explains no particle: not at the first level
        return None
    return max(1, int(math.floor(config.junk.start_level_fraction * (levels - 1))))


def record_junk_scores(host, rows: np.ndarray, result) -> None:
    """The particles ``rows`` (padded with -1): their log Bayes factor map / noise alone from ``result`` (a step's
    or an evaluation's per-particle results), and the noise class's share updated from every latest score."""
    real = rows >= 0
    score = np.asarray(result.log_marginal) - np.asarray(result.log_empty)
    host.junk_score[rows[real]] = score[real]
    host.junk_share = junk.updated_share(host.junk_score, host.junk_share or junk.INITIAL_SHARE)


def record_classes(host, rows: np.ndarray, result, min_share: float) -> None:
    """The particles ``rows`` (padded with -1): each class's log-likelihood from ``result`` (a several-map visit's),
    and the class proportions updated from every particle's latest (recon/classes.py)."""
    real = rows >= 0
    host.class_log_p[rows[real]] = np.asarray(result.log_classes)[real]
    host.class_shares = [float(x) for x in classes.updated_shares(host.class_log_p, np.asarray(host.class_shares),
                                                                  min_share)]


def class_counts_line(host: RunState) -> str:
    """The classes' proportions and particle counts (most probable class of each particle scored)."""
    assigned, top = classes.assignments(host.class_log_p, np.asarray(host.class_shares))
    parts = [f"class {c + 1}: {int(np.sum(assigned == c))} particles (share {100 * share:.1f} %)"
             for c, share in enumerate(host.class_shares)]
    scored = assigned >= 0
    sure = float(np.median(top[scored])) if np.any(scored) else float("nan")
    return f"classes: {'; '.join(parts)}; median class posterior {sure:.3f}"


def record_visit(host, rows: np.ndarray, new_factors, at_iteration: int) -> None:
    """A visit of the particles ``rows`` (padded with -1): their new sampler states and visit time."""
    real = rows >= 0
    safe = np.where(real, rows, rows[real][0])
    scatter_factors(host.sampler, safe, new_factors, real)
    host.sampler.last_visit[rows[real]] = at_iteration


def restart_lost(host, rows: np.ndarray, post_dir: np.ndarray, directions: np.ndarray, degrees: float,
                 at_iteration: int, new_factors) -> tuple[int, int]:
    """A fresh direction posterior ``post_dir`` ``(B, M)`` over ``directions`` ``(M, 3)`` for the particles ``rows``
    (padded with -1; one class): a visited particle whose sampler's most probable direction carries under
    ``SEARCH_MASS`` of it within ``degrees`` has lost its pose (its proposals, built from earlier visits, no longer
    reach where the map now puts it) and gets the sampler state ``new_factors(safe_rows)`` (called only if one is
    lost) and visit time ``at_iteration``; the others are left as they are. Symmetry mates of one pose share the
    mass, so in C1 a symmetric particle is not lost for having chosen another mate. Returns (lost, visited)."""
    real = rows >= 0
    safe = np.where(real, rows, rows[real][0])
    seen = real & (host.sampler.last_visit[safe] >= 0)
    modes = sampling.proposal_modes(sampling.FactorState(host.sampler.directions.points[safe],
                                                         host.sampler.directions.log_phi[safe], None))
    lost = seen & sampling.lost_poses(post_dir, directions, modes, degrees, SEARCH_MASS)
    if lost.any():
        record_visit(host, np.where(lost, rows, -1), new_factors(safe), at_iteration)
    return int(lost.sum()), int(seen.sum())


def sampling_record(stats: dict | None, sizes: tuple, real: np.ndarray, kl) -> dict:
    """Per-iteration metrics: fraction of the full quadrature evaluated (per factor and overall), ESS, draws."""
    out = {}
    if stats is None:  # exhaustive
        for f in sampling.FACTORS:
            out[f"fraction_{f}"] = 1.0
        out["fraction_evaluated"] = 1.0
        out["sampled"] = False
    else:
        total = np.ones(int(real.sum()))
        capped = np.zeros(int(real.sum()), bool)
        for f, m in zip(sampling.FACTORS, sizes):
            count = np.asarray(stats[f"{f}_count"], np.float64)[real]
            out[f"fraction_{f}"] = float(np.mean(count / m))
            out[f"ess_{f}"] = float(np.mean(np.asarray(stats[f"{f}_ess"])[real]))
            out[f"draws_{f}"] = float(np.mean(np.asarray(stats[f"{f}_num_draws"])[real]))
            out[f"capped_{f}"] = float(np.mean(np.asarray(stats[f"{f}_wanted"])[real]
                                               > np.asarray(stats[f"{f}_num_draws"])[real]))
            total = total * count / m
            capped |= np.asarray(stats[f"{f}_wanted"])[real] > np.asarray(stats[f"{f}_num_draws"])[real]
        out["fraction_evaluated"] = float(np.mean(total))
        out["capped"] = float(np.mean(capped))  # particles drawing fewer than s0 ESS in some factor
        out["sampled"] = True
    kl = np.asarray(kl)[real]
    if np.any(np.isfinite(kl)):
        out["kl_directions"] = float(np.nanmean(kl))
    return out


FINAL_PASS_SHARE = 0.25  # of stop.max_minutes: the most the final pose pass may take within the time limit


def final_pass_seconds(recent: list, sampled_particles: int, summed_particles: int,
                       summed_seconds_per_particle: float, sampled_seconds_per_particle: float = 0.0) -> float:
    """Predicted seconds of a pose pass: ``sampled_particles`` at ``sampled_seconds_per_particle`` (the timed
    held-out evaluations', which compute no gradient, as the pass does) or, where that is 0, at the recent training
    rate (``recent``: (seconds, particles) of recent timed iterations; with gradients, so this errs long) and
    ``summed_particles`` (every pose summed: particles never visited, or a level that sums) at
    ``summed_seconds_per_particle`` (the recent rate where that is 0)."""
    per_particle = sum(s for s, _ in recent) / max(sum(p for _, p in recent), 1)
    return (sampled_particles * (sampled_seconds_per_particle or per_particle)
            + summed_particles * (summed_seconds_per_particle or per_particle))


def full_final_pass(config, pass_seconds: float) -> bool:
    """Whether the final pose pass re-assigns every particle: always without ``stop.max_minutes``, otherwise when
    it takes at most ``FINAL_PASS_SHARE`` of the limit (else only particles never visited are assigned, and the
    others keep their most probable pose at their last visit)."""
    return not config.stop.max_minutes or pass_seconds <= FINAL_PASS_SHARE * 60 * config.stop.max_minutes


def assignment_level(particles: int, seconds_per_point: float, points_by_level: list, budget_seconds: float) -> int:
    """The finest level (index into ``points_by_level``, each level's poses per particle) whose exhaustive pass
    over ``particles`` takes at most ``budget_seconds`` at ``seconds_per_point`` per particle and pose; the
    coarsest level when none does."""
    fits = [lv for lv, points in enumerate(points_by_level) if particles * seconds_per_point * points <= budget_seconds]
    return max(fits, default=0)


def can_extend(config, iteration: int, host) -> bool:
    """Whether a finished run stopped at an iteration or time limit that ``config.stop`` now raises (and not because
    its held-out error stopped improving)."""
    converged = host.stale_evaluations >= config.stop.patience
    more_iterations = iteration < config.stop.max_iterations
    if host.stopped_at_minutes:  # it stopped for time, early enough to leave the final pass its time
        more_time = not config.stop.max_minutes or config.stop.max_minutes > host.stopped_at_minutes
    else:
        more_time = not config.stop.max_minutes or host.elapsed < 60 * config.stop.max_minutes
    return more_iterations and more_time and not converged


def config_differences(stored: dict, current: dict, prefix: str = "") -> list[str]:
    """``"key: stored -> current"`` for each setting of a stored run's config that the current config changes.
    ``stop.*`` may change (to extend a run), and settings the stored config lacks (settings with defaults that
    reproduce the stored run) are not compared."""
    out = []
    for key, old in stored.items():
        name = prefix + key
        if name == "stop" or key not in current:
            continue
        new = current[key]
        if isinstance(old, dict) and isinstance(new, dict):
            out += config_differences(old, new, name + ".")
        elif old != new:
            out.append(f"{name}: {old!r} -> {new!r}")
    return out


# Settings a run's stored config.json may lack because the run predates them, with the values that reproduce it.
PREDATED_SETTINGS = {"junk": {"model": "off"}, "amplitude": {"model": "off"}, "noise_per_micrograph": False,
                     "classes": 1, "class_mixture": {"beta_start": 1.0, "anneal_fraction": 0.5, "min_share": 0.05,
                                       "tied_fraction": 0.5, "random_split_levels": 1},
                     "sampling": {"loose_capped_shares": (), "search_again": False}}


def as_stored_run(config, workdir: str):
    """``config`` with the settings that a run already in ``workdir`` predates (its config.json lacks them) set as
    that run had them, so that it resumes as it began; unchanged for a new folder."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return config
    try:
        with open(path) as f:
            stored = json.load(f)
    except (OSError, ValueError):
        return config  # prepare_workdir names the problem
    with config.unlocked():
        for key, value in PREDATED_SETTINGS.items():
            if key not in config:
                continue
            if isinstance(value, dict):
                for sub, v in value.items():
                    if sub not in stored.get(key, {}) and sub in config[key]:
                        config[key][sub] = v
            elif key not in stored:
                config[key] = value
    return config


def prepare_workdir(config, workdir: str, resuming: bool, writer: bool = True) -> None:
    """The work folder and its ``maps/``; ``config.json`` written, or, when ``resuming``, compared with the one stored
    (a run resumes only with its own config; only the stop.* limits may change)."""
    os.makedirs(os.path.join(workdir, "maps"), exist_ok=True)
    config_path = os.path.join(workdir, "config.json")
    config_json = config.to_json_best_effort(indent=1, sort_keys=True)
    if resuming and os.path.exists(config_path):
        with open(config_path) as f:
            stored = json.load(f)
        differences = config_differences(stored, json.loads(config_json))
        if differences:
            raise fail(config_path, f"the workdir holds a run with a different config ({'; '.join(differences[:4])}); "
                                    "use a new --workdir (or the same config to resume; only the stop.* limits may "
                                    "change)")
    if writer:
        atomic.write_text(config_path, config_json)


def run(config, dataset: ParticleDataset, workdir: str, quiet: bool = False, particles: np.ndarray | None = None,
        start_volume: np.ndarray | None = None, notes=()) -> dict:
    """Reconstruct ab initio into ``workdir`` (resuming from its last checkpoint). Returns a summary dict.

    ``particles`` restricts the run to those particle indices; ``start_volume`` ``(D, D, D)`` replaces the random
    start (both for the halves of a gold-standard run, ``recon/gold_standard.py``). The work folder is locked for
    the run (``recon/lock.py``): a second run on it stops with one line. ``notes``: lines for the log's header
    (the settings derived from the data, ``recon/auto_settings.py``, which must have resolved ``config``)."""
    if config.get("automatic"):
        raise InputError("an automatic config must be resolved first (recon.auto_settings.prepare)")
    mesh = device_mesh(config)  # settings checked before anything is written
    with lock.hold(workdir, writer=jax.process_index() == 0, agree=process_zero_says):
        return _run(config, dataset, workdir, mesh, quiet, particles, start_volume, notes)


def process_zero_says(value: bool) -> bool:
    """Process 0's ``value`` on every process (a multi-host run decides together); ``value`` itself on one."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(value)))


def device_mesh(config):
    """The data-parallel mesh of ``config.devices`` (None for one device); bad settings raise an ``InputError``."""
    try:
        mesh = step_lib.make_mesh(config.devices)
    except ValueError as error:
        raise InputError(f"--config.devices: {error}") from None
    n_devices = 1 if mesh is None else mesh.size
    if config.batch_size % n_devices:
        raise InputError(f"batch_size {config.batch_size} is not a multiple of the {n_devices} devices "
                         "(--config.devices); the particles of a minibatch are split evenly")
    return mesh


def _run(config, dataset, workdir, mesh, quiet, particles, start_volume, notes) -> dict:
    compile_stats.start()
    n_devices = 1 if mesh is None else mesh.size
    writer = jax.process_index() == 0  # under jax.distributed every process computes, the first one writes
    ckpt_dir = os.path.join(workdir, "checkpoints")
    resuming = bool(checkpoint.list_checkpoints(ckpt_dir))
    prepare_workdir(config, workdir, resuming, writer)
    progress = Progress(workdir, quiet, writer)
    plan = make_plan(config, dataset, particles)
    n_batches, batch_size = plan.batches.shape
    chunk = 1
    pixel = dataset.pixel_size_angstrom
    levels = len(plan.resolutions)
    per_level = config.schedule.iterations_per_level
    limits = likelihood.chunk_limits(jax.default_backend(), config.max_table_elements)
    local_batch = batch_size // n_devices  # particles per device per minibatch
    anneal_iterations = int(round(config.class_mixture.anneal_fraction * levels * per_level)) \
        if config.get("classes", 1) > 1 else 0
    # With several classes: the first levels fit one map (all tied), the next each map to its own random share of
    # the particles (recon/classes.py)
    tie_levels, split_levels = class_phases(config, levels)
    split_class = np.random.default_rng([config.seed, CLASS_STREAM]).integers(config.get("classes", 1),
                                                                                size=len(dataset))

    n_classes = check_classes(config)
    if start_volume is None:
        volume0, typical = initial_volume(config, dataset, plan)
    else:
        volume0 = np.asarray(start_volume, np.float32)
        if volume0.shape != ((n_classes,) if n_classes > 1 else ()) + (dataset.box_size,) * 3:
            raise fail(workdir, f"the start volume has shape {volume0.shape}, not one map per class")
        first = volume0[0] if n_classes > 1 else volume0
        typical = float(first[initial.support_mask(dataset.box_size, dataset.radius_pixels)].mean())
        if not typical > 0:
            raise fail(workdir, "the start volume has no positive density inside the particle radius")
    symmetric = len(plan.symmetry_matrices) > 1
    jit = step_lib.replicated_jit(mesh)  # every output readable by every process (jax.distributed)

    def per_map(fn):
        """``fn`` of one map applied to each class's map (``fn`` itself with one class)."""
        return fn if n_classes == 1 else jax.vmap(fn)

    symmetrise_full = jit(per_map(lambda v: symmetry.symmetrise(v, plan.symmetry_matrices)))
    all_finite = jit(lambda v: jnp.all(jnp.isfinite(v)))
    strength = prior_strength(config, typical)
    use_sagd = config.optimizer.kind == "sagd"
    if config.optimizer.line_search not in ("step", "minibatch"):
        raise InputError(f"unknown optimizer.line_search {config.optimizer.line_search!r} (step, minibatch)")
    sagd_direction = jit(sagd.direction)
    tie = jit(lambda g: jnp.broadcast_to(jnp.mean(g, axis=0, keepdims=True), g.shape))
    stored_gradient = jit(sagd.stored_gradient)  # before the donated update: see sagd.stored_gradient
    transform = None if use_sagd else make_optax(config)
    if use_sagd:
        grad_dtype = jnp.bfloat16 if config.optimizer.stored_grad_dtype == "bfloat16" else jnp.float32
        opt_state = sagd.init(volume0, n_batches, config.optimizer.lipschitz_init, grad_dtype)
    else:
        opt_state = step_lib.OptaxState(jnp.asarray(volume0), transform.init(jnp.asarray(volume0)),
                                        jnp.asarray(0, jnp.int32))
    host = RunState(best_pose=np.full((len(dataset), 3), -1, np.int32), best_level=np.full(len(dataset), -1, np.int32),
                    sampler=sampling.init_state(len(dataset) * n_classes, sampler_capacities(config)),
                    draw_slots=sampler_capacities(config),
                    draw_buffers={f: 4 * k for f, k in sampler_capacities(config).items()},
                    junk_score=np.full(len(dataset), np.nan, np.float32),
                    amplitude=np.full(len(dataset), np.nan, np.float32),
                    class_log_p=np.full((len(dataset), n_classes), np.nan, np.float32) if n_classes > 1 else None,
                    class_shares=[1.0 / n_classes] * n_classes if n_classes > 1 else [])
    adapt_slots = bool(config.sampling.adapt_slots)
    use_sampling = bool(config.sampling.enabled)

    if resuming:
        restored, meta = checkpoint.load_latest(ckpt_dir, (opt_state, host.tree()))
        if restored is None and checkpoint.list_checkpoints(ckpt_dir):  # written before the junk and amplitude
            legacy = {k: v for k, v in host.tree().items() if k not in ("junk_score", "amplitude")}
            restored, meta = checkpoint.load_latest(ckpt_dir, (opt_state, legacy))
            if restored is not None:
                restored[1].update(junk_score=host.junk_score, amplitude=host.amplitude)
            else:
                progress.line(f"warning: no checkpoint in {ckpt_dir} could be read; starting again")
        if restored is not None:
            opt_state, trees = restored
            opt_state = jax.tree_util.tree_map(jnp.asarray, opt_state)
            host.best_pose, host.best_level = trees["best_pose"], trees["best_level"]
            host.sampler = jax.tree_util.tree_map(np.array, trees["sampler"])
            host.junk_score = np.array(trees["junk_score"])
            host.amplitude = np.array(trees["amplitude"])
            if n_classes > 1:
                host.class_log_p = np.array(trees["class_log_p"])
            for key in META_KEYS:
                setattr(host, key, meta.get(key, getattr(host, key)))
            progress.line(f"resumed from iteration {int(opt_state.iteration)} ({workdir}/checkpoints)")
            if host.done and can_extend(config, int(opt_state.iteration), host):
                host.done = False
                progress.line("the run had stopped at a limit that the stop.* settings now raise: continuing")
    else:
        if writer:
            mrc.write_map(os.path.join(workdir, "maps", "initial.mrc"), volume0 if n_classes == 1 else volume0[0],
                          pixel)
            for c in range(1, n_classes):
                mrc.write_map(os.path.join(workdir, "maps", f"initial_class_{c + 1:02d}.mrc"), volume0[c], pixel)
        progress.line(f"{len(dataset)} particles ({len(plan.train)} train, {len(plan.heldout)} held out), "
                      f"{dataset.box_size} px at {pixel:.3g} A/px, {n_batches} minibatches of {batch_size}; "
                      f"levels {', '.join(f'{r:.1f}' for r in plan.resolutions)} A")
        for note in notes:
            progress.line(f"settings: {note}")
        if n_classes > 1:
            tempered = (f"; class likelihoods tempered from beta = {config.class_mixture.beta_start:g} to 1 over "
                        f"the first {anneal_iterations} iterations" if config.class_mixture.beta_start < 1 else "")
            def span(first, last):
                return f"level {first}" if first == last else f"levels {first}-{last}"

            plan_text = (f"{span(1, tie_levels)}: one map for all (one random start, tied); " if tie_levels
                         else "from the maps given; " if start_volume is not None
                         else "one random start; " if split_levels else "each from its own random start; ")
            if split_levels > tie_levels:
                plan_text += f"{span(tie_levels + 1, split_levels)}: each map fitted to its own random share; "
            progress.line(f"{n_classes} classes: {plan_text}then the class posteriors{tempered} (recon/classes.py)")

    def output_map(volume):
        """The map as written (snapshots, final.mrc): symmetrised over every frequency when a symmetry is imposed
        (the gradients are symmetrised within each level's band only, so the map's highest frequencies may not
        be)."""
        return np.asarray(symmetrise_full(volume) if symmetric else volume)

    def ensure_finite_map():
        """Before any map or checkpoint is written (not every step: the next objective would catch it too)."""
        if not bool(all_finite(opt_state.volume)):
            raise fail(ckpt_dir, f"the map became NaN or infinite at iteration {int(opt_state.iteration) - 1}; "
                                 "stopped, the last checkpoint here is intact (try a larger "
                                 "--config.optimizer.lipschitz_init or a smaller prior.scale)")

    def save_checkpoint():
        ensure_finite_map()
        meta = {k: getattr(host, k) for k in META_KEYS}
        meta["best_rremse"] = meta["best_rremse"] if math.isfinite(meta["best_rremse"]) else 1e300
        if writer:
            checkpoint.save(ckpt_dir, int(opt_state.iteration), (opt_state, host.tree()), meta,
                            keep=config.output.keep_checkpoints)

    # Read once: every level's empty-map objective (the divergence guard's reference) comes from these images.
    divergence_images = dataset.images(np.sort(np.random.default_rng(config.seed + 2).choice(
        plan.train, size=min(256, len(plan.train)), replace=False)))

    def sampler_rows(rows, level):
        """The sampler-state rows of particles ``rows`` (padded with -1) that a visit at ``level`` draws from:
        with several classes, particle ``i``'s state for class ``c`` is row ``i K + c`` (particle-major, padding
        -1), and while the maps are tied only class 1's (the others hold copies); with one, ``rows`` themselves."""
        if n_classes == 1:
            return rows
        if level < tie_levels:
            return np.where(rows >= 0, rows * n_classes, -1)
        out = rows[:, None] * n_classes + np.arange(n_classes)
        return np.where(rows[:, None] >= 0, out, -1).ravel()

    def record_sampler(rows, new, at_iteration, level):
        """The new sampler states of particles ``rows`` (padded with -1) after a visit at ``level`` (while the
        maps are tied, class 1's state copied to every class)."""
        if n_classes > 1 and level < tie_levels:
            for c in range(n_classes):
                record_visit(host, np.where(rows >= 0, rows * n_classes + c, -1), new, at_iteration)
        else:
            record_visit(host, sampler_rows(rows, level), new, at_iteration)

    def visited(rows):
        """Which of the particles ``rows`` have a sampler state (have been visited)."""
        return host.sampler.last_visit[rows * n_classes] >= 0

    def for_sampler(result, level):
        """A visit's results in the sampler's rows (the one-map results of every class, with several; of the
        first, while the maps are tied)."""
        if n_classes == 1:
            return result
        if level < tie_levels:
            return jax.tree_util.tree_map(lambda a: a[::n_classes], result.per_class)
        return result.per_class

    def samples_visit(level, rows, at_iteration):
        """Whether a visit of ``rows`` (padded with -1) at ``level`` draws from the proposals (else it sums every
        pose): sampling is on and started, the level samples, and every particle has a sampler state."""
        return (use_sampling and at_iteration >= config.sampling.start_iteration
                and host.level_sampled.get(str(level)) != "exhaustive"
                and bool(np.all(visited(rows[rows >= 0]))))

    junk_from = junk_start_level(config, levels)
    amplitude_from = amplitude_start_level(config, levels)

    def amplitude_on(level):
        return amplitude_from is not None and level >= amplitude_from

    def class_prior(beta=1.0):
        """The evaluations' class prior ``(log pi (K,), beta)`` (None with one class)."""
        if n_classes == 1:
            return None
        return (jnp.log(jnp.asarray(host.class_shares, jnp.float32)), jnp.asarray(beta, jnp.float32))

    def class_args():
        """The evaluations' last arguments: the class prior at beta = 1 (none with one class)."""
        return () if n_classes == 1 else (class_prior(),)

    def batch_of(rows, slot=0, share=0.0, beta=1.0, level=None):
        """A minibatch of ``rows``; with several classes its per-particle class prior: the shares, or, at the
        levels of the random split, each particle's own class alone (``split_class``)."""
        b = make_batch(dataset, rows, slot, share, host.amplitude if amplitude_from is not None else None)
        if n_classes == 1:
            return b
        if level is not None and level < split_levels:
            own = split_class[np.maximum(rows, 0)]
            log_prior = np.where(own[:, None] == np.arange(n_classes), 0.0, classes.EXCLUDED)
        else:
            log_prior = np.broadcast_to(np.log(np.asarray(host.class_shares)), (len(rows), n_classes))
        return b._replace(class_prior=(jnp.asarray(log_prior, jnp.float32), jnp.asarray(beta, jnp.float32)))

    def junk_on(level):
        return junk_from is not None and level >= junk_from

    def compile_level(level, disk=None, quiet=False):
        """The jitted functions of one level (compiled on first use) and its grid and sampler (``disk``: the
        shift disk, default the level's; ``quiet``: no line in run.log)."""
        rule = level_quadrature(plan, level, disk or host.shift_disks.get(str(level)))
        grid = likelihood.make_grid(dataset.box_size, pixel, rule, 1.0 / plan.resolutions[level],
                                    dataset.noise_power)
        chunk = likelihood.auto_chunk_size(local_batch, grid, limits.table_elements, limits.matrix_rows)
        level_sampler = sampling.make_level_sampler(rule, sampler_settings(config), sampler_capacities(config),
                                                    *((host.draw_slots, host.draw_buffers) if adapt_slots else ()))
        s_chunk = likelihood.sampled_chunk_size(local_batch, level_sampler.capacities, grid.freqs.shape[0],
                                                limits.sampled_elements)
        fns = step_lib.make_step_functions(grid, pixel, config.prior.kind, strength, n_batches, chunk,
                                           config.optimizer.kind, transform, config.remat,
                                           config.likelihood_kernel, s_chunk, config.likelihood_oversampling,
                                           mesh, junk_class=junk_on(level), classes=n_classes,
                                           tied=level < tie_levels)
        gradient_fn = jit(fns.gradient)
        objective_fn = jit(fns.objective)
        gradient_sampled_fn = jit(fns.gradient_sampled)
        objective_sampled_fn = jit(fns.objective_sampled)
        update_fn = jit(fns.update, donate_argnums=0)
        evaluate = jit(fns.evaluate)
        evaluate_sampled = jit(fns.evaluate_sampled)
        propose_fn = jit(lambda f, lv, it, idx, stream: level_sampler.propose(
            f, lv, particle_keys(config.seed, stream, it, idx)), static_argnums=4)
        record_sampled_fn = jit(level_sampler.record_sampled)
        record_exhaustive_fn = jit(level_sampler.record_exhaustive)
        pose_fit_fn = None if n_classes > 1 else jit(lambda v, images, ctf, poses: likelihood.batch_pose_fit(
            v, images, ctf, poses, grid, pixel, config.likelihood_kernel, config.likelihood_oversampling))
        eval_multiple = math.lcm(chunk, s_chunk) * n_devices

        def evaluate_rows(rows, at_iteration, stream, volume):
            """Evaluate (no gradient) the particles ``rows`` (padded with -1), recording their sampler
            states; returns (best (n, 3), expected_residual (n,)) for the real rows."""
            real_rows = rows >= 0
            safe_rows = np.where(real_rows, rows, rows[real_rows][0])
            b, _ = step_lib.place_batch(batch_of(rows), mesh)
            state_rows = sampler_rows(safe_rows, level)
            old = gather_factors(host.sampler, state_rows)
            scored = junk_on(level)
            if samples_visit(level, rows, at_iteration):
                samples, _ = propose_fn(old, jnp.asarray(host.sampler.last_visit[state_rows]),
                                        at_iteration, jnp.asarray(state_rows, jnp.int32), stream)
                res = evaluate_sampled(volume, b.images, b.ctf, step_lib.place_batch(b, mesh, samples)[1],
                                       *class_args())
                new, _ = record_sampled_fn(samples, for_sampler(res, level), old)
            else:
                res = evaluate(volume, b.images, b.ctf, *class_args())
                new, _ = record_exhaustive_fn(for_sampler(res, level), old)
            record_sampler(rows, new, at_iteration, level)
            if n_classes > 1:
                record_classes(host, rows, res, config.class_mixture.min_share)
            if scored:
                record_junk_scores(host, rows, res)
            if amplitude_on(level):
                used = scales_of(host.amplitude, safe_rows)
                record_amplitudes(host, rows, used, pose_fit_fn(volume, b.images, b.ctf, res.best),
                                  config.amplitude.prior_sd)
            return np.asarray(res.best)[real_rows], np.asarray(res.expected_residual)[real_rows]

        def probe_accuracy(at_iteration, volume):
            """log p of the probe particles as the sampler estimates it at a visit (each drawn 8 times or more,
            nothing recorded) against the exhaustive sum: (mean |error|, mean error) relative to the mean |log p|,
            and the number of estimates; None while a probe particle has no sampler state."""
            probe = plan.probe
            if not len(probe) or not np.all(visited(probe)):
                return None
            rows = padded_indices(probe, math.lcm(chunk, n_devices))
            b, _ = step_lib.place_batch(batch_of(rows), mesh)
            exact = np.asarray(evaluate(volume, b.images, b.ctf, *class_args()).log_marginal)[:len(probe)]
            multiple = s_chunk * n_devices  # the sampled evaluation splits rows over devices, then into chunks
            total = multiple * math.ceil(8 * len(probe) / multiple)
            rows = np.resize(probe, total)
            key_ids = rows + len(dataset) * (np.arange(total) // len(probe))  # a fresh draw for every repeat
            state_rows, key_ids = sampler_rows(rows, level), sampler_rows(key_ids, level)
            samples, _ = propose_fn(gather_factors(host.sampler, state_rows),
                                    jnp.asarray(host.sampler.last_visit[state_rows]), at_iteration,
                                    jnp.asarray(key_ids, jnp.int32), 3)
            b, samples = step_lib.place_batch(batch_of(rows), mesh, samples)
            estimate = np.asarray(evaluate_sampled(volume, b.images, b.ctf, samples, *class_args()).log_marginal)
            error = estimate - exact[np.arange(total) % len(probe)]
            scale = float(np.mean(np.abs(exact)))
            return (float(np.mean(np.abs(error))) / scale, float(np.mean(error)) / scale, total,
                    float(np.mean(np.abs(error))), float(np.mean(error)))
        # The data gradient lives within the level's band (plus the kernels' spread): symmetrise that band only.
        band = min(0.5, pixel / float(plan.resolutions[level]) + 2.0 / dataset.box_size)
        symmetrise_fn = jit(per_map(lambda v: symmetry.symmetrise(v, plan.symmetry_matrices, band)))
        # while tied, the K equal maps are one map: one prior (each map's weighted 1 / K), as in step.py
        prior_weight = 1.0 / n_classes if level < tie_levels else 1.0
        prior_fn = jit(lambda v: (prior_weight * priors.energy(v, config.prior.kind, strength) / n_batches,
                                  prior_weight * step_lib.prior_gradient_share(v, config.prior.kind, strength,
                                                                               n_batches)))
        points_per_particle = rule.size
        # an exhaustive sum's cost: poses x frequencies (x maps evaluated)
        work_per_particle = rule.size * len(grid.freqs) * (n_classes if level >= tie_levels else 1)
        # The objective per particle of an empty map (V = 0) in this band: half the images' band energy (unit noise).
        # A sane map scores within a few times of it; far above, the optimiser has diverged.
        empty_objective = 0.5 * band_power(divergence_images, pixel, 1.0 / plan.resolutions[level])[0]
        if not quiet:
            progress.line(f"level {level + 1}/{levels}: {plan.resolutions[level]:.1f} A, "
                          f"{len(rule.directions)} directions x {len(rule.inplane_degrees)} in-plane x "
                          f"{len(rule.shifts_angstrom)} shifts, {2 * len(grid.freqs) - 1} "
                          "frequencies")
        return types.SimpleNamespace(**{k: v for k, v in locals().items() if k != "level"})

    def size_level(lv, level, iteration):
        """At a level's start: each factor's slots and draws from what s0 ESS asks for on up to 512 training
        particles (at most ``max_capped_share`` capped), or every pose summed where sampling would evaluate more
        than ``sampling.exhaustive_fraction`` of them (proposals not yet informative). With
        ``sampling.timed_trial`` a sampled level is on trial until its first minibatches are timed
        (``judge_trial``). Kept for a resumed run."""
        if str(level) not in host.level_sampled:
            seen = plan.train[visited(plan.train)]
            if not len(seen):
                return lv
            rows = np.sort(np.random.default_rng([config.seed, level]).choice(seen, min(512, len(seen)), False))
            rows = sampler_rows(rows, level)
            measure = jax.jit(lv.level_sampler.measure)(
                gather_factors(host.sampler, rows), jnp.asarray(host.sampler.last_visit[rows]),
                particle_keys(config.seed, 4, iteration, jnp.asarray(rows, jnp.int32)))
            sizes = dict(zip(sampling.FACTORS, lv.level_sampler.sizes))
            limit = config.sampling.get("exhaustive_fraction", 0.5)
            share, slots, buffers, fraction = sampling.level_slots(
                measure, sizes, config.sampling.max_capped_share, config.sampling.get("loose_capped_shares", ()),
                limit)
            sampled = fraction <= limit
            host.level_shares[str(level)] = share
            timed = config.sampling.get("timed_trial", True) and host.exhaustive_seconds
            host.level_sampled[str(level)] = "trial" if sampled and timed else (
                "sampled" if sampled else "exhaustive")
            ess = "/".join(f"{np.median(np.asarray(measure[f][0])) / config.sampling.s0:.1f}" for f in sampling.FACTORS)
            if sampled:
                host.draw_slots, host.draw_buffers = slots, buffers
                loose = (f", up to {share:.0%} of particles capped at this level"
                         if share > config.sampling.max_capped_share else "")
                progress.line(f"level {level + 1}: importance sampling, {fraction:.1e} of poses per visit (median "
                              f"ESS {ess}; slots {slots}, draws up to {buffers}{loose})")
            else:
                progress.line(f"level {level + 1}: every pose summed (median ESS {ess} of "
                              f"{'/'.join(str(m) for m in sizes.values())}: sampling would evaluate {fraction:.0%} "
                              "of them)")
        return compile_level(level) if host.level_sampled[str(level)] != "exhaustive" else lv

    level_points = {}  # poses x frequencies of each level: an exhaustive pass's cost per particle, up to a rate

    def final_pass_plan(level):
        """The final pose pass at ``level`` (the compiled one): its rows (padded minibatches), predicted seconds,
        whether it re-assigns every particle (``full_final_pass``), and the level that assigns. If not full, only
        the particles never visited are assigned (poses.star needs a pose for each), at the finest level whose
        exhaustive pass fits ``FINAL_PASS_SHARE`` of the limit (``assignment_level``). Rows are summed
        exhaustively where ``evaluate_rows`` would."""
        if not config.output.final_pose_pass:
            return [], 0.0, True, level
        rows = list(plan.batches) + ([padded_indices(plan.heldout, lv.eval_multiple)] if len(plan.heldout) else [])
        sampled_level = samples_visit(level, np.array([-1]), iteration)
        summed_cost = host.exhaustive_seconds * lv.work_per_particle if sampled_level else 0.0

        def seconds(some):
            sampled = [samples_visit(level, r, iteration) for r in some]
            counts = [int(np.sum(r >= 0)) for r in some]
            return final_pass_seconds(recent, sum(c for c, x in zip(counts, sampled) if x),
                                      sum(c for c, x in zip(counts, sampled) if not x), summed_cost,
                                      float(np.median(eval_rates)) if eval_rates else 0.0)

        predicted = seconds(rows)
        if full_final_pass(config, predicted):
            return rows, predicted, True, level
        rows = [r for r in rows if np.any(host.best_level[r[r >= 0]] < 0)]
        predicted = seconds(rows)
        # Seconds per particle, pose and frequency: the exhaustive sums' where timed, else the recent steps'.
        per_work = host.exhaustive_seconds or final_pass_seconds(recent, 1, 0, 0.0) / lv.work_per_particle
        if full_final_pass(config, predicted) or not per_work or not rows:
            return rows, predicted, False, level
        for lv_index in range(level + 1):
            if lv_index not in level_points:
                rule = level_quadrature(plan, lv_index, host.shift_disks.get(str(lv_index)))
                freqs, _ = likelihood.half_plane_frequencies(dataset.box_size, pixel / plan.resolutions[lv_index])
                level_points[lv_index] = rule.size * len(freqs) * (n_classes if lv_index >= tie_levels else 1)
        budget = FINAL_PASS_SHARE * 60 * config.stop.max_minutes
        count = sum(int(np.sum(r >= 0)) for r in rows)
        coarse = assignment_level(count, per_work, [level_points[i] for i in range(level + 1)], budget)
        # Even the coarsest pass may not fit: training keeps at most the share for it, and the pass runs over.
        return rows, min(count * per_work * level_points[coarse], budget), False, coarse

    def widen_shift_disk(level):
        """Before a level: the shift disk widened (never narrowed) to 3.5 sigma of the particles' offsets, sigma
        from the spread of their posterior mean offsets at the last visits (``sampling.offset_sigma_angstrom``),
        at most a third of the box, so that no particle lies silently outside it."""
        rows = sampler_rows(plan.train[visited(plan.train)], level)
        previous = host.shift_disks.get(str(level - 1), plan.max_shift_angstrom)
        disk = previous
        if len(rows):
            sigma = sampling.offset_sigma_angstrom(host.sampler.shifts.points[rows], host.sampler.shifts.log_phi[rows])
            disk = max(previous, min(3.5 * sigma, dataset.box_size * pixel / 3.0))
            if disk > previous + 1e-6:
                progress.line(f"level {level + 1}: shift disk widened to {disk:.1f} A (offsets measured with a sigma "
                              f"of {sigma:.1f} A on {len(rows)} particles; it was {previous:.1f} A)")
        host.shift_disks[str(level)] = round(float(disk), 2)

    def search_again(level, at_iteration, volume):
        """At a sampled level's start: the poses of the particles this level will visit (and the held-out ones)
        summed over the first level's coarse grid (no gradient) under the current map; those that have lost their
        pose (``restart_lost``) restart their samplers from the search's posterior. Not again once a search found
        under ``SEARCH_STOP_SHARE`` lost; skipped, with a line, where the search's predicted time (at the
        exhaustive training rate, which errs long) would pass the limit."""
        t0 = time.time()
        coarse = compile_level(0, host.shift_disks.get(str(level)), quiet=True)
        directions = np.asarray(coarse.rule.directions, np.float64)
        degrees = max(SEARCH_DEGREES, 2 * math.degrees(math.sqrt(4 * math.pi / len(directions))))
        slots = {int(batch_order(config.seed, it // n_batches, n_batches)[it % n_batches])
                 for it in range(at_iteration, at_iteration + min(per_level, n_batches))}
        rows_list = [plan.batches[s] for s in sorted(slots)]
        if len(plan.heldout):
            rows_list.append(padded_indices(plan.heldout, coarse.eval_multiple))
        count = sum(int(np.sum(r >= 0)) for r in rows_list)
        predicted = host.exhaustive_seconds * coarse.work_per_particle * count
        host.searched_levels.append(level)
        if host.searched_lost_share < SEARCH_STOP_SHARE:
            return  # the latest search found almost every proposal on its pose: searching again costs, not pays
        if config.stop.max_minutes and time.time() - start_wall + predicted > 60 * config.stop.max_minutes:
            progress.line(f"level {level + 1}: poses not searched again (~{predicted:.0f} s would pass the limit)")
            return
        lost_count = searched = 0
        for rows in rows_list:
            b, _ = step_lib.place_batch(batch_of(rows), mesh)
            res = coarse.evaluate(volume, b.images, b.ctf)
            lost, seen = restart_lost(host, rows, np.asarray(res.post_dir), directions, degrees, at_iteration,
                                      lambda safe: coarse.record_exhaustive_fn(res, gather_factors(host.sampler,
                                                                                                   safe))[0])
            lost_count, searched = lost_count + lost, searched + seen
        host.searched_lost_share = lost_count / max(searched, 1)
        progress.line(f"level {level + 1}: poses searched again over the {plan.resolutions[0]:.1f}-A grid: "
                      f"{lost_count} of {searched} particles ({lost_count / max(searched, 1):.0%}) had lost their "
                      f"pose (under {SEARCH_MASS:.0%} of the posterior within {degrees:.0f} "
                      f"degrees of their proposal's mode) and restart from the search ({time.time() - t0:.0f} s)")

    def judge_trial(level, times, work):
        """A level on trial samples on if its median minibatch time beats the exhaustive sum's, predicted from the
        latest exhaustive minibatches' seconds per particle, pose and frequency (``work``: poses x frequencies)."""
        sampled, predicted = float(np.median(times)), host.exhaustive_seconds * work * batch_size
        keep = process_zero_says(sampled < predicted)  # every process of a multi-host run takes process 0's choice
        host.level_sampled[str(level)] = "sampled" if keep else "exhaustive"
        progress.line(f"level {level + 1}: {'importance sampling' if keep else 'every pose summed'} "
                      f"({sampled:.2f} s per minibatch sampled, ~{predicted:.2f} s summing every pose)")

    opt_state = step_lib.replicate(opt_state, mesh)
    iteration = int(opt_state.iteration)
    compiled_level = None
    window = []  # recent visits' sampler statistics, to size the slots (config.sampling.adapt_slots)
    fresh, trial_times, exhaustive_rates = True, [], []  # timing of sampled and exhaustive minibatches
    start_wall = time.time() - host.elapsed
    last_checkpoint = time.time()
    recent = []  # (seconds, particles) of recent iterations
    eval_rates, eval_fresh = [], True  # seconds per particle of the compiled level's sampled held-out evaluations
    stop_reason = "done" if host.done else None
    while stop_reason is None:
        if iteration >= config.stop.max_iterations:
            stop_reason = f"reached {config.stop.max_iterations} iterations"
            break
        if config.stop.max_minutes:
            reserve = final_pass_plan(compiled_level)[1] if compiled_level is not None else 0.0
            if process_zero_says(time.time() - start_wall + reserve > 60 * config.stop.max_minutes):
                host.stopped_at_minutes = float(config.stop.max_minutes)
                stop_reason = (f"reached {config.stop.max_minutes} minutes (with {format_seconds(reserve)} kept for "
                               "the final pose pass)" if reserve else f"reached {config.stop.max_minutes} minutes")
                break
        level = schedules.level_at(iteration, levels, per_level)
        if level != compiled_level:
            if config.quadrature.get("adapt_shifts") and level > 0 and str(level) not in host.shift_disks:
                widen_shift_disk(level)
            lv = compile_level(level)
            compiled_level, window, eval_rates, eval_fresh = level, [], [], True
            if n_classes > 1 and iteration > 0 and schedules.level_at(iteration - 1, levels, per_level) != level:
                opt_state = level_start_maps(opt_state, pixel, plan.resolutions[level - 1], mesh)
            if (config.sampling.get("search_again", False) and use_sampling and n_classes == 1 and not symmetric
                    and level >= 2 and iteration >= config.sampling.start_iteration
                    and level not in host.searched_levels):
                search_again(level, iteration, opt_state.volume)
            if adapt_slots and use_sampling and iteration >= config.sampling.start_iteration:
                lv = size_level(lv, level, iteration)
            fresh, trial_times = True, []  # the first step after a compile is not timed
        epoch, position = divmod(iteration, n_batches)
        slot = int(batch_order(config.seed, epoch, n_batches)[position])
        indices = plan.batches[slot]
        t0 = time.time()
        share = (host.junk_share or junk.INITIAL_SHARE) if junk_on(level) else 0.0
        beta = classes.beta_at(iteration, anneal_iterations, config.class_mixture.beta_start)
        batch = batch_of(indices, slot, share, beta, level)
        volume = opt_state.volume
        real = indices >= 0
        safe = np.where(real, indices, indices[real][0])
        state_rows, state_real = sampler_rows(safe, level), sampler_rows(indices, level) >= 0
        old_factors = gather_factors(host.sampler, state_rows)
        sampled_now = samples_visit(level, indices, iteration)
        if sampled_now:
            samples, sample_stats = lv.propose_fn(old_factors, jnp.asarray(host.sampler.last_visit[state_rows]),
                                                  iteration, jnp.asarray(state_rows, jnp.int32), 0)
            batch, samples = step_lib.place_batch(batch, mesh, samples)
            (data_value, result), data_grad = lv.gradient_sampled_fn(volume, batch, samples)
            new_factors, kl = lv.record_sampled_fn(samples, for_sampler(result, level), old_factors)
            batch_objective = lambda v: lv.objective_sampled_fn(v, batch, samples)  # noqa: E731
        else:
            sample_stats = None
            batch, _ = step_lib.place_batch(batch, mesh)
            (data_value, result), data_grad = lv.gradient_fn(volume, batch)
            new_factors, kl = lv.record_exhaustive_fn(for_sampler(result, level), old_factors)
            batch_objective = lambda v: lv.objective_fn(v, batch)  # noqa: E731
        # the amplitude scales' pose fit with the map of this step (the update donates it)
        fit = lv.pose_fit_fn(volume, batch.images, batch.ctf, result.best) if amplitude_on(level) else None
        if symmetric:  # the gradient of the full-sphere objective at a symmetric map (recon/symmetry.py)
            data_grad = lv.symmetrise_fn(data_grad)
        prior_value, prior_grad = lv.prior_fn(volume)
        if level < tie_levels:  # the maps are one: each takes the mean of their gradients (the prior: prior_fn)
            data_grad = tie(data_grad)
        objective = float(data_value + prior_value)
        if not math.isfinite(objective):
            raise fail(ckpt_dir, f"the objective became {objective} at iteration {iteration}; stopped, the last "
                                 "checkpoint here is intact (try a larger --config.optimizer.lipschitz_init or "
                                 "a smaller prior.scale)")
        per_particle = objective / max(int(real.sum()), 1)
        if junk_on(level):  # the mixture is bounded by noise alone's objective: judge the map by its own
            one_class = -float(np.sum(np.asarray(batch.mask) * np.asarray(result.log_marginal)))
            per_particle = (one_class + float(prior_value)) / max(int(real.sum()), 1)
        if config.stop.divergence_factor and per_particle > config.stop.divergence_factor * lv.empty_objective:
            last = checkpoint.list_checkpoints(ckpt_dir)
            kept = (f"the last checkpoint here ({os.path.basename(last[-1])}) is intact" if last
                    else "before its first checkpoint")
            raise fail(ckpt_dir, f"the run diverged at iteration {iteration}: objective {per_particle:.4g} per "
                                 f"particle, {per_particle / lv.empty_objective:.0f} times that of an empty map "
                                 f"({lv.empty_objective:.4g}) at {plan.resolutions[level]:.1f} A; stopped, {kept} "
                                 "(try --config.optimizer.line_search_every=2: with few minibatches SAGD needs "
                                 "frequent line searches)")
        lipschitz = float(opt_state.lipschitz) if use_sagd else 0.0
        slot_index = jnp.asarray(slot, jnp.int32)
        old_grad = stored_gradient(opt_state, slot_index) if use_sagd else None
        if use_sagd:
            if schedules.line_search_due(iteration, per_level, config.optimizer.line_search_every):
                along = (sagd_direction(opt_state, slot_index, data_grad, prior_grad, old_grad)
                         if config.optimizer.line_search == "step" else None)
                lipschitz = step_lib.line_search(batch_objective, volume, objective, data_grad + prior_grad,
                                                 lipschitz, direction=along)
            else:
                lipschitz *= schedules.lipschitz_decay(config.optimizer.lipschitz_halving_iterations)
        controls = step_lib.Controls(epsilon=jnp.asarray(schedules.step_size(iteration), jnp.float32),
                                     lipschitz=jnp.asarray(lipschitz, jnp.float32))
        opt_state = lv.update_fn(opt_state, slot_index, data_grad, prior_grad, controls, old_grad)
        out_best = np.asarray(result.best)
        host.best_pose[indices[real]] = out_best[real]
        host.best_level[indices[real]] = level
        record_sampler(indices, new_factors, iteration, level)
        if junk_on(level):
            record_junk_scores(host, indices, result)
        if n_classes > 1:
            record_classes(host, indices, result, config.class_mixture.min_share)
        if fit is not None:
            record_amplitudes(host, indices, scales_of(host.amplitude, safe), fit, config.amplitude.prior_sd)
        seconds = time.time() - t0
        if not fresh and not sampled_now:  # the median of the last 10 (a line search lengthens some)
            exhaustive_rates = (exhaustive_rates + [seconds / (int(real.sum()) * lv.work_per_particle)])[-10:]
            host.exhaustive_seconds = float(np.median(exhaustive_rates))
        elif adapt_slots and not fresh and host.level_sampled.get(str(level)) == "trial":
            trial_times.append(seconds)
            if len(trial_times) >= TRIAL_STEPS:
                judge_trial(level, trial_times, lv.work_per_particle)
        if not fresh:  # the first step after a compile includes compiling
            recent = (recent + [(seconds, int(real.sum()))])[-20:]
        fresh = False
        rate = sum(p for _, p in recent) / max(sum(s for s, _ in recent), 1e-9)
        iteration += 1
        host.elapsed = time.time() - start_wall
        record = {"iteration": iteration, "epoch": epoch, "level": level, "max_freq_per_angstrom": 1.0 / plan.resolutions[level],
                  "resolution_angstrom": float(plan.resolutions[level]),
                  "objective": objective / max(int(real.sum()), 1), "step_size": schedules.step_size(iteration - 1),
                  "lipschitz": lipschitz, "seconds": round(host.elapsed, 3),
                  "quadrature_points": int(lv.points_per_particle * int(real.sum())),
                  "particles_per_second": rate, "particles": int(real.sum()), "step_seconds": round(seconds, 4),
                  "peak_rss_mb": peak_rss_mb()}
        if (device_peak := device_peak_mb()) is not None:
            record["device_peak_mb"] = device_peak
        record.update(sampling_record(sample_stats, lv.level_sampler.sizes, state_real, kl))
        if n_classes > 1:
            record["class_shares"], record["class_beta"] = list(host.class_shares), beta
        if junk_on(level):
            record["junk_share"] = host.junk_share
            record["junk_flagged"] = float(np.mean(junk.flagged(host.junk_score, host.junk_share)))
        if sampled_now and adapt_slots:
            window = (window + [{f: tuple(np.asarray(sample_stats[f"{f}_{k}"])[state_real] for k in
                                          ("wanted", "count", "num_draws")) for f in sampling.FACTORS}])[-10:]
            if len(window) >= 5:
                slots, buffers, changes = sampling.grow_slots(
                    host.draw_slots, host.draw_buffers, dict(zip(sampling.FACTORS, lv.level_sampler.sizes)), window,
                    host.level_shares.get(str(level), config.sampling.max_capped_share))
                if changes:
                    host.draw_slots, host.draw_buffers, window = slots, buffers, []
                    progress.line(f"sampling at {plan.resolutions[level]:.1f} A: {'; '.join(changes)}")
                    if config.sampling.get("timed_trial", True) and host.exhaustive_seconds:
                        host.level_sampled[str(level)] = "trial"  # larger slots: timed again against the sum
                    lv = compile_level(level)
                    fresh, trial_times, eval_rates, eval_fresh = True, [], [], True
        if schedules.heldout_due(iteration - 1, config.output.heldout_every, per_level) and len(plan.heldout):
            volume = opt_state.volume
            heldout_rows = padded_indices(plan.heldout, lv.eval_multiple)
            sampled_eval, t_eval = samples_visit(level, heldout_rows, iteration - 1), time.time()
            heldout_best, residual = lv.evaluate_rows(heldout_rows, iteration - 1, 1, volume)
            if sampled_eval and not eval_fresh:  # the first evaluation of a compiled level includes compiling
                eval_rates = (eval_rates + [(time.time() - t_eval) / len(heldout_rows)])[-5:]
            eval_fresh = eval_fresh and not sampled_eval
            host.best_pose[heldout_rows[heldout_rows >= 0]] = heldout_best
            host.best_level[heldout_rows[heldout_rows >= 0]] = level
            host.last_rremse = rremse(residual, lv.grid)
            record["heldout_rremse"] = host.last_rremse
            if level == levels - 1:
                if host.last_rremse < host.best_rremse - config.stop.min_improvement:
                    host.best_rremse, host.stale_evaluations = host.last_rremse, 0
                else:
                    host.stale_evaluations += 1
                if host.stale_evaluations >= config.stop.patience:
                    stop_reason = "held-out error stopped improving at the final resolution"
        if (len(plan.probe) and use_sampling and iteration - 1 >= config.sampling.start_iteration
                and host.level_sampled.get(str(level)) != "exhaustive"
                and iteration % per_level == 0 and iteration <= levels * per_level):
            accuracy = lv.probe_accuracy(iteration - 1, opt_state.volume)
            if accuracy is not None:
                record["probe_log_p_relative_error"], record["probe_log_p_relative_bias"] = accuracy[:2]
                record["probe_log_p_error_nats"], record["probe_log_p_bias_nats"] = accuracy[3:]
                progress.line(f"sampling accuracy at {plan.resolutions[level]:.1f} A: log p off by "
                              f"{100 * accuracy[0]:.3f} % = {accuracy[3]:.2f} nats (bias {100 * accuracy[1]:+.3f} % "
                              f"= {accuracy[4]:+.2f} nats) over {accuracy[2]} estimates of {len(plan.probe)} "
                              f"particles; slots {host.draw_slots}")
        record.update(compile_stats.snapshot())  # this process's, cumulative
        progress.metrics(record)
        remaining = max(0, min(config.stop.max_iterations, levels * per_level + config.stop.final_level_iterations)
                        - iteration)
        eta = remaining * (sum(s for s, _ in recent) / max(len(recent), 1))
        if config.stop.max_minutes:
            eta = max(0.0, min(eta, 60 * config.stop.max_minutes - host.elapsed))
        if schedules.due(iteration, config.output.log_every) or stop_reason:
            if record["sampled"]:
                poses = (f"IS {record['fraction_evaluated']:.1e} of poses (ESS {record['ess_directions']:.1f}/"
                         f"{record['ess_inplane']:.1f}/{record['ess_shifts']:.1f}, {100 * record['capped']:.0f} % "
                         "capped)")
            else:
                poses = "all poses"
            progress.line(f"it {iteration:6d}  {plan.resolutions[level]:5.1f} A  objective {record['objective']:10.3f}  "
                          f"held-out {host.last_rremse:.4f}  {poses}  {rate:6.1f} particles/s  "
                          f"elapsed {format_seconds(host.elapsed)}  left ~{format_seconds(eta)}")
        if writer and schedules.due(iteration, config.output.save_map_every):
            ensure_finite_map()
            write_maps(os.path.join(workdir, "maps", f"iter_{iteration:08d}"), output_map(opt_state.volume), pixel,
                       "_class_")
        if (schedules.due(iteration, config.output.checkpoint_every)
                or time.time() - last_checkpoint > 60 * config.output.checkpoint_minutes):
            save_checkpoint()
            last_checkpoint = time.time()

    if not host.done:
        if config.output.final_pose_pass:
            level = schedules.level_at(max(iteration - 1, 0), levels, per_level)
            if level != compiled_level:  # e.g. resumed just before the end: build this level's evaluator
                lv, compiled_level = compile_level(level), level
            rows, _, full, assign = final_pass_plan(level)
            if not full and not rows:
                progress.line(f"final pose pass skipped: a full pass would take over {FINAL_PASS_SHARE:.0%} of the "
                              "time limit, and every particle has its most probable pose from its last visit")
            elif not full:
                at = (f" at level {assign + 1} ({plan.resolutions[assign]:.1f} A, the finest whose exhaustive pass "
                      "fits the share, or the coarsest)" if assign != level else "")
                progress.line(f"final pose pass over {sum(int(np.sum(r >= 0)) for r in rows)} particles never "
                              f"visited only{at}: a full pass would take over {FINAL_PASS_SHARE:.0%} of the time "
                              "limit; the others keep their most probable pose at their last visit")
            if assign != level:
                lv, compiled_level = compile_level(assign), assign
            for row in rows:
                assigned = row >= 0 if assign == level else (row >= 0) & (host.best_level[np.maximum(row, 0)] < 0)
                best, _ = lv.evaluate_rows(row, iteration, 2, opt_state.volume)
                host.best_pose[row[assigned]] = best[assigned[row >= 0]]
                host.best_level[row[assigned]] = assign
        ensure_finite_map()
        if writer:
            final = output_map(opt_state.volume)
            if n_classes > 1:
                write_maps(os.path.join(workdir, "class"), final, pixel, "_")
                final = final[int(np.argmax(host.class_shares))]
            mrc.write_map(os.path.join(workdir, "final.mrc"), final, pixel)
            angles = write_poses(os.path.join(workdir, "poses.star"), dataset, plan, host,
                                 config.output.get("names_relative_to"), junk_from is not None,
                                 amplitude_from is not None)
            if n_classes > 1:
                progress.line(class_counts_line(host))
            if junk_from is not None:
                progress.line(junk_line(host))
            if amplitude_from is not None:
                progress.line(amplitude.summary_line(host.amplitude, np.isfinite(host.amplitude)))
            coverage = views.coverage_line(angles[host.best_level >= 0], plan.symmetry_matrices)
            if coverage:
                progress.line(coverage)
        host.done = True
        save_checkpoint()
        progress.line(f"stopped: {stop_reason}; wrote {workdir}/final.mrc and poses.star")
        try:
            if writer:
                progress.line(f"wrote {report.write_report(workdir)}")
        except Exception as error:  # the map and poses are written; a figure failing must not lose them
            progress.line(f"warning: {workdir}/report.html not written ({type(error).__name__}: {error}); "
                          f"python -m recon.report --workdir {workdir} writes it")
    else:
        progress.line(f"{workdir} holds a finished run; final.mrc and poses.star are there")
    progress.close()
    disks = [plan.max_shift_angstrom, *host.shift_disks.values()]
    return {"iterations": iteration, "elapsed_seconds": host.elapsed, "shift_disk_angstrom": float(max(disks)),
            "heldout_rremse": host.last_rremse if math.isfinite(host.last_rremse) else None,
            "peak_rss_mb": peak_rss_mb(), "device_peak_mb": device_peak_mb(),
            "final_map": os.path.join(workdir, "final.mrc"), "stop_reason": stop_reason,
            "class_maps": [os.path.join(workdir, f"class_{c + 1:02d}.mrc") for c in range(n_classes)] if n_classes > 1
            else [], "class_shares": list(host.class_shares)}


def check_classes(config) -> int:
    """``config.classes`` (K), checked: a whole number of at least 1; several only without per-particle
    amplitudes."""
    k = config.get("classes", 1)
    if not isinstance(k, int) or k < 1:
        raise InputError(f"--config.classes={k!r}: expected a whole number of maps, at least 1")
    if k > 1 and config.get("amplitude", {}).get("model", "off") != "off":
        raise InputError("--config.classes > 1 and --config.amplitude.model are not supported together")
    if k > 1 and not 0 < config.class_mixture.beta_start <= 1:
        raise InputError(f"--config.class_mixture.beta_start={config.class_mixture.beta_start}: expected (0, 1]")
    return k


def level_start_maps(opt_state, pixel: float, fitted_resolution_angstrom: float, mesh):
    """With several classes, at a level's first step: every map cut to the band it was fitted in (beyond it each
    map holds what is left of its random start), so that no class wins or loses every particle on the new band's
    unfitted content (seen on a two-state set: the class with more of it lost every particle at the level change
    and never recovered). Positivity kept."""
    volume = np.asarray(jax.device_get(opt_state.volume))
    cut = np.stack([np.maximum(metrics.lowpass_volume(v, pixel, fitted_resolution_angstrom), 0.0) for v in volume])
    return opt_state._replace(volume=step_lib.replicate(jnp.asarray(cut, jnp.float32), mesh))


def write_maps(stem: str, volume: np.ndarray, pixel: float, separator: str) -> None:
    """``STEM.mrc`` for one map; for several ``(K, D, D, D)``, ``STEM{separator}NN.mrc`` per class (from 01)."""
    if volume.ndim == 3:
        mrc.write_map(stem + ".mrc", volume, pixel)
        return
    for c, v in enumerate(volume):
        mrc.write_map(f"{stem}{separator}{c + 1:02d}.mrc", v, pixel)


def image_names_relative(meta, path: str, relative_to: str | None = None) -> np.ndarray:
    """``N@stack`` names for a STAR file written at ``path``: the stacks relative to ``relative_to`` (RELION's
    project folder, from which RELION resolves them) or, by default, to the file's own folder."""
    base = os.path.abspath(relative_to) if relative_to else os.path.dirname(os.path.abspath(path))
    names = [os.path.relpath(s, base) for s in meta.stack_paths]
    return np.array([f"{j + 1:06d}@{s}" for j, s in zip(meta.image_indices, names)], dtype=object)


def junk_line(host: RunState) -> str:
    """run.log's account of the noise class at the end."""
    scored = np.isfinite(host.junk_score)
    flagged = junk.flagged(host.junk_score, max(host.junk_share, junk.PRIOR_MIN))
    return (f"junk: {int(flagged.sum())} of {int(scored.sum())} scored particles ({100 * flagged.mean():.1f} % of "
            f"all) explained better by noise alone than by the map (share {100 * host.junk_share:.1f} %); "
            f"poses.star: rlnClassNumber 2 and their score in {star.JUNK_SCORE_COLUMN} (log Bayes factor map / "
            "noise, NaN: never scored)")


def write_poses(path: str, dataset: ParticleDataset, plan: Plan, host: RunState,
                relative_to: str | None = None, junk_columns: bool = False,
                amplitude_column: bool = False) -> np.ndarray:
    """RELION 3.1 STAR with each particle's most probable pose and shift at its last evaluation, its CTF and the
    particle file's other columns; image names relative to ``relative_to`` (default: the file's folder). With
    ``junk_columns``, ``rlnClassNumber`` (1 particle, 2 junk: recon/junk.py, replacing any input classes) and the
    junk score; with ``amplitude_column``, each particle's amplitude scale (1 where never estimated). With several
    classes (``host.class_log_p``), ``rlnClassNumber`` is the most probable class (1..K; junk K + 1) and
    ``rlnReconClassPosterior`` its posterior probability (NaN: never scored). Returns the angles written
    ``(N, 3)``."""
    meta = dataset.meta
    n = len(meta)
    angles = np.zeros((n, 3))
    origins = np.zeros((n, 2))
    rules = {}
    for i in range(n):
        level = int(host.best_level[i])
        if level < 0:
            continue
        if level not in rules:
            rules[level] = level_quadrature(plan, level, host.shift_disks.get(str(level)))
        rule = rules[level]
        d, p, t = host.best_pose[i]
        rot, tilt = quadrature.directions_to_angles(rule.directions[d])
        angles[i] = (rot, tilt, rule.inplane_degrees[p])
        origins[i] = rule.shifts_angstrom[t]
    own = (star.JUNK_SCORE_COLUMN, star.AMPLITUDE_COLUMN, star.CLASS_PROBABILITY_COLUMN)  # not this run's
    carried = {k: v for k, v in (meta.extra_columns or {}).items() if k not in own} or None
    out = dataclasses.replace(meta, angles_degrees=angles, origins_angstrom=origins, extra_columns=carried,
                              box_size=np.full(n, dataset.box_size),
                              pixel_size_angstrom=np.full(n, dataset.pixel_size_angstrom))
    extra = {}
    if junk_columns:
        extra = {"rlnClassNumber": np.where(junk.flagged(host.junk_score, max(host.junk_share, junk.PRIOR_MIN)), 2, 1),
                 star.JUNK_SCORE_COLUMN: host.junk_score.astype(np.float64)}
    if host.class_log_p is not None:
        assigned, top = classes.assignments(host.class_log_p, np.asarray(host.class_shares))
        number = np.maximum(assigned, 0) + 1
        if junk_columns:
            number = np.where(extra["rlnClassNumber"] == 2, len(host.class_shares) + 1, number)
        extra["rlnClassNumber"], extra[star.CLASS_PROBABILITY_COLUMN] = number, top
    if amplitude_column:
        extra[star.AMPLITUDE_COLUMN] = scales_of(host.amplitude, np.arange(n)).astype(np.float64)
    star.write_star(path, out, image_names=image_names_relative(meta, path, relative_to), extra_columns=extra)
    return angles


