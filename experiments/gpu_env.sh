# Sourced by experiments/gpu_bench.sh and experiments/gpu_paper_sized.sh (not run on its own): installs the wheels
# in .whl/ (packages missing on a bare GPU machine: mrcfile, ml-collections, ...) when present, puts the repository
# on PYTHONPATH, and writes $OUT/env.json (JAX version, devices, float32 matmul accuracy). Stops the calling script
# when JAX sees no GPU, unless RECON_GPU_ALLOW_CPU=1 (a dry run of the plumbing on a CPU).
# Needs: $OUT, $PY.
if [ -z "${RECON_NO_WHEELS:-}" ] && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/recon_site \
    .whl/*.whl || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/recon_site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
$PY - "$OUT/env.json" <<'PYEOF' || exit 1
import json, os, sys, platform
import numpy as np
import recon  # noqa: F401  (sets float32 matrix products to full precision)
import jax, jax.numpy as jnp
rng = np.random.default_rng(0)
a, b = rng.normal(size=(512, 2048)), rng.normal(size=(2048, 512))
exact = a @ b
got = np.asarray(jnp.asarray(a, jnp.float32) @ jnp.asarray(b, jnp.float32), np.float64)
info = {"jax": jax.__version__, "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind, "cpus": os.cpu_count(), "platform": platform.platform(),
        "matmul_precision": str(jax.config.jax_default_matmul_precision),
        "float32_matmul_relative_error": float(np.linalg.norm(got - exact) / np.linalg.norm(exact))}
print(json.dumps(info))
json.dump(info, open(sys.argv[1], "w"), indent=1)
if info["backend"] == "cpu" and not os.environ.get("RECON_GPU_ALLOW_CPU"):
    print("no GPU visible to JAX: stopping"); sys.exit(1)
PYEOF
