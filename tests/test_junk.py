"""The noise class (recon/junk.py): the two-component mixture against its textbook form, log p(I | 0) against the
empty map's log-marginal, the gradient weighted by each image's map-class responsibility, noise images told from
particles, and a run that flags the junk of a simulated set in poses.star."""

import numpy as np
import pytest
from scipy.special import expit, logsumexp

import jax
import jax.numpy as jnp

from recon import junk, likelihood, sampling
from recon import step as step_lib
from tests.test_likelihood import PIXEL, fast, problem  # noqa: F401 (fixture)


def test_the_mixture_is_the_textbook_two_component_likelihood():
    rng = np.random.default_rng(0)
    a, b = rng.normal(-300, 50, 200), rng.normal(-300, 50, 200)  # log p(I | V), log p(I | 0): far apart or close
    share = 0.2
    lg = np.log(share / (1 - share))
    reference = logsumexp(np.stack([a + np.log(1 - share), b + np.log(share)]), axis=0)
    np.testing.assert_allclose(junk.mixture_log_marginal(a, b, lg), reference, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(junk.mixture_log_marginal(jnp.asarray(a), jnp.asarray(b), lg)),
                               reference, rtol=1e-6)
    # responsibility of the noise class: pi p(I|0) / p(I), from the log Bayes factor log p(I|V) - log p(I|0)
    np.testing.assert_allclose(junk.responsibility(a - b, lg), np.exp(b + np.log(share) - reference), atol=1e-12)
    np.testing.assert_allclose(junk.responsibility(a - b, lg), expit(lg - (a - b)), atol=1e-12)
    assert junk.logit(0.5) == 0.0


def test_the_share_is_the_em_fixed_point():
    """Scores from a known mixture (20 % noise images at log BF ~ -30, particles at ~ +30, well separated): the
    EM update converges to the noise images' share; unscored particles (NaN) do not count; the bounds hold."""
    rng = np.random.default_rng(1)
    is_junk = rng.random(5000) < 0.2
    scores = np.where(is_junk, rng.normal(-30, 5, 5000), rng.normal(30, 5, 5000))
    scores[:100] = np.nan
    share = junk.INITIAL_SHARE
    for _ in range(20):
        share = junk.updated_share(scores, share)
    assert abs(share - is_junk[100:].mean()) < 1e-3
    flagged = junk.flagged(scores, share)
    assert not flagged[:100].any() and np.array_equal(flagged[100:], is_junk[100:])
    assert junk.updated_share(np.full(10, 1e3), 0.3) == junk.PRIOR_MIN
    assert junk.updated_share(np.full(10, -1e3), 0.3) == junk.PRIOR_MAX


def test_log_empty_is_the_empty_maps_log_marginal(problem):  # noqa: F811
    """``log p(I | 0)`` reported beside any map equals the log-marginal of the empty map (every pose alike), on the
    exhaustive and the sampled paths."""
    vol, rule, grid, images, ctfs = problem
    empty = np.asarray(fast(np.zeros_like(vol), images, ctfs, grid).log_marginal)
    result = fast(vol, images, ctfs, grid)
    np.testing.assert_allclose(np.asarray(result.log_empty), empty, rtol=1e-5)
    ctf = jax.tree_util.tree_map(lambda *f: jnp.asarray(np.stack(f), jnp.float32), *ctfs)
    level = sampling.make_level_sampler(rule, sampling.Settings(), {"directions": 4, "inplane": 4, "shifts": 2})
    factors = sampling.init_state(len(images), {"directions": 4, "inplane": 4, "shifts": 2})
    state = tuple(sampling.FactorState(*(jnp.asarray(a) for a in getattr(factors, f))) for f in sampling.FACTORS)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.PRNGKey(0), jnp.arange(len(images)))
    samples, _ = level.propose(state, jnp.full(len(images), -1), keys)
    sampled = likelihood.sampled_log_marginals(jnp.asarray(vol, jnp.float32), jnp.asarray(images), ctf, samples,
                                               grid, PIXEL, chunk_size=len(images))
    np.testing.assert_allclose(np.asarray(sampled.log_empty), empty, rtol=1e-5)


def test_the_gradient_is_each_images_gradient_times_its_map_responsibility(problem):  # noqa: F811
    """d/dV -log((1 - pi) p(I|V) + pi p(I|0)) = (1 - r) d/dV -log p(I|V), r the noise class's responsibility:
    the mixture step's gradient against the one-class gradients of each image alone, weighted by hand."""
    vol, rule, grid, images, ctfs = problem
    volume = jnp.asarray(vol, jnp.float32)
    ctf = jax.tree_util.tree_map(lambda *f: jnp.asarray(np.stack(f), jnp.float32), *ctfs)
    bayes = np.asarray(fast(vol, images, ctfs, grid).log_marginal - fast(vol, images, ctfs, grid).log_empty)
    logits = jnp.asarray(bayes + np.array([-1.0, 0.5]), jnp.float32)  # responsibilities ~0.27 and ~0.62
    plain = step_lib.make_step_functions(grid, PIXEL, "uniform", 0.0, 1, chunk_size=2)
    mixed = step_lib.make_step_functions(grid, PIXEL, "uniform", 0.0, 1, chunk_size=2, junk_class=True)
    batch = step_lib.Batch(jnp.asarray(images), ctf, jnp.ones(2), jnp.asarray(0), logits)
    (_, _), g_mixed = mixed.gradient(volume, batch)
    r = junk.responsibility(bayes, np.asarray(logits, np.float64))
    assert 0.2 < r[0] < 0.35 and 0.55 < r[1] < 0.7
    expected = 0.0
    for i in range(2):
        (_, _), g_i = plain.gradient(volume, batch._replace(mask=jnp.asarray(np.eye(2)[i], jnp.float32)))
        expected = expected + (1.0 - r[i]) * np.asarray(g_i)
    np.testing.assert_allclose(np.asarray(g_mixed), expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    (_, _), g_off = plain.gradient(volume, batch)  # without the class, junk_logit is not read
    (_, _), g_none = plain.gradient(volume, batch._replace(junk_logit=None))
    np.testing.assert_array_equal(np.asarray(g_off), np.asarray(g_none))


def test_a_run_flags_the_empty_picks_and_scales_the_amplitudes_of_a_simulated_set(tmp_path):
    """300 particles at SNR 1 with 30 % junk (half empty picks, half off-model blobs of the particle's power,
    recon.synthesis; rlnClassNumber 2 in the simulated file) and amplitudes 1 + 0.3 N(0, 1): with the noise class
    and the amplitude scale on from the second of three levels, poses.star marks junk rlnClassNumber 2 with its
    log Bayes factor. At this SNR a projection carries |CP|^2 / 2 ~ 250 nats over noise alone (sd ~ |CP| ~ 22
    nats), so a particle scores about +250 and an empty pick about minus that (at the scale's floor of 0.5, a
    quarter of it): every empty pick flagged, and no particle of amplitude above 0.6 (a particle of amplitude a
    scores ~(a / 2 - 1 / 8) |CP|^2 at the floor: near 0 below ~0.3). The blobs, Gaussians like this test's map, are explained
    by its projections as well as particles are: the noise class is not asked to catch them. The amplitude scales
    (error ~1 / |CP| ~ 0.03 at the right pose, recon/amplitude.py) follow the true amplitudes: correlation > 0.8
    over the particles."""
    import os
    import subprocess
    import sys

    from recon import synthesis
    from recon.io import star
    from tests.conftest import REPO, blob_volume
    from tests.test_reconstruct import OVERRIDES

    vol, _ = blob_volume(24, seed=21, n_blobs=10, spread=0.17, sigma_range=(0.07, 0.1))
    spec = synthesis.SimulationSpec(num_particles=300, snr=1.0, seed=4, shift_sigma_angstrom=4.0, junk_fraction=0.3,
                                    amplitude_spread=0.3)
    synthesis.simulate_dataset(vol.astype(np.float32), 6.0, spec, str(tmp_path / "data"), log=lambda *_: None)
    truth = synthesis.draw_effects(spec, 300, np.zeros((300, 3)))
    empty, good = truth.junk == 1, truth.junk == 0
    assert 30 <= empty.sum() <= 60  # ~15 % of 300
    workdir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "recon.reconstruct", "--particles", str(tmp_path / "data" / "particles.star"),
         "--workdir", str(workdir), "--config", str(REPO / "experiments/configs/tiny.py"), "--quiet", *OVERRIDES,
         "--config.junk.model=noise_class", "--config.amplitude.model=per_particle"], cwd=REPO,
        env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    poses = star.read_star(workdir / "poses.star")
    called = poses.extra_columns["rlnClassNumber"] == 2
    score = poses.extra_columns[star.JUNK_SCORE_COLUMN].astype(float)
    assert np.isfinite(score).all()  # the final pass scores every particle
    # particles whose true amplitude is near the simulation's floor of 0.2 are nearly empty picks themselves
    assert called[empty].all() and called[good].mean() <= 0.05, (called[empty].mean(), called[good].mean())
    assert not called[good & (truth.amplitude > 0.6)].any()
    assert np.median(score[good]) > 100 and np.median(score[empty]) < -10
    scale = poses.extra_columns[star.AMPLITUDE_COLUMN].astype(float)
    assert np.all((scale >= 0.5) & (scale <= 2.0))
    assert np.corrcoef(scale[good], truth.amplitude[good])[0, 1] > 0.8
    log = (workdir / "run.log").read_text()
    assert f"junk: {int(called.sum())} of 300 scored particles" in log
    assert "amplitude scale of 300 particles: median" in log
    assert f"{int(called.sum())} of 300 particles ({100 * called.mean():.1f} %)" in (workdir / "report.html").read_text()
