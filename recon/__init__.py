"""recon: ab initio cryo-EM reconstruction (Brubaker, Punjani & Fleet, CVPR 2015) in JAX."""

import jax

# Float32 matrix products in full float32 on every backend. On NVIDIA GPUs XLA would otherwise run them in TF32
# (a 10-bit mantissa, ~5e-4 relative error per product): enough to shift the cross term of a log-likelihood by
# O(1) nats, slice coordinates by 0.1 px and the shift phases by 0.03 rad. No effect on CPUs.
jax.config.update("jax_default_matmul_precision", "highest")
