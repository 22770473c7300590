"""Priors on the density (Sec. 3.1 and Sec. 4 "Comparing Priors"): each is ``energy(volume, strength) -> scalar``,
the negative log prior density up to a constant. Positivity is enforced by the optimiser (projection after every
step), not here.

* exponential: ``p(V_i) = lambda exp(-lambda V_i)`` (the paper's default), energy ``lambda * sum_i V_i``.
* uniform: improper ``p(V_i) ∝ 1``, energy 0.
* car: conditionally autoregressive, ``p(V_i | V_-i) = N(V_i | mean of the 26 neighbours, sigma^2)``; the joint
  energy is ``1/(2 sigma^2) * V^T (I - W) V`` with ``W`` the 26-neighbour averaging (zero outside the box), whose
  gradient is ``(V - W V) / sigma^2``. ``strength = 1 / sigma^2``.
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp


def neighbour_mean(volume):
    """Mean of the 26 neighbours of every voxel (zero outside the box): ``(D, D, D)``."""
    size = volume.shape
    padded = jnp.pad(volume, 1)
    total = 0.0
    for dz, dy, dx in itertools.product((0, 1, 2), repeat=3):
        if (dz, dy, dx) == (1, 1, 1):
            continue
        total = total + padded[dz:dz + size[0], dy:dy + size[1], dx:dx + size[2]]
    return total / 26.0


def exponential(volume, strength):
    return strength * jnp.sum(volume)


def uniform(volume, strength):
    del strength
    return jnp.zeros((), volume.dtype)


def car(volume, strength):
    return 0.5 * strength * jnp.sum(volume * (volume - neighbour_mean(volume)))


PRIORS = {"exponential": exponential, "uniform": uniform, "car": car}


def energy(volume, kind: str, strength):
    """Negative log prior of ``volume`` under prior ``kind`` (one of :data:`PRIORS`): one map ``(D, D, D)``, or the
    sum over the maps of a several-class run ``(K, D, D, D)`` (each map its own prior)."""
    if volume.ndim == 4:
        return sum(PRIORS[kind](v, strength) for v in volume)
    return PRIORS[kind](volume, strength)
