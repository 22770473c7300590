r"""Fig. 5: the map from a random start, then after increasing compute (isosurface and central slice at 0, 1, 3, 10
and 20 minutes).

Command:  python -m experiments.paper_figures --config experiments/configs/fig5.py \
              --particles data/groel64/particles.star --workdir runs/figures --out experiments/results
          (``fig5.py:tiny``: the variant the test suite runs)
Machine:  2-core CPU; drawn from the 20-minute SAGD run that Fig. 9 makes in the same --workdir.
Expected: the molecule recognisable within minutes. Numbers: experiments/README.md,
          experiments/results/fig5_snapshots_groel64.json.
"""

from experiments.configs import figures


def get_config(size=""):
    c = figures.base(size)
    minutes = [0, 1, 3, 10, 20] if size != "tiny" else [0, 0.05, 0.2]
    return figures.with_figure(c, f"fig5_snapshots_{size or 'groel64'}", "Fig. 5: from a random start (SAGD + IS)",
                               "snapshots", [figures.run("sagd")], snapshot_minutes=minutes)
