"""GroEL-GroES, 1,500 particles of 64 x 64 at 5.6 A/px, SNR 0.05: a small set, where the data rather than the
resolution schedule limit the map (the C7 comparison of experiments/configs/symmetry_c7.py:small).

Command:  python -m recon.simulate --config experiments/configs/groel64_small_data.py --out data/groel64_small
Machine:  2-core CPU, seconds.
"""

from experiments.configs import groel64_data


def get_config():
    c = groel64_data.get_config()
    c.num_particles = 1_500
    return c
