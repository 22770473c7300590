"""Fig. 11: sample particles, an isosurface and slices of the final map, with its held-out RREMSE (the paper:
0.99, 0.96 and 0.98 on its three datasets).

Command:  python experiments/paper_figures.py --config experiments/configs/fig11.py \
              --particles data/groel64/particles.star --workdir runs/figures --out experiments/results
          (tiny variant: --config experiments/configs/fig11.py:tiny, run by the test suite)
Machine, time, result: the 2-core CPU, drawn from the 20-minute default SAGD run that Fig. 9 made in the same
          --workdir (final map: FSC 0.5 14.3 A against the truth, held-out RREMSE 1.013);
          experiments/results/fig11_summary_groel64.{png,json}.
"""

from experiments.configs import figures


def get_config(size=""):
    c = figures.base(size)
    return figures.with_figure(c, f"fig11_summary_{size or 'groel64'}", "Fig. 11: GroEL-GroES", "summary",
                               ["sagd:sagd:"])
