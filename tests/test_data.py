"""Datasets: noise estimate and normalisation, sign, validation of stacks against the metadata."""

import mrcfile
import numpy as np
import pytest

from recon import synthesis
from recon.data import background_mask, open_dataset
from recon.errors import InputError
from recon.io import metadata, star
from tests.conftest import blob_volume


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    out = tmp_path_factory.mktemp("noisy")
    vol, _ = blob_volume(24, seed=1, spread=0.12)
    meta, sigma = synthesis.simulate_dataset(vol, 4.0, synthesis.SimulationSpec(num_particles=300, snr=0.1, seed=3),
                                             str(out), log=lambda *_: None)
    return out, sigma


def test_noise_sigma_estimate_and_unit_variance_background(noisy):
    out, sigma = noisy
    ds = open_dataset(metadata.read_particles(out / "particles.star"), particle_radius_angstrom=9 * 4.0)
    assert abs(ds.noise_sigma / sigma - 1) < 0.03
    images = ds.images(np.arange(100))
    background = images[:, background_mask(24, ds.radius_pixels)]
    assert abs(background.std() - 1) < 0.03
    assert abs(background.mean()) < 0.01


def test_invert_contrast_flips_sign(noisy):
    out, _ = noisy
    meta = metadata.read_particles(out / "particles.star")
    a = open_dataset(meta, estimate_noise=False).raw_images([0, 1])
    b = open_dataset(meta, invert_contrast=True, estimate_noise=False).raw_images([0, 1])
    np.testing.assert_array_equal(a, -b)


def test_images_read_lazily_in_any_order(noisy):
    out, _ = noisy
    ds = open_dataset(metadata.read_particles(out / "particles.star"), estimate_noise=False)
    with mrcfile.open(out / "particles.mrcs") as m:
        expected = m.data[[5, 2, 9]]
    np.testing.assert_array_equal(ds.raw_images([5, 2, 9]), expected)


def _write(tmp_path, data, star_text):
    with mrcfile.new(tmp_path / "s.mrcs", data.astype(np.float32), overwrite=True):
        pass
    (tmp_path / "p.star").write_text(star_text)
    return metadata.read_particles(tmp_path / "p.star")


HEADER = ("data_optics\nloop_\n_rlnOpticsGroup\n_rlnVoltage\n_rlnSphericalAberration\n_rlnImagePixelSize\n"
          "_rlnImageSize\n1 300 2.7 2.0 {size}\ndata_particles\nloop_\n_rlnImageName\n_rlnOpticsGroup\n"
          "_rlnDefocusU\n")


def test_box_size_mismatch(tmp_path):
    meta = _write(tmp_path, np.zeros((2, 16, 16)), HEADER.format(size=20) + "1@s.mrcs 1 10000\n")
    with pytest.raises(InputError, match="16 px but the particle file"):
        open_dataset(meta)


def test_index_out_of_range(tmp_path):
    meta = _write(tmp_path, np.zeros((2, 16, 16)), HEADER.format(size=16) + "3@s.mrcs 1 10000\n")
    with pytest.raises(InputError, match="image 3 of .*holds 2 images"):
        open_dataset(meta)


def test_missing_stack(tmp_path):
    (tmp_path / "p.star").write_text(HEADER.format(size=16) + "1@gone.mrcs 1 10000\n")
    meta = metadata.read_particles(tmp_path / "p.star")
    with pytest.raises(InputError, match="gone.mrcs, which does not exist"):
        open_dataset(meta)


def test_non_square_images(tmp_path):
    meta = _write(tmp_path, np.zeros((2, 16, 18)), HEADER.format(size=16) + "1@s.mrcs 1 10000\n")
    with pytest.raises(InputError, match="not square"):
        open_dataset(meta)


def test_nan_pixels_named(tmp_path):
    data = np.random.default_rng(0).normal(size=(3, 16, 16))
    data[2, 4, 4] = np.nan
    meta = _write(tmp_path, data, HEADER.format(size=16) + "1@s.mrcs 1 10000\n3@s.mrcs 1 10000\n")
    with pytest.raises(InputError, match="image 3 contains NaN"):
        open_dataset(meta)


def test_nan_far_down_the_stack_is_found_before_any_work(tmp_path):
    # The noise estimate samples at most a few images; the up-front scan must still see image 2,500 of 3,000.
    data = np.random.default_rng(0).normal(size=(3000, 16, 16))
    data[2499, 7, 1] = np.inf
    rows = "".join(f"{i + 1}@s.mrcs 1 10000\n" for i in range(3000))
    meta = _write(tmp_path, data, HEADER.format(size=16) + rows)
    with pytest.raises(InputError, match="image 2500 contains NaN or infinite"):
        open_dataset(meta, estimate_noise=False)
    assert len(open_dataset(meta, estimate_noise=False, check_pixels=False)) == 3000


def test_unknown_pixel_size(tmp_path):
    text = ("data_\nloop_\n_rlnImageName\n_rlnDefocusU\n_rlnVoltage\n_rlnSphericalAberration\n"
            "1@s.mrcs 10000 300 2.7\n")
    meta = _write(tmp_path, np.zeros((1, 16, 16)), text)
    with pytest.raises(InputError, match="pixel size is unknown"):
        open_dataset(meta)
    ok = metadata.read_particles(tmp_path / "p.star", pixel_size_angstrom=1.5)
    assert open_dataset(ok, estimate_noise=False).pixel_size_angstrom == 1.5


def test_star_written_by_simulation_is_relion31(noisy):
    out, _ = noisy
    text = (out / "particles.star").read_text()
    assert "data_optics" in text and "data_particles" in text and "_rlnOriginXAngst" in text
    meta = star.read_star(out / "particles.star")
    assert meta.box_size[0] == 24 and np.isclose(meta.pixel_size_angstrom[0], 4.0)


def test_polarity_is_read_from_the_data(noisy):
    """Simulated white particles (SNR 0.1, defocus 1-3 um) read white; the same stack inverted reads dark, and
    ``polarity.follow`` turns it back (the images equal the white ones again); images of noise alone score zero on
    average, so 300 of them stay undetermined (|t| < 4: chance 6e-5)."""
    from recon import polarity

    out, _ = noisy
    meta = metadata.read_particles(out / "particles.star")
    white = open_dataset(meta, particle_radius_angstrom=9 * 4.0, estimate_noise=False)
    found = polarity.detect(white)
    assert found.verdict == "white" and found.images == 300, found
    dark = open_dataset(meta, particle_radius_angstrom=9 * 4.0, invert_contrast=True, estimate_noise=False)
    assert polarity.detect(dark).verdict == "dark"
    line, inverted = polarity.follow(dark)
    assert inverted and line.startswith("warning: the particles read dark") and "--config.polarity=as_given" in line
    np.testing.assert_array_equal(dark.raw_images([0, 1]), white.raw_images([0, 1]))
    assert polarity.follow(white)[0].startswith("polarity: particles white")
    noise = np.random.default_rng(5).normal(size=(300, 24, 24))
    scores = polarity.image_scores(noise, meta.ctf, 4.0, 9.0)
    t = scores.mean() / (scores.std(ddof=1) / np.sqrt(len(scores)))
    assert abs(t) < polarity.DECISIVE_T, t


def test_the_plain_command_inverts_dark_particles_and_as_given_keeps_them(noisy):
    """``recon/configs/default.py`` (polarity auto) on an inverted stack: the particles come back white with a warning
    for run.log; ``--config.polarity=as_given`` keeps the file's sign; a typo'd value is one clear error."""
    from recon import auto_settings
    from recon.configs import default

    out, _ = noisy
    meta = metadata.read_particles(out / "particles.star")
    dataset = open_dataset(meta, invert_contrast=True, estimate_noise=False)
    config = default.get_config()
    config.invert_contrast = True
    resolved, notes = auto_settings.prepare(config, dataset)
    assert any(n.startswith("warning: the particles read dark") for n in notes), notes
    assert np.all(dataset.sign == 1.0)
    assert resolved.invert_contrast is False and resolved.polarity == "as_given"  # recorded as used
    dataset = open_dataset(meta, invert_contrast=True, estimate_noise=False)
    config = default.get_config()
    config.polarity = "as_given"
    auto_settings.prepare(config, dataset)
    assert np.all(dataset.sign == -1.0)
    config = default.get_config()
    config.polarity = "atuo"
    with pytest.raises(InputError, match="polarity"):
        auto_settings.prepare(config, open_dataset(meta, estimate_noise=False))
