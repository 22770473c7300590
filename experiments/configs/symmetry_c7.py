"""C7 imposed vs C1 on GroEL-GroES (issue 5): the same data, seed and wall-time budget, FSC 0.5 against the truth
after alignment, against wall time and against iteration (both in the JSON).

Command:  python experiments/paper_figures.py --config experiments/configs/symmetry_c7.py \
              --particles data/groel64/particles.star --truth data/groel64/ground_truth.mrc --workdir runs/figures \
              --out experiments/results
          (tiny variant: --config experiments/configs/symmetry_c7.py:tiny, run by the test suite)
Target:   with C7 the run reaches a given resolution in fewer iterations than in C1.
Machine, time, result: not yet run at full size; experiments/README.md holds the results table.
"""

from experiments.configs import figures


def get_config(size=""):
    c = figures.base(size)
    return figures.with_figure(c, f"symmetry_c7_{size or 'groel64'}", "C7 imposed vs C1 (GroEL-GroES)", "compare",
                               ["C1:sagd:", "C7:sagd:symmetry=C7"])
