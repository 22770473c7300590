"""The demo's reconstruction (``./run.sh`` or ``python -m recon.demo``): GroEL-GroES, 4,000 particles of 64 x 64 at
5.6 A/px, SNR 0.05, from a random volume; exhaustive sums for the first two levels, then importance sampling.
Settings fixed for this one dataset (the plain command derives them from the data instead: default.py).

Expected: about 8 minutes on a 2-core CPU; FSC 0.5 against the ground truth between 22 and 32 A.
"""

from recon.configs import paper


def groel_64(c):
    """``c`` set for GroEL-GroES at 64 x 64, 5.6 A/px (the demo's data and the 64-px benchmark configs')."""
    c.particle_radius_angstrom = 120.0  # GroEL-GroES reaches 115 A from its centre
    c.quadrature.max_shift_angstrom = 25.0
    c.remat = False  # the 64^3 problem fits in memory: skip the recomputation
    c.schedule.start_resolution_angstrom = 40.0
    return c


def get_config():
    c = groel_64(paper.get_config())
    c.schedule.target_resolution_angstrom = 14.8
    c.schedule.iterations_per_level = 50
    c.likelihood_kernel = "linear"  # cheaper than Kaiser-Bessel; 3x oversampling keeps the slice accurate
    c.likelihood_oversampling = 3
    c.sampling.start_iteration = 100
    c.sampling.tau0 = 10.0
    c.sampling.bandwidth_factor = 0.5  # kernels half the previous spacing: ESS of a few points per factor
    c.sampling.max_directions = 16
    c.sampling.max_inplane = 8
    c.sampling.max_shifts = 8
    c.stop.max_minutes = 8.0
    c.stop.max_iterations = 400
    c.output.log_every = 10
    c.output.heldout_every = 25
    c.output.save_map_every = 25
    c.output.checkpoint_every = 25
    return c
