#!/usr/bin/env bash
# The benchmark harness on one GPU, within one 10-minute command: simulate the paper-sized GroEL-GroES set
# (40,000 particles, 128 x 128 at 2.8 A/px, SNR 0.05), reconstruct it ab initio with importance sampling
# (experiments/configs/groel128_is_gpu.py, capped so that the rest fits), then run experiments.bench on it:
# the float32 matmul rate, one minibatch's exhaustive and importance-sampled gradient per level (as many levels as
# the time left allows), the run's own particles per second per level, the wall time to FSC 0.5 of 30, 20, 15 and
# 10 A against the truth, host and device peak memory.
#
#   experiments/gpu_bench.sh                 on a machine with a GPU, from the repository root
#
# Writes into $OUT (default results/gpu_bench/): log.txt, env.json, bench_gpu.json (copy it to
# experiments/results/bench_gpu_<card>.json), metrics.jsonl of the run.
# Environment: RECON_GPU_DEADLINE_S (the whole script's budget, default 560), RECON_GPU_PARTICLES (40000),
# RECON_GPU_BENCH_RESERVE_S (seconds kept after the run for the bench, default 170), RECON_GPU_EXTRA (more
# --config.* flags for the run), RECON_GPU_BENCH_EXTRA (more experiments.bench flags), PYTHON (python3),
# RECON_GPU_ALLOW_CPU=1 (a dry run of the plumbing on a CPU; with RECON_GPU_DATA_CONFIG / RECON_GPU_RUN_CONFIG
# naming smaller configs). Wheels in .whl/ are installed first when present (experiments/gpu_env.sh).
set -u
T0=$(date +%s)
OUT=${OUT:-results/gpu_bench}
PARTICLES=${RECON_GPU_PARTICLES:-40000}
DEADLINE=${RECON_GPU_DEADLINE_S:-560}
RESERVE=${RECON_GPU_BENCH_RESERVE_S:-170}
DATA_CONFIG=${RECON_GPU_DATA_CONFIG:-experiments/configs/groel128_data.py}
RUN_CONFIG=${RECON_GPU_RUN_CONFIG:-experiments/configs/groel128_is_gpu.py}
PY=${PYTHON:-python3}
DATA=${RECON_GPU_DATA:-/tmp/recon_bench_data}
WORK=${RECON_GPU_WORKDIR:-/tmp/recon_bench_run}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
elapsed() { echo $(( $(date +%s) - T0 )); }

echo "== [$(elapsed) s] environment"
source experiments/gpu_env.sh

echo "== [$(elapsed) s] simulate $PARTICLES particles ($DATA_CONFIG)"
$PY -m recon.simulate --config "$DATA_CONFIG" --config.num_particles="$PARTICLES" --out "$DATA" || exit 1

# The run gets what is left after the reserve for the bench (matmul, levels, FSC of the snapshots).
MINUTES=$(awk -v left="$(( DEADLINE - $(elapsed) - RESERVE ))" 'BEGIN {printf "%.2f", (left > 30 ? left : 30) / 60}')
echo "== [$(elapsed) s] reconstruct (cap $MINUTES min)"
rm -rf "$WORK"
$PY -m recon.reconstruct --particles "$DATA/particles.star" --workdir "$WORK" --config "$RUN_CONFIG" \
  --config.stop.max_minutes="$MINUTES" ${RECON_GPU_EXTRA:-}
echo "reconstruct_rc $?"
cp "$WORK/metrics.jsonl" "$OUT/" 2>/dev/null

# The bench: the run's rates and its time to 30/20/15/10 A, then levels until a minute before the deadline.
BUDGET=$(( DEADLINE - $(elapsed) - 60 ))
echo "== [$(elapsed) s] bench (levels for up to $BUDGET s)"
timeout $(( DEADLINE - $(elapsed) + 20 )) $PY -m experiments.bench --particles "$DATA/particles.star" \
  --map "$DATA/ground_truth.mrc" --config "$RUN_CONFIG" --run "$WORK" --truth "$DATA/ground_truth.mrc" \
  --max_points 8 --budget_seconds "$(( BUDGET > 1 ? BUDGET : 1 ))" --name gpu --out "$OUT" ${RECON_GPU_BENCH_EXTRA:-}
echo "bench_rc $?"
echo "== [$(elapsed) s] done"
