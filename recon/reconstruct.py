"""Ab-initio reconstruction from a particle stack.

    python -m recon.reconstruct --particles P.star|P.cs --workdir W [--config CONFIG.py] [--config.KEY=VALUE ...]

Running the same command again on an existing workdir resumes from its last checkpoint. See
``recon.training`` for the workdir layout; without --config the settings are derived from the data
(``recon/configs/default.py``, ``recon/auto_settings.py``) and recorded in WORKDIR/config.json and run.log.
"""

from __future__ import annotations

import json
import os

from absl import flags

from recon import auto_settings, baselines, cli, compile_stats, gold_standard, training
from recon.data import open_dataset
from recon.errors import InputError, user_errors_exit
from recon.io import metadata

FLAGS = flags.FLAGS
flags.DEFINE_string("particles", None, "RELION .star or cryoSPARC .cs particle file.")
flags.DEFINE_string("workdir", None, "Output folder (resumes if it holds checkpoints).")
flags.DEFINE_string("data_dir", None, "Extra folder in which to look for the particle stacks.")
flags.DEFINE_enum("method", "sagd", ["sagd", "projection_matching", "em"],
                  "sagd: the paper's method (default); projection_matching or em: the baselines of Fig. 9.")
flags.DEFINE_bool("quiet", False, "No progress lines on the terminal (they still go to WORKDIR/run.log).")
flags.DEFINE_bool("distributed", False, "Multi-host: call jax.distributed.initialize() first; run the same command "
                  "on every host, with --config.devices=0. The coordinator, process count and id come from the "
                  "flags below where given, else from the cluster (SLURM, Open MPI, ...; JAX's auto-detection).")
flags.DEFINE_string("coordinator_address", None, "With --distributed: host:port of process 0's coordinator.")
flags.DEFINE_integer("num_processes", None, "With --distributed: the number of processes.")
flags.DEFINE_integer("process_id", None, "With --distributed: this process's id, 0 .. num_processes - 1.")
flags.DEFINE_string("compilation_cache", None, "Folder of JAX's persistent compilation cache, so that a second run "
                    "compiles nothing (default: $JAX_COMPILATION_CACHE_DIR, else ~/.cache/recon/jax); '' for none.")
cli.define_config("config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.py"),
                  "Reconstruction config (ml_collections); without it, settings derived from the data.")


@user_errors_exit
def main(argv):
    del argv
    if not FLAGS.particles or not FLAGS.workdir:
        raise InputError("--particles and --workdir are required")
    config = FLAGS.config
    compile_stats.use_persistent_cache(compile_stats.default_cache_folder() if FLAGS.compilation_cache is None
                                       else FLAGS.compilation_cache)
    if FLAGS.distributed:
        import jax

        jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    meta = metadata.read_particles(FLAGS.particles, config.pixel_size_angstrom or None, FLAGS.data_dir)
    dataset = open_dataset(meta, config.particle_radius_angstrom or None, config.invert_contrast,
                           estimate_noise=False)
    workdir = os.path.abspath(FLAGS.workdir)
    config = training.as_stored_run(config, workdir)  # a run begun before newer settings resumes as it began
    config, notes = auto_settings.prepare(config, dataset)  # settings derived from the data; the noise level
    if FLAGS.method != "sagd":
        summary = baselines.run(FLAGS.method, config, dataset, workdir, quiet=FLAGS.quiet, notes=notes)
    elif config.gold_standard.enabled:
        summary = gold_standard.run(config, dataset, workdir, quiet=FLAGS.quiet, notes=notes)
    else:
        summary = training.run(config, dataset, workdir, quiet=FLAGS.quiet, notes=notes)
    print(json.dumps(summary))


if __name__ == "__main__":
    cli.run(main)
