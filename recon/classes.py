"""Several maps from one dataset: the class as one more latent variable, beside the pose.

With ``K = classes > 1`` the run holds ``K`` maps ``V_1..V_K`` (one array ``(K, D, D, D)``) and an image's
likelihood marginalises class and pose: ``log p(I) = logsumexp_c [log pi_c + log p(I | V_c)]`` with
``p(I | V_c)`` the pose-marginalised likelihood of :mod:`recon.likelihood` and ``pi`` the class proportions. The
gradient with respect to ``V_c`` is the one-class gradient times the image's responsibility of class ``c``. ``pi``
is the mean class responsibility of the particles' latest visits, each share kept at least
``class_mixture.min_share`` (then renormalised), one EM step per minibatch.

How the maps part. From separate random starts the better map takes every particle at once, so, as RELION's 3D
classification starts its classes from one reference and random subsets of the particles: through the first ``class_mixture.tied_fraction`` of the levels the maps are one (one random start,
each map stepping along the mean of their gradients: a one-class reconstruction), then for
``class_mixture.random_split_levels`` levels each particle trains only its own class (a seeded random assignment:
the other classes' log prior is ``EXCLUDED``), so that the maps part as fits to different shares of the data, in
one frame; the class posteriors decide from then on. The class log-likelihoods are recorded throughout.

Optionally (``class_mixture.beta_start < 1``; off by default) the objective is tempered as cryoSPARC anneals its class similarity:
``L_beta(I) = (1 / beta) logsumexp_c [log pi_c + beta log p(I | V_c)]``, whose gradient weights class ``c`` by
``softmax_c(log pi_c + beta log p(I | V_c))``; ``beta`` rises geometrically to 1 over the first
``class_mixture.anneal_fraction`` of the schedule (:func:`beta_at`).

Each class has its own importance sampler per particle (one map's likely poses say nothing of another's): a
particle's sampler state for class ``c`` is row ``i K + c`` of the sampler arrays, updated from that class's own
pose posterior, so a visit costs ``K`` times a one-class visit.
"""

from __future__ import annotations

import numpy as np

from recon import conventions

NEG = -1e30
EXCLUDED = -1e30  # the class log prior of a class a particle may not belong to (its weight exactly 0)


def tempered_responsibilities(log_classes, log_prior, beta):
    """``softmax_c(log pi_c + beta log p(I | V_c))`` per particle: ``(B, K)``."""
    xp = conventions.array_module(log_classes, log_prior)
    joint = log_prior + beta * log_classes
    return xp.exp(joint - _logsumexp(xp, joint))


def _logsumexp(xp, a):
    top = xp.max(a, axis=-1, keepdims=True)
    return top + xp.log(xp.sum(xp.exp(a - top), axis=-1, keepdims=True))


def tempered_log_marginal(log_classes, log_prior, beta):
    """``(1 / beta) logsumexp_c [log pi_c + beta log p(I | V_c)]`` per particle ``(B,)``."""
    xp = conventions.array_module(log_classes, log_prior)
    return _logsumexp(xp, log_prior + beta * log_classes)[..., 0] / beta


def combine(per_class, log_prior, beta):
    """One pose result per particle from per-class results (fields with a leading class axis ``(K, B, ...)``,
    :class:`recon.likelihood.ParticleResult` or :class:`recon.likelihood.SampledResult`): the tempered objective
    as ``log_marginal``; pose posteriors, log marginals of evaluated points and expected residuals as the
    responsibility-weighted mixtures of the classes' (exhaustive results); the most probable pose of the most
    responsible class; ``log_classes`` ``(B, K)``: each class's ``log p(I | V_c)``. A sampled result's evaluated
    points differ from class to class: its ``log_phi_*`` are left out (None; the samplers read ``per_class``)."""
    import jax.numpy as jnp

    log_classes = jnp.moveaxis(per_class.log_marginal, 0, -1)  # (B, K)
    resp = tempered_responsibilities(log_classes, log_prior, beta)  # (B, K)
    combined_log = tempered_log_marginal(log_classes, log_prior, beta)
    r = jnp.moveaxis(resp, -1, 0)  # (K, B)
    fields = {"log_marginal": combined_log}
    for name in per_class._fields:
        value = getattr(per_class, name)
        if name in ("log_marginal", "log_classes", "per_class") or value is None:
            continue
        if name == "best":
            top = jnp.argmax(resp, axis=-1)  # (B,)
            fields[name] = jnp.take_along_axis(jnp.moveaxis(value, 0, 1), top[:, None, None], axis=1)[:, 0]
        elif name == "log_empty":
            fields[name] = value[0]
        elif name.startswith("log_phi"):  # each class drew its own points: per class only (``per_class``)
            fields[name] = None
        else:
            weights = r.reshape(r.shape + (1,) * (value.ndim - 2))
            fields[name] = jnp.sum(weights * value, axis=0)
    return type(per_class)(**fields, log_classes=log_classes)


def beta_at(iteration: int, anneal_iterations: int, beta_start: float) -> float:
    """The tempering exponent at ``iteration``: ``beta_start`` at 0, geometric to 1 at ``anneal_iterations``."""
    if anneal_iterations <= 0 or iteration >= anneal_iterations:
        return 1.0
    return float(beta_start ** (1.0 - iteration / anneal_iterations))


def responsibilities(log_classes: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """The class posterior per particle ``(N, K)`` at ``beta = 1`` from ``log p(I | V_c)`` ``(N, K)``."""
    return tempered_responsibilities(np.asarray(log_classes, np.float64), np.log(np.asarray(shares)), 1.0)


def updated_shares(log_classes: np.ndarray, shares: np.ndarray, min_share: float) -> np.ndarray:
    """One EM step for ``pi``: the mean class responsibility over the particles scored so far (rows with NaN, never
    visited with every class, left out), each share at least ``min_share``, summing to 1."""
    seen = np.all(np.isfinite(log_classes), axis=1)
    if not np.any(seen):
        return np.asarray(shares, np.float64)
    mean = responsibilities(log_classes[seen], shares).mean(axis=0)
    return floored(mean, min_share)


def floored(shares: np.ndarray, min_share: float) -> np.ndarray:
    """``shares`` with each at least ``min_share`` and the whole summing to 1 (the deficit taken from the others
    in proportion to what they hold above the floor)."""
    shares = np.asarray(shares, np.float64) / np.sum(shares)
    k = len(shares)
    min_share = min(min_share, 1.0 / k)
    low = shares < min_share
    if not np.any(low):
        return shares
    spare = shares[~low] - min_share
    out = np.full(k, min_share)
    out[~low] += spare / spare.sum() * (1.0 - k * min_share) if spare.sum() > 0 else 0.0
    return out


def assignments(log_classes: np.ndarray, shares: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per particle: the most probable class (0-based; -1 where never scored) and its posterior probability
    (NaN where never scored)."""
    seen = np.all(np.isfinite(log_classes), axis=1)
    cls = np.full(len(log_classes), -1, np.int64)
    top = np.full(len(log_classes), np.nan)
    if np.any(seen):
        resp = responsibilities(log_classes[seen], shares)
        cls[seen] = np.argmax(resp, axis=1)
        top[seen] = np.max(resp, axis=1)
    return cls, top


def matched_accuracy(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, list[int]]:
    """The share of particles whose class matches the truth under the best one-to-one matching of predicted
    classes to true ones (every permutation tried: K is small), and that matching (``match[c]`` = the true class
    of predicted class ``c``)."""
    import itertools

    labels_p, labels_t = np.unique(predicted), np.unique(truth)
    k = max(len(labels_p), len(labels_t), int(max(predicted.max(), truth.max())) + 1)
    counts = np.zeros((k, k), np.int64)
    np.add.at(counts, (predicted, truth), 1)
    best, match = -1, None
    for perm in itertools.permutations(range(k)):
        hits = sum(counts[c, perm[c]] for c in range(k))
        if hits > best:
            best, match = hits, list(perm)
    return best / len(predicted), match
