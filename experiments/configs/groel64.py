r"""Ab initio GroEL-GroES at 64 x 64, 5.6 A/px (10,000 particles, SNR 0.05) with exhaustive pose sums: four levels
from 40 to 25 A, 80 iterations each, a 20-minute limit.

Command:  python -m recon.simulate --config experiments/configs/groel64_data.py --out data/groel64
          python -m recon.reconstruct --particles data/groel64/particles.star --workdir runs/groel64 \
              --config experiments/configs/groel64.py
          python -m recon.evaluate --map runs/groel64/final.mrc --reference data/groel64/ground_truth.mrc
Machine:  2-core CPU, 20 min plus the final pose pass.
Expected: FSC 0.5 against the truth of 30 A or better within 20 min. Numbers: experiments/README.md,
          experiments/results/engine_curve_cpu.json.
"""

from recon.configs import demo, paper


def get_config():
    c = demo.groel_64(paper.get_config())
    c.schedule.target_resolution_angstrom = 25.0
    c.schedule.iterations_per_level = 80
    c.stop.max_minutes = 20.0
    c.stop.max_iterations = 2000
    c.output.log_every = 5
    c.output.heldout_every = 20
    c.output.save_map_every = 20
    c.output.checkpoint_every = 20
    return c
