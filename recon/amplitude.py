"""A per-particle amplitude scale: how strongly each image shows the map (ice thickness, dose, defocus-dependent
contrast that the CTF does not model).

The model of an image becomes ``a C P`` instead of ``C P``. At a pose, the log-likelihood as a function of ``a`` is
``-(|I|^2 - 2 a cross + a^2 quad) / 2`` (recon/likelihood.py's ``batch_pose_fit``); with a Gaussian prior of mean 1
and standard deviation ``prior_sd`` on ``a``, its maximum has the closed form
``a = (cross + 1 / prior_sd^2) / (quad + 1 / prior_sd^2)``: the least-squares scale where the image carries much
signal, shrunk towards 1 where it carries little. The plain command estimates it at each particle's most
probable pose after every visit from halfway through the levels (``amplitude.model = "per_particle"``, its
``start_level_fraction``), multiplies the particle's CTF by it (``rlnCtfScalefactor`` times ``a``) in every later
evaluation, and writes it to poses.star. The scale is kept within ``[MIN_SCALE, MAX_SCALE]``: an empty pick asks
for ``a`` near 0, which would make noise alone and the map's faint projection indistinguishable (recon/junk.py).
"""

from __future__ import annotations

import numpy as np

MIN_SCALE = 0.5
MAX_SCALE = 2.0
MODELS = ("off", "per_particle")


def map_scale(cross: np.ndarray, quad: np.ndarray, prior_sd: float) -> np.ndarray:
    """The scale maximising likelihood times prior, from the pose fit's terms (computed with scale 1)."""
    precision = 1.0 / prior_sd**2
    return np.clip((cross + precision) / (quad + precision), MIN_SCALE, MAX_SCALE)


def summary_line(scales: np.ndarray, estimated: np.ndarray) -> str:
    """run.log's account of the scales at the end."""
    if not estimated.any():
        return "amplitude scale: no particle visited since the scale joined; every scale is 1"
    q = np.percentile(scales[estimated], [5, 50, 95])
    return (f"amplitude scale of {int(estimated.sum())} particles: median {q[1]:.2f}, 5-95 % {q[0]:.2f}-{q[2]:.2f} "
            "(poses.star: rlnReconAmplitudeScale; the CTF of each particle is scaled by it)")
