"""Ablation of the sample-size factor s0 (samples = s0 x ESS of the proposal): FSC against time per s0.

Command:  python experiments/paper_figures.py --config experiments/configs/ablation_s0.py \
              --particles data/groel64/particles.star --truth data/groel64/ground_truth.mrc --workdir runs/figures \
              --out experiments/results
          (tiny variant: --config experiments/configs/ablation_s0.py:tiny, run by the test suite)
Machine, time, result (2-core CPU, JAX 0.10.2, 20 min per run; s0 = 10 is Fig. 9's SAGD run, made in an earlier
          session with other work on the cores; s0 = 30 shared its cores with tests for about 15 of its 20 minutes):
          FSC 0.5 against the truth at iteration 400 / at 20 min: s0 = 1: 21.3 A / 15.1 A (565 iterations);
          s0 = 3: 19.2 / 14.3 A (560); s0 = 10: 19.2 / 14.3 A (552); s0 = 30: 19.2 / 15.9 A (486). Per iteration,
          s0 = 3, 10 and 30 are identical (to 0.05 A at every point) and s0 = 1 falls behind from the 20-A levels
          on; per unit of time s0 = 30 pays for samples that buy nothing here. s0 = 3 to 10 is the sweet spot
          (the paper uses 10; Fig. 6 gives the per-particle likelihood error against s0).
"""

from experiments.configs import figures


def get_config(size=""):
    c = figures.base(size)
    values = [1, 3, 10, 30] if size != "tiny" else [1, 10]
    return figures.with_figure(c, f"ablation_s0_{size or 'groel64'}", "Ablation: sample-size factor s0", "compare",
                               [f"s0_{v}:sagd:sampling.s0={v}" for v in values])
