r"""Ab initio GroEL-GroES at 64 x 64, 5.6 A/px (10,000 particles, SNR 0.05) with importance sampling: eight levels
from 40 to 12.5 A (0.9 x Nyquist), 80 iterations each; the first two sum every pose, sampling from iteration 160,
annealed ten times faster than the paper's 5,000-iteration runs (tau0 = 10).

Command:  python -m recon.simulate --config experiments/configs/groel64_data.py --out data/groel64
          python -m recon.reconstruct --particles data/groel64/particles.star --workdir runs/groel64_is \
              --config experiments/configs/groel64_is.py
          python -m recon.evaluate --map runs/groel64_is/final.mrc --reference data/groel64/ground_truth.mrc
Machine:  2-core CPU, at most 30 min.
Expected: FSC 0.5 against the truth of 15 A or better within 30 min. Numbers: experiments/README.md,
          experiments/results/is_curve_groel64_cpu.json.
"""

from experiments.configs import groel64


def get_config():
    c = groel64.get_config()
    c.schedule.start_resolution_angstrom = 40.0
    c.schedule.target_resolution_angstrom = 12.5  # 0.9 x Nyquist
    c.schedule.iterations_per_level = 80
    c.likelihood_kernel = "linear"  # cheaper than Kaiser-Bessel; 3x oversampling keeps the slice accurate
    c.likelihood_oversampling = 3
    c.sampling.start_iteration = 160
    c.sampling.tau0 = 10.0
    c.sampling.bandwidth_factor = 0.5  # kernels half the previous spacing: ESS of a few points per factor
    c.sampling.max_directions = 16
    c.sampling.max_inplane = 8
    c.sampling.max_shifts = 8
    c.stop.max_minutes = 30.0
    c.stop.max_iterations = 5000
    c.output.heldout_every = 25
    c.output.save_map_every = 25
    c.output.checkpoint_every = 25
    return c
