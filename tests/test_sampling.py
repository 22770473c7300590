"""Importance sampling (Sec. 3.3, App. B): proposals, kernels, draws, and unbiasedness of the sampled likelihood."""

import itertools
import math

import numpy as np

import jax
import jax.numpy as jnp

from recon import likelihood, quadrature, sampling
from recon.ctf import CTFParams
from tests.conftest import blob_volume


def peaked_state(points, peak, log_values):
    """A FactorState holding ``points[peak]`` with ``log_values`` (one particle)."""
    return sampling.FactorState(points=jnp.asarray(points[peak], jnp.float32),
                                log_phi=jnp.asarray(log_values, jnp.float32), spacing=jnp.asarray(1.0))


def test_proposal_is_normalised_and_respects_the_mixing_weight():
    dirs = quadrature.fibonacci_sphere(300)
    state = sampling.FactorState(points=jnp.asarray(dirs[[3, 50, 51]], jnp.float32),
                                 log_phi=jnp.asarray([0.0, -1.0, sampling.NEG], jnp.float32),
                                 spacing=jnp.asarray(0.2))
    for alpha in (0.05, 0.3, 1.0):
        q = np.asarray(sampling.proposal(state, jnp.asarray(dirs, jnp.float32), "vmf", 1.0, alpha, 0.8), np.float64)
        assert abs(q.sum() - 1.0) < 1e-5
        assert np.all(q >= alpha / 300 * (1 - 1e-5))
        # the smoothed part carries exactly 1 - alpha of the mass
        assert abs(np.sum(q - alpha / 300) - (1 - alpha)) < 1e-5
    q_uniform = np.asarray(sampling.proposal(state, jnp.asarray(dirs, jnp.float32), "vmf", 1.0, 1.0, 1.0))
    np.testing.assert_allclose(q_uniform, 1.0 / 300, rtol=1e-5)


def test_annealing_follows_the_papers_schedule():
    for tau in (0, 49, 50, 200, 399, 1000, 2000):
        alpha, inv_t = sampling.annealing(jnp.asarray(tau), 50.0, 0.05, 1.25)
        f = math.floor(tau / 50)
        assert abs(float(alpha) - max(0.05, 2 ** (-0.25 * f))) < 1e-6
        expected_inv_t = 0.0 if f == 0 else 1.0 / max(1.25, 2 ** (10.0 / f))
        assert abs(float(inv_t) - expected_inv_t) < 1e-6


def test_kernel_smoothing_coarse_to_fine_preserves_mass_near_the_peaks():
    coarse = quadrature.make_quadrature(1 / 40.0, 200.0, 45.0)
    fine = quadrature.make_quadrature(1 / 20.0, 200.0, 45.0)
    step = math.radians(coarse.angular_step_degrees)
    rng = np.random.default_rng(0)
    peaks = rng.choice(len(coarse.directions), 3, replace=False)
    phi = np.array([1.0, 0.5, 0.25])
    log_k = np.asarray(sampling.log_kernel(jnp.asarray(coarse.directions[peaks], jnp.float32),
                                           jnp.asarray(fine.directions, jnp.float32), step, "vmf", 1.0), np.float64)
    smoothed = phi @ np.exp(log_k)  # phihat_j = sum_i phi_i K_ij (T = 1)
    assert abs(smoothed.sum() - phi.sum()) < 1e-4 * phi.sum()  # mass preserved
    cos_to_peak = fine.directions @ coarse.directions[peaks].T  # (M_fine, 3)
    near = np.arccos(np.clip(cos_to_peak, -1, 1)).min(axis=1) < 3 * step
    assert smoothed[near].sum() > 0.98 * phi.sum()
    # in-plane (S^1) and shifts (R^2): the same two properties
    for kind, src, dst, spacing in (
            ("vmf", sampling.inplane_points(coarse.inplane_degrees[[2]]), sampling.inplane_points(fine.inplane_degrees),
             step),
            ("gaussian", coarse.shifts_angstrom[[1]], fine.shifts_angstrom, coarse.shift_step_angstrom)):
        k = np.exp(np.asarray(sampling.log_kernel(jnp.asarray(src, jnp.float32), jnp.asarray(dst, jnp.float32),
                                                  spacing, kind, 1.0), np.float64))[0]
        assert abs(k.sum() - 1.0) < 1e-5
        if kind == "vmf":
            dist = np.arccos(np.clip(dst @ src[0], -1, 1))
        else:
            dist = np.linalg.norm(dst - src[0], axis=1) / spacing * step
        assert k[dist < 3 * step].sum() > 0.98


def test_duplicates_are_evaluated_once_with_their_counts():
    m = 50
    q = np.full(m, 0.2 / (m - 2))
    q[7], q[8] = 0.5, 0.3  # most draws land on two points
    log_w = np.log(np.full(m, 1.0 / m))
    d = sampling.draw(jax.random.PRNGKey(3), jnp.asarray(q, jnp.float32), jnp.asarray(log_w, jnp.float32), 40, 10.0)
    used = np.asarray(d.log_weight) > 0.5 * sampling.NEG
    idx = np.asarray(d.index)[used]
    assert len(set(idx.tolist())) == len(idx) == int(d.count)  # distinct
    n = float(d.num_draws)
    ess = 1.0 / np.sum(q**2)
    assert n == min(math.ceil(10 * ess), 40)
    # weight = count * w / (N q)  ->  counts are positive integers summing to N
    counts = np.exp(np.asarray(d.log_weight, np.float64)[used]) * n * q[idx] / np.exp(log_w[idx])
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)
    assert np.all(np.round(counts) >= 1) and abs(counts.sum() - n) < 1e-3
    assert counts[idx == 7][0] > 3  # the heavy point was drawn repeatedly, yet occupies one slot


def test_importance_estimate_of_a_sum_is_unbiased():
    rng = np.random.default_rng(1)
    m = 400
    f = np.exp(rng.normal(size=m) * 2.0)  # skewed values
    w = rng.uniform(0.5, 1.5, m)
    w /= w.sum()
    exact = float(np.sum(w * f))
    q = 0.7 * (w * f) ** 0.8 / np.sum((w * f) ** 0.8) + 0.3 / m  # an imperfect proposal
    draw = jax.jit(jax.vmap(lambda k: sampling.draw(k, jnp.asarray(q, jnp.float32),
                                                    jnp.asarray(np.log(w), jnp.float32), 64, 2.0)))
    d = draw(jax.random.split(jax.random.PRNGKey(0), 4000))
    est = np.sum(np.exp(np.asarray(d.log_weight, np.float64)) * f[np.asarray(d.index)], axis=1)
    mean, se = est.mean(), est.std() / np.sqrt(len(est))
    assert abs(mean - exact) < 4 * se, (mean, exact, se)
    assert se < 0.02 * exact  # and informative


def small_problem(size=16, pixel=4.0, n=2):
    vol, _ = blob_volume(size, seed=1)
    rule = quadrature.make_quadrature(1 / 16.0, 40.0, 8.0, 6.0)
    grid = likelihood.make_grid(size, pixel, rule, 1 / 16.0)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(n, size, size)).astype(np.float32))
    ctf = CTFParams(*(jnp.asarray(np.full(n, v), jnp.float32)
                      for v in (15000.0, 14000.0, 30.0, 300.0, 2.7, 0.1, 0.0, 0.0, 1.0)))
    return jnp.asarray(vol), images, ctf, rule, grid, pixel


def test_sampled_likelihood_with_every_point_equals_the_exhaustive_sum():
    vol, images, ctf, rule, grid, pixel = small_problem()
    n = images.shape[0]
    full = likelihood.batch_log_marginals(vol, images, ctf, grid, pixel, 1, False, "kaiser_bessel")
    tile = lambda a: jnp.tile(a, (n, 1))  # noqa: E731
    m = [len(rule.directions), len(rule.inplane_degrees), len(rule.shifts_angstrom)]
    samples = likelihood.SampleSet(tile(jnp.arange(m[0])), tile(grid.log_w_dir), tile(jnp.arange(m[1])),
                                   tile(grid.log_w_psi), tile(jnp.arange(m[2])), tile(grid.log_w_shift))
    got = likelihood.sampled_log_marginals(vol, images, ctf, samples, grid, pixel, 1, False)
    np.testing.assert_allclose(got.log_marginal, full.log_marginal, atol=1e-3)
    apart = likelihood.sampled_log_marginals(vol, images, ctf, samples, grid, pixel, 1, False, share_slices=False)
    np.testing.assert_allclose(apart.log_marginal, full.log_marginal, atol=1e-3)
    np.testing.assert_array_equal(got.best, full.best)
    post = np.exp(got.log_phi_direction - jax.nn.logsumexp(got.log_phi_direction, axis=1, keepdims=True))
    np.testing.assert_allclose(post, full.post_dir, atol=1e-4)
    np.testing.assert_allclose(got.expected_residual, full.expected_residual, rtol=1e-4)


def test_shared_slices_give_the_per_particle_values_and_gradient():
    """A minibatch's slices computed once for every direction and gathered per particle give the same log
    marginals, posteriors and map gradient as one slice per drawn slot (float32 rounding of the sums)."""
    vol, images, ctf, rule, grid, pixel = small_problem(n=4)
    n, rng = images.shape[0], np.random.default_rng(3)
    m = [len(rule.directions), len(rule.inplane_degrees), len(rule.shifts_angstrom)]
    picks = [np.stack([np.sort(rng.choice(m[f], k, replace=False)) for _ in range(n)]) for f, k in
             zip(range(3), (5, 3, 2))]
    weights = [np.log(rng.uniform(0.5, 2.0, p.shape)).astype(np.float32) for p in picks]
    samples = likelihood.SampleSet(*(jnp.asarray(a) for pair in zip(picks, weights) for a in pair))

    def total(v, share):
        r = likelihood.sampled_log_marginals(v, images, ctf, samples, grid, pixel, 2, True, share_slices=share)
        return jnp.sum(r.log_marginal), r

    (value_apart, apart), grad_apart = jax.value_and_grad(total, has_aux=True)(vol, False)
    (value_shared, shared), grad_shared = jax.value_and_grad(total, has_aux=True)(vol, True)
    np.testing.assert_allclose(shared.log_marginal, apart.log_marginal, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(shared.log_phi_direction, apart.log_phi_direction, rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(shared.best, apart.best)
    scale = float(np.max(np.abs(grad_apart)))
    assert scale > 0
    np.testing.assert_allclose(grad_shared, grad_apart, atol=1e-5 * scale)


def multinomial_ratio_variance(joint, proposals, draws):
    """Var(p_hat / p) of the factored importance-sampling estimate of ``sum(joint)`` (``joint`` ``(n_psi, n_t,
    n_dir)``, quadrature weights included): each factor (axis) draws ``draws[axis]`` iid points from
    ``proposals[axis]`` and weights point j by count_j / (N q_j) (``draws[axis]`` None: summed exhaustively).

    Multinomial counts give E[W_j W_j'] = (N - 1) / N + [j = j'] / (N q_j) per unit weight, and the factors draw
    independently, so E[(p_hat / p)^2] is the sum over subsets S of the sampled axes of
    prod_{f not in S} (N_f - 1) / N_f * sum_{x_S} prod_{f in S} 1 / (N_f q_f(x_f)) * (sum_{x not in S} g(x))^2,
    with g the normalised joint."""
    g = joint / joint.sum()
    sampled = [axis for axis in range(3) if draws[axis] is not None]
    second = 0.0
    for size in range(len(sampled) + 1):
        for subset in itertools.combinations(sampled, size):
            term = g.sum(axis=tuple(a for a in range(3) if a not in subset), keepdims=True) ** 2
            for axis in subset:
                term = term / np.expand_dims(draws[axis] * proposals[axis], tuple(a for a in range(3) if a != axis))
            second += np.prod([(draws[a] - 1) / draws[a] for a in sampled if a not in subset]) * term.sum()
    return second - 1.0


def test_sampled_marginal_likelihood_is_unbiased_through_the_whole_pipeline():
    """Over many draws, exp(IS log p(I|V)) averages to the exact p(I|V) with the spread the multinomial model of the
    draws predicts (:func:`multinomial_ratio_variance`, V), and the log error is what that spread implies.

    With R estimates, r = p_hat / p: mean r within 4 sqrt(V / R) of 1, plus 1e-3 (the sampled and exhaustive paths'
    float32 tables agree to 1e-3 nats); the sample variance of r within 4 standard errors (from its fourth moment)
    of V; log r (delta method, log r = u - u^2 / 2 + O(u^3), u = r - 1) has mean -V / 2 and standard deviation
    sqrt(V), up to 4 standard errors of the sample mean and deviation plus the next order, V^(3/2) and V. The
    settings are the runs' (s0 = 10, kernels of half the previous spacing, annealing at its floor), with slots and
    buffers that cap no particle, so that the model holds exactly. V ~ 0.04 and R = 600: 4 standard errors are
    3.4 %, and a 5 % bias fails.
    """
    vol, images, ctf, rule, grid, pixel = small_problem(n=1)
    full = likelihood.batch_log_marginals(vol, images, ctf, grid, pixel, 1, False, "kaiser_bessel")
    exact = float(full.log_marginal[0])
    caps = {"directions": 24, "inplane": 8, "shifts": 4}
    settings = sampling.Settings(s0=10.0, bandwidth_factor=0.5)
    sampler = sampling.make_level_sampler(rule, settings, caps, {"directions": 48, "inplane": 16, "shifts": 8},
                                          {"directions": 512, "inplane": 256, "shifts": 8})
    # the proposal after an exhaustive visit, late enough in the run for alpha and T to be at their floors
    empty = sampling.init_state(1, caps)
    old = tuple(sampling.FactorState(*(jnp.asarray(a) for a in getattr(empty, f))) for f in sampling.FACTORS)
    state, _ = sampler.record_exhaustive(full, old)
    reps, visit = 600, 10_000
    states = jax.tree_util.tree_map(lambda a: jnp.repeat(a, reps, axis=0), state)
    samples, stats = jax.jit(sampler.propose)(states, jnp.full((reps,), visit), jax.random.split(jax.random.PRNGKey(5),
                                                                                                 reps))
    assert np.all(np.asarray(stats["directions_count"]) < len(rule.directions))  # really a subset
    est = jax.jit(jax.vmap(lambda s: likelihood.sampled_log_marginals(
        vol, images, ctf, jax.tree_util.tree_map(lambda a: a[None], s), grid, pixel, 1, False).log_marginal[0]))(
        samples)
    # the model: N_f = ceil(s0 ESS) draws from q_f (no particle capped) for directions and in-plane angles; the
    # shifts (5 points, 8 slots) summed exhaustively
    alpha, inv_t = sampling.annealing(jnp.asarray(visit), settings.tau0, settings.alpha_min, settings.temperature_min)
    targets = (rule.directions, sampling.inplane_points(rule.inplane_degrees), rule.shifts_angstrom)
    proposals, draws = {}, {1: None}
    for f, axis in (("directions", 2), ("inplane", 0)):
        n = np.asarray(stats[f"{f}_num_draws"])
        assert np.all(n == np.ceil(np.asarray(stats[f"{f}_wanted"]))), f  # uncapped
        k = sampling.FACTORS.index(f)
        factor = sampling.FactorState(*(a[0] for a in state[k]))
        proposals[axis] = np.asarray(sampling.proposal(factor, jnp.asarray(targets[k], jnp.float32), sampling.KINDS[k],
                                                       settings.bandwidth_factor, alpha, inv_t), np.float64)
        draws[axis] = float(n[0])
    assert np.all(np.asarray(stats["shifts_count"]) == len(rule.shifts_angstrom))
    feats = jax.vmap(likelihood.particle_features, in_axes=(0, 0, None, None, None, None))(
        images, ctf, grid, pixel, None, "kaiser_bessel")
    table = np.asarray(likelihood.log_likelihood_table(
        feats, *likelihood.table_operands(vol, grid, pixel, "kaiser_bessel", 2), grid, images.shape[-1])[0], np.float64)
    log_joint = (table + np.log(rule.inplane_weights)[:, None, None] + np.log(rule.shift_weights)[None, :, None]
                 + np.log(rule.direction_weights)[None, None, :])
    var = multinomial_ratio_variance(np.exp(log_joint - log_joint.max()), proposals, draws)
    assert np.sqrt(var / reps) < 0.01  # informative: 4 standard errors < 4 %

    ratio = np.exp(np.asarray(est, np.float64) - exact)
    assert abs(ratio.mean() - 1.0) < 4 * np.sqrt(var / reps) + 1e-3, (ratio.mean(), var)
    spread = ratio - ratio.mean()
    assert abs(np.mean(spread**2) - var) < 4 * np.sqrt((np.mean(spread**4) - np.mean(spread**2) ** 2) / reps), (
        np.mean(spread**2), var)
    log_error = np.log(ratio)
    assert abs(log_error.mean() + var / 2) < 4 * log_error.std() / np.sqrt(reps) + var**1.5, (log_error.mean(), var)
    assert abs(log_error.std() - np.sqrt(var)) < 4 * log_error.std() / np.sqrt(2 * reps) + var, (log_error.std(), var)


def test_draws_beyond_the_slots_keep_s0_ess_where_they_fit_and_a_prefix_where_not():
    """N = s0 ESS draws (up to the buffer) merged into the slots: uncapped when the distinct points fit, so the
    weights' counts sum to N; otherwise the longest prefix of the draws that fits, with exactly `slots` points."""
    m = 200
    q = np.full(m, 0.1 / (m - 3))
    q[[5, 9, 40]] = 0.3  # ESS ~ 3.3: ~33 draws, almost all on three points
    log_w = jnp.asarray(np.log(np.full(m, 1.0 / m)), jnp.float32)
    draw = jax.jit(jax.vmap(lambda k, slots: sampling.draw(k, jnp.asarray(q, jnp.float32), log_w, 16, 10.0, 256),
                            in_axes=(0, None)), static_argnums=1)
    d = draw(jax.random.split(jax.random.PRNGKey(2), 500), 16)
    wanted = 10.0 / np.sum(q**2)
    fits = np.asarray(d.count) < 16
    assert fits.mean() > 0.9
    np.testing.assert_array_equal(np.asarray(d.num_draws)[fits], math.ceil(wanted))  # not capped: all draws
    uniform = jnp.full((m,), 1.0 / m, jnp.float32)  # ESS = 200: 2,000 draws wanted, 256 in the buffer
    d = sampling.draw(jax.random.PRNGKey(4), uniform, log_w, 16, 10.0, 256)
    assert int(d.count) == 16 and 16 <= float(d.num_draws) < 256
    counts = np.exp(np.asarray(d.log_weight, np.float64)) * float(d.num_draws) * (1.0 / m) / (1.0 / m)
    np.testing.assert_allclose(counts.sum(), float(d.num_draws), rtol=1e-5)  # the kept draws, all in the slots
    # the old rule (buffer = slots) draws min(ceil(s0 ESS), slots): nothing beyond the slots is ever drawn
    assert float(sampling.draw(jax.random.PRNGKey(4), uniform, log_w, 16, 10.0).num_draws) == 16


def test_estimate_with_more_draws_than_slots_is_unbiased():
    rng = np.random.default_rng(3)
    m = 300
    f = np.exp(rng.normal(size=m) * 2.0)
    w = np.full(m, 1.0 / m)
    exact = float(np.sum(w * f))
    q = 0.8 * (w * f) / np.sum(w * f) + 0.2 / m
    ess = 1.0 / np.sum(q**2)
    draw = jax.jit(jax.vmap(lambda k: sampling.draw(k, jnp.asarray(q, jnp.float32),
                                                    jnp.asarray(np.log(w), jnp.float32), 128, 10.0, 1024)))
    d = draw(jax.random.split(jax.random.PRNGKey(0), 4000))
    assert np.all(np.asarray(d.num_draws) == math.ceil(10 * ess)) and 10 * ess > 128  # more draws than slots, none capped
    est = np.sum(np.exp(np.asarray(d.log_weight, np.float64)) * f[np.asarray(d.index)], axis=1)
    mean, se = est.mean(), est.std() / np.sqrt(len(est))
    assert abs(mean - exact) < 4 * se and se < 0.01 * exact, (mean, exact, se)


def test_slots_grow_until_at_most_the_allowed_share_is_capped():
    sizes = {"directions": 500, "inplane": 40, "shifts": 9}
    slots, buffers = {"directions": 16, "inplane": 8, "shifts": 16}, {"directions": 64, "inplane": 32, "shifts": 16}
    n = 1000
    ok = (np.full(n, 20.0), np.full(n, 10.0), np.full(n, 20.0))  # wanted 20, 10 distinct, 20 kept: uncapped
    capped_slots = (np.full(n, 40.0), np.full(n, 16.0), np.full(n, 10.0))  # 16 distinct filled after 10 of 40 draws
    many = np.where(np.arange(n) < 30, 300.0, 20.0)  # 3 % want more draws than the buffer of 32 holds
    capped_buffer = (many, np.full(n, 8.0), np.minimum(many, 32.0))
    window = [{"directions": capped_slots, "inplane": capped_buffer, "shifts": ok}]
    new_slots, new_buffers, lines = sampling.grow_slots(slots, buffers, sizes, window, 0.01)
    assert new_slots["directions"] == 64 and new_buffers["directions"] == 64  # 16 x 4 (40 wanted / 10 kept)
    assert new_slots["inplane"] == 8 and new_buffers["inplane"] == 512  # 300 -> the next power of two
    assert new_slots["shifts"] == 16 and new_buffers["shifts"] == 16  # shifts: 9 points <= 16 slots, exhaustive
    assert len(lines) == 2
    few = np.where(np.arange(n) < 5, 40.0, 10.0)  # 0.5 % capped: within the 1 % allowed
    window = [{"directions": (few, np.full(n, 10.0), np.minimum(few, 10.0)), "inplane": ok, "shifts": ok}]
    assert sampling.grow_slots(slots, buffers, sizes, window, 0.01)[2] == []


def test_offset_sigma_reads_the_spread_of_offsets_not_the_breadth_of_posteriors():
    """Offsets of sigma 11 A per axis; each particle's posterior a Gaussian of sigma 20 A per axis (a coarse map)
    centred on its offset, sampled on a 5-A lattice to +-80 A: the estimate is the offsets' own RMS / sqrt 2, not
    sqrt(11^2 + 20^2) = 22.8 A (the posteriors' second moments). Tolerance 2 %: the lattice's edge pulls the broad
    posteriors' means inward by under 0.5 % (offsets within 4 sigma = 44 A, the edge 1.8 posterior sigmas beyond);
    sharp posteriors on the nearest lattice point add 5^2 / 12 A^2 of rounding variance per axis (+0.85 %)."""
    rng = np.random.default_rng(0)
    offsets = rng.normal(0.0, 11.0, (4000, 2))
    grid = np.stack(np.meshgrid(np.arange(-80, 81, 5.0), np.arange(-80, 81, 5.0)), -1).reshape(-1, 2)
    points = np.broadcast_to(grid, (len(offsets),) + grid.shape)
    log_phi = -np.sum((points - offsets[:, None]) ** 2, -1) / (2 * 20.0 ** 2)
    expected = math.sqrt(np.mean(np.sum(offsets ** 2, -1)) / 2.0)
    assert abs(sampling.offset_sigma_angstrom(points, log_phi) - expected) < 0.02 * expected
    sharp = -np.sum((points - np.round(offsets[:, None] / 5.0) * 5.0) ** 2, -1) / (2 * 0.5 ** 2)
    assert abs(sampling.offset_sigma_angstrom(points, sharp) - expected) < 0.02 * expected


def test_level_slots_loosen_the_capped_share_only_where_the_strict_one_sums_every_pose():
    """Slots at the 1 - share quantile (next power of two). 97 particles need 10 distinct directions of 1000 and
    3 need all 1000: at 1 % capped the slots hold every direction (sampling saves nothing), at 10 % they hold 16
    (1.6 % of the poses, 3 % of the particles capped). Informative proposals keep the strict share."""
    sizes = {"directions": 1000, "inplane": 8, "shifts": 4}
    distinct = np.array([10.0] * 97 + [1000.0] * 3)
    broad = {"directions": (distinct, distinct), "inplane": (np.full(100, 8.0),) * 2,
             "shifts": (np.full(100, 4.0),) * 2}
    share, slots, buffers, fraction = sampling.level_slots(broad, sizes, 0.01, (0.1, 0.25), 0.5)
    assert share == 0.1 and slots == {"directions": 16, "inplane": 8, "shifts": 4}
    assert abs(fraction - 0.016) < 1e-12
    assert sampling.level_slots(broad, sizes, 0.01, (), 0.5)[3] == 1.0  # no looser share: every pose
    narrow = {**broad, "directions": (np.full(100, 10.0),) * 2}
    share, slots, _, fraction = sampling.level_slots(narrow, sizes, 0.01, (0.1, 0.25), 0.5)
    assert share == 0.01 and slots["directions"] == 16


def test_a_pose_is_lost_only_where_the_fresh_posterior_has_left_it():
    """Fresh posteriors over 400 directions: one concentrated at direction a, one split between two symmetry
    mates a and -a. A proposal mode at a keeps its pose, one 90 degrees away has lost it; with the split posterior
    a mode at either mate keeps it (each mate carries half the mass)."""
    dirs = quadrature.fibonacci_sphere(400)
    a = 17
    far = int(np.argmin(np.abs(dirs @ dirs[a])))  # about 90 degrees from a
    mate = int(np.argmin(dirs @ dirs[a]))  # about -a
    peaked = np.zeros(400)
    peaked[a] = 1.0
    split = np.zeros(400)
    split[[a, mate]] = 0.5
    post = np.stack([peaked, peaked, split, split])
    modes = dirs[[a, far, a, mate]]
    np.testing.assert_array_equal(sampling.lost_poses(post, dirs, modes, 20.0, 0.01), [False, True, False, False])
    # the mode need not sit on the grid: 5 degrees off a is still near
    tilt = np.cross(dirs[a], [0.0, 0.0, 1.0])
    tilt /= np.linalg.norm(tilt)
    off = np.cos(np.radians(5)) * dirs[a] + np.sin(np.radians(5)) * tilt
    assert not sampling.lost_poses(peaked[None], dirs, off[None], 20.0, 0.01)[0]
    state = sampling.FactorState(points=np.stack([dirs[[1, a, 2]]]), log_phi=np.array([[-3.0, -0.1, -5.0]]),
                                 spacing=np.ones(1))
    np.testing.assert_array_equal(sampling.proposal_modes(state), dirs[[a]])


def test_restart_lost_replaces_only_the_lost_particles_states():
    """Six particles, padded to eight rows: 0-2 propose near direction a, 3-4 near a direction 90 degrees away, 5
    never visited. A fresh posterior peaked at a: particles 3-4 are lost and get the new states and visit time;
    0-2 and 5 (and the padding) are left exactly as they were."""
    from recon import training

    dirs = quadrature.fibonacci_sphere(400)
    a = 17
    far = int(np.argmin(np.abs(dirs @ dirs[a])))
    caps = {"directions": 3, "inplane": 2, "shifts": 2}
    state = sampling.init_state(6, caps)
    for i in range(5):
        state.directions.points[i] = dirs[[a if i < 3 else far, 1, 2]]
        state.directions.log_phi[i] = [-0.1, -4.0, -5.0]
    state.last_visit[:5] = 7
    host = training.RunState(best_pose=np.full((6, 3), -1, np.int32), best_level=np.full(6, -1, np.int32),
                             sampler=state)
    before = jax.tree_util.tree_map(np.copy, state)
    rows = np.array([0, 1, 2, 3, 4, 5, -1, -1])
    post = np.zeros((8, 400))
    post[:, a] = 1.0

    def new_factors(safe):
        assert len(safe) == 8 and np.all(safe >= 0)
        return tuple(sampling.FactorState(points=np.full_like(f.points[safe], 0.5),
                                          log_phi=np.full_like(f.log_phi[safe], -7.0),
                                          spacing=np.full_like(f.spacing[safe], 0.3))
                     for f in (state.directions, state.inplane, state.shifts))

    lost, seen = training.restart_lost(host, rows, post, dirs, 20.0, 30, new_factors)
    assert (lost, seen) == (2, 5)
    np.testing.assert_array_equal(host.sampler.last_visit, [7, 7, 7, 30, 30, -1])
    for f in sampling.FACTORS:
        now, old = getattr(host.sampler, f), getattr(before, f)
        np.testing.assert_array_equal(now.log_phi[[0, 1, 2, 5]], old.log_phi[[0, 1, 2, 5]])
        np.testing.assert_array_equal(now.points[[0, 1, 2, 5]], old.points[[0, 1, 2, 5]])
        assert np.all(now.log_phi[[3, 4]] == -7.0) and np.all(now.spacing[[3, 4]] == np.float32(0.3))
