"""The random initial volume: seeded, non-negative, inside the particle radius, made of spheres."""

import numpy as np

import jax

from recon import initial


def test_random_spheres_are_seeded_and_inside_the_radius():
    a = np.asarray(initial.random_spheres(jax.random.PRNGKey(3), 32, 10.0))
    b = np.asarray(initial.random_spheres(jax.random.PRNGKey(3), 32, 10.0))
    c = np.asarray(initial.random_spheres(jax.random.PRNGKey(4), 32, 10.0))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.min() >= 0 and np.isclose(a.max(), 1.0)
    outside = ~initial.support_mask(32, 10.0 + 2.0)  # the soft edge reaches about a pixel beyond
    assert a[outside].max() < 0.05
    assert (a > 0.5).sum() > 100  # solid spheres, not a few voxels
