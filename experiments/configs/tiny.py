"""A CPU-sized smoke config for tests: a few minibatches of 50, two coarse levels.

Command:  python -m recon.simulate --config experiments/configs/tiny_data.py --out /tmp/tiny
          python -m recon.reconstruct --particles /tmp/tiny/particles.star --workdir /tmp/tiny_run \
              --config experiments/configs/tiny.py
Expected: finishes in about a minute on 2 cores.
"""

from recon.configs import paper


def get_config():
    c = paper.get_config()
    c.batch_size = 50
    c.num_heldout = 20
    c.schedule.start_resolution_angstrom = 40.0
    c.schedule.target_resolution_angstrom = 32.0
    c.schedule.iterations_per_level = 20
    c.stop.max_iterations = 40
    c.prior.scale = 0.001  # a tiny dataset: keep the prior from swamping 45 particles
    c.output.log_every = 5
    c.output.heldout_every = 10
    c.output.save_map_every = 20
    c.output.checkpoint_every = 10
    return c
