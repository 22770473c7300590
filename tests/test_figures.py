"""Every figure config's tiny variant runs end to end through experiments/paper_figures.py and writes its figure
(a PNG and a JSON naming every run)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

FIGURES = ["fig5", "fig9", "fig10", "fig11", "ablation_s0", "ablation_optimizer"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    subprocess.run([sys.executable, "-m", "recon.simulate", "--config", str(REPO / "experiments/configs/tiny_data.py"),
                    "--out", str(out)], cwd=REPO, check=True, capture_output=True, timeout=600)
    return out


@pytest.mark.parametrize("name", FIGURES)
def test_figure_tiny_variant_end_to_end(name, tiny_data, tmp_path):
    sys.path.insert(0, str(REPO))
    import importlib
    config = importlib.import_module(f"experiments.configs.{name}").get_config("tiny")
    result = subprocess.run([sys.executable, "experiments/paper_figures.py", "--config",
                             f"experiments/configs/{name}.py:tiny", "--particles", str(tiny_data / "particles.star"),
                             "--truth", str(tiny_data / "ground_truth.mrc"), "--workdir", str(tmp_path),
                             "--max_points", "1"], cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    figure = config.figure.name
    assert (tmp_path / f"{figure}.png").stat().st_size > 10_000
    record = json.loads((tmp_path / f"{figure}.json").read_text())
    labels = [entry.split(":")[0] for entry in config.figure.runs]
    assert sorted(record["runs"]) == sorted(labels)
    for label in labels:
        assert (tmp_path / label / "final.mrc").exists()
    if config.figure.kind == "compare":
        for label in labels:
            assert record["runs"][label]["final_fsc_0.5_angstrom"] > 16.0  # above Nyquist of 8 A/px
