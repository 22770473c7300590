"""Fig. 10: the three priors on the same data (uniform, CAR, exponential): central slices side by side.

Command:  python experiments/paper_figures.py --config experiments/configs/fig10.py \
              --particles data/groel64/particles.star --workdir runs/figures --out experiments/results
          (tiny variant: --config experiments/configs/fig10.py:tiny, run by the test suite)
Machine, time, result: not yet run at full size; experiments/README.md holds the results table.
"""

from experiments.configs import figures


def get_config(size=""):
    c = figures.base(size)
    return figures.with_figure(c, f"fig10_priors_{size or 'groel64'}", "Fig. 10: uniform, CAR and exponential priors",
                               "slices", ["uniform:sagd:prior.kind=uniform", "car:sagd:prior.kind=car",
                                          "exponential:sagd:prior.kind=exponential"])
