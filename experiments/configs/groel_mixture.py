"""Two-class ab initio on the GroEL-GroES / GroEL set: the plain command's settings with two classes.

Command:  python -m recon.simulate --config experiments/configs/groel_mixture_data.py --out data/groel_mix50
          python -m recon.reconstruct --particles data/groel_mix50/particles.star --workdir runs/groel_mix50 \
              --config experiments/configs/groel_mixture.py
          (80/20 set: --config.class_proportions=0.8,0.2 when simulating; three classes with 15 % junk:
          --config.junk_fraction=0.15 when simulating, --config.classes=3 here); scored by
          python -m experiments.multiclass (experiments/README.md)
Machine:  2-core CPU, 50 minutes (the limit).
Expected: the class assignment and each class's map against its truth: experiments/README.md, multiclass rows.
"""

from recon.configs import default


def get_config():
    c = default.get_config()
    c.classes = 2
    c.stop.max_minutes = 50.0
    return c
