"""Run under ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` by tests/test_devices.py (the device count is
fixed when JAX starts, so this runs in its own process): one minibatch's data objective, gradient, per-particle
results and evaluations on one device and split over N devices (recon/step.py's data parallelism), exhaustive and
importance-sampled; prints the largest relative differences as JSON."""

import json
import sys

import numpy as np

import jax
import jax.numpy as jnp

from recon import likelihood, quadrature, sampling, step as step_lib
from recon.ctf import CTFParams
from tests.conftest import blob_volume


def main(num_devices: int):
    size, pixel, batch = 24, 6.0, 16
    rng = np.random.default_rng(0)
    volume = jnp.asarray(blob_volume(size, seed=5)[0], jnp.float32)
    rule = quadrature.make_quadrature(1 / 30.0, size * pixel, 12.0)
    grid = likelihood.make_grid(size, pixel, rule, 1 / 30.0)
    images = jnp.asarray(rng.standard_normal((batch, size, size)), jnp.float32)
    ctf = CTFParams(*(jnp.asarray(np.full(batch, v) * (1 + 0.1 * rng.random(batch)), jnp.float32)
                      for v in (15000, 14000, 30, 300, 2.7, 0.1, 0, 0, 1)))
    b = step_lib.Batch(images, ctf, jnp.asarray(np.r_[np.ones(batch - 3), np.zeros(3)], jnp.float32),
                       jnp.asarray(0, jnp.int32))
    caps = {"directions": 8, "inplane": 4, "shifts": 4}
    sampler = sampling.make_level_sampler(rule, sampling.Settings(), caps)
    mesh = step_lib.make_mesh(num_devices)
    assert mesh is not None and mesh.size == num_devices == len(jax.devices())
    out = {}
    results = {}
    for name, m in (("one", None), ("split", mesh)):
        fns = step_lib.make_step_functions(grid, pixel, "exponential", 1.0, 10, 2, sampled_chunk_size=2, mesh=m)
        bb, _ = step_lib.place_batch(b, m)
        v = step_lib.replicate(volume, m)
        (value, res), grad = jax.jit(fns.gradient)(v, bb)
        state = sampling.init_state(batch, caps)
        old = tuple(sampling.FactorState(*(jnp.asarray(a) for a in getattr(state, f))) for f in sampling.FACTORS)
        new, _ = jax.jit(sampler.record_exhaustive)(jax.device_get(res), old)
        samples, _ = jax.jit(sampler.propose)(new, jnp.full((batch,), 500, jnp.int32),
                                              jax.random.split(jax.random.PRNGKey(1), batch))
        _, samples = step_lib.place_batch(b, m, jax.device_get(samples))
        (s_value, s_res), s_grad = jax.jit(fns.gradient_sampled)(v, bb, samples)
        results[name] = {"value": value, "grad": grad, "log_marginal": res.log_marginal, "post_dir": res.post_dir,
                         "objective": jax.jit(fns.objective)(v, bb),
                         "evaluate": jax.jit(fns.evaluate)(v, bb.images, bb.ctf).log_marginal,
                         "s_value": s_value, "s_grad": s_grad, "s_log_marginal": s_res.log_marginal,
                         "s_objective": jax.jit(fns.objective_sampled)(v, bb, samples),
                         "s_evaluate": jax.jit(fns.evaluate_sampled)(v, bb.images, bb.ctf, samples).log_marginal}
        if m is not None:
            out["grad_sharding_replicated"] = bool(grad.sharding.is_fully_replicated)
            out["result_replicated"] = bool(res.log_marginal.sharding.is_fully_replicated)
    for key in results["one"]:
        a = np.asarray(results["one"][key], np.float64)
        c = np.asarray(results["split"][key], np.float64)
        out[key] = float(np.max(np.abs(a - c)) / (np.max(np.abs(a)) + 1e-30))
    print(json.dumps(out))


if __name__ == "__main__":
    main(int(sys.argv[1]))
