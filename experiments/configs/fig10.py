"""Fig. 10: the three priors on the same data (uniform, CAR, exponential): central slices side by side.

Command:  python experiments/paper_figures.py --config experiments/configs/fig10.py \
              --particles data/groel64/particles.star --workdir runs/figures --out experiments/results
          (tiny variant: --config experiments/configs/fig10.py:tiny, run by the test suite)
Machine, time, result (2-core CPU, JAX 0.10.2, 20 min per run; the exponential run is Fig. 9's SAGD run, made
          with other work on the cores, so it got fewer iterations: 552 against 598 and 594):
          FSC 0.5 against the truth (aligned) of the final maps: uniform 12.4 A, CAR 12.3 A, exponential 14.3 A
          (0.143: 11.2 A, Nyquist, for all three); held-out RREMSE 1.0089 / 1.0083 / 1.0129. At the same iteration
          the three priors are indistinguishable: 19.2 / 18.9 / 19.2 A at iteration 400 and 14.4 / 14.2 / 14.3 A at
          550 (uniform / CAR / exponential): with 10,000 particles at SNR 0.05 the likelihood outweighs the prior,
          whose strength (prior.scale) follows the paper's. The final-map gap comes from the extra resolution level
          the faster runs reached, not from the prior.
"""

from experiments.configs import figures


def get_config(size=""):
    c = figures.base(size)
    return figures.with_figure(c, f"fig10_priors_{size or 'groel64'}", "Fig. 10: uniform, CAR and exponential priors",
                               "slices", ["uniform:sagd:prior.kind=uniform", "car:sagd:prior.kind=car",
                                          "exponential:sagd:prior.kind=exponential"])
