"""The fast log-marginal (matrix products, interpolated transforms) against float64 brute-force sums."""

import numpy as np
import pytest
from scipy.special import logsumexp

import jax
import jax.numpy as jnp

from recon import conventions as cv
from recon import likelihood as lk
from recon import projection as pj
from recon import quadrature as q
from recon.ctf import CTFParams, ctf_value, make_ctf_params
from tests.conftest import blob_volume

D, PIXEL, OMEGA = 16, 6.0, 1 / 24.0


def small_rule():
    """A hand-made quadrature of 20 directions x 8 in-plane angles x 5 shifts = 800 poses."""
    dirs = q.fibonacci_sphere(20)
    shifts = np.array([[0.0, 0.0], [6.0, 0.0], [-6.0, 0.0], [0.0, 6.0], [0.0, -6.0]])
    return q.Quadrature(dirs, np.full(20, 1 / 20), np.arange(8) * 45.0, np.full(8, 1 / 8), shifts,
                        q.gaussian_shift_weights(shifts, 8.0), 20.0, 6.0)


@pytest.fixture(scope="module")
def problem():
    vol, _ = blob_volume(D, seed=3, n_blobs=6, spread=0.15)
    rule = small_rule()
    grid = lk.make_grid(D, PIXEL, rule, OMEGA)
    rng = np.random.default_rng(0)
    ctfs = [make_ctf_params(15000.0, 14000.0, 30.0, 300.0, 2.7, 0.1), make_ctf_params(22000.0, 21000.0, -50.0)]
    images = []
    vft = pj.prepare_volume_ft(jnp.asarray(vol, jnp.float32))
    for i, ctf in enumerate(ctfs):
        angles = np.array([40.0 + 30 * i, 70.0, 45.0 * (i + 1)])
        clean = np.asarray(pj.particle_image(vft, jnp.asarray(cv.euler_to_matrix(angles), jnp.float32),
                                             jnp.asarray(rule.shifts_angstrom[i + 1], jnp.float32),
                                             CTFParams(*(jnp.asarray(f, jnp.float32) for f in ctf)), D, PIXEL))
        images.append(clean * 3.0 + rng.normal(size=clean.shape))
    return vol * 3.0, rule, grid, np.array(images, np.float32), ctfs


def exact_terms(xp, vol, image, ctf, rule):
    """Float64 pieces of the definition in recon.likelihood, by exact DFTs: the Hermitian weights ``w`` (N_k,),
    ``sum_k w |I(k)|^2`` on the grid, the data ``I(R_p k)`` and CTF ``C(R_p k)`` at the rotated nodes (n_psi, N_k),
    the shift phases ``S_t(R_p k)`` (n_psi, n_t, N_k) and the slices ``P_d(k)`` (n_dir, N_k)."""
    nodes, w = lk.half_plane_frequencies(D, OMEGA * PIXEL)
    x = cv.box_coordinates(D).astype(np.float64)
    zz, yy, xx = np.meshgrid(x, x, x, indexing="ij")
    x3 = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], -1)
    y2, x2 = np.meshgrid(x, x, indexing="ij")
    x2d = np.stack([x2.ravel(), y2.ravel()], -1)
    img = xp.asarray(image, dtype=xp.float64).ravel()
    norm = xp.sum(w * xp.abs(xp.exp(-2j * np.pi * (nodes @ x2d.T)) @ img) ** 2)
    slices = []
    for rt in q.directions_to_angles(rule.directions):
        a = cv.euler_to_matrix(np.array([rt[0], rt[1], 0.0]))
        k3 = nodes[:, :1] * a[0] + nodes[:, 1:2] * a[1]
        slices.append(xp.exp(-2j * np.pi * (k3 @ x3.T)) @ vol.ravel())
    data, ctf_values, phases = [], [], []
    for psi in rule.inplane_degrees:
        c, s = np.cos(np.radians(psi)), np.sin(np.radians(psi))
        rotated = nodes @ np.array([[c, s], [-s, c]]).T
        data.append(xp.exp(-2j * np.pi * (rotated @ x2d.T)) @ img)
        ctf_values.append(ctf_value(rotated / PIXEL, ctf))
        phases.append(np.exp(2j * np.pi * rule.shifts_angstrom @ (rotated / PIXEL).T))
    return w, norm, xp.stack(data), np.stack(ctf_values), np.stack(phases), xp.stack(slices)


def brute_force_table(xp, vol, image, ctf, rule):
    """log p(I | d, p, t) by loops over the poses (the directions as one product), exact DFTs at the rotated nodes
    (the definition in recon.likelihood): -(sum_k w |I(k)|^2 - 2 sum_k w Re(conj(I(R_p k)) C(R_p k) S_t(R_p k) P_d(k))
    + sum_k w C(R_p k)^2 |P_d(k)|^2) / (2 D^2)."""
    w, norm, data, ctf_values, phases, slices = exact_terms(xp, vol, image, ctf, rule)
    rows = []
    for p in range(len(rule.inplane_degrees)):
        quad = (w * ctf_values[p] ** 2) @ xp.abs(slices.T) ** 2  # (n_dir,)
        per_shift = []
        for t in range(len(rule.shifts_angstrom)):
            cross = xp.real((w * xp.conj(data[p]) * ctf_values[p] * phases[p, t]) @ slices.T)  # (n_dir,)
            per_shift.append(-(norm - 2 * cross + quad) / (2 * D * D))
        rows.append(xp.stack(per_shift))
    return xp.stack(rows)  # (n_psi, n_t, n_dir)


def fast(vol, images, ctfs, grid):
    ctf = CTFParams(*(jnp.asarray(np.stack([c[i] for c in ctfs]), jnp.float32) for i in range(9)))
    return lk.batch_log_marginals(jnp.asarray(vol, jnp.float32), jnp.asarray(images), ctf, grid, PIXEL,
                                  chunk_size=len(images))


def test_empty_map_log_marginal_is_minus_half_the_band_energy(problem):
    """The divergence guard's reference (recon/training.py): at V = 0 every pose scores the same, minus half the
    image's energy within the band (Parseval, unit noise), here from a plain FFT of the image."""
    from recon import training

    vol, rule, grid, images, ctfs = problem
    result = fast(np.zeros_like(vol), images, ctfs, grid)
    for i, image in enumerate(images):
        energy, _ = training.band_power(image[None], PIXEL, OMEGA)
        assert abs(-float(result.log_marginal[i]) / (0.5 * energy) - 1) < 0.02, i
    assert abs(float(fast(vol, images, ctfs, grid).log_marginal[0]) / -(0.5 * training.band_power(
        images[:1], PIXEL, OMEGA)[0]) - 1) > 0.05  # a map that explains the image scores otherwise


# The interpolated transforms' documented accuracy (relative error, in norm, against the exact transform) at the
# oversampling the runs use: width 6 "near 1e-5" (recon/projection.py; taken as 2e-5), width 4 "~1e-3 off the exact
# slice at 2x" (recon/configs/paper.py), linear "2.5% at 3x" (experiments/configs/groel64_is.py).
KERNELS = [("kaiser_bessel6", 2, 2e-5), ("kaiser_bessel", 2, 1e-3), ("linear", 3, 0.025)]


@pytest.fixture(scope="module")
def exact(problem):
    """Per image: the float64 pieces of the definition (:func:`exact_terms`) and the brute-force table."""
    vol, rule, grid, images, ctfs = problem
    return [(exact_terms(np, vol.astype(np.float64), image, ctf, rule),
             brute_force_table(np, vol.astype(np.float64), image, ctf, rule)) for image, ctf in zip(images, ctfs)]


@pytest.mark.parametrize("kernel,oversampling,eps", KERNELS)
def test_log_marginal_and_posteriors_match_brute_force(problem, exact, kernel, oversampling, eps):
    """The fast path with each kernel the runs use against the float64 brute force, within what the kernel's
    documented accuracy allows.

    The fast path interpolates the data I_p = I(R_p k) and the slices P_d; their errors dI, dP have norms at most
    eps ||I_p||, eps ||P_d|| (||a||^2 = sum_k w |a|^2; checked first), and sum_k w |I(k)|^2 is exact (on the grid).
    With R = I_p - C S_t P_d, a table entry moves by
        dL = [Re<dI, C S P> + Re<R, C S dP> + Re<dI, C S dP>] / D^2 - ||C dP||^2 / (2 D^2),
    so, by Cauchy-Schwarz with |C|, |S| <= 1, |dL| <= b with
        b = eps (||I_p|| (||C P_d|| + eps ||P_d||) + ||R|| ||P_d||) / D^2 + eps^2 ||P_d||^2 / (2 D^2)
    plus float32 rounding, ~1e-6 of the terms' size (||I_p|| + ||P_d||)^2 / (2 D^2) (~1e-7 per operation over ~60
    frequencies). Then, with post the exact posterior: log p(I | V) moves by at most B = log sum post e^b; log post by
    at most b + B, so the posteriors move by at most sum post (e^(b+B) - 1) / 2 in total variation; the best pose
    stays where it beats every other by more than both their b; the expected residual E = sum post (-2L) moves by at
    most 2 sum post e^(b+B) b + sum post (e^(b+B) - 1) |2L + E|. These are worst cases, 10-50x above the errors seen
    (b is ~3 nats for width 4 and ~80 for linear at this SNR): a kernel off its documented accuracy fails the first
    check, a wrong gridding correction or grid offset with width 4 or 6 also the second.
    """
    vol, rule, grid, images, ctfs = problem
    ctf = CTFParams(*(jnp.asarray(np.stack([c[i] for c in ctfs]), jnp.float32) for i in range(9)))
    result = lk.batch_log_marginals(jnp.asarray(vol, jnp.float32), jnp.asarray(images), ctf, grid, PIXEL,
                                    len(images), kernel=kernel, oversampling=oversampling)
    slices = np.asarray(lk.direction_slices(jnp.asarray(vol, jnp.float32), grid, oversampling, kernel))
    logw = (np.log(rule.inplane_weights)[:, None, None] + np.log(rule.shift_weights)[None, :, None]
            + np.log(rule.direction_weights)[None, None, :])
    for i in range(len(images)):
        (w, norm, data, ctf_values, _, exact_slices), table = exact[i]
        size = lambda a: np.sqrt(np.sum(w * np.abs(a) ** 2, -1))  # noqa: E731
        feats = lk.particle_features(jnp.asarray(images[i]), CTFParams(*(f[i] for f in ctf)), grid, PIXEL, None,
                                     kernel, oversampling)
        assert np.all(size(np.asarray(feats.data) - data) <= eps * size(data)), kernel
        assert np.all(size(slices - exact_slices) <= eps * size(exact_slices)), kernel
        n_i, n_p = size(data)[:, None, None], size(exact_slices)[None, None, :]  # (p, 1, 1), (1, 1, d)
        n_cp = np.sqrt((w * ctf_values**2) @ np.abs(exact_slices.T) ** 2)[:, None, :]  # ||C_p P_d||: (p, 1, d)
        n_r = np.sqrt(np.maximum(-2 * D * D * table - norm + n_i**2, 0))  # ||I_p - C S_t P_d||: (p, t, d)
        b = (eps * (n_i * (n_cp + eps * n_p) + n_r * n_p) + 0.5 * eps**2 * n_p**2 + 1e-6 * (n_i + n_p) ** 2 / 2) / D**2
        joint = table + logw
        lm = logsumexp(joint)
        post = np.exp(joint - lm)
        bound = logsumexp(joint + b) - lm
        assert abs(float(result.log_marginal[i]) - lm) <= bound, (kernel, float(result.log_marginal[i]) - lm, bound)
        growth = np.exp(b + bound)
        for axes, got in (((0, 1), result.post_dir), ((1, 2), result.post_psi), ((0, 2), result.post_shift)):
            assert 0.5 * np.abs(post.sum(axes) - np.asarray(got[i])).sum() <= 0.5 * np.sum(post * (growth - 1))
        best = np.unravel_index(np.argmax(joint), joint.shape)
        rivals = (joint + b).ravel()
        rivals[np.argmax(joint)] = -np.inf
        if joint[best] - b[best] > rivals.max():
            assert tuple(np.asarray(result.best[i])) == (best[2], best[0], best[1]), kernel
        expected = np.sum(post * -2 * table)
        assert abs(float(result.expected_residual[i]) - expected) <= (
            2 * np.sum(post * growth * b) + np.sum(post * (growth - 1) * np.abs(2 * table + expected)))


def test_gradient_matches_float64_brute_force(problem):
    vol, rule, grid, images, ctfs = problem
    logw = (np.log(rule.inplane_weights)[:, None, None] + np.log(rule.shift_weights)[None, :, None]
            + np.log(rule.direction_weights)[None, None, :])

    def brute(v):
        return sum(jax.nn.logsumexp(brute_force_table(jnp, v, images[i], ctfs[i], rule) + logw)
                   for i in range(len(images)))

    with jax.enable_x64(True):
        g_ref = np.asarray(jax.grad(brute)(jnp.asarray(vol, jnp.float64)))
    g_fast = np.asarray(jax.grad(lambda v: jnp.sum(fast(v, images, ctfs, grid).log_marginal))(
        jnp.asarray(vol, jnp.float32)))
    cosine = np.sum(g_ref * g_fast) / (np.linalg.norm(g_ref) * np.linalg.norm(g_fast))
    assert cosine > 0.999
    assert np.linalg.norm(g_fast - g_ref) / np.linalg.norm(g_ref) < 0.03


def test_table_algebra_is_exact_given_the_features(problem):
    """The matrix-product table equals a float64 loop over the same features and slices (float32 accuracy)."""
    vol, rule, grid, images, ctfs = problem
    ctf = CTFParams(*(jnp.asarray(f, jnp.float32) for f in ctfs[0]))
    feats = lk.particle_features(jnp.asarray(images[0]), ctf, grid, PIXEL)
    slices = np.asarray(lk.direction_slices(jnp.asarray(vol, jnp.float32), grid), np.complex128)
    phases = np.asarray(lk.shift_phases(grid, PIXEL), np.complex128)
    table = np.asarray(lk.log_likelihood_table(
        jax.tree_util.tree_map(lambda a: a[None], feats),
        jnp.asarray(np.concatenate([slices.real, slices.imag], -1).T, jnp.float32),
        jnp.asarray((np.abs(slices) ** 2).T, jnp.float32), jnp.asarray(phases, jnp.complex64), grid, D))[0]
    w = np.asarray(grid.freq_weights, np.float64)
    data, c = np.asarray(feats.data, np.complex128), np.asarray(feats.ctf, np.float64)
    for p in range(0, 8, 3):
        for t in range(5):
            for d in range(0, 20, 7):
                cross = np.sum(w * np.real(np.conj(data[p]) * c[p] * phases[p, t] * slices[d]))
                quad = np.sum(w * c[p] ** 2 * np.abs(slices[d]) ** 2)
                ref = -(float(feats.data_norm) - 2 * cross + quad) / (2 * D * D)
                assert abs(table[p, t, d] - ref) < 1e-5 * max(1.0, abs(ref))


def test_half_plane_weights_count_the_full_disk():
    for size, radius in ((16, 0.2), (17, 0.3), (32, 0.45)):
        nodes, w = lk.half_plane_frequencies(size, radius)
        f = cv.frequency_coordinates(size)
        full = np.sum((f[:, None] ** 2 + f[None, :] ** 2) <= radius**2 + 1e-9)
        assert w.sum() == full
        assert np.all(nodes[0] == 0) and w[0] == 1


def test_chunk_sizes_follow_the_backend_limits():
    """Hand-counted: 39 in-plane x 5 shifts = 195 rows and 461 directions per particle (128 px at 40 A). On a CPU
    the 4096-row bound allows 21 particles, so the largest divisor of 200 is 20; on a GPU the whole minibatch
    (200 x 89,895 = 1.8e7 <= 2e8 table elements) goes through one product."""
    from types import SimpleNamespace
    grid = SimpleNamespace(inplane_matrices=np.zeros((39, 2, 2)), shifts_angstrom=np.zeros((5, 2)),
                           direction_matrices=np.zeros((461, 3, 3)))
    cpu, gpu = lk.chunk_limits("cpu"), lk.chunk_limits("gpu")
    assert lk.auto_chunk_size(200, grid, cpu.table_elements, cpu.matrix_rows) == 20
    assert lk.auto_chunk_size(200, grid, gpu.table_elements, gpu.matrix_rows) == 200
    # a table bound of 2e6 elements: 2e6 / 89,895 = 22.2 particles -> the divisor 20; the sampled bound scales by 1/3
    small = lk.chunk_limits("gpu", 2_000_000)
    assert lk.auto_chunk_size(200, grid, small.table_elements, small.matrix_rows) == 20
    assert small.sampled_elements == 4_000_000
    # sampled path: 16 x 16 x 2 x 4025 + 2 x 32 x 4025 + 16 x 16 x 32 = 2,326,592 floats per particle; 12e6 on the
    # CPU allows 5 (divides 200)
    assert lk.sampled_chunk_size(200, (32, 16, 16), 4025, cpu.sampled_elements) == 5
    # directions grown to 1024 slots: + 2 x 1024 x 4025 slices + 16 x 16 x 1024 table = 10,566,144 per particle: 1
    assert lk.sampled_chunk_size(200, (1024, 16, 16), 4025, cpu.sampled_elements) == 1
