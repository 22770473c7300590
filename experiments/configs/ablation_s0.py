"""Ablation of the sample-size factor s0 (samples = s0 x ESS of the proposal): FSC against time per s0.

Command:  python experiments/paper_figures.py --config experiments/configs/ablation_s0.py \
              --particles data/groel64/particles.star --truth data/groel64/ground_truth.mrc --workdir runs/figures \
              --out experiments/results
          (tiny variant: --config experiments/configs/ablation_s0.py:tiny, run by the test suite)
Machine, time, result: not yet run at full size; experiments/README.md holds the results table.
"""

from experiments.configs import figures


def get_config(size=""):
    c = figures.base(size)
    values = [1, 3, 10, 30] if size != "tiny" else [1, 10]
    return figures.with_figure(c, f"ablation_s0_{size or 'groel64'}", "Ablation: sample-size factor s0", "compare",
                               [f"s0_{v}:sagd:sampling.s0={v}" for v in values])
