"""View coverage (recon/views.py): uniform views cover the half-sphere, preferred views do not, symmetry mates fill
it, and too few particles are not judged."""

import numpy as np

from recon import conventions, symmetry, synthesis, views


def test_uniform_views_cover_the_sphere_and_preferred_ones_do_not():
    rng = np.random.default_rng(0)
    uniform = synthesis.random_poses(rng, 5000)
    assert views.sparse_fraction(uniform) == 0.0 and views.coverage_line(uniform) is None
    top = synthesis.preferred_poses(rng, 5000, 10.0)  # within ~30 degrees of the z axis: most of the sphere empty
    assert views.sparse_fraction(top) > 0.7
    assert views.coverage_line(top).startswith("warning: preferred orientation")
    mixed = np.concatenate([uniform[:3500], top[:1500]])  # 30 % preferred, the rest everywhere: no hole
    assert views.sparse_fraction(mixed) == 0.0
    flipped = uniform.copy()  # d and -d are the same slice: views of one hemisphere cover it all
    directions = np.stack([conventions.projection_direction(conventions.euler_to_matrix(a)) for a in uniform])
    assert views.sparse_fraction(flipped[directions[:, 2] > 0]) == 0.0
    assert views.sparse_fraction(uniform[:500]) is None  # 7.8 per cell: too few to tell


def test_symmetry_mates_fill_the_sphere():
    """Views inside one asymmetric unit of the octahedral group (1/24 of the sphere) leave most of it empty in C1
    and none of it with the group's 24 mates."""
    rng = np.random.default_rng(1)
    poses = synthesis.random_poses(rng, 40000)
    group = symmetry.group_matrices("O")
    directions = np.stack([conventions.projection_direction(conventions.euler_to_matrix(a)) for a in poses])
    inside = symmetry.asymmetric_unit(directions, group)
    unit = poses[inside]
    assert 1000 < len(unit) < 3000
    assert views.sparse_fraction(unit) > 0.7
    assert views.sparse_fraction(unit, group) == 0.0
