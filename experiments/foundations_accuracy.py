"""Accuracy figures of the forward model and the conventions.

    python -m experiments.foundations_accuracy [--out experiments/results/foundations_accuracy_cpu.json]

From the repository root, any CPU. Prints (and with --out writes, with the command and machine) one JSON
object: relative errors of the Fourier slice (Kaiser-Bessel and trilinear kernels) and of the
real-space projection against exact line integrals of a Gaussian-blob volume, of simulated particle images against
an independent forward model, and the FSC of a known-pose reconstruction of a simulated GroEL-GroES set.
"""

import json
import os
import tempfile

import jax.numpy as jnp
import numpy as np
import scipy.ndimage

from absl import flags

from experiments.engine_benchmark import machine
from recon.blobs import analytic_projection, blob_volume
from recon import backprojection, cli, conventions as cv, density, metrics, projection as pj, synthesis
from recon.errors import user_errors_exit
from recon.io import atomic
from recon.ctf import ctf_value
from recon.data import open_dataset
from recon.io import metadata

FLAGS = flags.FLAGS
POSES = [(0.0, 0.0, 0.0), (30.0, 60.0, -20.0), (123.0, 100.0, 45.0), (-70.0, 150.0, 200.0), (10.0, 90.0, 90.0)]


def slice_errors(size=32, radius=0.45):
    vol, desc = blob_volume(size, seed=4)
    freqs = pj.nyquist_disk_frequencies(size)
    inside = np.sqrt(np.sum(freqs**2, -1)) <= radius
    out = {}
    for kernel in ("kaiser_bessel", "linear"):
        vft = pj.prepare_volume_ft(jnp.asarray(vol, jnp.float32), 2, kernel)
        errs = []
        for angles in POSES:
            a = cv.euler_to_matrix(np.array(angles))
            v = np.asarray(pj.fourier_slice(vft, jnp.asarray(a, jnp.float32), jnp.asarray(freqs, jnp.float32),
                                            kernel))
            exact = cv.centred_fft2(analytic_projection(size, desc, a)).ravel()
            errs.append(np.linalg.norm(v[inside] - exact[inside]) / np.linalg.norm(exact[inside]))
        out[f"fourier_slice_{kernel}_max_rel_error"] = float(max(errs))
    errs = []
    for angles in POSES:
        a = cv.euler_to_matrix(np.array(angles))
        img = np.asarray(pj.real_space_projection(jnp.asarray(vol, jnp.float32), jnp.asarray(a, jnp.float32)))
        exact = analytic_projection(size, desc, a)
        errs.append(np.linalg.norm(img - exact) / np.linalg.norm(exact))
    out["real_space_projection_max_rel_error"] = float(max(errs))
    return out


def simulation_error(size=32, pixel=3.0, n=20):
    vol, desc = blob_volume(size, seed=7, spread=0.15)
    with tempfile.TemporaryDirectory() as tmp:
        synthesis.simulate_dataset(vol, pixel, synthesis.SimulationSpec(n, snr=float("inf"), seed=5), tmp,
                                   log=lambda *_: None)
        ds = open_dataset(metadata.read_particles(os.path.join(tmp, "particles.star")), estimate_noise=False)
        images = ds.raw_images(np.arange(n))
        k = cv.image_frequency_grid(size, pixel)
        nyq = np.sqrt(np.sum((k * pixel) ** 2, -1)) <= 0.5
        errs = []
        for i in range(n):
            proj = analytic_projection(size, desc, cv.euler_to_matrix(ds.meta.angles_degrees[i]))
            ox, oy = ds.meta.origins_angstrom[i] / pixel
            proj = scipy.ndimage.shift(proj, (-oy, -ox), order=5, mode="constant")
            ref = cv.centred_ifft2(cv.centred_fft2(proj) * ctf_value(k, ds.meta.ctf.take(i)) * nyq).real
            errs.append(np.linalg.norm(images[i] - ref) / np.linalg.norm(ref))
    return {"simulated_image_vs_independent_model_max_rel_error": float(max(errs))}


def known_pose_fsc(n=2000):
    truth = density.model_to_density(density.read_model("third_party/1aon/1aon.pdb.gz"), 64, 5.6)
    with tempfile.TemporaryDirectory() as tmp:
        synthesis.simulate_dataset(truth, 5.6, synthesis.SimulationSpec(n, snr=0.05, seed=0), tmp, log=lambda *_: None)
        ds = open_dataset(metadata.read_particles(os.path.join(tmp, "particles.star")))
        vol = backprojection.reconstruct_known_poses(ds, snr=0.05 * 64)
        wrong = ds.meta.origins_angstrom.copy()
        ds.meta.origins_angstrom = -wrong
        flipped = backprojection.reconstruct_known_poses(ds, snr=0.05 * 64)
    good = metrics.fsc(vol, truth)
    bad = metrics.fsc(flipped, truth)
    return {"known_pose_groel64_2000_fsc0.5_angstrom": metrics.resolution_at(good, 5.6, 0.5),
            "known_pose_groel64_2000_negated_origins_fsc0.5_angstrom": metrics.resolution_at(bad, 5.6, 0.5)}


@user_errors_exit
def main(argv):
    cli.only_flags(argv)
    result = {}
    result.update(slice_errors())
    result.update(simulation_error())
    result.update(known_pose_fsc())
    command = "python -m experiments.foundations_accuracy" + (f" --out {FLAGS.out}" if FLAGS.out else "")
    result.update({"command": command, "machine": machine()})
    text = json.dumps(result, indent=1)
    print(text)
    if FLAGS.out:
        atomic.write_text(FLAGS.out, text + "\n")


if __name__ == "__main__":
    flags.DEFINE_string("out", None, "Also write the JSON here (experiments/results/foundations_accuracy_cpu.json).")
    cli.run(main)
