"""Several maps (recon/classes.py): the class-marginalised likelihood against its textbook mixture, the tempered
objective's limits, each map's gradient against the one-map gradients weighted by hand, the posteriors mixed by
responsibility, the proportions' EM fixed point and floor, class matching, mixtures from recon.simulate, and a run
that sorts a two-state simulated set."""

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

import jax
import jax.numpy as jnp

from recon import classes, sampling
from recon import step as step_lib
from tests.test_likelihood import PIXEL, fast, problem  # noqa: F401 (fixture)


def test_the_mixture_at_beta_one_is_the_textbook_class_marginal():
    rng = np.random.default_rng(0)
    log_classes = rng.normal(-300, 40, (100, 3))
    shares = np.array([0.5, 0.3, 0.2])
    reference = logsumexp(log_classes + np.log(shares), axis=1)
    np.testing.assert_allclose(classes.tempered_log_marginal(log_classes, np.log(shares), 1.0), reference,
                               rtol=1e-12)
    np.testing.assert_allclose(classes.responsibilities(log_classes, shares),
                               np.exp(log_classes + np.log(shares) - reference[:, None]), atol=1e-12)
    got = classes.tempered_log_marginal(jnp.asarray(log_classes, jnp.float32), jnp.log(jnp.asarray(shares)), 1.0)
    np.testing.assert_allclose(np.asarray(got), reference, rtol=1e-6)


def test_the_tempered_objective_tends_to_the_share_weighted_mean_as_beta_falls():
    """``(1 / beta) logsumexp(log pi + beta l)`` -> ``sum pi l`` as ``beta -> 0`` (first order in beta: the
    variance term ``beta Var_pi(l) / 2``); its responsibilities tend to ``pi``."""
    rng = np.random.default_rng(1)
    l = rng.normal(-300, 40, (50, 2))
    pi = np.array([0.7, 0.3])
    beta = 1e-6
    mean = l @ pi
    variance = (l**2) @ pi - mean**2
    np.testing.assert_allclose(classes.tempered_log_marginal(l, np.log(pi), beta), mean + beta * variance / 2,
                               rtol=1e-8)
    np.testing.assert_allclose(classes.tempered_responsibilities(l, np.log(pi), beta), np.tile(pi, (50, 1)),
                               atol=1e-3)
    np.testing.assert_allclose(classes.tempered_responsibilities(l, np.log(pi), 0.5),
                               softmax(np.log(pi) + 0.5 * l, axis=1), atol=1e-12)


def test_beta_rises_geometrically_to_one():
    assert classes.beta_at(0, 100, 0.01) == pytest.approx(0.01)
    assert classes.beta_at(50, 100, 0.01) == pytest.approx(0.1)
    assert classes.beta_at(100, 100, 0.01) == 1.0 and classes.beta_at(7, 0, 0.01) == 1.0


def _two_maps(problem):  # noqa: F811
    vol, rule, grid, images, ctfs = problem
    other = np.roll(vol, 2, axis=0) * 0.8  # a second map, unlike the first
    return np.stack([vol, other]).astype(np.float32), rule, grid, images, ctfs


def test_each_maps_gradient_is_the_one_map_gradient_times_its_tempered_responsibility(problem):  # noqa: F811
    """d/dV_c of -(1/beta) logsumexp_c(log pi_c + beta log p(I | V_c)) = r_c d/dV_c -log p(I | V_c), r the
    tempered responsibilities: the two-map step against the one-map gradients of each image alone, weighted by
    hand from the one-map log-likelihoods; the objective against its textbook value."""
    maps, rule, grid, images, ctfs = _two_maps(problem)
    ctf = jax.tree_util.tree_map(lambda *f: jnp.asarray(np.stack(f), jnp.float32), *ctfs)
    l = np.stack([np.asarray(fast(m, images, ctfs, grid).log_marginal, np.float64) for m in maps], axis=1)  # (B, K)
    log_pi = np.log([0.4, 0.6])
    beta = 0.02
    r = softmax(log_pi + beta * l, axis=1)
    assert np.all((r > 0.05) & (r < 0.95)), r  # both maps carry weight: the test can tell the weights apart
    plain = step_lib.make_step_functions(grid, PIXEL, "uniform", 0.0, 1, chunk_size=2)
    mixed = step_lib.make_step_functions(grid, PIXEL, "uniform", 0.0, 1, chunk_size=2, classes=2)
    prior = (jnp.asarray(log_pi, jnp.float32), jnp.asarray(beta, jnp.float32))
    batch = step_lib.Batch(jnp.asarray(images), ctf, jnp.ones(2), jnp.asarray(0), class_prior=prior)
    (value, result), grad = mixed.gradient(jnp.asarray(maps), batch)
    np.testing.assert_allclose(float(value), -np.sum(logsumexp(log_pi + beta * l, axis=1) / beta), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(result.log_classes), l, rtol=1e-5)
    for c in range(2):
        expected = 0.0
        for i in range(2):
            one = batch._replace(mask=jnp.asarray(np.eye(2)[i], jnp.float32), class_prior=None)
            (_, _), g_i = plain.gradient(jnp.asarray(maps[c]), one)
            expected = expected + r[i, c] * np.asarray(g_i)
        np.testing.assert_allclose(np.asarray(grad[c]), expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


def test_posteriors_and_residuals_are_mixed_by_responsibility(problem):  # noqa: F811
    """The combined pose posteriors are sum_c r_c post_c, the expected residual likewise, the best pose is that of
    the most responsible map, on the exhaustive path; on the sampled path each class is evaluated at its own draws
    (rows 2 i + c), its one-map results kept in ``per_class`` for its sampler."""
    maps, rule, grid, images, ctfs = _two_maps(problem)
    ctf = jax.tree_util.tree_map(lambda *f: jnp.asarray(np.stack(f), jnp.float32), *ctfs)
    per = [fast(m, images, ctfs, grid) for m in maps]
    l = np.stack([np.asarray(p.log_marginal, np.float64) for p in per], axis=1)
    log_pi = np.log([0.5, 0.5])
    beta = 0.02
    r = softmax(log_pi + beta * l, axis=1)
    fns = step_lib.make_step_functions(grid, PIXEL, "uniform", 0.0, 1, chunk_size=2, classes=2)
    prior = (jnp.asarray(log_pi, jnp.float32), jnp.asarray(beta, jnp.float32))
    out = fns.evaluate(jnp.asarray(maps), jnp.asarray(images), ctf, prior)
    for field in ("post_dir", "post_psi", "post_shift"):
        expected = sum(r[:, c, None] * np.asarray(getattr(per[c], field)) for c in range(2))
        np.testing.assert_allclose(np.asarray(getattr(out, field)), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out.expected_residual),
                               sum(r[:, c] * np.asarray(per[c].expected_residual) for c in range(2)), rtol=1e-4)
    top = np.argmax(r, axis=1)
    np.testing.assert_array_equal(np.asarray(out.best), np.stack([np.asarray(per[top[i]].best[i]) for i in range(2)]))

    level = sampling.make_level_sampler(rule, sampling.Settings(), {"directions": 4, "inplane": 4, "shifts": 2})
    rows = 2 * len(images)  # each class's own draws: particle i, class c at row 2 i + c
    factors = sampling.init_state(rows, {"directions": 4, "inplane": 4, "shifts": 2})
    state = tuple(sampling.FactorState(*(jnp.asarray(a) for a in getattr(factors, f))) for f in sampling.FACTORS)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.PRNGKey(0), jnp.arange(rows))
    samples, _ = level.propose(state, jnp.full(rows, -1), keys)
    plain = step_lib.make_step_functions(grid, PIXEL, "uniform", 0.0, 1, chunk_size=2)
    one = [plain.evaluate_sampled(jnp.asarray(m), jnp.asarray(images), ctf,
                                  jax.tree_util.tree_map(lambda a: a[c::2], samples)) for c, m in enumerate(maps)]
    both = fns.evaluate_sampled(jnp.asarray(maps), jnp.asarray(images), ctf, samples, prior)
    ls = np.stack([np.asarray(o.log_marginal, np.float64) for o in one], axis=1)
    combined = logsumexp(log_pi + beta * ls, axis=1) / beta
    np.testing.assert_allclose(np.asarray(both.log_marginal), combined, rtol=1e-5)
    assert both.log_phi_direction is None  # each class drew its own points: only per class
    for c in range(2):  # the per-class results, in the samplers' rows, are each class's own
        np.testing.assert_allclose(np.asarray(both.per_class.log_marginal)[c::2], ls[:, c], rtol=1e-5)


def test_the_shares_are_the_em_fixed_point_and_keep_their_floor():
    """Log-likelihoods from a known 70/30 mixture, well separated: the EM update converges to the true shares;
    never-scored rows (NaN) do not count; a class explaining nothing keeps ``min_share``."""
    rng = np.random.default_rng(2)
    truth = (rng.random(4000) < 0.3).astype(int)
    l = rng.normal(-300, 5, (4000, 2))
    l[np.arange(4000), truth] += 40.0
    l[:50] = np.nan
    shares = np.array([0.5, 0.5])
    for _ in range(20):
        shares = classes.updated_shares(l, shares, 0.05)
    np.testing.assert_allclose(shares, [1 - truth[50:].mean(), truth[50:].mean()], atol=1e-3)
    dead = rng.normal(-300, 5, (500, 2))
    dead[:, 1] -= 100.0  # class 2 explains no particle
    np.testing.assert_allclose(classes.updated_shares(dead, np.array([0.5, 0.5]), 0.05), [0.95, 0.05])
    # the 0.03 below the floor taken from the others in proportion to what they hold above it (0.85 : 0.03)
    np.testing.assert_allclose(classes.floored(np.array([0.9, 0.08, 0.02]), 0.05),
                               [0.9 - 0.03 * 0.85 / 0.88, 0.08 - 0.03 * 0.03 / 0.88, 0.05], rtol=1e-12)
    assert classes.floored(np.array([0.9, 0.08, 0.02]), 0.05).sum() == pytest.approx(1.0)
    assigned, top = classes.assignments(l, shares)
    assert np.all(assigned[:50] == -1) and np.all(np.isnan(top[:50]))
    assert np.mean(assigned[50:] == truth[50:]) > 0.99


def test_matched_accuracy_finds_the_best_permutation():
    truth = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    predicted = np.array([2, 2, 1, 0, 0, 1, 1, 1])  # classes renamed 0->2, 1->0, 2->1; one error
    accuracy, match = classes.matched_accuracy(predicted, truth)
    assert accuracy == pytest.approx(7 / 8) and match == [1, 2, 0]


def test_simulate_writes_a_mixture_with_each_particles_true_map(tmp_path):
    """Two maps at 70/30, noise-free: the class column follows the proportions (binomial, 4 sd), and each image is
    the projection of its own map (rendered again here with that map alone)."""
    import mrcfile

    from recon import projection, synthesis
    from recon.ctf import CTFParams
    from recon.io import mrc, star
    from tests.conftest import blob_volume

    a, _ = blob_volume(24, seed=1, n_blobs=6, spread=0.15)
    b, _ = blob_volume(24, seed=2, n_blobs=6, spread=0.15)
    spec = synthesis.SimulationSpec(num_particles=400, snr=float("inf"), seed=3, class_proportions=(0.7, 0.3))
    synthesis.simulate_dataset(np.stack([a, b]).astype(np.float32), 6.0, spec, str(tmp_path), log=lambda *_: None)
    meta = star.read_star(tmp_path / "particles.star")
    cls = np.asarray(meta.extra_columns["rlnClassNumber"]).astype(int)
    assert set(np.unique(cls)) == {1, 2}
    assert abs(np.mean(cls == 2) - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 400)
    with mrcfile.open(tmp_path / "particles.mrcs", permissive=True) as f:
        stack = np.asarray(f.data)
    render = synthesis.render_batch_fn(24, 6.0)
    rows = np.concatenate([np.flatnonzero(cls == 1)[:3], np.flatnonzero(cls == 2)[:3]])
    ctf = CTFParams(*(jnp.asarray(np.asarray(f)[rows], jnp.float32) for f in meta.ctf))
    for c, volume in enumerate([a, b]):
        images = np.asarray(render(projection.prepare_volume_ft(jnp.asarray(volume, jnp.float32)),
                                   jnp.asarray(meta.angles_degrees[rows], jnp.float32),
                                   jnp.asarray(meta.origins_angstrom[rows], jnp.float32), ctf))
        own = cls[rows] == c + 1
        np.testing.assert_allclose(stack[rows][own], images[own], atol=1e-5 * np.abs(images).max())
        assert np.abs(stack[rows][~own] - images[~own]).max() > 0.1 * np.abs(images).max()
    for c, volume in enumerate([a, b]):
        np.testing.assert_array_equal(mrc.read_map(str(tmp_path / f"ground_truth_class_{c + 1:02d}.mrc"))[0],
                                      volume.astype(np.float32))


def _two_state_set(folder, snr=1.0):
    """300 particles at ``snr`` from two unlike maps of Gaussian blobs (60/40; recon.simulate's mixture)."""
    from recon import synthesis
    from tests.conftest import blob_volume

    a, _ = blob_volume(24, seed=21, n_blobs=10, spread=0.17, sigma_range=(0.07, 0.1))
    b, _ = blob_volume(24, seed=5, n_blobs=4, spread=0.25, sigma_range=(0.05, 0.08))
    b *= np.sqrt(np.sum(a**2) / np.sum(b**2))
    spec = synthesis.SimulationSpec(num_particles=300, snr=snr, seed=4, shift_sigma_angstrom=4.0,
                                    class_proportions=(0.6, 0.4))
    synthesis.simulate_dataset(np.stack([a, b]).astype(np.float32), 6.0, spec, str(folder), log=lambda *_: None)
    return a, b


def _tiny_config(**overrides):
    from experiments.configs import tiny

    c = tiny.get_config()
    c.schedule.start_resolution_angstrom, c.schedule.target_resolution_angstrom = 40.0, 20.0
    c.schedule.level_ratio, c.schedule.iterations_per_level, c.stop.max_iterations = 1.45, 24, 60
    c.batch_size, c.num_heldout, c.prior.scale, c.classes = 50, 20, 0.001, 2
    for key, value in overrides.items():
        node = c
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return c


def test_a_run_from_the_true_maps_assigns_the_classes_and_writes_them(tmp_path):
    """The two-state set, a two-class run started from the two true maps with the class posteriors on from the
    start (no tied or split levels): at SNR 1 the right map beats the wrong one by ~|C(P_a - P_b)|^2 / 2, tens to
    hundreds of nats, so the assignment (poses.star rlnClassNumber, after matching) is right for at least 90 % of
    the particles (a run that ignored the class, or weighted the wrong map, scores near the 60 % of the larger
    class); the proportions follow the truth's 60/40 within 10 points; class_01/02.mrc each stay nearer their own
    truth; the class posterior is written; run.log and the report name the classes."""
    from recon import metrics, training
    from recon.data import open_dataset
    from recon.io import metadata, mrc, star

    a, b = _two_state_set(tmp_path / "data")
    dataset = open_dataset(metadata.read_particles(str(tmp_path / "data" / "particles.star")))
    config = _tiny_config(**{"class_mixture.tied_fraction": 0.0, "class_mixture.random_split_levels": 0})
    workdir = tmp_path / "run"
    summary = training.run(config, dataset, str(workdir), quiet=True, start_volume=np.stack([a, b]).astype(np.float32))
    truth = np.asarray(star.read_star(tmp_path / "data" / "particles.star").extra_columns["rlnClassNumber"], int)
    called = np.asarray(star.read_star(workdir / "poses.star").extra_columns["rlnClassNumber"], int)
    probability = np.asarray(star.read_star(workdir / "poses.star").extra_columns[star.CLASS_PROBABILITY_COLUMN],
                             float)
    assert set(np.unique(called)) <= {1, 2} and np.all((probability >= 0.5) & (probability <= 1.0))
    accuracy, match = classes.matched_accuracy(called - 1, truth - 1)
    assert accuracy >= 0.9 and match == [0, 1], (accuracy, match)
    np.testing.assert_allclose(summary["class_shares"], [np.mean(truth == 1), np.mean(truth == 2)], atol=0.1)
    maps = [mrc.read_map(str(workdir / f"class_{c + 1:02d}.mrc"))[0] for c in range(2)]
    for own, other, volume in ((a, b, maps[0]), (b, a, maps[1])):
        corr = [metrics.evaluate_maps(volume, t, 6.0, do_align=False)[0]["correlation"] for t in (own, other)]
        assert corr[0] > corr[1], corr
    np.testing.assert_array_equal(mrc.read_map(str(workdir / "final.mrc"))[0], maps[int(np.argmax(summary["class_shares"]))])
    assert "classes: class 1:" in (workdir / "run.log").read_text()
    assert "<th>particles</th>" in (workdir / "report.html").read_text()


def test_the_maps_are_one_while_tied_and_part_on_their_random_shares(tmp_path):
    """The ab initio path's first phases: through the tied levels every class's map is the same, bit for bit
    (one start, one gradient); after the level of random shares, where each particle trains its own class only,
    they differ by more than 5 % of the map's peak (two fits to disjoint random halves of 280 particles at SNR 1
    differ by their noise, of order 1 / sqrt(140) ~ 8 % of the signal, and by the states' shares in each half)."""
    from recon import training
    from recon.data import open_dataset
    from recon.io import metadata, mrc

    _two_state_set(tmp_path / "data")
    dataset = open_dataset(metadata.read_particles(str(tmp_path / "data" / "particles.star")))
    tied = _tiny_config(**{"class_mixture.tied_fraction": 0.34, "class_mixture.random_split_levels": 1,
                           "stop.max_iterations": 24})
    training.run(tied, dataset, str(tmp_path / "tied"), quiet=True)
    maps = [mrc.read_map(str(tmp_path / "tied" / f"class_{c + 1:02d}.mrc"))[0] for c in range(2)]
    np.testing.assert_array_equal(maps[0], maps[1])
    assert np.abs(maps[0]).max() > 0
    split = _tiny_config(**{"class_mixture.tied_fraction": 0.34, "class_mixture.random_split_levels": 1,
                            "stop.max_iterations": 48})
    training.run(split, dataset, str(tmp_path / "split"), quiet=True)
    maps = [mrc.read_map(str(tmp_path / "split" / f"class_{c + 1:02d}.mrc"))[0] for c in range(2)]
    assert np.abs(maps[0] - maps[1]).max() > 0.05 * np.abs(maps[0]).max()


def test_a_killed_two_class_run_resumes_to_the_same_maps(tmp_path):
    """A two-class run through its tied, random-share and posterior levels, killed (SIGKILL) after its second
    checkpoint and run again: the same class maps and class assignments as the uninterrupted run (the class
    log-likelihoods, proportions, per-class samplers and the level-start cut are in the checkpoint or re-derived)."""
    import signal
    import time

    from recon.io import mrc, star
    from tests.test_reconstruct import run_reconstruct

    _two_state_set(tmp_path / "data")
    particles = tmp_path / "data" / "particles.star"
    extra = ["--config.classes=2", "--config.class_mixture.tied_fraction=0.34"]
    run_reconstruct(particles, tmp_path / "whole", extra=extra)
    workdir = tmp_path / "killed"
    proc = run_reconstruct(particles, workdir, wait=False, extra=extra)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and \
            len(list((workdir / "checkpoints").glob("ckpt_*.npz"))) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_reconstruct(particles, workdir, extra=extra)
    assert "resumed from iteration" in (workdir / "run.log").read_text()
    for c in (1, 2):
        resumed = mrc.read_map(workdir / f"class_{c:02d}.mrc")[0]
        reference = mrc.read_map(tmp_path / "whole" / f"class_{c:02d}.mrc")[0]
        np.testing.assert_allclose(resumed, reference, rtol=1e-4, atol=1e-5 * np.abs(reference).max())
    calls = [np.asarray(star.read_star(d / "poses.star").extra_columns["rlnClassNumber"]) for d in (workdir,
                                                                                                    tmp_path / "whole")]
    np.testing.assert_array_equal(calls[0], calls[1])
