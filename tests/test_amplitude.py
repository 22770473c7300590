"""The per-particle amplitude scale (recon/amplitude.py): the pose fit's terms against float64 exact DFTs, and the
closed-form scale recovering known amplitudes with the spread its error analysis predicts."""

import numpy as np

import jax
import jax.numpy as jnp

from recon import amplitude, projection, quadrature, synthesis
from recon import likelihood as lk
from recon.ctf import CTFParams, make_ctf_params
from tests.test_likelihood import D, PIXEL, exact_terms, problem  # noqa: F401 (fixture)


def stacked(ctfs):
    return CTFParams(*(jnp.asarray(np.stack([c[i] for c in ctfs]), jnp.float32) for i in range(9)))


def test_the_pose_fit_terms_match_float64_exact_sums(problem):  # noqa: F811
    """cross = Re sum_k w conj(I(R_p k)) C S_t P_d / D^2 and quad = sum_k w C^2 |P_d|^2 / D^2 at chosen poses,
    against exact DFTs (the width-6 kernel's slices are within ~1e-5 of them; taken as 1e-3 with the image's
    interpolation)."""
    vol, rule, grid, images, ctfs = problem
    poses = np.array([[3, 2, 1], [17, 5, 4]], np.int32)
    cross, quad = lk.batch_pose_fit(jnp.asarray(vol, jnp.float32), jnp.asarray(images), stacked(ctfs),
                                    jnp.asarray(poses), grid, PIXEL, "kaiser_bessel6", 2)
    for i, (d, p, t) in enumerate(poses):
        w, _, data, ctf_values, phases, slices = exact_terms(np, vol, images[i], ctfs[i], rule)
        ref_cross = np.real(np.sum(w * np.conj(data[p]) * ctf_values[p] * phases[p, t] * slices[d])) / D**2
        ref_quad = np.sum(w * ctf_values[p] ** 2 * np.abs(slices[d]) ** 2) / D**2
        assert abs(float(cross[i]) - ref_cross) < 1e-3 * ref_quad, (i, float(cross[i]), ref_cross)
        assert abs(float(quad[i]) / ref_quad - 1) < 1e-3, i


def test_the_scale_recovers_known_amplitudes(problem):  # noqa: F811
    """Images a C P + unit noise at grid poses (rendered by recon.synthesis, not by the likelihood), a from
    0.6 to 1.6: the estimate's error (a_hat - a) sqrt(quad) is standard normal for the maximum-likelihood scale
    (prior_sd large), so its mean is within 4 / sqrt(n) of 0 and its sd within 20 % of 1 (n = 300); with a prior
    the estimate is shrunk towards 1 as the formula says, and bounded."""
    vol, rule, grid, _, _ = problem
    rng = np.random.default_rng(5)
    n = 300
    poses = np.stack([rng.integers(0, len(rule.directions), n), rng.integers(0, len(rule.inplane_degrees), n),
                      rng.integers(0, len(rule.shifts_angstrom), n)], -1).astype(np.int32)
    rot_tilt = quadrature.directions_to_angles(rule.directions)
    angles = np.stack([rot_tilt[poses[:, 0], 0], rot_tilt[poses[:, 0], 1], rule.inplane_degrees[poses[:, 1]]], -1)
    a_true = rng.uniform(0.6, 1.6, n)
    ctf = make_ctf_params(rng.uniform(10000, 25000, n))
    render = synthesis.render_batch_fn(D, PIXEL)
    clean = np.asarray(render(projection.prepare_volume_ft(jnp.asarray(vol, jnp.float32)),
                              jnp.asarray(angles, jnp.float32),
                              jnp.asarray(rule.shifts_angstrom[poses[:, 2]], jnp.float32),
                              CTFParams(*(jnp.asarray(f, jnp.float32) for f in ctf._replace(scale=a_true)))))
    images = (clean + rng.normal(size=clean.shape)).astype(np.float32)
    cross, quad = (np.asarray(x, np.float64) for x in lk.batch_pose_fit(
        jnp.asarray(vol, jnp.float32), jnp.asarray(images), CTFParams(*(jnp.asarray(f, jnp.float32) for f in ctf)),
        jnp.asarray(poses), grid, PIXEL, "kaiser_bessel6", 2))
    ml = (cross / quad)
    z = (ml - a_true) * np.sqrt(quad)
    assert abs(z.mean()) < 4 / np.sqrt(n) and 0.8 < z.std() < 1.2, (z.mean(), z.std(), np.median(quad))
    shrunk = amplitude.map_scale(cross, quad, 0.3)
    expected = np.clip((cross + 1 / 0.09) / (quad + 1 / 0.09), amplitude.MIN_SCALE, amplitude.MAX_SCALE)
    np.testing.assert_allclose(shrunk, expected)
    assert np.all(np.abs(shrunk - 1) <= np.abs(np.clip(ml, 0.5, 2.0) - 1) + 1e-12)  # towards 1, never past
    assert amplitude.map_scale(np.array([0.0]), np.array([1e6]), 0.3)[0] == amplitude.MIN_SCALE


def test_a_new_scale_does_not_depend_on_the_scale_the_fit_was_computed_with():
    """The pose fit is computed with the particle's current scale s folded into its CTF (cross s x, quad s^2 x
    those at scale 1); the recorded scale is the one from scale 1 (otherwise it would alternate a, 1/a, ...)."""
    import types

    from recon import training

    cross, quad = np.array([120.0, 80.0, 5.0]), np.array([100.0, 100.0, 10.0])
    expected = amplitude.map_scale(cross, quad, 0.3)
    for s in (1.0, 0.7, 1.8):
        host = types.SimpleNamespace(amplitude=np.full(4, np.nan, np.float32))
        used = np.full(3, s)
        training.record_amplitudes(host, np.array([0, 2, 3, -1])[:3], used, (s * cross, s**2 * quad), 0.3)
        np.testing.assert_allclose(host.amplitude[[0, 2, 3]], expected, rtol=1e-6)
        assert np.isnan(host.amplitude[1])
