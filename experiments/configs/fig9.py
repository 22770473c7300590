"""Fig. 9: SAGD with importance sampling against the two baselines, iterative projection matching and batch EM
(RELION-style), from the same random start, with the same wall-time budget (stop.max_minutes, 20 min at 64 px on a 2-core CPU).

Command:  python experiments/paper_figures.py --config experiments/configs/fig9.py \
              --particles data/groel64/particles.star --truth data/groel64/ground_truth.mrc --workdir runs/figures \
              --out experiments/results
          (tiny variant: --config experiments/configs/fig9.py:tiny, run by the test suite)
Target:   SAGD + IS reaches FSC 0.5 <= 15 A against the truth; the baselines do not, or need several times the time.
Machine:  the 2-core CPU (JAX 0.10.2), 20 min per method, one after the other, then about 25 min of drawing (the
          FSC of every snapshot after alignment; other work shared the cores while drawing).
Result:   FSC 0.5 against the truth after 20 min: SAGD + IS 14.3 A (552 iterations; 16.0 A at 16 min, held-out
          RREMSE 1.013), projection matching 46.3 A (5 epochs), batch EM 59.8 A (4 epochs).
          experiments/results/fig9_baselines_groel64.{png,json}; experiments/README.md holds the results table.
"""

from experiments.configs import figures


def get_config(size=""):
    c = figures.base(size)
    return figures.with_figure(c, f"fig9_baselines_{size or 'groel64'}",
                               "Fig. 9: SAGD + IS vs projection matching vs batch EM", "compare",
                               ["sagd_is:sagd:", "projection_matching:projection_matching:", "batch_em:em:"])
