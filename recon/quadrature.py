"""Quadrature over view directions (S^2), in-plane angles (S^1) and shifts (R^2) -- Eq. 4 of the paper.

A pose is (direction, in-plane angle): the direction ``d = (sin t cos r, sin t sin r, cos t)`` is the beam
direction in map coordinates (the third row of RELION's matrix, so ``rot = r``, ``tilt = t``) and the in-plane
angle is RELION's ``psi``. Uniform points on S^2 times uniform angles on S^1 are uniform on SO(3).

Grid sizes follow from the maximum frequency ``omega`` (1/Angstrom) and an extent ``L`` (Angstrom): the angular
step is ``arctan(1 / r)`` with ``r = omega * L`` the Fourier radius in pixels of a box of size ``L`` (the rule of
the paper's code, with ``L`` the box size). Rotating by one step moves the outermost frequency used by about one
Fourier pixel. ``L`` can be the particle diameter instead of the box (``extent="particle"``): the transform of a
particle of diameter ``d`` varies on a scale of ``1/d``, so a finer grid than that is wasted work.

Shifts lie on a square lattice of spacing ``1 / (2 omega)`` (Nyquist sampling of the likelihood as a function of
the shift at the maximum frequency) inside a disk of radius ``max_shift_angstrom``, weighted by a Gaussian prior.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from recon import conventions


class Quadrature(NamedTuple):
    """A product quadrature rule; weights are normalised (each sums to one) and include the priors.

    directions: ``(n_dir, 3)`` unit beam directions; direction_weights: ``(n_dir,)``.
    inplane_degrees: ``(n_psi,)``; inplane_weights: ``(n_psi,)``.
    shifts_angstrom: ``(n_shift, 2)`` RELION origins ``(ox, oy)``; shift_weights: ``(n_shift,)``.
    angular_step_degrees, shift_step_angstrom: the spacings (used for importance-sampling kernels).
    """

    directions: np.ndarray
    direction_weights: np.ndarray
    inplane_degrees: np.ndarray
    inplane_weights: np.ndarray
    shifts_angstrom: np.ndarray
    shift_weights: np.ndarray
    angular_step_degrees: float
    shift_step_angstrom: float

    @property
    def size(self) -> int:
        return len(self.direction_weights) * len(self.inplane_weights) * len(self.shift_weights)


def angular_step_radians(max_freq_per_angstrom: float, extent_angstrom: float) -> float:
    """``arctan(1 / r)`` with ``r = omega * L`` (Fourier radius in pixels of a box of ``L`` Angstrom)."""
    return math.atan(1.0 / (max_freq_per_angstrom * extent_angstrom))


def num_inplane(step_radians: float) -> int:
    return int(math.ceil(2.0 * math.pi / step_radians))


def num_directions(step_radians: float) -> int:
    """Points on the sphere so that each covers about ``step^2`` steradians: ``ceil(4 pi / step^2)``."""
    return int(math.ceil(4.0 * math.pi / step_radians**2))


def fibonacci_sphere(n: int) -> np.ndarray:
    """``(n, 3)`` near-uniform unit vectors (the golden-angle spiral, equal areas in ``z``)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = np.pi * (1.0 + math.sqrt(5.0)) * i
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)


def directions_to_angles(directions: np.ndarray) -> np.ndarray:
    """Unit beam directions ``(..., 3)`` -> RELION ``(rot, tilt)`` in degrees, ``(..., 2)``."""
    rot = np.degrees(np.arctan2(directions[..., 1], directions[..., 0]))
    tilt = np.degrees(np.arccos(np.clip(directions[..., 2], -1.0, 1.0)))
    return np.stack([rot, tilt], axis=-1)


def pose_matrices(directions: np.ndarray, inplane_degrees: np.ndarray) -> np.ndarray:
    """RELION matrices for every (direction, in-plane angle) pair: ``(n_dir, n_psi, 3, 3)``."""
    rot_tilt = directions_to_angles(directions)
    n_dir, n_psi = len(directions), len(inplane_degrees)
    angles = np.concatenate([np.broadcast_to(rot_tilt[:, None, :], (n_dir, n_psi, 2)),
                             np.broadcast_to(np.asarray(inplane_degrees)[None, :, None], (n_dir, n_psi, 1))], -1)
    return conventions.euler_to_matrix(angles)


def shift_grid(max_shift_angstrom: float, step_angstrom: float) -> np.ndarray:
    """``(n, 2)`` lattice points of spacing ``step`` inside the disk of radius ``max_shift`` (always has 0)."""
    m = int(math.floor(max_shift_angstrom / step_angstrom + 1e-9))
    c = np.arange(-m, m + 1) * step_angstrom
    y, x = np.meshgrid(c, c, indexing="ij")
    pts = np.stack([x.ravel(), y.ravel()], axis=-1)
    keep = np.sum(pts**2, axis=-1) <= max_shift_angstrom**2 + 1e-9
    return pts[keep]


def gaussian_shift_weights(shifts_angstrom: np.ndarray, sigma_angstrom: float | None) -> np.ndarray:
    """Normalised prior weights ``exp(-|t|^2 / (2 sigma^2))`` on the grid (uniform if ``sigma`` is None)."""
    if sigma_angstrom is None or not np.isfinite(sigma_angstrom):
        w = np.ones(len(shifts_angstrom))
    else:
        w = np.exp(-np.sum(shifts_angstrom**2, axis=-1) / (2.0 * sigma_angstrom**2))
    return w / w.sum()


def make_quadrature(max_freq_per_angstrom: float, extent_angstrom: float, max_shift_angstrom: float,
                    shift_sigma_angstrom: float | None = None, shift_step_angstrom: float | None = None
                    ) -> Quadrature:
    """The quadrature for a maximum frequency ``omega`` (1/Angstrom); see the module docstring for the rules."""
    step = angular_step_radians(max_freq_per_angstrom, extent_angstrom)
    directions = fibonacci_sphere(num_directions(step))
    n_psi = num_inplane(step)
    inplane = np.arange(n_psi) * (360.0 / n_psi)
    if shift_step_angstrom is None:
        shift_step_angstrom = 0.5 / max_freq_per_angstrom
    shifts = shift_grid(max_shift_angstrom, shift_step_angstrom)
    return Quadrature(
        directions=directions,
        direction_weights=np.full(len(directions), 1.0 / len(directions)),
        inplane_degrees=inplane,
        inplane_weights=np.full(n_psi, 1.0 / n_psi),
        shifts_angstrom=shifts,
        shift_weights=gaussian_shift_weights(shifts, shift_sigma_angstrom),
        angular_step_degrees=float(np.degrees(step)),
        shift_step_angstrom=float(shift_step_angstrom),
    )


def restrict_directions(rule: Quadrature, keep: np.ndarray) -> Quadrature:
    """The rule with only the directions ``keep`` (a boolean mask; e.g. a symmetry's asymmetric unit), their
    weights renormalised to sum to one."""
    weights = rule.direction_weights[keep]
    return rule._replace(directions=rule.directions[keep], direction_weights=weights / weights.sum())
