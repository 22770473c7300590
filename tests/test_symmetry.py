"""Point groups (recon/symmetry.py) against textbook facts and RELION's documented axes; the asymmetric unit; the
symmetrisation of maps (checked with scipy's independent resampling) and a real D7 map."""

import numpy as np
import pytest
from scipy import ndimage

import jax.numpy as jnp

from recon import quadrature, symmetry
from recon.errors import InputError
from recon.io import mrc


def rotation_angles_degrees(matrices):
    return np.degrees(np.arccos(np.clip((np.trace(matrices, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)))


def contains(matrices, m):
    return any(np.allclose(m, g, atol=1e-4) for g in matrices)


@pytest.mark.parametrize("name, size", [("C1", 1), ("C7", 7), ("c3", 3), ("D7", 14), ("D2", 4), ("T", 12),
                                        ("O", 24), ("I", 60), ("I1", 60), ("I3", 60), ("I4", 60)])
def test_groups_are_closed_with_the_textbook_orders(name, size):
    g = symmetry.group_matrices(name)
    assert len(g) == size
    assert np.allclose(g[0], np.eye(3))
    for a in g:
        assert np.allclose(a @ a.T, np.eye(3), atol=1e-9) and np.isclose(np.linalg.det(a), 1.0)
        assert contains(g, a.T)  # inverses
    for a in g[: min(size, 12)]:
        for b in g:
            assert contains(g, a @ b)


@pytest.mark.parametrize("name, census", [
    ("T", {0: 1, 120: 8, 180: 3}),
    ("O", {0: 1, 90: 6, 120: 8, 180: 9}),
    ("I", {0: 1, 72: 12, 120: 20, 144: 12, 180: 15}),
])
def test_rotation_angle_census(name, census):
    """Polyhedral groups by their elements' rotation angles (e.g. I: 6 five-fold axes give 24 elements of 72 and
    144 degrees, 10 three-fold axes 20 of 120, 15 two-fold axes 15 of 180)."""
    angles = np.round(rotation_angles_degrees(symmetry.group_matrices(name))).astype(int)
    values, counts = np.unique(angles, return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist())) == census


@pytest.mark.parametrize("name, fold, axis", [
    ("C7", 7, (0, 0, 1)), ("D7", 7, (0, 0, 1)), ("D7", 2, (1, 0, 0)),
    ("T", 3, (0, 0, 1)), ("T", 2, (0, 0.816496, 0.577350)),
    ("O", 4, (1, 0, 0)), ("O", 4, (0, 1, 0)), ("O", 4, (0, 0, 1)), ("O", 3, (1, 1, 1)),
    ("I", 2, (1, 0, 0)), ("I", 2, (0, 1, 0)), ("I", 2, (0, 0, 1)), ("I", 5, (0.525731, 0, 0.850651)),
    ("I2", 3, (0, 0.356822, 0.934172)), ("I1", 2, (1, 0, 0)), ("I1", 5, (0.850651, 0, -0.525731)),
    ("I3", 5, (0, 0, 1)), ("I4", 5, (0.894427, 0, 0.447214)),
])
def test_relion_axis_conventions(name, fold, axis):
    """RELION's documented axes (symmetries.cpp): e.g. Dn's 2-fold on x, I2's 2-folds on x, y, z."""
    assert contains(symmetry.group_matrices(name), symmetry.axis_rotation(axis, 360.0 / fold))


def test_wrong_names_are_refused():
    for bad in ("C0", "X7", "I5", "D", ""):
        with pytest.raises(InputError):
            symmetry.group_matrices(bad)


@pytest.mark.parametrize("name", ["C7", "D7", "T", "O", "I"])
def test_asymmetric_unit_tiles_the_sphere(name):
    g = symmetry.group_matrices(name)
    directions = quadrature.fibonacci_sphere(6000)
    keep = symmetry.asymmetric_unit(directions, g)
    assert abs(keep.sum() * len(g) / len(directions) - 1.0) < 0.03
    # every direction of the sphere lies near a symmetry copy of a kept one
    tiled = np.concatenate([directions[keep] @ m.T for m in g])
    probe = np.random.default_rng(0).normal(size=(500, 3))
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    nearest = np.degrees(np.arccos(np.clip(np.max(probe @ tiled.T, axis=1), -1, 1)))
    spacing = np.degrees(np.sqrt(4 * np.pi / len(directions)))
    assert nearest.max() < 1.5 * spacing


def _blobs(size: int, centres, sigma: float):
    """``(size,)^3`` sum of Gaussian blobs at ``centres`` (pixels from the box centre, (x, y, z)); and x, y, z."""
    c = np.arange(size) - size // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    vol = sum(np.exp(-((x - p[0]) ** 2 + (y - p[1]) ** 2 + (z - p[2]) ** 2) / (2 * sigma**2)) for p in centres)
    return vol, x, y, z


def test_symmetrised_map_is_invariant_under_scipy_rotations():
    """A random asymmetric map symmetrised under D7 is unchanged by each group element, resampled by scipy (an
    independent implementation: cubic splines) -- up to interpolation error."""
    size = 32
    vol, x, y, z = _blobs(size, np.random.default_rng(1).uniform(-7, 7, (8, 3)), 2.5)
    g = symmetry.group_matrices("D7")
    sym = np.asarray(symmetry.symmetrise(jnp.asarray(vol, jnp.float32), g), np.float64)
    centre = np.full(3, size // 2, float)
    for m in g[1:]:
        # output voxel x (x, y, z) takes V(m^T x); scipy's matrix acts on (z, y, x) indices
        flip = np.eye(3)[::-1]
        mat = flip @ m.T @ flip
        turned = ndimage.affine_transform(sym, mat, offset=centre - mat @ centre, order=3)
        inside = (x**2 + y**2 + z**2) < (size // 2 - 3) ** 2
        err = np.linalg.norm((turned - sym)[inside]) / np.linalg.norm(sym[inside])
        assert err < 0.03
    # and the asymmetric input was not invariant (the check can fail)
    mat = np.eye(3)[::-1] @ g[1].T @ np.eye(3)[::-1]
    turned = ndimage.affine_transform(vol, mat, offset=centre - mat @ centre, order=3)
    assert np.linalg.norm(turned - vol) / np.linalg.norm(vol) > 0.3


def test_symmetrising_a_symmetric_map_keeps_its_fine_detail():
    """A C7-symmetric map made analytically (seven copies of sharp Gaussian blobs turned about z) is unchanged by
    C7 symmetrisation, shell by shell up to 0.4 cycles/pixel. A real-space trilinear rotation (the first
    implementation) is a low-pass filter and fails this."""
    size = 32
    centres = []
    for p in np.random.default_rng(4).uniform(-8, 8, (3, 3)):
        for a in 2 * np.pi * np.arange(7) / 7:  # p turned about z by a
            centres.append((np.cos(a) * p[0] - np.sin(a) * p[1], np.sin(a) * p[0] + np.cos(a) * p[1], p[2]))
    vol, x, y, z = _blobs(size, centres, 1.3)
    sym = np.asarray(symmetry.symmetrise(jnp.asarray(vol, jnp.float32), symmetry.group_matrices("C7")), np.float64)
    assert np.linalg.norm(sym - vol) / np.linalg.norm(vol) < 0.01
    f_in, f_out = np.fft.fftshift(np.fft.fftn(vol)), np.fft.fftshift(np.fft.fftn(sym))
    radius = np.sqrt(x**2 + y**2 + z**2) / size
    for shell in (0.1, 0.2, 0.3, 0.4):
        m = np.abs(radius - shell) < 0.5 / size
        assert abs(np.sum(np.abs(f_out[m]) ** 2) / np.sum(np.abs(f_in[m]) ** 2) - 1) < 0.02, shell
    # a band leaves the frequencies outside it untouched
    low = np.asarray(symmetry.symmetrise(jnp.asarray(vol, jnp.float32), symmetry.group_matrices("C7"), 0.2))
    f_low = np.fft.fftshift(np.fft.fftn(low))
    outside = radius > 0.2 + 1e-9
    assert np.allclose(f_low[outside], f_in[outside], atol=1e-3 * np.abs(f_in).max())


def test_apo_groel_map_is_d7_in_relion_axes(real_files):
    """The apo GroEL cryo-EM map (tests/data/maps, Fourier-cropped to 50 px) has D7 symmetry with the 7-fold on z and a 2-fold on x:
    D7-symmetrising it changes it by far less than imposing a wrong order does."""
    vol, _ = mrc.read_map(str(real_files / "maps" / "groel_11.5A_imp_50px.mrc"))
    vol = jnp.asarray(vol, jnp.float32)

    def correlation(name):
        s = np.asarray(symmetry.symmetrise(vol, symmetry.group_matrices(name)))
        a, b = np.asarray(vol) - np.mean(vol), s - s.mean()
        return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))

    assert correlation("D7") > 0.99
    assert correlation("C6") < 0.95 and correlation("C8") < 0.95


def test_restricted_quadrature_keeps_one_direction_per_orbit():
    rule = quadrature.make_quadrature(1 / 20.0, 200.0, 10.0)
    g = symmetry.group_matrices("C7")
    sub = quadrature.restrict_directions(rule, symmetry.asymmetric_unit(rule.directions, g))
    assert abs(len(sub.directions) * 7 / len(rule.directions) - 1) < 0.05
    assert np.isclose(sub.direction_weights.sum(), 1.0)
    assert len(sub.inplane_degrees) == len(rule.inplane_degrees) and len(sub.shifts_angstrom) == len(rule.shifts_angstrom)


def test_symmetric_reconstruction_end_to_end(tmp_path):
    """A C4 run on C4-symmetric data: the level's quadrature holds a quarter of the directions and the map that
    comes out is invariant under a quarter turn about z (checked by scipy resampling)."""
    import os
    import subprocess
    import sys

    from recon import synthesis, training
    from recon.data import open_dataset
    from recon.io import metadata
    from tests.conftest import REPO, blob_volume

    size = 24
    base, _ = blob_volume(size, seed=5, n_blobs=4, spread=0.15, sigma_range=(0.07, 0.1))
    vol = sum(np.rot90(base, k, axes=(1, 2)) for k in range(4))  # exactly C4 about the array's z axis
    vol = np.roll(vol, (0, 1, 1), axis=(0, 1, 2)) if size % 2 == 0 else vol  # rot90's centre (D-1)/2 -> D//2
    synthesis.simulate_dataset(vol.astype(np.float32), 6.0, synthesis.SimulationSpec(
        num_particles=200, snr=1.0, seed=3, shift_sigma_angstrom=3.0), str(tmp_path / "data"), log=lambda *_: None)
    cmd = [sys.executable, "-m", "recon.reconstruct", "--particles", str(tmp_path / "data" / "particles.star"),
           "--workdir", str(tmp_path / "run"), "--config", str(REPO / "experiments/configs/tiny.py"), "--quiet",
           "--config.symmetry=C4", "--config.schedule.start_resolution_angstrom=30",
           "--config.schedule.target_resolution_angstrom=25", "--config.schedule.iterations_per_level=6",
           "--config.stop.max_iterations=12", "--config.batch_size=50", "--config.num_heldout=20",
           "--config.output.final_pose_pass=False"]
    result = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    from experiments.configs import tiny
    config = tiny.get_config()
    config.schedule.start_resolution_angstrom, config.schedule.target_resolution_angstrom = 30.0, 25.0
    ds = open_dataset(metadata.read_particles(tmp_path / "data" / "particles.star"))
    counts = []
    for name in ("C1", "C4"):
        config.symmetry = name
        counts.append(len(training.level_quadrature(training.make_plan(config, ds), 0).directions))
    assert abs(counts[1] * 4 / counts[0] - 1) < 0.1
    assert f"{counts[1]} directions" in (tmp_path / "run" / "run.log").read_text()

    out, _ = mrc.read_map(str(tmp_path / "run" / "final.mrc"))
    out = np.asarray(out, np.float64)
    centre = np.full(3, size // 2, float)
    flip = np.eye(3)[::-1]
    mat = flip @ symmetry.axis_rotation((0, 0, 1), 90.0).T @ flip
    turned = ndimage.affine_transform(out, mat, offset=centre - mat @ centre, order=3)
    c = np.arange(size) - size // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    inside = (x**2 + y**2 + z**2) < (size // 2 - 3) ** 2
    assert np.linalg.norm((turned - out)[inside]) / np.linalg.norm(out[inside]) < 0.05
