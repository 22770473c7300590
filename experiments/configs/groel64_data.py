"""GroEL-GroES, 10,000 particles of 64 x 64 at 5.6 A/px, SNR 0.05: the CPU-sized version of the paper's set.

Command:  python -m recon.simulate --config experiments/configs/groel64_data.py --out data/groel64
Machine:  2-core CPU, under a minute.
Output:   a 164 MB particle stack, particles.star (RELION 3.1, true poses), ground_truth.mrc.
"""

from recon.configs import simulate


def get_config():
    c = simulate.get_config()
    c.model = "third_party/1aon/1aon.pdb.gz"  # GroEL-GroES-(ADP)7, the paper's synthetic structure
    c.box_size = 64
    c.pixel_size_angstrom = 5.6
    c.num_particles = 10_000
    return c
