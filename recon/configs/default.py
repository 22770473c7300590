"""The plain command's config: settings derived from the data (recon/auto_settings.py), on the paper's method.

Command:  python -m recon.reconstruct --particles P.star --workdir W [--config.KEY=VALUE ...]
Fields left at 0 (or "auto", or -1 for sampling.start_iteration) are chosen from the particle stack: particle
radius, shift range and prior, schedule (40 A to 0.9 x Nyquist, not finer than 9 A; levels in passes over the
data), minibatch size, when importance sampling starts, its annealing (in passes), interpolation. Any field
given on the command line is kept as given. The resolved settings are in WORKDIR/config.json and run.log.
"""

from recon.configs import paper


def get_config():
    c = paper.get_config()
    c.automatic = True
    c.noise_model = "coloured"  # noise power spectrum from the backgrounds (recon/noise.py)
    c.noise_per_micrograph = True  # each micrograph's noise level (recon/noise.py)
    c.polarity = "auto"  # dark particles detected and inverted, with a warning in run.log
    # junk.model = "noise_class" and amplitude.model = "per_particle" (recon/junk.py, recon/amplitude.py) stay off:
    # on a realistic low-SNR set they flagged half the good particles and drove the scales to their floor
    c.batch_size = 0
    c.particle_radius_angstrom = 0.0
    c.schedule.start_resolution_angstrom = 0.0
    c.schedule.target_resolution_angstrom = 0.0
    c.schedule.iterations_per_level = 0
    c.quadrature.max_shift_angstrom = 0.0
    c.quadrature.shift_sigma_angstrom = 0.0
    c.quadrature.adapt_shifts = True
    c.likelihood_kernel = "auto"
    c.likelihood_oversampling = 0
    c.optimizer.line_search = "auto"
    del c["remat"]
    c.remat = "auto"  # or True / False
    c.sampling.start_iteration = -1
    c.sampling.tau0 = 0.0  # from tau0_passes; a tau0 given in iterations wins
    c.sampling.tau0_passes = 0.1
    c.sampling.bandwidth_factor = 0.5  # kernels half the previous spacing: an ESS of a few points per factor
    c.sampling.max_directions = 16
    c.sampling.max_inplane = 8
    c.sampling.max_shifts = 8
    c.sampling.s0 = 3.0  # N = 3 ESS draws per factor (uncapped slots)
    c.sampling.adapt_slots = True
    c.sampling.probe_particles = 4
    c.stop.max_iterations = 100_000
    c.output.heldout_every = 25
    c.output.save_map_every = 25
    c.output.checkpoint_every = 25
    return c
