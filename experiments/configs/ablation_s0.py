r"""Ablation of the sample-size factor s0 (draws = s0 x ESS of the proposal): FSC against time for s0 = 1, 3, 10, 30.

Command:  python -m experiments.paper_figures --config experiments/configs/ablation_s0.py \
              --particles data/groel64/particles.star --truth data/groel64/ground_truth.mrc --workdir runs/figures \
              --out experiments/results
          (``ablation_s0.py:tiny``: the variant the test suite runs)
Machine:  2-core CPU, 20 min per run (s0 = 10 is the SAGD run of Fig. 9 in the same --workdir).
Expected: per iteration s0 = 3, 10 and 30 alike and s0 = 1 behind: with groel64_is.py's fixed 16 / 8 / 8 slots
          s0 changes the draws only below the slots' cap. Numbers: experiments/README.md,
          experiments/results/ablation_s0_groel64.json.
"""

from experiments.configs import figures


def get_config(size=""):
    c = figures.base(size)
    values = [1, 3, 10, 30] if size != "tiny" else [1, 10]
    return figures.with_figure(c, f"ablation_s0_{size or 'groel64'}", "Ablation: sample-size factor s0", "compare",
                               [figures.run(f"s0_{v}", "sagd", {"sampling.s0": v}) for v in values])
