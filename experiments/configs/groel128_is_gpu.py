r"""The paper-sized case (groel128_is.py) on one GPU: whole minibatches per matrix product, no recomputation in the
backward pass, snapshots every 20 iterations for the resolution-against-time curve, a 10-minute limit.

Command:  experiments/gpu_paper_sized.sh     (simulates, reconstructs and brings back snapshots, on the GPU machine)
          or, with the data at hand:
          python -m recon.reconstruct --particles data/groel128/particles.star --workdir runs/groel128_gpu \
              --config experiments/configs/groel128_is_gpu.py
Machine:  one NVIDIA H100 or H200, at most 10 minutes.
Expected: FSC 0.5 against the truth near 10 A. Numbers: experiments/README.md, from
          python -m experiments.engine_benchmark curve --snapshots OUT --truth data/groel128/ground_truth.mrc.
"""

from experiments.configs import groel128_is


def get_config():
    c = groel128_is.get_config()
    c.remat = False  # memory is plentiful: store the chunks for the backward pass (less work, simpler programs)
    c.stop.max_minutes = 10.0
    c.output.log_every = 10
    c.output.save_map_every = 20
    c.output.checkpoint_every = 200  # SAGD's 199 stored gradients: 1.7 GB per checkpoint
    return c
