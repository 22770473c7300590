r"""Ablation of the optimiser: SAGD (the paper's) against SGD with Nesterov momentum (learning rate 1e-3, momentum
0.9: about SAGD's first steps) and Adam (1e-3), from the same random start, 550 minibatch gradients each.

Command:  python -m experiments.paper_figures --config experiments/configs/ablation_optimizer.py \
              --particles data/groel64/particles.star --truth data/groel64/ground_truth.mrc --workdir runs/figures \
              --out experiments/results --max_points 6
          (``ablation_optimizer.py:tiny``: the variant the test suite runs)
Machine:  2-core CPU, 10-16 min per run (no time limit: the budget is the iteration count).
Expected: SAGD ends best; SGD keeps pace with it for most of the run, then falls back as its step does not
          shrink; Adam forms the structure only at the end. Numbers: experiments/README.md,
          experiments/results/ablation_optimizer_groel64.json.
"""

from experiments.configs import figures

BUDGET = {"stop.max_minutes": 0, "stop.max_iterations": 550}


def get_config(size=""):
    c = figures.base(size)
    budget = {} if size == "tiny" else BUDGET
    runs = [figures.run("sagd", "sagd", budget), figures.run("sgd", "sagd", budget, {"optimizer.kind": "sgd"}),
            figures.run("adam", "sagd", budget, {"optimizer.kind": "adam"})]
    return figures.with_figure(c, f"ablation_optimizer_{size or 'groel64'}", "Ablation: SAGD vs SGD vs Adam",
                               "compare", runs if size != "tiny" else runs[::2])
