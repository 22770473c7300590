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

from recon.configs import demo


def get_config():
    c = demo.get_config()  # the same settings, with a finer target and longer levels
    c.schedule.target_resolution_angstrom = 12.5  # 0.9 x Nyquist
    c.schedule.iterations_per_level = 80
    c.sampling.start_iteration = 160
    c.stop.max_minutes = 30.0
    c.stop.max_iterations = 5000
    c.output.log_every = 5
    return c
