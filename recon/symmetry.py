"""Point-group symmetry: the groups C_n, D_n, T, O and I in RELION's axis conventions, the asymmetric unit of the
view directions, and the symmetrisation of a map.

RELION's conventions (``src/symmetries.cpp``, inherited from Xmipp), by the generating axes in map coordinates
``(x, y, z)``:

- ``Cn``: an n-fold axis on z.
- ``Dn``: an n-fold axis on z and a 2-fold axis on x.
- ``T``:  a 3-fold axis on z and a 2-fold axis on (0, 0.816496, 0.577350).
- ``O``:  a 3-fold axis on (1, 1, 1)/sqrt(3) and a 4-fold axis on z (4-folds on x, y and z).
- ``I`` = ``I2`` (RELION's default, Crowther's 222 setting): 2-folds on x, y, z, a 5-fold on (0.525731, 0, 0.850651)
  and a 3-fold on (0, 0.356822, 0.934172). ``I1``: 2-fold on x, 5-fold on (0.850651, 0, -0.525731) (I2 turned by
  90 degrees about z). ``I3``: 5-fold on z, 2-fold on (-0.525731, 0, 0.850651). ``I4``: 5-fold on
  (0.894427, 0, 0.447214), 2-fold on (0.525731, 0, 0.850651).

A symmetric map ``V`` satisfies ``V(g x) = V(x)`` for every ``g`` of the group. A pose ``A`` and ``A g`` then give
the same image, and the beam direction ``d = A^T e_z`` of ``A g`` is ``g^T d``: one direction per orbit suffices.
The asymmetric unit used here is the Dirichlet cell of a generic reference direction ``c``: the directions at least
as close to ``c`` as to any other ``g c``. Its copies under the group tile the sphere.

For a symmetric ``V``, the gradient of the full-sphere objective equals the symmetrised gradient of the
asymmetric-unit objective (the sum over the group of its rotated copies, divided by the order): the map stays
symmetric under SAGD when its gradients are symmetrised.
"""

from __future__ import annotations

import re

import numpy as np

import jax
import jax.numpy as jnp

from recon import conventions, projection
from recon.errors import InputError

# (fold, axis) generators per group; Cn and Dn are built from n.
_ICOSAHEDRAL = {
    "I1": [(2, (1.0, 0.0, 0.0)), (5, (0.85065080702670, 0.0, -0.5257311142635)), (3, (0.9341723640, 0.3568220765, 0.0))],
    "I2": [(2, (0.0, 0.0, 1.0)), (5, (0.525731114, 0.0, 0.850650807)), (3, (0.0, 0.356822076, 0.934172364))],
    "I3": [(2, (-0.5257311143, 0.0, 0.8506508070)), (5, (0.0, 0.0, 1.0)),
           (3, (-0.4911234778630044, 0.3568220764705179, 0.7946544753759428))],
    "I4": [(2, (0.5257311143, 0.0, 0.8506508070)), (5, (0.8944271932547096, 0.0, 0.4472135909903704)),
           (3, (0.4911234778630044, 0.3568220764705179, 0.7946544753759428))],
}
_FIXED = {
    "T": [(3, (0.0, 0.0, 1.0)), (2, (0.0, 0.816496, 0.577350))],
    "O": [(3, (0.5773502, 0.5773502, 0.5773502)), (4, (0.0, 0.0, 1.0))],
    "I": _ICOSAHEDRAL["I2"],
    **_ICOSAHEDRAL,
}
# A generic direction (on no symmetry axis of any group above) whose Dirichlet cell is the asymmetric unit.
REFERENCE_DIRECTION = np.array([0.2316, 0.1405, 0.9626]) / np.linalg.norm([0.2316, 0.1405, 0.9626])


def axis_rotation(axis, degrees: float) -> np.ndarray:
    """The ``(3, 3)`` matrix turning points by ``degrees`` about ``axis`` (right-hand rule; Rodrigues' formula)."""
    u = np.asarray(axis, np.float64)
    u = u / np.linalg.norm(u)
    t = np.radians(degrees)
    k = np.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    return np.eye(3) + np.sin(t) * k + (1.0 - np.cos(t)) * (k @ k)


def generators(name: str) -> list:
    """The (fold, axis) generators of a group name (case-insensitive: C1, C7, D7, T, O, I, I1-I4)."""
    key = name.strip().upper()
    match = re.fullmatch(r"([CD])(\d+)", key)
    if match:
        n = int(match.group(2))
        if n < 1:
            raise InputError(f"symmetry {name!r}: the order must be at least 1")
        gens = [(n, (0.0, 0.0, 1.0))]
        if match.group(1) == "D":
            gens.append((2, (1.0, 0.0, 0.0)))
        return gens
    if key in _FIXED:
        return _FIXED[key]
    raise InputError(f"unknown symmetry {name!r} (Cn, Dn, T, O, I, I1, I2, I3, I4 in RELION's conventions)")


def group_matrices(name: str) -> np.ndarray:
    """All ``(|G|, 3, 3)`` rotation matrices of the group (identity first), by closure of its generators."""
    elements = [np.eye(3)]
    gens = [axis_rotation(axis, 360.0 / fold) for fold, axis in generators(name) if fold > 1]

    def known(m):
        return any(np.allclose(m, e, atol=1e-5) for e in elements)

    frontier = list(elements)
    while frontier:
        new = []
        for a in frontier:
            for g in gens:
                m = g @ a
                if not known(m):
                    elements.append(m)
                    new.append(m)
        frontier = new
        if len(elements) > 120:
            raise AssertionError(f"symmetry {name}: the generators do not close into a finite point group")
    return np.stack(elements)


def order(name: str) -> int:
    return len(group_matrices(name))


def asymmetric_unit(directions: np.ndarray, matrices: np.ndarray, tolerance: float = 1e-9) -> np.ndarray:
    """Boolean mask ``(n,)`` of the unit directions ``(n, 3)`` in the Dirichlet cell of ``REFERENCE_DIRECTION``
    under the group ``matrices`` ``(|G|, 3, 3)``: ``d . c >= d . (g c)`` for every ``g``."""
    images = matrices @ REFERENCE_DIRECTION  # (|G|, 3): the orbit of c
    scores = directions @ images.T  # (n, |G|)
    return scores[:, 0] >= scores.max(axis=1) - tolerance


def band_indices(size: int, band_cycles_per_pixel: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The frequencies of a centred ``D^3`` transform within ``|k| <= band``: their indices ``(3, N)`` as
    ``(z, y, x)`` and their frequencies ``(N, 3)`` as ``(kx, ky, kz)`` in cycles per pixel."""
    f = conventions.frequency_coordinates(size)
    kz, ky, kx = np.meshgrid(f, f, f, indexing="ij")
    inside = kx**2 + ky**2 + kz**2 <= band_cycles_per_pixel**2
    index = np.nonzero(inside)
    return np.stack(index), np.stack([kx[index], ky[index], kz[index]], axis=-1)


def symmetrise(volume, matrices, band_cycles_per_pixel: float = 0.5):
    """The average of the map turned by every group element ``(|G|, 3, 3)`` (identity first), computed in Fourier
    space: ``V_sym^(k) = mean_g V^(g^T k)`` for every frequency ``|k| <= band`` (cycles per pixel), read off the
    2x-oversampled, gridding-corrected transform with the Kaiser-Bessel kernel of the forward model (relative
    error ~1e-3); frequencies outside the band are left as they are, except that the full band (``0.5``, the
    default) also drops the cube's corners beyond Nyquist (turned, they leave the grid: a symmetric map cannot
    hold them). ``volume`` ``(D, D, D)``.
    (A real-space trilinear rotation would low-pass every symmetrised gradient.)
    """
    size = volume.shape[0]
    matrices = np.asarray(matrices, np.float64)
    index, freqs = band_indices(size, band_cycles_per_pixel)
    ft = conventions.centred_fft3(jnp.asarray(volume, jnp.float32))
    padded_ft = projection.prepare_volume_ft(volume, oversampling=2)
    padded = padded_ft.shape[0]
    total = ft[tuple(index)]  # the identity, exact
    for g in matrices[1:]:
        points = jnp.asarray((freqs @ g) * padded + padded // 2, jnp.float32)  # rows g^T k, as (x, y, z)
        total = total + projection.interpolate(padded_ft, points, "kaiser_bessel", 2.0)
    if band_cycles_per_pixel >= 0.5:
        ft = jnp.zeros_like(ft)
    ft = ft.at[tuple(index)].set(total / len(matrices))
    return jnp.real(conventions.centred_ifft3(ft))
