r"""Fig. 10: the three priors (uniform, CAR, exponential) on the same data: central slices side by side.

Command:  python -m experiments.paper_figures --config experiments/configs/fig10.py \
              --particles data/groel64/particles.star --truth data/groel64/ground_truth.mrc --workdir runs/figures \
              --out experiments/results
          (``fig10.py:tiny``: the variant the test suite runs)
Machine:  2-core CPU, 20 min per prior (the exponential run is the SAGD run of Fig. 9 in the same --workdir).
Expected: three similar maps: with 10,000 particles at SNR 0.05 the likelihood outweighs the prior.
          Numbers: experiments/README.md, experiments/results/fig10_priors_groel64.json.
"""

from experiments.configs import figures


def get_config(size=""):
    c = figures.base(size)
    return figures.with_figure(c, f"fig10_priors_{size or 'groel64'}", "Fig. 10: uniform, CAR and exponential priors",
                               "slices", [figures.run(kind, "sagd", {"prior.kind": kind})
                                          for kind in ("uniform", "car", "exponential")])
