"""Base config of a synthetic dataset (``python -m recon.simulate --config ...``); the others derive from it.

Fields mirror the flags of ``recon.simulate``; any of them can be overridden on the command line as
``--config.FIELD=VALUE``. Paths are relative to the repository root (or absolute).
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.model = "third_party/1aon/1aon.pdb.gz"  # GroEL-GroES-(ADP)7, the paper's synthetic structure
    c.volume = ""
    c.box_size = 64
    c.pixel_size_angstrom = 5.6
    c.num_particles = 1000
    c.snr = 0.05  # the paper's "realistic" level
    c.seed = 0
    c.defocus_min_angstrom = 10000.0  # 1-3 um underfocus
    c.defocus_max_angstrom = 30000.0
    c.max_astigmatism_fraction = 0.05
    c.voltage_kv = 300.0
    c.spherical_aberration_mm = 2.7
    c.amplitude_contrast = 0.1
    c.bfactor_angstrom2 = 0.0
    c.shift_sigma_angstrom = 0.0  # 0: two pixels
    return c
