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

import functools

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from recon import classes as classes_lib
from recon import junk, likelihood, priors, sagd
from recon.ctf import CTFParams


class Batch(NamedTuple):
    """A padded minibatch: images ``(B, D, D)`` (normalised), ctf fields ``(B,)``, mask ``(B,)`` (1 real, 0 pad),
    batch_index ``()`` (which SAGD slot), junk_logit ``(B,)`` (the noise class's prior log-odds, recon/junk.py;
    read only by step functions built with ``junk_class``), class_prior: ``(log pi (B, K), beta ())`` of a
    several-map run (each particle's class log prior) (recon/classes.py; read only by step functions built with ``classes > 1``)."""

    images: jnp.ndarray
    ctf: CTFParams
    mask: jnp.ndarray
    batch_index: jnp.ndarray
    junk_logit: jnp.ndarray = None
    class_prior: tuple = None


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


PARTICLES = "particles"  # the mesh axis along which a minibatch's particles are split


def make_mesh(num_devices: int):
    """A 1-D mesh over the first ``num_devices`` devices (0: all), axis :data:`PARTICLES`; None for one device.
    Under ``jax.distributed`` the devices are those of every process."""
    devices = jax.devices()
    n = len(devices) if num_devices == 0 else num_devices
    if n > len(devices):
        raise ValueError(f"devices = {num_devices}, but JAX sees {len(devices)}")
    return None if n == 1 else jax.sharding.Mesh(devices[:n], (PARTICLES,))


def particle_sharding(mesh):
    """The shardings of a minibatch's arrays on ``mesh``: (split along the particles, replicated)."""
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(mesh, PartitionSpec(PARTICLES)), NamedSharding(mesh, PartitionSpec())


def _put(array, sharding):
    """A global array with ``sharding`` from a value every process holds whole (each process fills the shards of
    its own devices, so this works under ``jax.distributed`` too); an array already placed so is returned as it is."""
    if isinstance(array, jax.Array) and array.sharding.is_equivalent_to(sharding, array.ndim):
        return array
    host = np.asarray(jax.device_get(array))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def place_batch(batch: Batch, mesh, samples=None):
    """``batch`` (and ``samples``) split across ``mesh`` along the particles (no-op without a mesh)."""
    if mesh is None:
        return batch, samples
    split, replicated = particle_sharding(mesh)
    batch = Batch(_put(batch.images, split), jax.tree_util.tree_map(lambda a: _put(a, split), batch.ctf),
                  _put(batch.mask, split), _put(batch.batch_index, replicated),
                  None if batch.junk_logit is None else _put(batch.junk_logit, split),
                  None if batch.class_prior is None else (_put(batch.class_prior[0], split),
                                                          _put(batch.class_prior[1], replicated)))
    if samples is not None:
        samples = jax.tree_util.tree_map(lambda a: _put(a, split), samples)
    return batch, samples


def replicate(tree, mesh):
    """Every array of ``tree`` replicated on ``mesh`` (the map, the optimiser state); no-op without a mesh."""
    if mesh is None:
        return tree
    replicated = particle_sharding(mesh)[1]
    return jax.tree_util.tree_map(lambda a: _put(a, replicated), tree)


def replicated_jit(mesh):
    """``jax.jit`` whose outputs are replicated on ``mesh`` (plain ``jax.jit`` without a mesh). Under
    ``jax.distributed`` an output that XLA chose to shard spans other processes' devices and cannot be read on the
    host; replicated, every process holds it whole."""
    if mesh is None:
        return jax.jit
    replicated = particle_sharding(mesh)[1]
    return functools.partial(jax.jit, out_shardings=replicated)


def make_step_functions(grid, pixel_size_angstrom: float, prior_kind: str, prior_strength: float,
                        num_batches: int, chunk_size: int = 25, optimizer: str = "sagd", optax_transform=None,
                        remat: bool = True, kernel: str = likelihood.SLICE_KERNEL,
                        sampled_chunk_size: int = 25, oversampling: int = 2, mesh=None,
                        junk_class: bool = False, classes: int = 1, tied: bool = False) -> StepFunctions:
    """Pure functions for one resolution level (jit each once).

    ``classes > 1``: the volume is ``(K, D, D, D)``, one map per class, and the likelihood marginalises the class
    (recon/classes.py) with ``batch.class_prior``; ``evaluate``/``evaluate_sampled`` then take the class prior as
    their last argument, and sample sets hold ``K`` rows per particle (each class's draws, particle-major).
    ``tied``: the maps are known to be equal (recon/classes.py): the first alone is evaluated, with one sample row
    per particle, and its results stand for every class's (the gradient reaches the first map only); the prior
    counts once (each map's weighted ``1 / K``).

    ``junk_class``: the data objective is the mixture of the map and noise alone (recon/junk.py) with each
    particle's prior log-odds ``batch.junk_logit``; without it, the map alone (``junk_logit`` unread).

    ``mesh`` (:func:`make_mesh`): data parallelism. The likelihood functions run under ``shard_map``, each device
    on its share of the minibatch's particles (``chunk_size`` counts the particles of one device), the map
    replicated, the data objective and its gradient summed across devices (``psum``), the per-particle results
    gathered (``all_gather``), so that everything a step returns is replicated and readable by every process. The
    update and the prior run replicated."""

    def over_classes(one_map, volume, class_prior, images, ctf, samples=None):
        """``one_map`` for a single map, or the class-marginalised result of every map of ``volume`` (``samples``
        then hold ``K`` rows per particle, particle-major: each class's own draws), with the one-map results in
        ``per_class`` (the same layout)."""
        if classes == 1:
            return one_map(volume, images, ctf) if samples is None else one_map(volume, images, ctf, samples)
        n = images.shape[0]
        if tied:
            one = one_map(volume[0], images, ctf) if samples is None else one_map(volume[0], images, ctf, samples)
            per = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a[None], (classes,) + a.shape), one)
        elif samples is None:
            per = jax.lax.map(lambda v: one_map(v, images, ctf), volume)
        else:
            by_class = jax.tree_util.tree_map(lambda a: jnp.moveaxis(a.reshape(n, classes, *a.shape[1:]), 1, 0),
                                              samples)
            per = jax.lax.map(lambda vs: one_map(vs[0], images, ctf, vs[1]), (volume, by_class))
        flat = jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, 0, 1).reshape(n * classes, *a.shape[2:]), per)
        return classes_lib.combine(per, *class_prior)._replace(per_class=flat)

    def one_map_log_marginals(volume, images, ctf):
        return likelihood.batch_log_marginals(volume, images, ctf, grid, pixel_size_angstrom, chunk_size, remat,
                                              kernel, oversampling)

    def one_map_sampled(volume, images, ctf, samples):
        return likelihood.sampled_log_marginals(volume, images, ctf, samples, grid, pixel_size_angstrom,
                                                sampled_chunk_size, remat, kernel, oversampling)

    def log_marginals(volume, images, ctf, class_prior=None):
        return over_classes(one_map_log_marginals, volume, class_prior, images, ctf)

    def sampled_log_marginals(volume, images, ctf, samples, class_prior=None):
        return over_classes(one_map_sampled, volume, class_prior, images, ctf, samples)

    def data_objective(volume, batch: Batch, samples=None):
        if samples is None:
            result = log_marginals(volume, batch.images, batch.ctf, batch.class_prior)
        else:
            result = sampled_log_marginals(volume, batch.images, batch.ctf, samples, batch.class_prior)
        log_p = result.log_marginal
        if junk_class:
            log_p = junk.mixture_log_marginal(log_p, result.log_empty, batch.junk_logit)
        return -jnp.sum(batch.mask * log_p), result

    def prior_share(volume):  # tied: the K equal maps are one, with one prior
        return priors.energy(volume, prior_kind, prior_strength) / num_batches / (classes if tied else 1)

    def local_gradient(volume, batch: Batch, samples=None):
        return jax.value_and_grad(data_objective, has_aux=True)(volume, batch, samples)

    gradient, data_value = local_gradient, lambda v, b, s=None: data_objective(v, b, s)[0]
    evaluate, evaluate_sampled = log_marginals, sampled_log_marginals
    if mesh is not None:
        from jax.sharding import PartitionSpec

        split, rep = PartitionSpec(PARTICLES), PartitionSpec()

        def batch_spec(batch):
            return Batch(images=split, ctf=split, mask=split, batch_index=rep,
                         junk_logit=None if batch.junk_logit is None else split,
                         class_prior=None if batch.class_prior is None else (split, rep))

        def gather(result):  # per-particle outputs of every device, in minibatch order, on every device
            return jax.tree_util.tree_map(lambda a: jax.lax.all_gather(a, PARTICLES, tiled=True), result)

        def gradient(volume, batch: Batch, samples=None):
            def local(v, b, s):
                (value, result), grad = local_gradient(v, b, s)
                return (jax.lax.psum(value, PARTICLES), gather(result)), jax.lax.psum(grad, PARTICLES)

            return jax.shard_map(local, mesh=mesh, check_vma=False, in_specs=(rep, batch_spec(batch), split),
                                 out_specs=((rep, rep), rep))(volume, batch, samples)

        def data_value(volume, batch: Batch, samples=None):
            def local(v, b, s):
                return jax.lax.psum(data_objective(v, b, s)[0], PARTICLES)

            return jax.shard_map(local, mesh=mesh, check_vma=False, in_specs=(rep, batch_spec(batch), split),
                                 out_specs=rep)(volume, batch, samples)

        def split_evaluation(fn, per_particle_args):
            def run(volume, *args):  # images, ctf[, samples]: split along the particles; [class prior]: not
                per_particle, rest = args[:per_particle_args], args[per_particle_args:]
                return jax.shard_map(lambda v, r, *p: gather(fn(v, *p, *r)), mesh=mesh, check_vma=False,
                                     in_specs=(rep, rep) + (split,) * len(per_particle),
                                     out_specs=rep)(volume, rest, *per_particle)
            return run

        evaluate = split_evaluation(log_marginals, 2)
        evaluate_sampled = split_evaluation(sampled_log_marginals, 3)

    def objective(volume, batch: Batch, samples=None):
        return data_value(volume, batch, samples) + prior_share(volume)

    if optimizer == "sagd":

        def update(state: sagd.SAGDState, batch_index, data_grad, prior_grad_share, controls: Controls,
                   old_grad=None):
            return sagd.update(state, batch_index, data_grad, prior_grad_share, controls.epsilon,
                               controls.lipschitz, old_grad)

    else:

        def update(state: OptaxState, batch_index, data_grad, prior_grad_share, controls: Controls,
                   old_grad=None):
            del batch_index, controls, old_grad
            grad = data_grad + prior_grad_share
            updates, opt_state = optax_transform.update(grad, state.opt_state, state.volume)
            volume = jnp.maximum(optax.apply_updates(state.volume, updates), 0.0)
            return OptaxState(volume, opt_state, state.iteration + 1)

    return StepFunctions(gradient=lambda v, b: gradient(v, b), objective=lambda v, b: objective(v, b), update=update,
                         evaluate=evaluate, gradient_sampled=gradient, objective_sampled=objective,
                         evaluate_sampled=evaluate_sampled)


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
