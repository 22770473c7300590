"""GroEL-GroES and GroEL alone (the same model without the GroES chains O-U), 50/50, 10,000 particles of 64 x 64
at 5.6 A/px, SNR 0.05: a two-state set for multi-class ab initio (rlnClassNumber holds each particle's truth).

Command:  python -m recon.simulate --config experiments/configs/groel_mixture_data.py --out data/groel_mix50
          (80/20: --config.class_proportions=0.8,0.2; with 15 % junk: --config.junk_fraction=0.15)
Machine:  2-core CPU, about a minute.
Output:   particles.star, particles.mrcs, ground_truth_class_01.mrc (GroEL-GroES), ground_truth_class_02.mrc (GroEL).
"""

from experiments.configs import groel64_data


def get_config():
    c = groel64_data.get_config()
    c.model = "third_party/1aon/1aon.pdb.gz,third_party/1aon/1aon.pdb.gz#ABCDEFGHIJKLMN"
    c.class_proportions = "0.5,0.5"
    return c
