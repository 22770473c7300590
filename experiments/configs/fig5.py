"""Fig. 5: the map from a random start, then after increasing compute (isosurface and central slice).

Command:  python experiments/paper_figures.py --config experiments/configs/fig5.py \
              --particles data/groel64/particles.star --workdir runs/figures --out experiments/results
          (tiny variant: --config experiments/configs/fig5.py:tiny, run by the test suite)
Machine, time, result: the 2-core CPU, drawn from the 20-minute default SAGD run that Fig. 9 made in the same
          --workdir (final map: FSC 0.5 14.3 A against the truth, held-out RREMSE 1.013);
          experiments/results/fig5_snapshots_groel64.{png,json}.
"""

from experiments.configs import figures


def get_config(size=""):
    c = figures.base(size)
    minutes = [0, 1, 3, 10, 20] if size != "tiny" else [0, 0.05, 0.2]
    return figures.with_figure(c, f"fig5_snapshots_{size or 'groel64'}", "Fig. 5: from a random start (SAGD + IS)",
                               "snapshots", ["sagd:sagd:"], snapshot_minutes=minutes)
