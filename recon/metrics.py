"""Map comparison: Fourier shell correlation, and alignment over rotations, shifts and both hands.

An ab-initio map is defined only up to a rotation, a translation and its hand, so it is aligned to the reference
before the FSC. The transform found maps the moving map ``A`` onto the reference:

    aligned(x) = A_h(R^T (x - t)),   A_h = A, or A mirrored through z = 0 (``hand = "flipped"``),

with ``x`` in Angstrom about the box centre, ``R`` reported as RELION Euler angles and ``t`` in Angstrom.

The search, for both hands: (1) both maps are Fourier-cropped to a 16-voxel box and every rotation of a grid
with a 15-degree step is scored by the best FFT cross-correlation over integer shifts; (2) the 10 best distinct
rotations (at least 30 degrees apart) and their neighbours half a step away (27 per candidate) are scored the
same way on a 24-voxel box; (3) the 5 best of those (both hands; within a hand at least 15 degrees apart) are
refined by Nelder-Mead on the correlation of the maps (rotation vector + shift) on a 32-voxel box, and the winner
polished on a box of up to 64. Stage (1) scores 4,416 rotations of 16^3 voxels per hand, a sixth of the work of
scoring a 12-degree grid on 24^3 voxels.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.ndimage
import scipy.optimize

import jax
import jax.numpy as jnp

from recon import conventions, projection, quadrature
from recon.io import cs


# ----------------------------------------------------------------------------------------------------------
# FSC.


def fsc(map_a: np.ndarray, map_b: np.ndarray) -> np.ndarray:
    """FSC in shells of one Fourier pixel: ``(D // 2 + 1,)`` values for shells ``0 .. D // 2``."""
    fa = conventions.centred_fft3(np.asarray(map_a, np.float64))
    fb = conventions.centred_fft3(np.asarray(map_b, np.float64))
    size = map_a.shape[0]
    c = conventions.box_coordinates(size)
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    shell = np.round(r).astype(int).ravel()
    n_shells = size // 2 + 1
    keep = shell < n_shells
    shell = shell[keep]
    cross = np.bincount(shell, (fa * np.conj(fb)).real.ravel()[keep], n_shells)
    pa = np.bincount(shell, (np.abs(fa) ** 2).ravel()[keep], n_shells)
    pb = np.bincount(shell, (np.abs(fb) ** 2).ravel()[keep], n_shells)
    return cross / np.sqrt(np.maximum(pa * pb, 1e-300))


def lowpass_volume(volume: np.ndarray, pixel_size_angstrom: float, resolution_angstrom: float,
                   edge_shells: float = 2.0) -> np.ndarray:
    """``volume (D, D, D)`` kept up to ``1 / resolution_angstrom`` and cut beyond it by a raised-cosine edge
    ``edge_shells`` Fourier pixels wide (the spread of the interpolation kernels that fitted it): nothing is kept
    beyond ``cutoff + edge_shells`` Fourier pixels, ``cutoff = D pixel / resolution``."""
    size = volume.shape[0]
    c = conventions.box_coordinates(size)
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)  # Fourier pixels
    cutoff = size * pixel_size_angstrom / resolution_angstrom
    t = np.clip((r - cutoff) / edge_shells, 0.0, 1.0)
    keep = 0.5 + 0.5 * np.cos(np.pi * t)
    ft = conventions.centred_fft3(np.asarray(volume, np.float64)) * keep
    return conventions.centred_ifft3(ft).real.astype(np.float32)


def shell_frequencies(size: int, pixel_size_angstrom: float) -> np.ndarray:
    """Frequencies (1/Angstrom) of the FSC shells."""
    return np.arange(size // 2 + 1) / (size * pixel_size_angstrom)


def resolution_at(curve: np.ndarray, pixel_size_angstrom: float, threshold: float) -> float:
    """Resolution (Angstrom) where the FSC first falls below ``threshold`` (linear interpolation between shells);
    Nyquist (2 pixels) if it never does."""
    size = 2 * (len(curve) - 1)
    freqs = shell_frequencies(size, pixel_size_angstrom)
    below = np.nonzero(curve[1:] < threshold)[0]
    if len(below) == 0:
        return 2.0 * pixel_size_angstrom
    i = below[0] + 1
    f0, f1, c0, c1 = freqs[i - 1], freqs[i], curve[i - 1], curve[i]
    f = f0 + (c0 - threshold) / (c0 - c1) * (f1 - f0) if c0 != c1 else f1
    return float(1.0 / f) if f > 0 else float("inf")


def soft_sphere_mask(size: int, radius_pixels: float, edge_pixels: float = 3.0) -> np.ndarray:
    c = conventions.box_coordinates(size)
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    t = np.clip((r - radius_pixels) / edge_pixels, 0.0, 1.0)
    return (0.5 + 0.5 * np.cos(np.pi * t)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Geometry helpers.


def flip_hand(volume: np.ndarray) -> np.ndarray:
    """Mirror through the plane z = 0 (index ``D // 2``): ``out[z] = vol[-z]`` in centred coordinates."""
    size = volume.shape[0]
    index = (2 * (size // 2) - np.arange(size)) % size
    return volume[index]


def transform_volume(volume: np.ndarray, rotation: np.ndarray, shift_pixels: np.ndarray, order: int = 3
                     ) -> np.ndarray:
    """``out(x) = vol(R^T (x - t))`` about the centre ``D // 2`` (numpy, spline interpolation of ``order``)."""
    size = volume.shape[0]
    c = conventions.box_coordinates(size).astype(np.float64)
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    pts = np.stack([x.ravel(), y.ravel(), z.ravel()], 0) - np.asarray(shift_pixels, np.float64)[:, None]
    src = rotation.T @ pts + size // 2  # (x, y, z) indices
    out = scipy.ndimage.map_coordinates(np.asarray(volume, np.float64), src[::-1], order=order, mode="constant")
    return out.reshape(volume.shape)


def fourier_crop(volume: np.ndarray, new_size: int) -> np.ndarray:
    """Band-limit and resample a ``D^3`` map to ``new_size^3`` (pixel grows by ``D / new_size``)."""
    size = volume.shape[0]
    if new_size >= size:
        return np.asarray(volume, np.float64)
    ft = conventions.centred_fft3(np.asarray(volume, np.float64))
    s = size // 2 - new_size // 2
    crop = ft[s:s + new_size, s:s + new_size, s:s + new_size]
    return conventions.centred_ifft3(crop).real * (new_size / size) ** 3


def resample_to(volume: np.ndarray, pixel_from: float, size_to: int, pixel_to: float) -> np.ndarray:
    """Resample a map onto another grid (same centre), low-pass filtering first when the pixel grows."""
    if abs(pixel_from - pixel_to) < 1e-6 * pixel_to and volume.shape[0] == size_to:
        return np.asarray(volume, np.float64)
    vol = np.asarray(volume, np.float64)
    if pixel_to > pixel_from:
        sigma = 0.5 * pixel_to / pixel_from
        vol = scipy.ndimage.gaussian_filter(vol, sigma * 0.6)
    c = conventions.box_coordinates(size_to) * pixel_to / pixel_from
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    centre = volume.shape[0] // 2
    return scipy.ndimage.map_coordinates(vol, [z + centre, y + centre, x + centre], order=3, mode="constant")


def _rotation_grid(step_degrees: float) -> np.ndarray:
    step = np.radians(step_degrees)
    dirs = quadrature.fibonacci_sphere(quadrature.num_directions(step))
    n_psi = quadrature.num_inplane(step)
    mats = quadrature.pose_matrices(dirs, np.arange(n_psi) * 360.0 / n_psi)
    return mats.reshape(-1, 3, 3)


def _rotvec_matrix(v: np.ndarray) -> np.ndarray:
    return cs.rotvec_to_matrix(np.asarray(v, np.float64)[None])[0]


# ----------------------------------------------------------------------------------------------------------
# Alignment.


@dataclasses.dataclass
class Alignment:
    rotation: np.ndarray  # (3, 3) R
    shift_angstrom: np.ndarray  # (3,) t, Angstrom
    hand: str  # "original" or "flipped"
    correlation: float

    def apply(self, volume: np.ndarray, pixel_size_angstrom: float) -> np.ndarray:
        vol = flip_hand(volume) if self.hand == "flipped" else volume
        return transform_volume(vol, self.rotation, self.shift_angstrom / pixel_size_angstrom).astype(np.float32)


def _coarse_score_one(rotation: jnp.ndarray, moving: jnp.ndarray, reference_ft_conj: jnp.ndarray):
    """Best cross-correlation over integer shifts of ``moving`` rotated by ``rotation`` (3, 3) against the
    reference (given as the conjugate of its rfftn): (score, flat index of the best shift)."""
    size = moving.shape[0]
    c = jnp.asarray(conventions.box_coordinates(size), jnp.float32)
    z, y, x = jnp.meshgrid(c, c, c, indexing="ij")
    pts = jnp.stack([x.ravel(), y.ravel(), z.ravel()], -1)
    src = pts @ rotation + size // 2  # R^T x as row vectors: x @ R
    rotated = projection.trilinear_sample(moving, src).reshape(size, size, size)
    cc = jnp.fft.irfftn(jnp.fft.rfftn(jnp.fft.ifftshift(rotated)) * reference_ft_conj, s=rotated.shape)
    best = jnp.argmax(cc)
    return cc.ravel()[best], best


# Compiled once per working size (not once per call: figure scripts align dozens of maps).
_coarse_scores_batch = jax.jit(jax.vmap(_coarse_score_one, in_axes=(0, None, None)))


def _coarse_scores(moving: np.ndarray, reference: np.ndarray, rotations: np.ndarray, chunk: int = 256):
    """Best cross-correlation over integer shifts for each rotation: ``(n_rot,)`` scores, ``(n_rot, 3)`` shifts."""
    size = moving.shape[0]
    mov = jnp.asarray(moving, jnp.float32)
    ref_ft_conj = jnp.conj(jnp.fft.rfftn(jnp.fft.ifftshift(jnp.asarray(reference, jnp.float32))))
    rot = np.asarray(rotations, np.float32)
    pad = (-len(rot)) % chunk  # every chunk the same shape: one compilation
    rot = np.concatenate([rot, np.repeat(rot[:1], pad, 0)])
    scores, where = [], []
    for s in range(0, len(rot), chunk):
        a, b = _coarse_scores_batch(jnp.asarray(rot[s:s + chunk]), mov, ref_ft_conj)
        scores.append(np.asarray(a))
        where.append(np.asarray(b))
    n = len(rotations)
    where = np.concatenate(where)[:n]
    iz, iy, ix = np.unravel_index(where, (size,) * 3)
    # cc[t] = sum_x rot(x) ref(x + t): the reference matches the rotated map moved by +t... the map must move by -t
    shifts = -np.stack([ix, iy, iz], -1)
    shifts = (shifts + size // 2) % size - size // 2
    return np.concatenate(scores)[:n], shifts


def _correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    a = a * mask
    b = b * mask
    a = a - a.mean()
    b = b - b.mean()
    return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b) + 1e-300))


def _rotation_angle_degrees(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle of ``a^T b`` for ``a`` (3, 3) and each of ``b`` (n, 3, 3): ``(n,)`` degrees."""
    cos = (np.einsum("ij,nij->n", a, b) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _distinct_best(scores: np.ndarray, rotations: np.ndarray, count: int, min_angle_degrees: float) -> list[int]:
    """Indices of the ``count`` best-scoring rotations, each at least ``min_angle_degrees`` from those before."""
    chosen: list[int] = []
    for i in np.argsort(-scores):
        if all(_rotation_angle_degrees(rotations[j], rotations[i][None])[0] >= min_angle_degrees for j in chosen):
            chosen.append(int(i))
            if len(chosen) == count:
                break
    return chosen


def _neighbourhood(rotations: np.ndarray, step_degrees: float) -> np.ndarray:
    """Each rotation (n, 3, 3) composed with the 27 rotation vectors ``{-1, 0, 1}^3 x step``: ``(27 n, 3, 3)``."""
    offsets = np.radians(step_degrees) * np.stack(np.meshgrid(*[np.arange(-1.0, 2.0)] * 3, indexing="ij"), -1)
    perturb = cs.rotvec_to_matrix(offsets.reshape(-1, 3))
    return np.einsum("kij,njl->nkil", perturb, rotations).reshape(-1, 3, 3)


def align(moving: np.ndarray, reference: np.ndarray, pixel_size_angstrom: float, coarse_size: int = 16,
          working_size: int = 24, step_degrees: float = 15.0, distinct: int = 10, candidates: int = 5,
          refine_size: int = 64) -> Alignment:
    """Find the hand, rotation and shift that best superimpose ``moving`` on ``reference`` (same grid)."""
    size = reference.shape[0]
    mask = soft_sphere_mask(size, size / 2 - 3)
    rotations = _rotation_grid(step_degrees)
    coarse, work = min(coarse_size, size), min(working_size, size)
    ref_c, ref_w = fourier_crop(reference * mask, coarse), fourier_crop(reference * mask, work)
    pool = []
    for hand in ("original", "flipped"):
        mov = (flip_hand(moving) if hand == "flipped" else moving) * mask
        # Stage 1: the whole grid on a small box.
        mov_c = fourier_crop(mov, coarse)
        scores, _ = _coarse_scores(mov_c - mov_c.mean(), ref_c - ref_c.mean(), rotations)
        best = rotations[_distinct_best(scores, rotations, distinct, 2.0 * step_degrees)]
        # Stage 2: those rotations and their neighbours half a step away, on a larger box.
        local = _neighbourhood(best, step_degrees / 2.0)
        mov_w = fourier_crop(mov, work)
        scores, shifts = _coarse_scores(mov_w - mov_w.mean(), ref_w - ref_w.mean(), local)
        pool += [(scores[i], hand, local[i], shifts[i] * size / work)
                 for i in _distinct_best(scores, local, candidates, step_degrees)]
    pool.sort(key=lambda p: -p[0])

    # Refine the best candidates on a 32^3 grid, then polish the winner on a finer one.
    def refine(hand, rotation, shift_px, grid_size, maxiter):
        scale = size / grid_size
        ref_r = fourier_crop(reference, grid_size)
        mask_r = soft_sphere_mask(grid_size, grid_size / 2 - 2)
        mov_r = fourier_crop(flip_hand(moving) if hand == "flipped" else moving, grid_size)

        def cost(p):
            r = _rotvec_matrix(p[:3]) @ rotation
            return -_correlation(transform_volume(mov_r, r, p[3:], order=1), ref_r, mask_r)

        x0 = np.concatenate([np.zeros(3), np.asarray(shift_px, np.float64) / scale])
        simplex = np.vstack([x0] + [x0 + d for d in np.diag([0.08, 0.08, 0.08, 0.7, 0.7, 0.7])])
        res = scipy.optimize.minimize(cost, x0, method="Nelder-Mead",
                                      options=dict(initial_simplex=simplex, xatol=1e-3, fatol=1e-7, maxiter=maxiter))
        return res.fun, hand, _rotvec_matrix(res.x[:3]) @ rotation, res.x[3:] * scale

    best = min((refine(hand, rotation, shift, min(32, size), 250) for _, hand, rotation, shift in pool[:candidates]),
               key=lambda r: r[0])
    if size > 32:
        best = refine(best[1], best[2], best[3], min(refine_size, size), 200)
    _, hand, rotation, shift_px = best
    final = Alignment(rotation=rotation, shift_angstrom=shift_px * pixel_size_angstrom, hand=hand, correlation=0.0)
    aligned = final.apply(moving, pixel_size_angstrom)
    final.correlation = _correlation(aligned, reference, mask)
    return final


def evaluate_maps(moving: np.ndarray, reference: np.ndarray, pixel_size_angstrom: float, do_align: bool = True
                  ) -> dict:
    """Align (optionally) and compare; returns a JSON-ready dict plus the FSC curve and the aligned map."""
    mask = soft_sphere_mask(reference.shape[0], reference.shape[0] / 2 - 3)
    if do_align:
        alignment = align(moving, reference, pixel_size_angstrom)
        aligned = alignment.apply(moving, pixel_size_angstrom)
    else:
        alignment = Alignment(np.eye(3), np.zeros(3), "original", 0.0)
        aligned = np.asarray(moving, np.float32)
    curve = fsc(aligned * mask, reference * mask)
    return {
        "fsc_0.5_angstrom": resolution_at(curve, pixel_size_angstrom, 0.5),
        "fsc_0.143_angstrom": resolution_at(curve, pixel_size_angstrom, 0.143),
        "hand": alignment.hand,
        "rotation_relion_degrees": [float(a) for a in conventions.matrix_to_euler(alignment.rotation)],
        "shift_angstrom": [float(s) for s in alignment.shift_angstrom],
        "correlation": _correlation(aligned, reference, mask),
        "pixel_size_angstrom": float(pixel_size_angstrom),
        "box_size": int(reference.shape[0]),
    }, curve, aligned


def plot_fsc(path: str, curve: np.ndarray, pixel_size_angstrom: float, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = 2 * (len(curve) - 1)
    freqs = shell_frequencies(size, pixel_size_angstrom)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(freqs, curve, "-o", ms=3, label="FSC")
    for thr, style in ((0.5, "--"), (0.143, ":")):
        res = resolution_at(curve, pixel_size_angstrom, thr)
        ax.axhline(thr, color="gray", ls=style, lw=1)
        ax.text(freqs[-1], thr + 0.02, f"{thr}: {res:.1f} A", ha="right", fontsize=8)
    ax.set_xlabel("spatial frequency (1/A)")
    ax.set_ylabel("Fourier shell correlation")
    ax.set_ylim(-0.1, 1.05)
    ax.set_title(title, fontsize=9)
    ax.set_xlim(0, freqs[-1] * 1.02)
    top = ax.twiny()
    top.set_xlim(ax.get_xlim())
    candidates = np.array([100, 60, 40, 30, 20, 15, 12, 10, 8, 6, 5, 4, 3, 2.5, 2])
    ticks = candidates[(1 / candidates > 0) & (1 / candidates <= freqs[-1] * 1.02)]
    top.set_xticks(1 / ticks)
    top.set_xticklabels([f"{t:g}" for t in ticks])
    top.set_xlabel("resolution (A)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
