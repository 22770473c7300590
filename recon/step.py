"""The jitted pieces of one iteration, as pure functions built once per resolution level.

* ``gradient(volume, batch) -> ((f_k, ParticleResult), data_grad)``: the minibatch's data objective
  ``-sum mask * log p(I | V)`` and its gradient (the expensive part);
* ``objective(volume, batch) -> f_k``: data + prior share, forward only (for the Lipschitz line search);
* ``update(state, batch_index, data_grad, prior_grad_share, controls) -> state``: the SAGD (or optax) step with
  positivity (``prior_grad_share`` = grad E(V) / n, from :func:`prior_gradient_share`).

Shapes are static per level (the grid's arrays and a padded minibatch), so each compiles once per level; the
schedules' scalars are traced arguments (changing them never recompiles).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from recon import likelihood, priors, sagd
from recon.ctf import CTFParams


class Batch(NamedTuple):
    """A padded minibatch: images ``(B, D, D)`` (normalised), ctf fields ``(B,)``, mask ``(B,)`` (1 real, 0 pad),
    batch_index ``()`` (which SAGD slot)."""

    images: jnp.ndarray
    ctf: CTFParams
    mask: jnp.ndarray
    batch_index: jnp.ndarray


class Controls(NamedTuple):
    """Per-iteration scalars from the schedules and the line search."""

    epsilon: jnp.ndarray
    lipschitz: jnp.ndarray


class OptaxState(NamedTuple):
    volume: jnp.ndarray
    opt_state: Any
    iteration: jnp.ndarray


class StepFunctions(NamedTuple):
    """``gradient``/``objective``/``evaluate`` sum over the full quadrature (first visits); the ``*_sampled``
    variants take one more argument, the minibatch's :class:`recon.likelihood.SampleSet`, and sum over it (Eq. 12).
    The same samples are passed to every evaluation of one iteration, so the line search sees one objective."""

    gradient: Any
    objective: Any
    update: Any
    evaluate: Any
    gradient_sampled: Any = None
    objective_sampled: Any = None
    evaluate_sampled: Any = None


def make_step_functions(grid, pixel_size_angstrom: float, prior_kind: str, prior_strength: float,
                        num_batches: int, chunk_size: int = 25, optimizer: str = "sagd", optax_transform=None,
                        remat: bool = True, kernel: str = likelihood.SLICE_KERNEL,
                        sampled_chunk_size: int = 25, oversampling: int = 2) -> StepFunctions:
    """Pure functions for one resolution level (jit each once)."""

    def log_marginals(volume, images, ctf):
        return likelihood.batch_log_marginals(volume, images, ctf, grid, pixel_size_angstrom, chunk_size, remat,
                                              kernel, oversampling)

    def sampled_log_marginals(volume, images, ctf, samples):
        return likelihood.sampled_log_marginals(volume, images, ctf, samples, grid, pixel_size_angstrom,
                                                sampled_chunk_size, remat, kernel, oversampling)

    def data_objective(volume, batch: Batch, samples=None):
        if samples is None:
            result = log_marginals(volume, batch.images, batch.ctf)
        else:
            result = sampled_log_marginals(volume, batch.images, batch.ctf, samples)
        return -jnp.sum(batch.mask * result.log_marginal), result

    def prior_share(volume):
        return priors.energy(volume, prior_kind, prior_strength) / num_batches

    def gradient(volume, batch: Batch, samples=None):
        return jax.value_and_grad(data_objective, has_aux=True)(volume, batch, samples)

    def objective(volume, batch: Batch, samples=None):
        return data_objective(volume, batch, samples)[0] + prior_share(volume)

    if optimizer == "sagd":

        def update(state: sagd.SAGDState, batch_index, data_grad, prior_grad_share, controls: Controls):
            return sagd.update(state, batch_index, data_grad, prior_grad_share, controls.epsilon,
                               controls.lipschitz)

    else:

        def update(state: OptaxState, batch_index, data_grad, prior_grad_share, controls: Controls):
            del batch_index, controls
            grad = data_grad + prior_grad_share
            updates, opt_state = optax_transform.update(grad, state.opt_state, state.volume)
            volume = jnp.maximum(optax.apply_updates(state.volume, updates), 0.0)
            return OptaxState(volume, opt_state, state.iteration + 1)

    return StepFunctions(gradient=lambda v, b: gradient(v, b), objective=lambda v, b: objective(v, b), update=update,
                         evaluate=log_marginals, gradient_sampled=gradient, objective_sampled=objective,
                         evaluate_sampled=sampled_log_marginals)


def prior_gradient_share(volume, prior_kind: str, prior_strength: float, num_batches: int):
    return jax.grad(lambda v: priors.energy(v, prior_kind, prior_strength))(volume) / num_batches


def line_search(objective, volume, value, grad, lipschitz: float, max_doublings: int = 40,
                max_halvings: int = 30, direction=None) -> float:
    """Host-side Lipschitz search: the smallest ``L = lipschitz * 2^j`` with the quadratic upper bound
    ``f(V - d/L) <= f(V) - g.d / L + |d|^2 / (2L)`` along ``d`` (``direction``, default ``grad``: then the
    classic ``f(V) - f(V - g/L) >= |g|^2 / (2L)``), halving while it holds and doubling until it does."""
    d = grad if direction is None else direction
    d2 = float(jnp.sum(d * d))
    gd = float(jnp.sum(grad * d))
    if d2 == 0.0:
        return lipschitz

    def ok(lip):
        return float(objective(volume - d / lip)) <= float(value) - gd / lip + d2 / (2.0 * lip)

    lip = float(lipschitz)
    if ok(lip):
        for _ in range(max_halvings):
            if not ok(lip * 0.5):
                break
            lip *= 0.5
        return lip
    for _ in range(max_doublings):
        lip *= 2.0
        if ok(lip):
            return lip
    return lip
