"""recon.simulate's config (its default; dataset configs derive from it). Give ``model`` (an atomic model) or
``volume`` (a map); override any key as ``--config.KEY=VALUE``. Paths: absolute, relative to the working folder,
or relative to the repository root.
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.model = ""  # .pdb/.cif (optionally .gz): its density at box_size x pixel_size_angstrom; several: a mixture
    c.volume = ""  # .mrc: projected as it is; several (comma-separated): a mixture
    c.class_proportions = ""  # a mixture's shares, comma-separated (empty: equal)
    c.box_size = 0  # pixels; required with model
    c.pixel_size_angstrom = 0.0  # required with model; with volume, 0 takes the map header's
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
    # Effects of real data (recon/synthesis.py), all off by default:
    c.envelope_bfactor_min_angstrom2 = 0.0  # per-particle B-factor envelope, uniform in [min, max], not recorded
    c.envelope_bfactor_max_angstrom2 = 0.0
    c.amplitude_spread = 0.0  # particle amplitudes 1 + spread * N(0, 1)
    c.junk_fraction = 0.0  # empty picks and off-model blobs (rlnClassNumber 2)
    c.preferred_view_fraction = 0.0  # viewed near the map's z axis
    c.preferred_view_sigma_degrees = 10.0
    c.noise_exponent = 0.0  # noise power ~ frequency^-exponent (0: white)
    c.micrographs = 0  # > 0: particles spread over micrographs (rlnMicrographName)
    c.noise_variation = 0.0  # each micrograph's noise sigma times 1 + U(-variation, variation)
    c.dark_particles = False  # the stack's sign inverted
    return c
