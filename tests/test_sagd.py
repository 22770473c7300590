"""SAGD on a problem with a known minimiser, and the Lipschitz line search."""

import numpy as np

import jax
import jax.numpy as jnp

from recon import sagd
from recon.step import line_search


def _problem(seed=0, n_batches=8, rows=12, dim=10):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n_batches, rows, dim))
    x_star = rng.uniform(0.5, 2.0, dim)  # positive: the projection does not bind at the solution
    b = np.einsum("krd,d->kr", a, x_star)
    return jnp.asarray(a), jnp.asarray(b), x_star


def test_sagd_converges_to_the_least_squares_minimiser():
    a, b, x_star = _problem()
    n = a.shape[0]

    def f_k(x, k):
        r = a[k] @ x - b[k]
        return 0.5 * jnp.sum(r * r)

    grad = jax.jit(jax.value_and_grad(f_k))
    state = sagd.init(jnp.zeros(a.shape[-1]), n, lipschitz=1.0)
    rng = np.random.default_rng(1)
    for it in range(3000):
        k = int(rng.integers(n))
        value, g = grad(state.volume, k)
        lip = float(state.lipschitz)
        if it % 20 == 0:
            lip = line_search(lambda v: f_k(v, k), state.volume, value, g, lip)
        else:
            lip *= 2 ** (-1 / 150)
        state = sagd.update(state, k, g, jnp.zeros_like(g), 1 / 16 if it > 300 else 1.0, lip)
    np.testing.assert_allclose(np.asarray(state.volume), x_star, atol=1e-3)
    assert int(state.iteration) == 3000


def test_sagd_keeps_the_sum_of_stored_gradients_and_positivity():
    state = sagd.init(jnp.ones(4), 3, 1.0)
    g1, g2 = jnp.array([1.0, 2, 3, 4]), jnp.array([10.0, 0, 0, 0])
    state = sagd.update(state, 0, g1, jnp.zeros(4), 1.0, 1.0)
    state = sagd.update(state, 2, g2, jnp.zeros(4), 1.0, 1.0)
    state = sagd.update(state, 0, g1 * 2, jnp.zeros(4), 1.0, 1.0)
    np.testing.assert_allclose(np.asarray(state.grad_sum), np.asarray(2 * g1 + g2))
    np.testing.assert_allclose(np.asarray(state.grad_sum), np.asarray(state.stored_grads.sum(0)))
    assert np.all(np.asarray(state.volume) >= 0) and int(state.seen.sum()) == 2


def test_line_search_returns_a_valid_and_nearly_smallest_constant():
    rng = np.random.default_rng(3)
    h = rng.normal(size=(6, 6))
    h = h @ h.T + np.eye(6)  # f = x^T H x / 2: gradient Lipschitz constant = largest eigenvalue
    f = lambda x: 0.5 * x @ jnp.asarray(h) @ x  # noqa: E731
    x = jnp.asarray(rng.normal(size=6))
    g = jnp.asarray(h) @ x
    for start in (1e-3, 1.0, 1e4):
        lip = line_search(f, x, f(x), g, start)
        assert float(f(x) - f(x - g / lip)) >= float(g @ g) / (2 * lip) - 1e-9
        assert lip <= 2 * np.linalg.eigvalsh(h).max() + 1e-9


def test_optax_ablation_optimisers_step_and_keep_positivity():
    import optax

    from recon import likelihood, quadrature
    from recon import step as step_lib
    from recon.ctf import CTFParams
    from tests.conftest import blob_volume

    vol, _ = blob_volume(12, seed=1)
    rule = quadrature.make_quadrature(1 / 30.0, 60.0, 6.0)
    grid = likelihood.make_grid(12, 5.0, rule, 1 / 30.0)
    images = jnp.asarray(np.random.default_rng(0).normal(size=(5, 12, 12)), jnp.float32)
    ctf = CTFParams(*(jnp.full((5,), v, jnp.float32) for v in (15000, 15000, 0, 300, 2.7, 0.1, 0, 0, 1)))
    batch = step_lib.Batch(images, ctf, jnp.ones(5), jnp.asarray(0))
    for transform in (optax.adam(1e-2), optax.sgd(1e-4, momentum=0.9)):
        fns = step_lib.make_step_functions(grid, 5.0, "exponential", 0.1, 1, 5, "adam", transform)
        state = step_lib.OptaxState(jnp.asarray(vol, jnp.float32), transform.init(jnp.asarray(vol, jnp.float32)),
                                    jnp.asarray(0))
        (_, _), grad = jax.jit(fns.gradient)(state.volume, batch)
        share = step_lib.prior_gradient_share(state.volume, "exponential", 0.1, 1)
        new = jax.jit(fns.update)(state, 0, grad, share, step_lib.Controls(jnp.asarray(1.0), jnp.asarray(1.0)))
        assert int(new.iteration) == 1
        assert np.all(np.asarray(new.volume) >= 0) and not np.allclose(new.volume, vol)


def test_line_search_along_a_direction_finds_the_curvature_along_it():
    """Along ``d`` the bound f(x - d/L) <= f(x) - g.d/L + |d|^2/(2L) holds for a quadratic iff L >= d^T H d / |d|^2
    (hand-derived), which can be far below the largest eigenvalue (the bound along g)."""
    h = np.diag([1000.0, 1.0, 1.0, 1.0])
    f = lambda x: 0.5 * x @ jnp.asarray(h) @ x  # noqa: E731
    x = jnp.asarray([1.0, 1.0, 1.0, 1.0])
    g = jnp.asarray(h) @ x
    d = jnp.asarray([0.01, 1.0, 1.0, 1.0])  # mostly in the flat directions
    curvature = float(d @ jnp.asarray(h) @ d / (d @ d))
    lip = line_search(f, x, f(x), g, 1.0, direction=d)
    assert curvature <= lip < 2 * curvature
    lip_g = line_search(f, x, f(x), g, 1.0)
    assert lip_g > 100 * lip  # along g the curvature is ~1000


def test_direction_is_the_direction_the_update_moves_along():
    state = sagd.init(jnp.full(4, 100.0), 3, 1.0)
    state = sagd.update(state, 1, jnp.array([1.0, 2, 3, 4]), jnp.zeros(4), 1.0, 1.0)
    fresh, prior = jnp.array([4.0, 0, -2, 1]), jnp.array([0.5, 0.5, 0.5, 0.5])
    d = sagd.direction(state, 0, fresh, prior)
    np.testing.assert_allclose(np.asarray(d), (np.array([1.0, 2, 3, 4]) + np.array([4.0, 0, -2, 1])) / 2 + 0.5)
    moved = sagd.update(state, 0, fresh, prior, 1.0, 4.0)
    np.testing.assert_allclose(np.asarray(state.volume - moved.volume), np.asarray(d) / 4.0, rtol=1e-6)


def test_the_donated_update_overwrites_the_stored_gradients_in_place_without_a_copy():
    """The step reads the old gradient in a separate call (sagd.stored_gradient): XLA then updates the donated
    stored gradients in place; the whole array is never copied (a copy of n maps is the dominant memory term)."""
    n, shape = 16, (12, 12, 12)
    state = sagd.init(jnp.ones(shape), n, 1.0)
    state = sagd.update(state, 3, jnp.full(shape, 2.0), jnp.zeros(shape), 1.0, 1.0)
    update = jax.jit(sagd.update, donate_argnums=0)
    k, g = jnp.asarray(3, jnp.int32), jnp.full(shape, 5.0)
    old = jax.jit(sagd.stored_gradient)(state, k)
    hlo = update.lower(state, k, g, jnp.zeros(shape), 1.0, 1.0, old).compile().as_text()
    whole = f"f32[{n},{shape[0]},{shape[1]},{shape[2]}]"
    assert not [line for line in hlo.splitlines() if " copy(" in line and whole in line.split("=")[1][:40]]
    pointer = state.stored_grads.unsafe_buffer_pointer()
    new = update(state, k, g, jnp.zeros(shape), 1.0, 1.0, old)
    assert new.stored_grads.unsafe_buffer_pointer() == pointer
    np.testing.assert_allclose(np.asarray(new.grad_sum), 5.0)  # 2 replaced by 5 at slot 3, the only one seen
    np.testing.assert_allclose(np.asarray(new.stored_grads[3]), 5.0)
