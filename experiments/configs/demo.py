"""The default demo's reconstruction (``./run.sh``): GroEL-GroES, 64 x 64 at 5.6 A/px, 4,000 particles at SNR 0.05,
from a random volume, about 8 minutes on a 2-core CPU, with importance sampling after the first two levels.

Command:  ./run.sh            (or python -m recon.demo)
Expected: FSC 0.143 against the ground truth about 18 A, FSC 0.5 between 22 and 32 A (measured on a 2-core CPU,
          default seed: 31.8 / 18.3 A in 8.0 minutes, 255 iterations; README "The demo").
"""

from experiments.configs import groel64_is


def get_config():
    c = groel64_is.get_config()
    c.schedule.target_resolution_angstrom = 14.8
    c.schedule.iterations_per_level = 50
    c.sampling.start_iteration = 100
    c.stop.max_iterations = 400
    c.stop.max_minutes = 8.0
    c.output.log_every = 10
    return c
