"""Log-marginal likelihood of particle images with poses and shifts summed out by quadrature (Eq. 2-4).

For one particle with image transform ``I``, CTF ``C`` and the map's slice ``P_A`` at pose ``A`` and RELION origin
``t`` (``S_t`` its phase), with images normalised to unit noise (sigma = 1, see :mod:`recon.data`):

    log p(I | A, t, V) = -1/(2 D^2) * sum_k w_k |I(k) - C(k) S_t(k) P_A(k)|^2          (+ a constant)
    log p(I | V) = log sum_{d, p, t} w_d w_p w_t p(I | A_{d,p}, t, V)                      (Eq. 4)

The sum over ``k`` runs over the frequencies within the current maximum frequency; Hermitian symmetry halves
them (``w_k`` = 1 at k = 0, 2 elsewhere), and ``1/D^2`` makes the Fourier sum equal the real-space sum of
squares of the band-limited residual (Parseval with an unnormalised FFT), so that ``p`` is the Gaussian of Eq. 1.

Speed: a pose is a view direction ``d`` (RELION rot, tilt) and an in-plane angle ``p`` (psi), ``A = Rz'(p) A_d``.
Then ``P_A(k) = P_d(R_p^T k)``, and substituting ``k -> R_p k`` moves the in-plane rotation onto the data:
``sum_k f(I(R_p k), C(R_p k), S_t(R_p k), P_d(k))``. The map is sliced once per direction and the slices are
shared by the whole minibatch; each particle's transform is interpolated at the rotated frequencies once per
in-plane angle (Kaiser-Bessel, 2x oversampled, like the slices); and the cross term for all (particle, angle,
shift) x (direction) pairs is ONE real matrix product ``[Re A, -Im A] @ [Re P; Im P]``. Particles are processed in
chunks (and rematerialised in the backward pass) to bound memory.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

import jax
import jax.numpy as jnp

from recon import conventions, projection, quadrature
from recon.ctf import CTFParams, ctf_value


class LikelihoodGrid(NamedTuple):
    """Everything static about one resolution level (device arrays; shapes fix the compiled step).

    freqs: ``(N_k, 2)`` cycles/pixel, the half plane within the maximum frequency (k = 0 first).
    freq_weights: ``(N_k,)`` 1 at k = 0, 2 elsewhere. num_full_disk = sum of freq_weights.
    direction_matrices: ``(n_dir, 3, 3)`` RELION A for (rot, tilt, psi = 0).
    inplane_matrices: ``(n_psi, 2, 2)`` the 2D rotation ``R_p`` with rotated frequency ``R_p k``.
    shifts_angstrom: ``(n_t, 2)`` RELION origins. log_w_*: log quadrature weights (priors included).
    """

    freqs: jnp.ndarray
    freq_weights: jnp.ndarray
    direction_matrices: jnp.ndarray
    inplane_matrices: jnp.ndarray
    shifts_angstrom: jnp.ndarray
    log_w_dir: jnp.ndarray
    log_w_psi: jnp.ndarray
    log_w_shift: jnp.ndarray


def half_plane_frequencies(size: int, max_freq_cycles_per_pixel: float) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies ``(N_k, 2)`` of a centred ``size^2`` grid with ``|k| <= max`` in the half plane
    ``kx > 0 or (kx == 0 and ky >= 0)``, k = 0 first, and their Hermitian weights ``(N_k,)``."""
    f = conventions.frequency_coordinates(size)
    ky, kx = np.meshgrid(f, f, indexing="ij")
    radius = np.sqrt(kx**2 + ky**2)
    keep = (radius <= max_freq_cycles_per_pixel + 1e-9) & ((kx > 0) | ((kx == 0) & (ky >= 0)))
    keep &= radius < 0.5  # never the unpaired Nyquist row/column
    pts = np.stack([kx[keep], ky[keep]], -1)
    order = np.argsort(np.sum(pts**2, -1), kind="stable")
    pts = pts[order]
    weights = np.where(np.all(pts == 0, axis=-1), 1.0, 2.0)
    return pts, weights


def make_grid(size: int, pixel_size_angstrom: float, rule: quadrature.Quadrature,
              max_freq_per_angstrom: float, noise_power: np.ndarray | None = None) -> LikelihoodGrid:
    """The level's grid. ``noise_power``: the relative noise power per ring of Fourier pixels
    (``recon.noise``); each frequency's weight is divided by it (a likelihood whitened for coloured noise)."""
    freqs, weights = half_plane_frequencies(size, max_freq_per_angstrom * pixel_size_angstrom)
    if noise_power is not None:
        from recon import noise

        weights = weights / noise.at_frequencies(noise_power, freqs, size)
    rot_tilt = quadrature.directions_to_angles(rule.directions)
    angles = np.concatenate([rot_tilt, np.zeros((len(rot_tilt), 1))], -1)
    psi = np.radians(rule.inplane_degrees)
    c, s = np.cos(psi), np.sin(psi)
    # A = Rz'(psi) A_d with Rz'(psi)[:2, :2] = [[c, s], [-s, c]], so P_A(k) = P_d(Rz'(psi)^T k); with
    # k = Rz'(psi) k' the sum over k becomes a sum over k' with the data at R_p k', R_p = Rz'(psi)[:2, :2].
    inplane = np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], -2)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return LikelihoodGrid(
        freqs=f32(freqs), freq_weights=f32(weights), direction_matrices=f32(conventions.euler_to_matrix(angles)),
        inplane_matrices=f32(inplane), shifts_angstrom=f32(rule.shifts_angstrom),
        log_w_dir=f32(np.log(rule.direction_weights)), log_w_psi=f32(np.log(rule.inplane_weights)),
        log_w_shift=f32(np.log(rule.shift_weights)))


# ----------------------------------------------------------------------------------------------------------
# Per-particle features (depend on the data only) and per-direction slices (depend on the map only).


class ParticleFeatures(NamedTuple):
    """For one particle and every in-plane angle p (arrays ``(n_psi, N_k)`` unless noted).

    data: ``I(R_p k)``; ctf: ``C(R_p k)``; data_norm: ``()`` ``sum_k w_k |I(k)|^2`` on the unrotated grid (the
    same for every angle: summing |I|^2 over a rotated grid would fluctuate with the angle and bias the
    posterior over in-plane angles by several nats).
    """

    data: jnp.ndarray
    ctf: jnp.ndarray
    data_norm: jnp.ndarray


def particle_features(image, ctf: CTFParams, grid: LikelihoodGrid, pixel_size_angstrom: float,
                      inplane_matrices=None, kernel: str = "kaiser_bessel6", oversampling: int = 2
                      ) -> ParticleFeatures:
    """Features of ONE normalised image ``(D, D)``; pure, vmap over particles. ``inplane_matrices``
    ``(n, 2, 2)``: the in-plane rotations to use (default: all of the grid's); ``kernel``: the 2D interpolation
    of the image's transform at the rotated frequencies."""
    if inplane_matrices is None:
        inplane_matrices = grid.inplane_matrices
    rotated = jnp.einsum("pij,kj->pki", inplane_matrices, grid.freqs)  # (n_psi, N_k, 2)
    n_psi, n_k = rotated.shape[:2]
    flat = rotated.reshape(-1, 2)
    data = projection.image_transform_at(image, flat, oversampling, kernel).reshape(n_psi, n_k)
    c = ctf_value(flat / pixel_size_angstrom, ctf).reshape(n_psi, n_k)
    size = image.shape[-1]
    index = jnp.round(grid.freqs * size).astype(jnp.int32) + size // 2  # grid frequencies -> array indices
    on_grid = conventions.centred_fft2(image)[index[:, 1], index[:, 0]]
    norm = jnp.sum(grid.freq_weights * (on_grid.real**2 + on_grid.imag**2))
    return ParticleFeatures(data=data, ctf=c, data_norm=norm)


SLICE_KERNEL = "kaiser_bessel6"  # width 6: slices within ~1e-5 of the exact transform of the voxel map


def direction_slices(volume, grid: LikelihoodGrid, oversampling: int = 2, kernel: str = SLICE_KERNEL):
    """Slices of the real-space map ``(D, D, D)`` for every direction: ``(n_dir, N_k)`` complex."""
    volume_ft = projection.prepare_volume_ft(volume, oversampling, kernel)
    return slices_at(volume_ft, grid.direction_matrices, grid.freqs, kernel, oversampling)


def slices_at(volume_ft, matrices, freqs, kernel: str, oversampling: int = 2):
    """Slices of a prepared transform at rotations ``(..., 3, 3)``: ``(..., N_k)`` complex."""
    lead = matrices.shape[:-2]
    points = jax.vmap(projection.slice_points, in_axes=(0, None, None))(
        matrices.reshape(-1, 3, 3), freqs, volume_ft.shape[0])  # (n, N_k, 3)
    values = projection.interpolate(volume_ft, points.reshape(-1, 3), kernel, oversampling)
    return values.reshape(*lead, -1)


# ----------------------------------------------------------------------------------------------------------
# The log-likelihood table and its reductions.


class ParticleResult(NamedTuple):
    """Per particle: log_marginal (), marginal posteriors over directions (n_dir,), in-plane angles (n_psi,) and
    shifts (n_t,), the most probable (direction, angle, shift) indices (3,), the posterior-expected squared
    residual (real-space units, over the frequencies used), log_empty ``()``: ``log p(I | V = 0)`` in the same
    units as log_marginal (the image as noise alone; filled by the batch functions), and log_classes ``(K,)``:
    ``log p(I | V_c)`` of each map of a several-class run (recon/classes.py; None with one map), and per_class:
    that run's one-map results, ``K`` rows per particle (particle-major), for the per-class samplers."""

    log_marginal: jnp.ndarray
    post_dir: jnp.ndarray
    post_psi: jnp.ndarray
    post_shift: jnp.ndarray
    best: jnp.ndarray
    expected_residual: jnp.ndarray
    log_empty: jnp.ndarray = None
    log_classes: jnp.ndarray = None
    per_class: Any = None


def shift_phases(grid: LikelihoodGrid, pixel_size_angstrom: float, inplane_matrices=None, shifts_angstrom=None):
    """``S[p, t, k] = exp(+2 pi i (R_p k) . t)``: ``(n_psi, n_t, N_k)`` complex (RELION origin sense), for the
    grid's in-plane rotations and shifts or the given ``(n_psi, 2, 2)`` and ``(n_t, 2)``."""
    inplane_matrices = grid.inplane_matrices if inplane_matrices is None else inplane_matrices
    shifts_angstrom = grid.shifts_angstrom if shifts_angstrom is None else shifts_angstrom
    rotated = jnp.einsum("pij,kj->pki", inplane_matrices, grid.freqs) / pixel_size_angstrom
    phase = 2.0 * jnp.pi * jnp.einsum("pki,ti->ptk", rotated, shifts_angstrom)
    return jnp.exp(1j * phase)


def log_likelihood_table(features: ParticleFeatures, slices_cat, slice_power, phases, grid: LikelihoodGrid,
                         size: int):
    """``log p(I | d, p, t)`` for a chunk of particles: ``(c, n_psi, n_t, n_dir)``.

    features: fields with a leading chunk axis; slices_cat: ``(2 N_k, n_dir)`` = [Re P; Im P]; slice_power:
    ``(N_k, n_dir)`` = |P|^2; phases: ``(n_psi, n_t, N_k)``.
    """
    w = grid.freq_weights
    a = jnp.conj(features.data)[:, :, None, :] * (features.ctf * w)[:, :, None, :] * phases[None]  # (c,p,t,k)
    c, n_psi, n_t, n_k = a.shape
    a = a.reshape(-1, n_k)
    a_cat = jnp.concatenate([a.real, -a.imag], axis=-1)  # (c p t, 2 N_k)
    cross = (a_cat @ slices_cat).reshape(c, n_psi, n_t, -1)
    quad = jnp.einsum("cpk,kd->cpd", features.ctf**2 * w, slice_power)
    total = features.data_norm[:, None, None, None] - 2.0 * cross + quad[:, :, None, :]
    return -total / (2.0 * size**2)


def empty_log_likelihood(features: ParticleFeatures, size: int):
    """``log p(I | V = 0)`` of the particles of ``features``: the table's value with no projection (every pose
    alike, so the quadrature's weights, which sum to 1, leave it as it is)."""
    return -features.data_norm / (2.0 * size**2)


def reduce_table(table, grid: LikelihoodGrid) -> ParticleResult:
    """Log-sum-exp and posteriors of ONE particle's table ``(n_psi, n_t, n_dir)``."""
    logw = grid.log_w_psi[:, None, None] + grid.log_w_shift[None, :, None] + grid.log_w_dir[None, None, :]
    joint = table + logw
    log_marginal = jax.nn.logsumexp(joint)
    post = jnp.exp(joint - log_marginal)
    best = jnp.unravel_index(jnp.argmax(joint), joint.shape)
    return ParticleResult(
        log_marginal=log_marginal, post_dir=post.sum((0, 1)), post_psi=post.sum((1, 2)), post_shift=post.sum((0, 2)),
        best=jnp.stack([best[2], best[0], best[1]]).astype(jnp.int32),  # (direction, in-plane, shift)
        expected_residual=jnp.sum(post * (-2.0 * table)))


MAX_MATRIX_ROWS = 4096  # XLA's CPU backend only (see auto_chunk_size)


class ChunkLimits(NamedTuple):
    """Bounds on the particles processed together inside a minibatch: log-likelihood table elements
    (chunk x n_psi x n_t x n_dir), rows of one matrix product (None: no bound) and elements of the sampled path's
    data-times-phase matrices (chunk x K_p x K_t x 2 N_k)."""

    table_elements: int
    matrix_rows: int | None
    sampled_elements: int


def chunk_limits(backend: str, table_elements: int = 0) -> ChunkLimits:
    """Defaults per JAX backend (``jax.default_backend()``): small chunks on CPUs (cache-sized tables, and the
    CPU backend's crash on large products), whole minibatches on GPUs and TPUs (tens of GB of memory, and fewer,
    larger kernels). ``table_elements`` > 0 overrides the table bound (the sampled bound scales with it)."""
    if backend == "cpu":
        limits = ChunkLimits(6_000_000, MAX_MATRIX_ROWS, 12_000_000)
    else:
        limits = ChunkLimits(200_000_000, None, 400_000_000)
    if table_elements > 0:
        scale = table_elements / limits.table_elements
        limits = limits._replace(table_elements=int(table_elements),
                                 sampled_elements=int(limits.sampled_elements * scale))
    return limits


def auto_chunk_size(batch_size: int, grid: LikelihoodGrid, max_table_elements: int = 6_000_000,
                    max_matrix_rows: int | None = MAX_MATRIX_ROWS) -> int:
    """Largest divisor of ``batch_size`` whose log-likelihood table (chunk x n_psi x n_t x n_dir) stays under
    ``max_table_elements`` and whose matrix product has at most ``max_matrix_rows`` rows (chunk x n_psi x n_t).
    XLA's CPU backend segfaulted here on products of 16,500 and 17,550 rows, and of 7,800 rows inside a
    rematerialised chunk (128 px, 40 A); 10,350 ran without remat, 3,900 with."""
    rows = grid.inplane_matrices.shape[0] * grid.shifts_angstrom.shape[0]
    per_particle = rows * grid.direction_matrices.shape[0]
    best = 1
    for c in range(1, batch_size + 1):
        if (batch_size % c == 0 and c * per_particle <= max_table_elements
                and (max_matrix_rows is None or c * rows <= max_matrix_rows)):
            best = c
    return best


def table_operands(volume, grid: LikelihoodGrid, pixel_size_angstrom: float, kernel: str, oversampling: int):
    """What every particle's exhaustive table shares: the slices as ``[Re P; Im P]`` ``(2 N_k, n_dir)``, their
    power ``|P|^2`` ``(N_k, n_dir)`` and the shift phases ``(n_psi, n_t, N_k)``."""
    slices = direction_slices(volume, grid, oversampling, kernel)  # (n_dir, N_k)
    slices_cat = jnp.concatenate([slices.real, slices.imag], axis=-1).T
    slice_power = (slices.real**2 + slices.imag**2).T
    return slices_cat, slice_power, shift_phases(grid, pixel_size_angstrom)


def checked_chunks(n: int, chunk_size: int) -> tuple[int, int]:
    """``(n, chunk)`` with the chunk at most ``n``; a batch must be a whole number of chunks."""
    chunk_size = min(chunk_size, n)
    if n % chunk_size:
        raise ValueError(f"batch of {n} is not a multiple of the chunk size {chunk_size}")
    return n, chunk_size


def chunk_features(images, ctf: CTFParams, grid: LikelihoodGrid, pixel_size_angstrom: float, kernel: str,
                   oversampling: int) -> ParticleFeatures:
    """:func:`particle_features` of a chunk of images ``(c, D, D)`` with their CTFs."""
    return jax.vmap(particle_features, in_axes=(0, 0, None, None, None, None, None))(
        images, ctf, grid, pixel_size_angstrom, None, kernel, oversampling)


def batch_log_marginals(volume, images, ctf: CTFParams, grid: LikelihoodGrid, pixel_size_angstrom: float,
                        chunk_size: int = 25, remat: bool = True, kernel: str = SLICE_KERNEL,
                        oversampling: int = 2):
    """:class:`ParticleResult` for every image of a batch ``(B, D, D)`` (B a multiple of ``chunk_size``).

    ``remat`` recomputes each chunk in the backward pass instead of storing it (less memory, ~1.5x the work).
    """
    size = images.shape[-1]
    slices_cat, slice_power, phases = table_operands(volume, grid, pixel_size_angstrom, kernel, oversampling)
    n, chunk_size = checked_chunks(images.shape[0], chunk_size)

    def chunk(args):
        imgs, chunk_ctf = args
        feats = chunk_features(imgs, chunk_ctf, grid, pixel_size_angstrom, kernel, oversampling)
        table = log_likelihood_table(feats, slices_cat, slice_power, phases, grid, size)
        return jax.vmap(reduce_table, in_axes=(0, None))(table, grid)._replace(
            log_empty=empty_log_likelihood(feats, size))

    split = lambda x: x.reshape(n // chunk_size, chunk_size, *x.shape[1:])  # noqa: E731
    results = jax.lax.map(jax.checkpoint(chunk) if remat else chunk, (split(images), CTFParams(*(split(f) for f in ctf))))
    return ParticleResult(*(None if r is None else r.reshape(n, *r.shape[2:]) for r in results))


def top_poses(table, grid: LikelihoodGrid, k: int):
    """ONE particle's ``k`` most probable poses from its table ``(n_psi, n_t, n_dir)``: indices ``(k, 3)``
    (direction, in-plane, shift) and their posterior log-probabilities ``(k,)`` under the full quadrature (prior
    weights included; they sum to at most 1)."""
    logw = grid.log_w_psi[:, None, None] + grid.log_w_shift[None, :, None] + grid.log_w_dir[None, None, :]
    joint = (table + logw).reshape(-1)
    values, flat = jax.lax.top_k(joint, k)
    p, t, d = jnp.unravel_index(flat, table.shape)
    return jnp.stack([d, p, t], -1).astype(jnp.int32), values - jax.nn.logsumexp(joint)


def correlation_table(features: ParticleFeatures, slices_cat, slice_power, phases, grid: LikelihoodGrid):
    """Cross-correlation ``Re<CTF P, I> / |CTF P|`` of a chunk of particles with every pose: ``(c, n_psi, n_t,
    n_dir)`` (the classic projection-matching score, blind to the map's amplitude; same layout as
    :func:`log_likelihood_table`)."""
    w = grid.freq_weights
    a = jnp.conj(features.data)[:, :, None, :] * (features.ctf * w)[:, :, None, :] * phases[None]
    c, n_psi, n_t, n_k = a.shape
    a = a.reshape(-1, n_k)
    cross = (jnp.concatenate([a.real, -a.imag], axis=-1) @ slices_cat).reshape(c, n_psi, n_t, -1)
    quad = jnp.einsum("cpk,kd->cpd", features.ctf**2 * w, slice_power)
    return cross / jnp.sqrt(quad[:, :, None, :] + 1e-30)


def top_scores(table, k: int):
    """ONE particle's ``k`` best-scoring poses of a table ``(n_psi, n_t, n_dir)``: indices ``(k, 3)`` (direction,
    in-plane, shift) and the scores ``(k,)``."""
    values, flat = jax.lax.top_k(table.reshape(-1), k)
    p, t, d = jnp.unravel_index(flat, table.shape)
    return jnp.stack([d, p, t], -1).astype(jnp.int32), values


def batch_top_poses(volume, images, ctf: CTFParams, grid: LikelihoodGrid, pixel_size_angstrom: float, k: int = 1,
                    chunk_size: int = 25, kernel: str = SLICE_KERNEL, oversampling: int = 2,
                    criterion: str = "likelihood"):
    """The ``k`` best poses of every image of a batch ``(B, D, D)``: ``(B, k, 3)`` indices and ``(B, k)`` values:
    with ``criterion="likelihood"`` the posterior log-probabilities (:func:`top_poses`; batch EM), with
    ``"correlation"`` the cross-correlations (:func:`correlation_table`; projection matching)."""
    size = images.shape[-1]
    slices_cat, slice_power, phases = table_operands(volume, grid, pixel_size_angstrom, kernel, oversampling)
    n, chunk_size = checked_chunks(images.shape[0], chunk_size)

    def chunk(args):
        imgs, chunk_ctf = args
        feats = chunk_features(imgs, chunk_ctf, grid, pixel_size_angstrom, kernel, oversampling)
        if criterion == "correlation":
            return jax.vmap(top_scores, in_axes=(0, None))(
                correlation_table(feats, slices_cat, slice_power, phases, grid), k)
        table = log_likelihood_table(feats, slices_cat, slice_power, phases, grid, size)
        return jax.vmap(top_poses, in_axes=(0, None, None))(table, grid, k)

    split = lambda x: x.reshape(n // chunk_size, chunk_size, *x.shape[1:])  # noqa: E731
    idx, logp = jax.lax.map(chunk, (split(images), CTFParams(*(split(f) for f in ctf))))
    return idx.reshape(n, k, 3), logp.reshape(n, k)


# ----------------------------------------------------------------------------------------------------------
# Importance-sampled sums (Eq. 12): each particle evaluates its own sampled directions x angles x shifts.


class SampleSet(NamedTuple):
    """Per particle (leading batch axis ``B``): quadrature indices and log weights of the points to evaluate.

    direction ``(B, K_R)`` int32, direction_log_weight ``(B, K_R)``; inplane ``(B, K_p)``, inplane_log_weight;
    shift ``(B, K_t)``, shift_log_weight. A log weight is ``log(count w_j / (N q_j))`` for a sampled point,
    ``log w_j`` for an exhaustively summed factor, and :data:`recon.sampling.NEG` for an unused slot.
    """

    direction: jnp.ndarray
    direction_log_weight: jnp.ndarray
    inplane: jnp.ndarray
    inplane_log_weight: jnp.ndarray
    shift: jnp.ndarray
    shift_log_weight: jnp.ndarray


class SampledResult(NamedTuple):
    """Per particle: log_marginal ``()`` (the IS estimate of log p(I | V)); log posterior marginals (unnormalised,
    prior weight included, NEG in unused slots) of the evaluated directions ``(K_R,)``, angles ``(K_p,)`` and
    shifts ``(K_t,)``; best ``(3,)`` quadrature indices (direction, in-plane, shift) of the most probable evaluated
    pose; expected_residual ``()`` (Eq. 18, self-normalised); log_empty ``()`` and log_classes as in
    :class:`ParticleResult`."""

    log_marginal: jnp.ndarray
    log_phi_direction: jnp.ndarray
    log_phi_inplane: jnp.ndarray
    log_phi_shift: jnp.ndarray
    best: jnp.ndarray
    expected_residual: jnp.ndarray
    log_empty: jnp.ndarray = None
    log_classes: jnp.ndarray = None
    per_class: Any = None


def sampled_table(features: ParticleFeatures, slices, phases, grid: LikelihoodGrid, size: int):
    """``log p(I | d, p, t)`` of ONE particle at its sampled points: ``(K_p, K_t, K_R)``.

    features: ``(K_p, N_k)`` at its sampled angles; slices ``(K_R, N_k)``; phases ``(K_p, K_t, N_k)``.
    """
    w = grid.freq_weights
    a = (jnp.conj(features.data) * features.ctf * w)[:, None, :] * phases  # (K_p, K_t, N_k)
    k_p, k_t, n_k = a.shape
    a = a.reshape(-1, n_k)
    cross = (jnp.concatenate([a.real, -a.imag], -1) @ jnp.concatenate([slices.real, slices.imag], -1).T)
    quad = (features.ctf**2 * w) @ (slices.real**2 + slices.imag**2).T  # (K_p, K_R)
    total = features.data_norm - 2.0 * cross.reshape(k_p, k_t, -1) + quad[:, None, :]
    return -total / (2.0 * size**2)


def reduce_sampled(table, samples: SampleSet, grid: LikelihoodGrid) -> SampledResult:
    """Eq. 12 and the evaluated points' marginals for ONE particle (``samples`` fields without the batch axis)."""
    neg = -1e30
    lw_d, lw_p, lw_t = samples.direction_log_weight, samples.inplane_log_weight, samples.shift_log_weight
    joint = table + lw_p[:, None, None] + lw_t[None, :, None] + lw_d[None, None, :]
    log_marginal = jax.nn.logsumexp(joint)
    post = jnp.exp(joint - log_marginal)
    used = lambda lw: lw > 0.5 * neg  # noqa: E731
    prior_d = jnp.where(used(lw_d), grid.log_w_dir[samples.direction], neg)
    prior_p = jnp.where(used(lw_p), grid.log_w_psi[samples.inplane], neg)
    prior_t = jnp.where(used(lw_t), grid.log_w_shift[samples.shift], neg)
    # phi of an evaluated point: its prior weight times the (estimated) sum over the other two factors
    phi_d = jnp.where(used(lw_d), prior_d + jax.nn.logsumexp(joint - lw_d[None, None, :], axis=(0, 1)), neg)
    phi_p = jnp.where(used(lw_p), prior_p + jax.nn.logsumexp(joint - lw_p[:, None, None], axis=(1, 2)), neg)
    phi_t = jnp.where(used(lw_t), prior_t + jax.nn.logsumexp(joint - lw_t[None, :, None], axis=(0, 2)), neg)
    map_score = table + prior_p[:, None, None] + prior_t[None, :, None] + prior_d[None, None, :]
    best = jnp.unravel_index(jnp.argmax(map_score), map_score.shape)
    best = jnp.stack([samples.direction[best[2]], samples.inplane[best[0]], samples.shift[best[1]]])
    return SampledResult(log_marginal=log_marginal, log_phi_direction=phi_d, log_phi_inplane=phi_p,
                         log_phi_shift=phi_t, best=best.astype(jnp.int32),
                         expected_residual=jnp.sum(post * (-2.0 * table)))


SHARED_SLICE_ELEMENTS = 25_000_000  # complex values (200 MB) the shared slices of one minibatch may hold


def shares_slices(num_directions: int, batch_size: int, direction_slots: int, num_freqs: int = 0) -> bool:
    """Whether a sampled minibatch computes every direction's slice once and gathers each particle's from them:
    where the grid has fewer directions than the minibatch draws slots (``B K_R``), as at coarse levels or with
    large slots, that interpolates (and, in the gradient, scatters) fewer slices than one per drawn slot; and
    where they fit ``SHARED_SLICE_ELEMENTS`` (they are held whole, outside the chunks)."""
    return (num_directions < batch_size * direction_slots
            and num_directions * num_freqs <= SHARED_SLICE_ELEMENTS)


def sampled_log_marginals(volume, images, ctf: CTFParams, samples: SampleSet, grid: LikelihoodGrid,
                          pixel_size_angstrom: float, chunk_size: int = 25, remat: bool = True,
                          kernel: str = "kaiser_bessel", oversampling: int = 2, share_slices: bool | None = None):
    """:class:`SampledResult` for every image of a batch ``(B, D, D)`` at its own sampled points.

    Cost per particle ~ ``K_R`` slices + ``K_p`` rotated copies of the data + a ``(K_p K_t, 2 N_k) x (2 N_k, K_R)``
    product, independent of the size of the full quadrature; or, where :func:`shares_slices` says so, every
    direction's slice once for the batch and a gather per particle (the same values; ``share_slices`` forces
    either way).
    """
    size = images.shape[-1]
    volume_ft = projection.prepare_volume_ft(volume, oversampling, kernel)
    n = images.shape[0]
    chunk_size = min(chunk_size, n)
    if n % chunk_size:
        raise ValueError(f"batch of {n} is not a multiple of the chunk size {chunk_size}")
    shared = None
    if share_slices is None:
        share_slices = shares_slices(grid.direction_matrices.shape[0], n, samples.direction.shape[1],
                                     grid.freqs.shape[0])
    if share_slices:
        shared = slices_at(volume_ft, grid.direction_matrices, grid.freqs, kernel, oversampling)

    def one(image, particle_ctf, particle_samples: SampleSet, slices):
        rotations = grid.inplane_matrices[particle_samples.inplane]
        feats = particle_features(image, particle_ctf, grid, pixel_size_angstrom, rotations, kernel, oversampling)
        phases = shift_phases(grid, pixel_size_angstrom, rotations, grid.shifts_angstrom[particle_samples.shift])
        table = sampled_table(feats, slices, phases, grid, size)
        return reduce_sampled(table, particle_samples, grid)._replace(log_empty=empty_log_likelihood(feats, size))

    def chunk(args):
        imgs, chunk_ctf, chunk_samples = args
        if shared is None:
            slices = slices_at(volume_ft, grid.direction_matrices[chunk_samples.direction], grid.freqs, kernel,
                               oversampling)
        else:
            slices = shared[chunk_samples.direction]
        return jax.vmap(one)(imgs, chunk_ctf, chunk_samples, slices)

    split = lambda x: x.reshape(n // chunk_size, chunk_size, *x.shape[1:])  # noqa: E731
    args = (split(images), CTFParams(*(split(f) for f in ctf)), SampleSet(*(split(f) for f in samples)))
    results = jax.lax.map(jax.checkpoint(chunk) if remat else chunk, args)
    return SampledResult(*(None if r is None else r.reshape(n, *r.shape[2:]) for r in results))


def batch_pose_fit(volume, images, ctf: CTFParams, poses, grid: LikelihoodGrid, pixel_size_angstrom: float,
                   kernel: str = SLICE_KERNEL, oversampling: int = 2):
    """Each image's fit to the map at one pose ``poses (B, 3)`` (direction, in-plane, shift indices of ``grid``):
    ``(cross, quad)`` ``(B,)`` each, ``Re sum_k w_k conj(I(R_p k)) C(R_p k) S_t(R_p k) P_d(k) / D^2`` and
    ``sum_k w_k C(R_p k)^2 |P_d(k)|^2 / D^2``, so that the pose's log-likelihood with the projection scaled by
    ``a`` is ``-(|I|^2 - 2 a cross + a^2 quad) / 2`` (:func:`log_likelihood_table`'s terms)."""
    size = images.shape[-1]
    volume_ft = projection.prepare_volume_ft(volume, oversampling, kernel)
    slices = slices_at(volume_ft, grid.direction_matrices[poses[:, 0]], grid.freqs, kernel, oversampling)

    def one(image, particle_ctf, pose, slice_):
        rotation = grid.inplane_matrices[pose[1]][None]
        feats = particle_features(image, particle_ctf, grid, pixel_size_angstrom, rotation, kernel, oversampling)
        phase = shift_phases(grid, pixel_size_angstrom, rotation, grid.shifts_angstrom[pose[2]][None])[0, 0]
        w = grid.freq_weights
        cross = jnp.sum(jnp.real(jnp.conj(feats.data[0]) * feats.ctf[0] * w * phase * slice_))
        quad = jnp.sum(feats.ctf[0] ** 2 * w * (slice_.real**2 + slice_.imag**2))
        return cross / size**2, quad / size**2

    return jax.vmap(one)(images, ctf, poses, slices)


def sampled_chunk_size(batch_size: int, capacities: tuple, num_freqs: int, max_elements: int = 12_000_000) -> int:
    """Largest divisor of ``batch_size`` whose chunk's largest arrays hold at most ``max_elements`` floats: per
    particle the ``(K_p K_t, 2 N_k)`` data-times-phase matrix, the ``(K_R, N_k)`` complex slices and the
    ``(K_p, K_t, K_R)`` table, with ``capacities = (K_R, K_p, K_t)`` (so that chunks shrink as a level's slots
    grow). The interpolation's temporaries scale like the slices, so the bound is a proxy, set per backend."""
    k_r, k_p, k_t = capacities
    per_particle = k_p * k_t * 2 * num_freqs + 2 * k_r * num_freqs + k_p * k_t * k_r
    best = 1
    for c in range(1, batch_size + 1):
        if batch_size % c == 0 and c * per_particle <= max_elements:
            best = c
    return best
