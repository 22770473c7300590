#!/usr/bin/env bash
# The paper-sized case on one GPU: simulate 40,000 GroEL-GroES particles of 128 x 128 at 2.8 A/px
# (SNR 0.05), reconstruct them ab initio to 10 A with importance sampling (experiments/configs/groel128_is_gpu.py),
# and keep what is needed for the resolution-against-time curve.
#
#   experiments/gpu_paper_sized.sh            on a machine with a GPU, from the repository root
#
# Writes into $OUT (default results/gpu_paper_sized/): log.txt, env.json, metrics.jsonl, snapshots_*.npz (map
# snapshots, float16, chosen by elapsed time) and final_map.npz (float32). Then, on any machine, the FSC against the
# truth over time:  python -m experiments.engine_benchmark curve --snapshots OUT --truth data/groel128/ground_truth.mrc
#
# Environment: RECON_GPU_MINUTES (reconstruction wall-time cap, default 10), RECON_GPU_PARTICLES (40000),
# RECON_GPU_DEADLINE_S (the whole script's budget; the GPU test subset runs only in what is left, default 570),
# RECON_GPU_EXTRA (more --config.* flags), PYTHON (python3), RECON_GPU_ALLOW_CPU=1 (a dry run of the plumbing on a CPU). Wheels in .whl/ (packages missing on the machine) are installed first when present.
set -u
T0=$(date +%s)
OUT=${OUT:-results/gpu_paper_sized}
MINUTES=${RECON_GPU_MINUTES:-10}
PARTICLES=${RECON_GPU_PARTICLES:-40000}
DEADLINE=${RECON_GPU_DEADLINE_S:-570}
PY=${PYTHON:-python3}
DATA=${RECON_GPU_DATA:-/tmp/recon_groel128}
WORK=${RECON_GPU_WORKDIR:-/tmp/recon_groel128_gpu}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
elapsed() { echo $(( $(date +%s) - T0 )); }

echo "== [$(elapsed) s] environment"
source experiments/gpu_env.sh

echo "== [$(elapsed) s] simulate $PARTICLES particles"
S0=$(date +%s)
$PY -m recon.simulate --config experiments/configs/groel128_data.py --config.num_particles="$PARTICLES" \
  --out "$DATA" || exit 1
echo "simulate_seconds $(( $(date +%s) - S0 ))"
md5sum "$DATA/ground_truth.mrc"

# the cap, shortened if the steps before took long: 60 s kept for packing the snapshots
MINUTES=$(awk -v m="$MINUTES" -v left="$(( DEADLINE - $(elapsed) - 60 ))" 'BEGIN {c = left / 60; if (m < c) c = m; printf "%.2f", c}')
echo "== [$(elapsed) s] reconstruct (cap $MINUTES min)"
R0=$(date +%s)
$PY -m recon.reconstruct --particles "$DATA/particles.star" --workdir "$WORK" \
  --config experiments/configs/groel128_is_gpu.py --config.stop.max_minutes="$MINUTES" ${RECON_GPU_EXTRA:-}
echo "reconstruct_rc $? reconstruct_seconds $(( $(date +%s) - R0 ))"
cp "$WORK/metrics.jsonl" "$OUT/" 2>/dev/null

echo "== [$(elapsed) s] pack snapshots"
$PY - "$WORK" "$OUT" <<'EOF'
import glob, json, os, sys
import numpy as np
from recon.io import mrc
work, out = sys.argv[1:3]
records = [json.loads(l) for l in open(os.path.join(work, "metrics.jsonl")) if l.strip()]
seconds = {r["iteration"]: r["seconds"] for r in records}
maps = sorted(glob.glob(os.path.join(work, "maps", "iter_*.mrc")))
# about one snapshot per 45 s of the run, at most 12 (two files of 6 float16 maps, ~4 MB each)
chosen, last = [], -1e9
for path in maps:
    it = int(os.path.basename(path)[5:13])
    if seconds.get(it, 0) - last >= 45 or path == maps[-1]:
        chosen.append((it, path)); last = seconds.get(it, 0)
chosen = chosen[-12:]
for part in range(0, len(chosen), 6):
    arrays = {f"iter_{it:08d}": mrc.read_map(p)[0].astype(np.float16) for it, p in chosen[part:part + 6]}
    np.savez_compressed(os.path.join(out, f"snapshots_{part // 6}.npz"), **arrays)
final = os.path.join(work, "final.mrc")
if os.path.exists(final):  # the FSC against the truth is computed afterwards, off the GPU machine
    np.savez_compressed(os.path.join(out, "final_map.npz"), final=mrc.read_map(final)[0].astype(np.float32))
print(f"packed {len(chosen)} snapshots: iterations {[it for it, _ in chosen]}")
EOF

LEFT=$(( DEADLINE - $(elapsed) ))
echo "== [$(elapsed) s] likelihood and sampling tests on the GPU ($LEFT s left)"
if [ "$LEFT" -gt 40 ]; then
  timeout $(( LEFT - 10 )) $PY -m pytest -q -x -p no:cacheprovider tests/test_likelihood.py tests/test_sampling.py \
    tests/test_projection.py 2>&1
fi
echo "== [$(elapsed) s] done"
