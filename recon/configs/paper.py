"""The paper's settings (Sec. 3-4), fixed rather than derived from the data: the base of every experiment config.
(default.py, the plain command's config, derives its settings from the data instead.)

Command:  python -m recon.reconstruct --particles P.star --workdir W --config recon/configs/paper.py
          [--config.KEY=VALUE ...]
Every field can be overridden on the command line, e.g. ``--config.prior.kind=car``.
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.automatic = False  # True: fields left at 0 / "auto" are derived from the data (recon/auto_settings.py)
    c.batch_size = 200  # minibatches of 200 particles (Sec. 3.2)
    c.max_table_elements = 0  # bounds particles per matrix product (chunk) in a minibatch; 0: CPU 6e6, GPU 2e8
    c.devices = 1  # data parallelism: split each minibatch's particles over this many devices (0: all; recon/step.py)
    c.remat = True  # recompute chunks in the backward pass (memory) rather than store them (speed)
    c.num_heldout = 100  # held-out particles for RREMSE (App. C); at most 10% of the data
    c.particle_radius_angstrom = 0.0  # 0: 40% of the box
    c.invert_contrast = False  # True for stacks with dark particles
    c.noise_model = "white"  # or "coloured": the likelihood whitened by the backgrounds' power spectrum
    c.noise_per_micrograph = False  # with noise_model coloured: a noise level per micrograph (recon/noise.py)
    c.polarity = "as_given"  # or "auto": detect dark particles from the data and invert them (recon/polarity.py)
    c.pixel_size_angstrom = 0.0  # 0: from the particle file
    c.symmetry = "C1"  # point group in RELION's conventions: C1, Cn, Dn, T, O, I (= I2), I1-I4 (recon/symmetry.py)

    c.schedule = ml_collections.ConfigDict()
    c.schedule.start_resolution_angstrom = 40.0  # omega from 1/40 A ...
    c.schedule.target_resolution_angstrom = 10.0  # ... to 1/10 A (clipped to 0.9 x Nyquist)
    c.schedule.level_ratio = 1.2  # consecutive levels at most this factor apart
    c.schedule.iterations_per_level = 300
    c.schedule.passes_per_level = 0.0  # > 0: each level lasts this many passes over the training set instead

    c.quadrature = ml_collections.ConfigDict()
    c.quadrature.angular_extent = "particle"  # angular step from the particle diameter ("box": the paper's code)
    c.quadrature.max_shift_angstrom = 0.0  # 0: 10% of the box
    c.quadrature.shift_sigma_angstrom = 0.0  # Gaussian shift prior; 0: 5% of the box
    c.quadrature.adapt_shifts = False  # True: before each level, widen the disk to 3.5 sigma of the measured offsets

    # Interpolation of the map's slices and the images' rotated transforms (zero-padded by the oversampling):
    # kaiser_bessel (width 4, ~1e-3 off the exact slice at 2x) | kaiser_bessel6 | linear (2.5% at 3x, 4x cheaper)
    c.likelihood_kernel = "kaiser_bessel"
    c.likelihood_oversampling = 2

    # Importance sampling over poses (Sec. 3.3, App. B): on by default; a particle's first visit sums exhaustively.
    c.sampling = ml_collections.ConfigDict()
    c.sampling.enabled = True
    c.sampling.start_iteration = 0  # exhaustive sums before this iteration (IS needs a formed map to pay off)
    c.sampling.s0 = 10.0  # samples = s0 x ESS of the proposal
    # annealing: with f = floor(tau / tau0), alpha = max(alpha_min, 2^(-f/4)), T = max(T_min, 2^(10/f))
    c.sampling.tau0 = 50.0
    c.sampling.tau0_passes = 0.0  # > 0: tau0 in passes over the training set instead (tau0 = this x minibatches)
    c.sampling.alpha_min = 0.05
    c.sampling.temperature_min = 1.25
    c.sampling.bandwidth_factor = 1.0  # kernel sigma = factor x spacing of the previous quadrature
    c.sampling.max_directions = 32  # slots per particle (state and samples per visit); a factor with fewer
    c.sampling.max_inplane = 16  # quadrature points than slots is summed exhaustively
    c.sampling.max_shifts = 16
    c.sampling.adapt_slots = False  # True: slots and draws per factor grow until at most max_capped_share of the
    c.sampling.max_capped_share = 0.01  # particles draw fewer than s0 x ESS (the max_* above: the starting slots)
    c.sampling.exhaustive_fraction = 0.5  # adapt_slots: a level whose draws would evaluate more of its poses sums all
    # adapt_slots: looser capped shares tried in turn at a level's start before it sums every pose (its posteriors
    # still broad), kept for that level's slot growth; () sums every pose there
    c.sampling.loose_capped_shares = ()
    # at each sampled level's start from the third, poses searched again over the first level's grid; particles
    # whose proposals lost their pose restart from that search (recon/training.py, search_again)
    c.sampling.search_again = False
    c.sampling.timed_trial = True  # adapt_slots: a sampled level's first minibatches timed against summing every pose
    c.sampling.probe_particles = 0  # > 0: per level, log p of this many held-out particles sampled vs summed exactly

    c.prior = ml_collections.ConfigDict()
    c.prior.kind = "exponential"  # exponential | uniform | car
    c.prior.scale = 0.1  # exponential rate = scale / typical density; CAR 1/sigma^2 = scale / typical^2

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.kind = "sagd"  # sagd | sgd | adam (optax, for ablations)
    c.optimizer.lipschitz_init = 1.0  # refined by the line search at the first iteration
    c.optimizer.line_search_every = 20
    c.optimizer.line_search = "minibatch"  # minibatch: bound along g_k (the paper); step: along the SAGD direction
    c.optimizer.lipschitz_halving_iterations = 150.0  # gradual decrease of L between line searches
    c.optimizer.stored_grad_dtype = "float32"  # or bfloat16 (halves SAGD's memory)
    c.optimizer.learning_rate = 1e-3  # optax only
    c.optimizer.momentum = 0.9  # sgd only

    # Gold standard (recon/gold_standard.py): a shared start through the levels coarser than split_resolution, then
    # two half sets refined independently; half maps, their FSC (0.143) next to the held-out RREMSE.
    c.gold_standard = ml_collections.ConfigDict()
    c.gold_standard.enabled = False
    c.gold_standard.split_resolution_angstrom = 25.0

    # Baselines of Fig. 9 (python -m recon.reconstruct --method projection_matching|em; recon/baselines.py).
    c.baselines = ml_collections.ConfigDict()
    c.baselines.epochs_per_level = 1  # all particles once per resolution level
    c.baselines.em_top_poses = 16  # EM: each particle enters the M-step at its 16 most probable poses
    c.baselines.wiener_snr = 1.0  # map = sum w CTF I / (sum w CTF^2 + 1/wiener_snr)

    c.init = ml_collections.ConfigDict()
    c.init.num_spheres = 40

    c.junk = ml_collections.ConfigDict()
    c.junk.model = "off"  # or "noise_class": each image may also be noise alone; junk down-weighted (recon/junk.py)
    c.junk.start_level_fraction = 0.5  # the class joins this far through the levels (once the map explains particles)

    c.amplitude = ml_collections.ConfigDict()
    c.amplitude.model = "off"  # or "per_particle": each particle's amplitude scale (recon/amplitude.py)
    c.amplitude.prior_sd = 0.3  # the scale's Gaussian prior around 1
    c.amplitude.start_level_fraction = 0.5  # estimated from this far through the levels on

    c.classes = 1  # maps reconstructed at once (recon/classes.py)
    c.class_mixture = ml_collections.ConfigDict()
    c.class_mixture.beta_start = 1.0  # the class likelihood's tempering exponent at the start (1: none), rising to 1 ...
    c.class_mixture.anneal_fraction = 0.5  # ... geometrically over this share of the schedule's iterations
    c.class_mixture.min_share = 0.05  # no class's proportion below this
    c.class_mixture.tied_fraction = 0.5  # this share of the levels: one map for all classes (one start, tied)
    c.class_mixture.random_split_levels = 1  # then this many levels: each map fitted to its own random share

    c.stop = ml_collections.ConfigDict()
    c.stop.max_iterations = 5000
    c.stop.max_minutes = 0.0  # 0: no limit
    c.stop.patience = 4  # held-out evaluations without improvement at the final level
    c.stop.min_improvement = 1e-4
    c.stop.divergence_factor = 10.0  # stop when a minibatch's objective exceeds this x an empty map's (0: never)
    c.stop.final_level_iterations = 1000  # for the ETA only

    c.output = ml_collections.ConfigDict()
    c.output.log_every = 10
    c.output.heldout_every = 50
    c.output.save_map_every = 100
    c.output.checkpoint_every = 50
    c.output.checkpoint_minutes = 5.0
    c.output.keep_checkpoints = 3
    c.output.final_pose_pass = True  # assign every particle's pose with the final map
    c.output.names_relative_to = ""  # poses.star's image names relative to this folder (RELION's project); "": its own
    return c
