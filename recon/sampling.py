"""Importance sampling over poses (Sec. 3.3 and Appendix B, Algorithm 2 of the paper).

Three factored samplers per particle -- view direction (S^2), in-plane angle (S^1), shift (R^2). Each keeps, from
the particle's previous visit, the points it evaluated and their marginal posterior values ``phi_i``
(:class:`FactorState`), with the spacing of the quadrature they came from. At the next visit the proposal on the
current quadrature (Eq. 14) is

    q_j = (1 - alpha) phihat_j / Z + alpha psi_j,      phihat_j = sum_i phi_i^(1/T) K_ij,

``psi`` uniform, ``K`` a von Mises-Fisher kernel on S^2 and S^1 or a Gaussian on shifts, each row normalised over
the current points (so smoothing preserves mass) with a bandwidth of ``bandwidth_factor`` times the previous
quadrature's spacing (which carries the state across increases of the maximum frequency). ``N = s0 * ESS(q)``
indices are drawn (``ESS = 1 / sum q^2``) into at most ``K`` distinct slots (``draw``: a particle whose draws do
not fit is "capped", N shrinking to the prefix that fits; ``grow_slots`` sizes ``K`` so that few are); each
distinct index is evaluated once with weight ``count * w_j / (N q_j)`` (``w_j`` the quadrature weight), so that

    sum_{distinct j} count_j w_j / (N q_j) f(j)   is an unbiased estimate of   sum_j w_j f(j)       (Eq. 10-12).

Everything is a pure function of ONE particle's arrays (static shapes: capacity-padded, unused slots have
``log_phi = NEG``); vmap over a minibatch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

import jax
import jax.numpy as jnp

NEG = -1e30  # log of an empty slot / zero weight (finite, so that gradients never meet inf - inf)


class FactorState(NamedTuple):
    """One factor of one particle (leading particle axis when stored for a dataset).

    points: ``(S, dim)`` coordinates of the evaluated points (unit vectors in R^3 for directions, ``(cos, sin)``
    for in-plane angles, Angstrom for shifts); log_phi: ``(S,)`` log marginal posterior (NEG for empty slots);
    spacing: ``()`` the spacing of the quadrature they came from (radians, or Angstrom for shifts).
    """

    points: jnp.ndarray
    log_phi: jnp.ndarray
    spacing: jnp.ndarray


class SamplerState(NamedTuple):
    """Per-particle importance-sampling state for a whole dataset: three :class:`FactorState` with a leading
    ``(N_particles,)`` axis and ``last_visit`` ``(N_particles,)`` int32 (iteration of the previous visit, -1 never)."""

    directions: FactorState
    inplane: FactorState
    shifts: FactorState
    last_visit: jnp.ndarray


FACTORS = ("directions", "inplane", "shifts")
DIMS = {"directions": 3, "inplane": 2, "shifts": 2}


def init_state(num_particles: int, capacities: dict) -> SamplerState:
    """Empty state (numpy arrays) with ``capacities[factor]`` slots per particle."""
    def factor(name):
        s = capacities[name]
        return FactorState(points=np.zeros((num_particles, s, DIMS[name]), np.float32),
                           log_phi=np.full((num_particles, s), NEG, np.float32),
                           spacing=np.ones((num_particles,), np.float32))
    return SamplerState(*(factor(n) for n in FACTORS), last_visit=np.full((num_particles,), -1, np.int32))


def inplane_points(degrees) -> np.ndarray:
    """In-plane angles (degrees) as unit vectors ``(..., 2)`` on S^1."""
    r = np.radians(np.asarray(degrees, np.float64))
    return np.stack([np.cos(r), np.sin(r)], -1).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Kernels (Appendix B) and the proposal (Eq. 14).


def log_kernel(sources, targets, spacing, kind: str, bandwidth_factor: float):
    """``log K_ij`` ``(S, M)`` from ``sources (S, dim)`` to ``targets (M, dim)``, rows normalised over the targets.

    kind "vmf": ``exp(kappa d_i . d_j)`` with ``kappa = 1 / sigma^2`` (unit vectors on S^1 or S^2), sigma =
    ``bandwidth_factor * spacing`` radians; "gaussian": ``exp(-|t_i - t_j|^2 / (2 sigma^2))``, sigma in Angstrom.
    """
    sigma = bandwidth_factor * spacing
    if kind == "vmf":
        logits = (sources @ targets.T - 1.0) / sigma**2
    else:
        d2 = jnp.sum((sources[:, None, :] - targets[None, :, :]) ** 2, -1)
        logits = -d2 / (2.0 * sigma**2)
    return logits - jax.nn.logsumexp(logits, axis=1, keepdims=True)


def annealing(previous_visit, tau0: float, alpha_min: float, temperature_min: float):
    """``alpha = max(alpha_min, 2^(-0.25 floor(tau/tau0)))`` and ``T = max(T_min, 2^(10 / floor(tau/tau0)))`` with
    ``tau`` the iteration of the previous visit (Sec. 3.3; T is infinite while ``tau < tau0``)."""
    f = jnp.floor(jnp.maximum(previous_visit, 0) / tau0)
    alpha = jnp.maximum(alpha_min, 2.0 ** (-0.25 * f))
    inv_temperature = jnp.where(f > 0, 1.0 / jnp.maximum(temperature_min, 2.0 ** (10.0 / jnp.maximum(f, 1.0))), 0.0)
    return alpha, inv_temperature


def proposal(state: FactorState, targets, kind: str, bandwidth_factor: float, alpha, inv_temperature):
    """Eq. 14 for ONE particle and one factor: ``q`` ``(M,)`` over the current points ``targets (M, dim)``."""
    m = targets.shape[0]
    used = state.log_phi > 0.5 * NEG
    tempered = jnp.where(used, (state.log_phi - jnp.max(state.log_phi)) * inv_temperature, NEG)
    log_k = log_kernel(state.points, targets, state.spacing, kind, bandwidth_factor)
    log_phihat = jax.nn.logsumexp(tempered[:, None] + log_k, axis=0)
    smoothed = jax.nn.softmax(log_phihat)
    return (1.0 - alpha) * smoothed + alpha / m


def effective_sample_size(q):
    return 1.0 / jnp.sum(q * q)


class Draw(NamedTuple):
    """Distinct sampled indices of one factor (capacity ``K``): index ``(K,)`` int32 (0 in unused slots),
    log_weight ``(K,)`` = ``log(count w_j / (N q_j))`` (NEG in unused slots), count ``()`` distinct points,
    num_draws ``()`` N, wanted ``()`` s0 * ESS before the cap, ess ``()``."""

    index: jnp.ndarray
    log_weight: jnp.ndarray
    count: jnp.ndarray
    num_draws: jnp.ndarray
    wanted: jnp.ndarray
    ess: jnp.ndarray


def draw(key, q, log_quadrature_weights, slots: int, s0: float, buffer: int | None = None) -> Draw:
    """Draw ``N = ceil(s0 ESS(q))`` indices from ``q`` ``(M,)`` (inverse CDF) and merge duplicates into at most
    ``slots`` distinct points.

    ``buffer`` (static, default ``slots``) bounds N. Where the N draws hold more than ``slots`` distinct points,
    only the longest prefix of the draws that fits is kept (N shrinks: the particle is "capped", as it is when
    s0 ESS exceeds ``buffer``). Every kept draw has a slot, so the estimate is the unbiased one of Eq. 10-12 for
    every particle that is not capped; the run sizes ``slots`` and ``buffer`` so that few are.
    """
    m = q.shape[0]
    buffer = slots if buffer is None else max(buffer, slots)
    ess = effective_sample_size(q)
    wanted = s0 * ess
    n = jnp.clip(jnp.ceil(wanted), 1, buffer)
    cdf = jnp.cumsum(q)
    u = jax.random.uniform(key, (buffer,)) * cdf[-1]
    picks = jnp.clip(jnp.searchsorted(cdf, u, side="right"), 0, m - 1)
    order = jnp.arange(buffer)
    live = order < n
    first = jnp.full((m,), buffer, jnp.int32).at[picks].min(jnp.where(live, order, buffer).astype(jnp.int32))
    new = live & (first[picks] == order)  # the draw that first hits its point
    kept = live & (jnp.cumsum(new) <= slots)  # a prefix of the draws: at most `slots` distinct points
    n_kept = jnp.sum(kept).astype(jnp.float32)
    counts = jnp.zeros((m,), jnp.float32).at[picks].add(kept.astype(jnp.float32))
    top_counts, index = jax.lax.top_k(counts, slots)
    taken = top_counts > 0
    log_w = jnp.log(jnp.maximum(top_counts, 1.0)) + log_quadrature_weights[index] - jnp.log(n_kept) - jnp.log(q[index])
    return Draw(index=jnp.where(taken, index, 0).astype(jnp.int32), log_weight=jnp.where(taken, log_w, NEG),
                count=jnp.sum(taken), num_draws=n_kept, wanted=wanted, ess=ess)


def exhaustive_draw(log_quadrature_weights) -> Draw:
    """Every point of a factor once with its quadrature weight (a first visit, or a factor smaller than its
    capacity): ``(M,)`` slots."""
    m = log_quadrature_weights.shape[0]
    return Draw(index=jnp.arange(m, dtype=jnp.int32), log_weight=log_quadrature_weights, count=jnp.asarray(m),
                num_draws=jnp.asarray(m, jnp.float32), wanted=jnp.asarray(m, jnp.float32),
                ess=jnp.asarray(m, jnp.float32))


def factor_state_from_values(points, log_phi, spacing, capacity: int) -> FactorState:
    """Keep the ``capacity`` largest of ``log_phi (K,)`` at ``points (K, dim)`` (pads with NEG if ``K`` is
    smaller), normalised so that the largest is 0."""
    k = log_phi.shape[0]
    if k < capacity:
        points = jnp.concatenate([points, jnp.zeros((capacity - k, points.shape[1]), points.dtype)])
        log_phi = jnp.concatenate([log_phi, jnp.full((capacity - k,), NEG, log_phi.dtype)])
    values, order = jax.lax.top_k(log_phi, capacity)
    values = jnp.where(values > 0.5 * NEG, values - values[0], NEG)
    return FactorState(points=points[order], log_phi=values, spacing=jnp.asarray(spacing, jnp.float32))


def kl_divergence(p, q):
    """``KL(p || q)`` of two distributions ``(M,)`` (nats)."""
    p = p / jnp.sum(p)
    q = q / jnp.sum(q)
    return jnp.sum(jnp.where(p > 0, p * (jnp.log(jnp.maximum(p, 1e-30)) - jnp.log(jnp.maximum(q, 1e-30))), 0.0))


# ----------------------------------------------------------------------------------------------------------
# One resolution level: propose a minibatch's sample sets, and record what was evaluated.


class Settings(NamedTuple):
    """s0: samples per unit of ESS; tau0, alpha_min, temperature_min: the annealing (Sec. 3.3);
    bandwidth_factor: kernel sigma in units of the previous quadrature's spacing."""

    s0: float = 10.0
    tau0: float = 50.0
    alpha_min: float = 0.05
    temperature_min: float = 1.25
    bandwidth_factor: float = 1.0


class LevelSampler(NamedTuple):
    """Pure functions for one level (jit each once):

    * ``propose(states, last_visit, keys) -> (SampleSet, stats)``: states a :class:`SamplerState`'s three factors
      with a leading batch axis, last_visit ``(B,)``, keys ``(B, 2)``; stats: dict of ``(B,)`` arrays per factor
      (distinct points, ESS, wanted = s0 ESS, draws);
    * ``measure(states, last_visit, keys) -> {factor: (wanted, distinct)}``: per particle, s0 ESS of each factor's
      proposal and the distinct points among that many draws (up to ``MEASURE_DRAWS``), with no slot limit;
    * ``record_sampled(samples, result, old) -> (new_factors, kl)`` and ``record_exhaustive(result, old) ->
      (new_factors, kl)``: the new per-particle states and the KL divergence between the new and the previous
      direction marginals, both smoothed onto this level's directions (Fig. 3; NaN where there was no state).
    """

    propose: object
    measure: object
    record_sampled: object
    record_exhaustive: object
    capacities: tuple
    sizes: tuple


KINDS = ("vmf", "vmf", "gaussian")


def make_level_sampler(rule, settings: Settings, state_capacities: dict, draw_slots: dict | None = None,
                       draw_buffers: dict | None = None) -> LevelSampler:
    """``rule``: the level's :class:`recon.quadrature.Quadrature`; ``state_capacities[factor]``: points kept per
    particle between visits; ``draw_slots[factor]`` (default: the state capacity): the most distinct points a factor
    evaluates per visit (a factor with no more points than that is summed exhaustively); ``draw_buffers[factor]``
    (default: the slots): the most draws, N = s0 ESS, per visit."""
    from recon.likelihood import SampleSet  # the likelihood consumes what the sampler draws

    targets = (jnp.asarray(rule.directions, jnp.float32), jnp.asarray(inplane_points(rule.inplane_degrees)),
               jnp.asarray(rule.shifts_angstrom, jnp.float32))
    log_w = tuple(jnp.asarray(np.log(w), jnp.float32)
                  for w in (rule.direction_weights, rule.inplane_weights, rule.shift_weights))
    spacing = (math.radians(rule.angular_step_degrees), math.radians(rule.angular_step_degrees),
               rule.shift_step_angstrom)
    sizes = tuple(int(t.shape[0]) for t in targets)
    caps = tuple(state_capacities[f] for f in FACTORS)
    slots = tuple((draw_slots or state_capacities)[f] for f in FACTORS)
    capacities = tuple(min(m, c) for m, c in zip(sizes, slots))  # M <= slots: summed exhaustively
    buffers = tuple(max(c, (draw_buffers or {}).get(f, c)) for f, c in zip(FACTORS, capacities))

    def propose_one(factors, last_visit, key):
        alpha, inv_t = annealing(last_visit, settings.tau0, settings.alpha_min, settings.temperature_min)
        keys = jax.random.split(key, 3)
        draws = []
        for f in range(3):
            if capacities[f] >= sizes[f]:
                draws.append(exhaustive_draw(log_w[f]))
            else:
                q = proposal(factors[f], targets[f], KINDS[f], settings.bandwidth_factor, alpha, inv_t)
                draws.append(draw(keys[f], q, log_w[f], capacities[f], settings.s0, buffers[f]))
        return draws

    def measure_one(factors, last_visit, key):
        alpha, inv_t = annealing(last_visit, settings.tau0, settings.alpha_min, settings.temperature_min)
        keys = jax.random.split(key, 3)
        out = {}
        for f in range(3):
            q = proposal(factors[f], targets[f], KINDS[f], settings.bandwidth_factor, alpha, inv_t)
            wanted = settings.s0 * effective_sample_size(q)
            cdf = jnp.cumsum(q)
            picks = jnp.searchsorted(cdf, jax.random.uniform(keys[f], (MEASURE_DRAWS,)) * cdf[-1], side="right")
            live = jnp.arange(MEASURE_DRAWS) < jnp.ceil(wanted)
            hit = jnp.zeros((sizes[f],), jnp.float32).at[jnp.clip(picks, 0, sizes[f] - 1)].max(live.astype(jnp.float32))
            out[FACTORS[f]] = (wanted, jnp.sum(hit))
        return out

    def measure(factors, last_visit, keys):
        return jax.vmap(measure_one)(factors, last_visit, keys)

    def propose(factors, last_visit, keys):
        draws = jax.vmap(propose_one)(factors, last_visit, keys)
        samples = SampleSet(draws[0].index, draws[0].log_weight, draws[1].index, draws[1].log_weight,
                            draws[2].index, draws[2].log_weight)
        stats = {f"{name}_{field}": getattr(d, field)
                 for name, d in zip(FACTORS, draws) for field in ("count", "ess", "wanted", "num_draws")}
        return samples, stats

    def smoothed_directions(state: FactorState):
        return proposal(state, targets[0], KINDS[0], settings.bandwidth_factor, 0.0, 1.0)

    def kl_to_old(new: FactorState, old: FactorState):
        had = old.log_phi[0] > 0.5 * NEG
        return jnp.where(had, kl_divergence(smoothed_directions(new), smoothed_directions(old)), jnp.nan)

    def record_one(values, indices, old):
        new = tuple(factor_state_from_values(targets[f][indices[f]], values[f], spacing[f], caps[f])
                    for f in range(3))
        return new, kl_to_old(new[0], old[0])

    def record_sampled(samples, result, old):
        values = (result.log_phi_direction, result.log_phi_inplane, result.log_phi_shift)
        indices = (samples.direction, samples.inplane, samples.shift)
        return jax.vmap(record_one)(values, indices, old)

    def record_exhaustive(result, old):
        values = tuple(jnp.where(p > 0, jnp.log(jnp.maximum(p, 1e-38)), NEG)
                       for p in (result.post_dir, result.post_psi, result.post_shift))
        b = values[0].shape[0]
        indices = tuple(jnp.broadcast_to(jnp.arange(m), (b, m)) for m in sizes)
        return jax.vmap(record_one)(values, indices, old)

    return LevelSampler(propose=propose, measure=measure, record_sampled=record_sampled, record_exhaustive=record_exhaustive,
                        capacities=capacities, sizes=sizes)


# ----------------------------------------------------------------------------------------------------------
# Slot sizes from the observed ESS: N = s0 ESS for all but a small share of particles.


MEASURE_DRAWS = 4096


def slots_for_level(measured: dict, sizes: dict, share: float) -> tuple[dict, dict, float]:
    """Slots and draw buffers per factor from ``measured[factor] = (wanted, distinct)`` over particles (from
    ``LevelSampler.measure``): the next power of two above the ``1 - share`` quantiles, so that about ``share`` of
    the particles would be capped (a factor needing all its points is summed exhaustively). Also returns the
    fraction of the level's poses a visit would evaluate with those slots (1: importance sampling saves nothing)."""
    slots, buffers, fraction = {}, {}, 1.0
    for f in FACTORS:
        wanted, distinct = (np.asarray(a, np.float64) for a in measured[f])
        slots[f] = min(next_power_of_two(np.quantile(distinct, 1.0 - share)), sizes[f])
        buffers[f] = max(slots[f], next_power_of_two(np.quantile(wanted, 1.0 - share)))
        fraction *= slots[f] / sizes[f]
    return slots, buffers, fraction


def level_slots(measured: dict, sizes: dict, share: float, loose_shares=(), exhaustive_fraction: float = 0.5
                ) -> tuple[float, dict, dict, float]:
    """:func:`slots_for_level` at ``share``, else at each of ``loose_shares`` (larger) in turn, until the visits
    would evaluate at most ``exhaustive_fraction`` of the level's poses: broad posteriors (the level after the
    exhaustive start) would otherwise make a few particles' needs sum every pose for all. Returns the share used
    (the last tried if none fits), slots, buffers and fraction."""
    for s in [share] + sorted(x for x in loose_shares if x > share):
        slots, buffers, fraction = slots_for_level(measured, sizes, s)
        if fraction <= exhaustive_fraction:
            break
    return s, slots, buffers, fraction


def lost_poses(post_dir: np.ndarray, directions: np.ndarray, modes: np.ndarray, max_degrees: float,
               min_mass: float) -> np.ndarray:
    """Which particles have lost their pose: a fresh posterior over ``directions`` ``(M, 3)`` (``post_dir``
    ``(B, M)``, each row summing to 1) puts less than ``min_mass`` within ``max_degrees`` of the particle's
    proposal mode ``modes`` ``(B, 3)`` (unit vectors). Returns ``(B,)`` bool."""
    near = np.asarray(modes, np.float64) @ np.asarray(directions, np.float64).T >= math.cos(math.radians(max_degrees))
    return np.sum(np.asarray(post_dir, np.float64) * near, axis=1) < min_mass


def proposal_modes(state: FactorState) -> np.ndarray:
    """The most probable stored point of each particle's factor state (numpy, leading particle axis)."""
    points, log_phi = np.asarray(state.points), np.asarray(state.log_phi)
    return points[np.arange(len(points)), np.argmax(log_phi, axis=1)]


def offset_sigma_angstrom(points: np.ndarray, log_phi: np.ndarray) -> float:
    """The per-axis sigma of particles' 2D offsets from their shift posteriors (``points`` ``(N, S, 2)`` in
    Angstrom, ``log_phi`` ``(N, S)``): the RMS of the posterior means over sqrt(2). The means, not the posteriors'
    second moments: where the images barely constrain the offsets the second moments return the shift prior's own
    sigma (25.9 A measured against offsets of 11 A, under a prior of 25.1 A), the means stay near the offsets'
    spread (under a prior wider than the offsets, slightly above it; under a narrower one, below it)."""
    log_phi = np.asarray(log_phi, np.float64)
    weights = np.exp(log_phi - log_phi.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    means = np.sum(weights[..., None] * np.asarray(points, np.float64), axis=1)
    return math.sqrt(np.mean(np.sum(means ** 2, -1)) / 2.0)


def next_power_of_two(x: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(x, 1.0))))


def grow_slots(slots: dict, buffers: dict, sizes: dict, window: list, max_capped_share: float
               ) -> tuple[dict, dict, list]:
    """Slots and buffers (per factor) large enough that at most ``max_capped_share`` of the particles in ``window``
    would be capped: ``window`` a list of ``{factor: (wanted, distinct, kept)}`` arrays over particles (s0 ESS,
    distinct points drawn, draws kept) from recent visits. A factor whose share of capped particles exceeds the
    bound gets a buffer of the next power of two above the 99.5th percentile of s0 ESS where the buffer caps, and,
    where the slots cap, slots grown by the share of draws that did not fit (99.5th percentile, 2x to 8x; distinct
    points grow slower than draws), at most to the factor's size, where it is summed exhaustively. Returns the
    new slots, buffers and one line per change."""
    slots, buffers, lines = dict(slots), dict(buffers), []
    for f in FACTORS:
        if f not in sizes or slots[f] >= sizes[f] or not window:
            continue
        wanted, _, kept = (np.concatenate([np.asarray(w[f][i], np.float64) for w in window]) for i in range(3))
        capped = kept < wanted - 1e-6
        share = float(np.mean(capped))
        if share <= max_capped_share:
            continue
        by_buffer = wanted > buffers[f]
        if np.mean(by_buffer) > 0.5 * max_capped_share:
            buffers[f] = next_power_of_two(np.quantile(wanted, 0.995))
        by_slots = capped & ~by_buffer
        if np.mean(by_slots) > 0.5 * max_capped_share:  # grow by the draws missing (distinct points grow slower)
            missing = np.quantile(wanted[by_slots] / np.maximum(kept[by_slots], 1.0), 0.995)
            slots[f] = min(next_power_of_two(slots[f] * min(max(missing, 2.0), 8.0)), next_power_of_two(sizes[f]))
        buffers[f] = max(buffers[f], slots[f])
        lines.append(f"{f}: {100 * share:.1f} % of particles capped -> {slots[f]} slots, {buffers[f]} draws")
    return slots, buffers, lines
