r"""Fig. 11: sample particles, an isosurface and slices of the final map, with its held-out RREMSE (the paper:
0.99, 0.96 and 0.98 on its three datasets).

Command:  python -m experiments.paper_figures --config experiments/configs/fig11.py \
              --particles data/groel64/particles.star --workdir runs/figures --out experiments/results
          (``fig11.py:tiny``: the variant the test suite runs)
Machine:  2-core CPU; drawn from the 20-minute SAGD run that Fig. 9 makes in the same --workdir.
Expected: a held-out RREMSE close to 1. Numbers: experiments/README.md,
          experiments/results/fig11_summary_groel64.json.
"""

from experiments.configs import figures


def get_config(size=""):
    c = figures.base(size)
    return figures.with_figure(c, f"fig11_summary_{size or 'groel64'}", "Fig. 11: GroEL-GroES", "summary",
                               [figures.run("sagd")])
