r"""The paper-sized case: GroEL-GroES, 40,000 particles of 128 x 128 at 2.8 A/px, SNR 0.05, from a random volume
past 10 A with importance sampling: ten levels from 40 to 9 A, 60 iterations (12,000 particles) each; the first
epoch (to 24 A) sums every pose, later visits sample.

Command:  python -m recon.simulate --config experiments/configs/groel128_data.py --out data/groel128
          python -m recon.reconstruct --particles data/groel128/particles.star --workdir runs/groel128_is \
              --config experiments/configs/groel128_is.py
          python -m experiments.engine_benchmark curve --workdir runs/groel128_is \
              --truth data/groel128/ground_truth.mrc --out experiments/results/is_curve_groel128_cpu.json
Machine:  2-core CPU, about an hour to 10 A (limit 3 h); one GPU: groel128_is_gpu.py.
Expected: FSC 0.5 against the truth at 10 A or better (the paper: about a day on 16 cores). Numbers:
          experiments/README.md, experiments/results/is_curve_groel128_cpu.json.
"""

from experiments.configs import groel64_is


def get_config():
    c = groel64_is.get_config()
    c.schedule.target_resolution_angstrom = 9.0
    c.schedule.iterations_per_level = 60
    c.sampling.start_iteration = 120
    c.optimizer.line_search = "step"  # the Lipschitz bound along the SAGD direction: 4x longer steps at 40 A here
    c.quadrature.max_shift_angstrom = 25.0
    c.remat = True
    c.likelihood_kernel = "kaiser_bessel"  # at 128 px a 3x padded volume (384^3) costs more than it saves
    c.likelihood_oversampling = 2
    c.stop.max_minutes = 180.0
    c.output.final_pose_pass = False  # 40,000 particles at 10 A: ~1 h on 2 cores; poses.star keeps the last visit's
    return c
