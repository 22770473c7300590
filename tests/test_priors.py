"""Priors: values and gradients against hand-derived formulas and finite differences."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from jax.test_util import check_grads

from recon import priors


def _volume(seed=0, size=6):
    return jnp.asarray(np.random.default_rng(seed).uniform(0, 2, (size,) * 3))


@pytest.mark.parametrize("kind", ["exponential", "uniform", "car"])
def test_prior_gradients_finite_differences(kind):
    with jax.enable_x64(True):
        v = jnp.asarray(np.random.default_rng(1).uniform(0, 2, (5, 5, 5)), jnp.float64)
        check_grads(lambda x: priors.energy(x, kind, 0.7), (v,), order=1, modes=["rev"], eps=1e-4)


def test_exponential_and_uniform_by_hand():
    v = _volume()
    assert np.isclose(float(priors.energy(v, "exponential", 2.5)), 2.5 * float(jnp.sum(v)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.grad(lambda x: priors.energy(x, "exponential", 2.5))(v)), 2.5)
    assert float(priors.energy(v, "uniform", 3.0)) == 0.0


def test_car_neighbour_mean_and_gradient_by_hand():
    v = np.asarray(_volume(2, 5), np.float64)
    padded = np.pad(v, 1)
    mean = np.zeros_like(v)
    for z in range(5):
        for y in range(5):
            for x in range(5):
                block = padded[z:z + 3, y:y + 3, x:x + 3]
                mean[z, y, x] = (block.sum() - block[1, 1, 1]) / 26.0
    np.testing.assert_allclose(np.asarray(priors.neighbour_mean(jnp.asarray(v))), mean, rtol=1e-6)
    # Energy 1/(2 s^2) V^T (I - W) V with symmetric W: gradient (V - W V) / s^2.
    grad = np.asarray(jax.grad(lambda x: priors.energy(x, "car", 4.0))(jnp.asarray(v, jnp.float32)))
    np.testing.assert_allclose(grad, 4.0 * (v - mean), rtol=1e-4, atol=1e-5)
    # A constant volume is smooth: only the boundary (zero outside) is penalised.
    const = jnp.ones((6, 6, 6))
    interior = np.asarray(jax.grad(lambda x: priors.energy(x, "car", 1.0))(const))[1:-1, 1:-1, 1:-1]
    np.testing.assert_allclose(interior, 0.0, atol=1e-6)
