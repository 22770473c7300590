"""Random initial volume (Fig. 5 of the paper): a sum of random solid spheres inside the particle radius."""

from __future__ import annotations

import numpy as np

import jax
import jax.numpy as jnp

from recon import conventions


def random_spheres(key, size: int, radius_pixels: float, num_spheres: int = 40, smooth_pixels: float = 1.0):
    """``(D, D, D)`` float32 >= 0: ``num_spheres`` spheres with random centres and radii (10-30% of the particle
    radius), each inside the particle radius, edges softened over ``smooth_pixels``; peak value about 1."""
    k_centre, k_radius, k_amp = jax.random.split(key, 3)
    radii = radius_pixels * jax.random.uniform(k_radius, (num_spheres,), minval=0.1, maxval=0.3)
    direction = jax.random.normal(k_centre, (num_spheres, 3))
    direction = direction / jnp.linalg.norm(direction, axis=-1, keepdims=True)
    k_r = jax.random.fold_in(k_centre, 1)
    distance = (radius_pixels - radii) * jax.random.uniform(k_r, (num_spheres,)) ** (1 / 3)
    centres = direction * distance[:, None]
    amplitude = jax.random.uniform(k_amp, (num_spheres,), minval=0.5, maxval=1.0)
    c = jnp.asarray(conventions.box_coordinates(size), jnp.float32)
    z, y, x = jnp.meshgrid(c, c, c, indexing="ij")
    volume = jnp.zeros((size,) * 3, jnp.float32)
    for i in range(num_spheres):
        r = jnp.sqrt((x - centres[i, 0]) ** 2 + (y - centres[i, 1]) ** 2 + (z - centres[i, 2]) ** 2)
        volume = volume + amplitude[i] * jax.nn.sigmoid((radii[i] - r) / (0.3 * smooth_pixels))
    return volume / jnp.maximum(volume.max(), 1e-6)


def support_mask(size: int, radius_pixels: float) -> np.ndarray:
    c = conventions.box_coordinates(size)
    r2 = c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2
    return r2 <= radius_pixels**2
