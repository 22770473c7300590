"""How evenly the particles' views cover the sphere (preferred orientation).

A view direction ``d`` (``conventions.projection_direction``) and ``-d`` give the same central slice, so coverage
is counted on the half-sphere: each direction, with its symmetry mates, is assigned to the nearest of
``CELLS`` Fibonacci points (cells of about 18 degrees), folded so that ``d`` and ``-d`` share a cell. A cell with
fewer than ``SPARSE_SHARE`` of the mean count is sparse; with a uniform distribution of views none is (at the
``MIN_PER_CELL`` mean counts the test needs, a Poisson cell falls that low with chance below 1e-4).
"""

from __future__ import annotations

import numpy as np

from recon import conventions, quadrature

CELLS = 128  # on the whole sphere: 64 on the half-sphere
SPARSE_SHARE = 0.1
MIN_PER_CELL = 10.0  # mean particles per half-sphere cell below which coverage is not judged
WARN_FRACTION = 0.1  # of the half-sphere sparse: a warning


def sparse_fraction(angles_degrees: np.ndarray, symmetry_matrices: np.ndarray | None = None) -> float | None:
    """The fraction of the half-sphere's cells that hold fewer than ``SPARSE_SHARE`` of the mean number of views
    of poses ``(N, 3)`` (RELION angles); None when there are too few poses to tell."""
    points = quadrature.fibonacci_sphere(CELLS)
    half = points[points[:, 2] > 0]
    matrices = conventions.euler_to_matrix(np.asarray(angles_degrees, np.float64))
    group = np.eye(3)[None] if symmetry_matrices is None else np.asarray(symmetry_matrices, np.float64)
    directions = np.concatenate([(matrices @ g)[:, 2, :] for g in group])
    counts = np.bincount(np.argmax(np.abs(directions @ half.T), axis=1), minlength=len(half))  # d, -d: one cell
    mean = counts.mean()
    if mean < MIN_PER_CELL:
        return None
    return float(np.mean(counts < SPARSE_SHARE * mean))


def coverage_line(angles_degrees: np.ndarray, symmetry_matrices=None) -> str | None:
    """A warning for run.log and the report when the views leave part of the sphere sparse, else None."""
    fraction = sparse_fraction(angles_degrees, symmetry_matrices)
    if fraction is None or fraction <= WARN_FRACTION:
        return None
    return (f"warning: preferred orientation: {fraction:.0%} of the view directions (cells of about 18 degrees, "
            f"d and -d together) hold under a tenth of the mean number of particles; the map is less resolved "
            "along those directions")
