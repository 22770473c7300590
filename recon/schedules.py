"""Named schedules: maximum frequency, step size, line searches, evaluations and saves (all pure functions of the
iteration and the config; never strings to evaluate)."""

from __future__ import annotations

import math

import numpy as np


def resolution_levels(start_angstrom: float, target_angstrom: float, ratio: float = 1.2) -> np.ndarray:
    """Resolutions (Angstrom) from ``start`` down to ``target``, consecutive levels a factor <= ``ratio`` apart."""
    if target_angstrom >= start_angstrom:
        return np.array([float(target_angstrom)])
    n = int(math.ceil(math.log(start_angstrom / target_angstrom) / math.log(ratio)))
    return np.geomspace(start_angstrom, target_angstrom, n + 1)


def heldout_count(num_particles: int, num_heldout: int) -> int:
    """Particles held out for the RREMSE: ``num_heldout``, at most a tenth of the data."""
    return min(num_heldout, num_particles // 10)


def level_at(iteration: int, num_levels: int, iterations_per_level: int) -> int:
    """Level in force at ``iteration`` (0-based): each level lasts ``iterations_per_level``, the last forever."""
    return min(iteration // max(1, iterations_per_level), num_levels - 1)


def level_start(level: int, iterations_per_level: int) -> int:
    return level * iterations_per_level


def step_size(iteration: int) -> float:
    """SAGD base step ``epsilon = max(1/16, 2^(1 - floor(tau / 150)))`` (Sec. 3.2)."""
    return max(1.0 / 16.0, 2.0 ** (1 - iteration // 150))


def line_search_due(iteration: int, iterations_per_level: int, every: int = 20) -> bool:
    """Lipschitz line search every ``every`` iterations and on every increase of the maximum frequency."""
    return iteration % every == 0 or iteration % max(1, iterations_per_level) == 0


def lipschitz_decay(halving_iterations: float = 150.0) -> float:
    """Per-iteration factor by which L decreases between line searches: L halves every ``halving_iterations``
    unless a line search raises it again (the gradual decrease of App. A)."""
    return 2.0 ** (-1.0 / max(1.0, halving_iterations))


def due(iteration: int, every: int) -> bool:
    """True every ``every`` iterations (``every <= 0`` never)."""
    return every > 0 and iteration % every == 0


def heldout_due(iteration: int, every: int, iterations_per_level: int) -> bool:
    """Held-out error every ``every`` iterations and at the last iteration of each level."""
    return due(iteration + 1, every) or (iteration + 1) % max(1, iterations_per_level) == 0
