"""Ablation of the optimiser: SAGD (the paper's) against SGD with Nesterov momentum and Adam (optax), from the same
random start, for the same number of minibatch gradients.

Command:  python experiments/paper_figures.py --config experiments/configs/ablation_optimizer.py \
              --particles data/groel64/particles.star --truth data/groel64/ground_truth.mrc --workdir runs/figures \
              --out experiments/results
          (tiny variant: --config experiments/configs/ablation_optimizer.py:tiny, run by the test suite)
Budget:   550 iterations per run (the iterations the 20-minute SAGD run of the other figures makes on the 2-core
          CPU), no time limit, so the comparison does not depend on what else shares the cores; wall time is in
          the JSON too. SGD: learning rate 1e-3, momentum 0.9 (an effective step of 1e-2, about 2/L for the
          Lipschitz constants L = 190-260 that SAGD's line search finds at 40 A here); Adam: 1e-3 (densities
          here are 0.1-0.3 at the molecule). Both are config fields (optimizer.learning_rate, optimizer.momentum).
Result:   2-core CPU (JAX 0.10.2), 550 iterations each, from the same random start; FSC 0.5 against the truth at
          iteration 325 / 475 / 550: SAGD 21.9 / 16.0 / 14.3 A; SGD 19.5 / 15.9 / 17.2 A (as good as SAGD up to
          iteration 475, then worse: its step does not shrink); Adam 139 / 120 / 43 A (the structure forms only
          at the end). Held-out RREMSE 1.013 / 1.017 / 1.013. Wall time 16.0 / 9.6 / 10.9 min, not comparable:
          the SAGD run shared the cores with two other runs, and it also runs the line search.
          experiments/results/ablation_optimizer_groel64.{png,json}.
"""

from experiments.configs import figures

BUDGET = "stop.max_minutes=0,stop.max_iterations=550"


def get_config(size=""):
    c = figures.base(size)
    budget = "" if size == "tiny" else BUDGET
    runs = [figures.run_entry("sagd", "sagd", budget), figures.run_entry("sgd", "sagd", budget, "optimizer.kind=sgd"),
            figures.run_entry("adam", "sagd", budget, "optimizer.kind=adam")]
    return figures.with_figure(c, f"ablation_optimizer_{size or 'groel64'}", "Ablation: SAGD vs SGD vs Adam",
                               "compare", runs if size != "tiny" else runs[::2])
