"""A tiny GroEL-GroES set for tests and smoke runs: 200 particles of 32 x 32 at 8 A/px, SNR 0.05.

Command:   python -m recon.simulate --config experiments/configs/tiny_data.py --out /tmp/tiny
Wall time: a few seconds on a 2-core CPU.
"""

from recon.configs import simulate


def get_config():
    c = simulate.get_config()
    c.model = "third_party/1aon/1aon.pdb.gz"  # GroEL-GroES-(ADP)7, the paper's synthetic structure
    c.box_size = 32
    c.pixel_size_angstrom = 8.0
    c.num_particles = 200
    return c
