"""Junk as a second explanation of an image: noise alone (an empty map), beside the map's projections.

With the noise class on (``junk.model = "noise_class"``), an image's likelihood is the mixture
``p(I) = (1 - pi) p(I | V) + pi p(I | V = 0)``: ``p(I | V)`` the pose-marginalised likelihood under the map,
``p(I | 0)`` that of the image as noise alone, ``pi`` the junk share. The gradient of ``-log p(I)`` with respect
to ``V`` is the one-class gradient times the image's responsibility of the map class, so an image that noise
explains as well as the map (empty picks; blobs unlike any projection) barely moves the map: junk down-weighted
in closed form, no threshold. ``pi`` is the mean junk responsibility of the particles' latest visits (an EM
update, kept within ``[PRIOR_MIN, PRIOR_MAX]``). A particle is flagged as junk when its responsibility of the
noise class exceeds one half; its score is the log Bayes factor ``log p(I | V) - log p(I | 0)`` at its latest
visit (negative: noise explains it better than the map). Functions work on numpy and jax arrays alike.
"""

from __future__ import annotations

import numpy as np

from recon import conventions

PRIOR_MIN = 1e-3
PRIOR_MAX = 0.5
INITIAL_SHARE = 0.05  # the share when the class joins, before any particle is scored


def logit(share: float) -> float:
    """``log(pi / (1 - pi))`` of a junk share ``pi``."""
    return float(np.log(share) - np.log1p(-share))


def mixture_log_marginal(log_marginal, log_empty, junk_logit):
    """``log((1 - pi) p(I | V) + pi p(I | 0))`` per particle, ``pi = sigmoid(junk_logit)``."""
    xp = conventions.array_module(log_marginal, log_empty, junk_logit)
    log_keep = -xp.logaddexp(0.0, junk_logit)  # log(1 - pi)
    log_junk = -xp.logaddexp(0.0, -junk_logit)  # log pi
    return xp.logaddexp(log_marginal + log_keep, log_empty + log_junk)


def responsibility(log_bayes_factor, junk_logit):
    """Posterior probability of the noise class per particle from ``log p(I | V) - log p(I | 0)``."""
    xp = conventions.array_module(log_bayes_factor, junk_logit)
    return xp.exp(-xp.logaddexp(0.0, log_bayes_factor - junk_logit))  # sigmoid(logit - log BF), stable


def updated_share(log_bayes_factors: np.ndarray, share: float) -> float:
    """One EM step for ``pi``: the mean responsibility of the noise class over the particles' latest visits
    (``NaN`` entries, never visited with the class on, left out), within ``[PRIOR_MIN, PRIOR_MAX]``."""
    seen = log_bayes_factors[np.isfinite(log_bayes_factors)]
    if not len(seen):
        return share
    return float(np.clip(np.mean(responsibility(seen, logit(share))), PRIOR_MIN, PRIOR_MAX))


def flagged(log_bayes_factors: np.ndarray, share: float) -> np.ndarray:
    """Bool per particle: the noise class is the more probable explanation (never-scored particles: False)."""
    scored = np.isfinite(log_bayes_factors)
    out = np.zeros(len(log_bayes_factors), bool)
    out[scored] = responsibility(log_bayes_factors[scored], logit(share)) > 0.5
    return out
