"""Stochastic average gradient descent (Sec. 3.2, App. A, Algorithm 1) with positivity.

The objective is ``f(V) = sum_k f_k(V)`` over ``n`` minibatches, ``f_k = -sum_{i in k} log p(I_i | V) + E(V) / n``
with ``E`` the prior energy. SAGD keeps the last data gradient ``dV_k`` of every minibatch and their running sum
``g_hat``; a step on minibatch ``k`` replaces ``dV_k`` by the fresh gradient and moves

    V <- max(0, V - epsilon / L * (g_hat / m + grad E(V) / n))

with ``m`` the number of minibatches seen so far (Schmidt, Le Roux & Bach's SAG normalisation, so early steps are
not shrunk by unseen batches) and ``L`` a Lipschitz estimate of ``grad f_k``, found by the line search
``f_k(V) - f_k(V - g / L) >= |g|^2 / (2 L)`` and decreased gradually in between.

``line_search = "step"`` (an option; the default ``"minibatch"`` is the paper's test above) tests the same
quadratic bound along the direction ``d`` the step takes, ``f_k(V - d / L) <= f_k(V) - g.d / L + |d|^2 / (2 L)``:
the curvature of ``f_k`` along the averaged direction. A single minibatch's gradient lies on the few central
sections of its particles' poses, where the curvature is largest; when the posteriors are sharp (high SNR at low
frequency) the bound along ``g`` is several times the curvature along ``d`` and the steps shrink accordingly.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax import lax


class SAGDState(NamedTuple):
    """volume ``(D,D,D)``; grad_sum ``(D,D,D)``; stored_grads ``(n, D,D,D)`` (dtype may be bfloat16);
    seen ``(n,)`` bool; lipschitz ``()``; iteration ``()`` int32."""

    volume: jnp.ndarray
    grad_sum: jnp.ndarray
    stored_grads: jnp.ndarray
    seen: jnp.ndarray
    lipschitz: jnp.ndarray
    iteration: jnp.ndarray


def init(volume, num_batches: int, lipschitz: float, grad_dtype=jnp.float32) -> SAGDState:
    volume = jnp.asarray(volume, jnp.float32)
    return SAGDState(
        volume=volume, grad_sum=jnp.zeros_like(volume),
        stored_grads=jnp.zeros((num_batches, *volume.shape), grad_dtype),
        seen=jnp.zeros((num_batches,), bool), lipschitz=jnp.asarray(lipschitz, jnp.float32),
        iteration=jnp.asarray(0, jnp.int32))


def stored_gradient(state: SAGDState, batch_index):
    """Minibatch ``batch_index``'s stored gradient, float32 ``(D,D,D)``. A caller that donates ``state`` to
    :func:`update` computes this in a separate call and passes it as ``old_grad``: reading the slice in the same XLA
    computation that overwrites it in place makes XLA copy the whole ``stored_grads`` array first (measured on the
    CPU: a second copy of all stored gradients, 0.8 GB at 160,000 particles of 64 px)."""
    return lax.dynamic_index_in_dim(state.stored_grads, batch_index, keepdims=False).astype(jnp.float32)


def _replaced_sum(state: SAGDState, batch_index, data_grad, old_grad):
    """``g_hat`` with minibatch ``batch_index``'s stored gradient replaced by ``data_grad`` as it will be stored
    (rounded to the stored dtype, so that the sum stays the sum of ``stored_grads``)."""
    old = stored_gradient(state, batch_index) if old_grad is None else old_grad
    return state.grad_sum + data_grad.astype(state.stored_grads.dtype).astype(jnp.float32) - old


def _direction(grad_sum, seen, prior_grad_share):
    return grad_sum / jnp.maximum(jnp.sum(seen), 1).astype(jnp.float32) + prior_grad_share


def direction(state: SAGDState, batch_index, data_grad, prior_grad_share, old_grad=None):
    """The direction :func:`update` will move along, ``g_hat / m + grad E(V) / n`` with minibatch ``batch_index``'s
    stored gradient replaced by ``data_grad`` (for a line search along the step actually taken); pure."""
    seen = lax.dynamic_update_index_in_dim(state.seen, True, batch_index, axis=0)
    return _direction(_replaced_sum(state, batch_index, data_grad, old_grad), seen, prior_grad_share)


def update(state: SAGDState, batch_index, data_grad, prior_grad_share, epsilon, lipschitz,
           old_grad=None) -> SAGDState:
    """One SAGD step on minibatch ``batch_index`` with its fresh data gradient and ``grad E(V) / n``; pure.
    ``old_grad``: :func:`stored_gradient` of ``state`` (read here when omitted; see there for why a caller that
    donates ``state`` passes it). The stored gradients are updated in place when ``state`` is donated."""
    grad_sum = _replaced_sum(state, batch_index, data_grad, old_grad)
    stored = lax.dynamic_update_index_in_dim(state.stored_grads, data_grad.astype(state.stored_grads.dtype),
                                             batch_index, axis=0)
    seen = lax.dynamic_update_index_in_dim(state.seen, True, batch_index, axis=0)
    volume = jnp.maximum(state.volume - epsilon / lipschitz * _direction(grad_sum, seen, prior_grad_share), 0.0)
    return SAGDState(volume=volume, grad_sum=grad_sum, stored_grads=stored, seen=seen,
                     lipschitz=jnp.asarray(lipschitz, jnp.float32), iteration=state.iteration + 1)
