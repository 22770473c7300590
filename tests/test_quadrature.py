"""Quadrature rules: normalised weights, the paper's grid counts, near-uniform point sets, SO(3) moments."""

import math

import numpy as np
import pytest

from recon import conventions as cv
from recon import quadrature as q

# The paper's code for 128 px at 2.8 A/px: (directions, in-plane angles) at 1/40, 1/20 and 1/10 A.
PAPER_COUNTS = {40.0: (1050, 57), 20.0: (4171, 113), 10.0: (16656, 226)}


@pytest.mark.parametrize("resolution", sorted(PAPER_COUNTS))
def test_counts_follow_the_papers_rule(resolution):
    step = q.angular_step_radians(1.0 / resolution, 128 * 2.8)
    n_dir, n_psi = PAPER_COUNTS[resolution]
    assert q.num_inplane(step) == n_psi
    assert abs(q.num_directions(step) - n_dir) / n_dir < 0.05


def test_weights_sum_to_one_and_shift_prior():
    rule = q.make_quadrature(1 / 20.0, 64 * 5.6, max_shift_angstrom=30.0, shift_sigma_angstrom=10.0)
    for w in (rule.direction_weights, rule.inplane_weights, rule.shift_weights):
        assert np.isclose(w.sum(), 1.0)
    assert np.all(np.sum(rule.shifts_angstrom**2, -1) <= 30.0**2 + 1e-9)
    assert np.isclose(rule.shift_step_angstrom, 10.0)  # 1 / (2 omega)
    zero = np.argmin(np.sum(rule.shifts_angstrom**2, -1))
    assert rule.shift_weights[zero] == rule.shift_weights.max()
    # Gaussian: the weight ratio between |t| = 10 and 0 is exp(-1/2).
    one = np.nonzero(np.isclose(np.sum(rule.shifts_angstrom**2, -1), 100.0))[0][0]
    assert np.isclose(rule.shift_weights[one] / rule.shift_weights[zero], math.exp(-0.5))


def test_quadrature_grows_with_frequency_and_particle_extent_is_coarser():
    low = q.make_quadrature(1 / 40.0, 358.0, 20.0)
    high = q.make_quadrature(1 / 20.0, 358.0, 20.0)
    assert high.size > 4 * low.size
    particle = q.make_quadrature(1 / 20.0, 230.0, 20.0)
    assert particle.size < high.size


def test_fibonacci_sphere_is_near_uniform():
    n = 2000
    pts = q.fibonacci_sphere(n)
    np.testing.assert_allclose(np.linalg.norm(pts, axis=1), 1.0, atol=1e-12)
    # Equal-area: a cap of half-angle 40 degrees holds its share of points, wherever it is.
    rng = np.random.default_rng(0)
    axes = rng.normal(size=(20, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    share = (1 - math.cos(math.radians(40))) / 2
    counts = (pts @ axes.T > math.cos(math.radians(40))).sum(0)
    assert np.all(np.abs(counts / n - share) < 0.01)
    # Covering: every direction is within about one nominal step of a point.
    probes = rng.normal(size=(3000, 3))
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    nearest = np.degrees(np.arccos(np.clip((probes @ pts.T).max(1), -1, 1)))
    step = math.degrees(math.sqrt(4 * math.pi / n))
    assert nearest.max() < 0.8 * step


def test_pose_grid_is_uniform_on_so3():
    rule = q.make_quadrature(1 / 30.0, 200.0, 10.0)
    mats = q.pose_matrices(rule.directions, rule.inplane_degrees).reshape(-1, 3, 3)
    # Haar moments: E[R] = 0 and E[R_ij^2] = 1/3.
    np.testing.assert_allclose(mats.mean(0), 0.0, atol=0.01)
    np.testing.assert_allclose((mats**2).mean(0), 1 / 3, atol=0.01)
    # The beam direction of each pose is the quadrature direction.
    dirs = cv.projection_direction(q.pose_matrices(rule.directions, rule.inplane_degrees))
    np.testing.assert_allclose(dirs, np.broadcast_to(rule.directions[:, None], dirs.shape), atol=1e-9)


def test_shift_grid_is_a_disk_lattice():
    pts = q.shift_grid(10.0, 2.5)
    assert len(pts) == 49  # Gauss's circle problem: N(r = 4 lattice steps) = 49
    np.testing.assert_allclose(np.sort(np.unique(np.round(pts[:, 0] / 2.5))), np.arange(-4, 5))
    assert np.any(np.all(pts == 0, axis=1))
