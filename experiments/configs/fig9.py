r"""Fig. 9: SAGD with importance sampling against iterative projection matching and batch EM (RELION-style), from
the same random start with the same wall-time budget (stop.max_minutes: 20 min at 64 px).

Command:  python -m experiments.paper_figures --config experiments/configs/fig9.py \
              --particles data/groel64/particles.star --truth data/groel64/ground_truth.mrc --workdir runs/figures \
              --out experiments/results --max_points 6
          (``fig9.py:tiny``: the variant the test suite runs)
Machine:  2-core CPU, 20 min per method, then the FSC of every snapshot after alignment.
Expected: SAGD + IS reaches FSC 0.5 of 15 A or better against the truth; the baselines stay far coarser.
          Numbers: experiments/README.md, experiments/results/fig9_baselines_groel64.json.
"""

from experiments.configs import figures


def get_config(size=""):
    c = figures.base(size)
    return figures.with_figure(c, f"fig9_baselines_{size or 'groel64'}",
                               "Fig. 9: SAGD + IS vs projection matching vs batch EM", "compare",
                               [figures.run("sagd_is"), figures.run("projection_matching", "projection_matching"),
                                figures.run("batch_em", "em")])
