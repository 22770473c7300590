"""Ablation of the optimiser: SAGD (the paper's) against SGD with Nesterov momentum and Adam (optax).

Command:  python experiments/paper_figures.py --config experiments/configs/ablation_optimizer.py \
              --particles data/groel64/particles.star --truth data/groel64/ground_truth.mrc --workdir runs/figures \
              --out experiments/results
          (tiny variant: --config experiments/configs/ablation_optimizer.py:tiny, run by the test suite)
Machine, time, result: not yet run at full size; experiments/README.md holds the results table.
"""

from experiments.configs import figures


def get_config(size=""):
    c = figures.base(size)
    runs = ["sagd:sagd:", "sgd:sagd:optimizer.kind=sgd", "adam:sagd:optimizer.kind=adam"]
    return figures.with_figure(c, f"ablation_optimizer_{size or 'groel64'}", "Ablation: SAGD vs SGD vs Adam",
                               "compare", runs if size != "tiny" else runs[::2])
