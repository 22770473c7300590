"""GroEL-GroES, 40,000 particles of 128 x 128 at 2.8 A/px, SNR 0.05: the paper's synthetic dataset (Sec. 4).

Command:  python -m recon.simulate --config experiments/configs/groel128_data.py --out data/groel128
Machine:  2-core CPU, 5 min alone on the cores (more when shared); the H200 machine, 39 s.
Output:   a 2.6 GB particle stack, particles.star (RELION 3.1, true poses), ground_truth.mrc.
"""

from recon.configs import simulate


def get_config():
    c = simulate.get_config()
    c.model = "third_party/1aon/1aon.pdb.gz"  # GroEL-GroES-(ADP)7, the paper's synthetic structure
    c.box_size = 128
    c.pixel_size_angstrom = 2.8
    c.num_particles = 40_000
    return c
