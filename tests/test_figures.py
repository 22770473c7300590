"""Every figure config's tiny variant runs end to end through experiments.paper_figures and writes its figure
(a PNG and a JSON naming every run). The figures share one work folder, as experiments/README.md's commands do, so the default
SAGD run is computed once (by Fig. 5) and reused by the others."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

FIGURES = ["fig5", "fig9", "fig10", "fig11", "ablation_s0", "ablation_optimizer", "symmetry_c7"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    subprocess.run([sys.executable, "-m", "recon.simulate", "--config", str(REPO / "experiments/configs/tiny_data.py"),
                    "--out", str(out)], cwd=REPO, check=True, capture_output=True, timeout=600)
    return out


@pytest.fixture(scope="module")
def figure_workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("figures")


@pytest.mark.parametrize("name", FIGURES)
def test_figure_tiny_variant_end_to_end(name, tiny_data, figure_workdir):
    tmp_path = figure_workdir
    import importlib
    config = importlib.import_module(f"experiments.configs.{name}").get_config("tiny")
    result = subprocess.run([sys.executable, "-m", "experiments.paper_figures", "--config",
                             f"experiments/configs/{name}.py:tiny", "--particles", str(tiny_data / "particles.star"),
                             "--truth", str(tiny_data / "ground_truth.mrc"), "--workdir", str(tmp_path),
                             "--max_points", "1"], cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    figure = config.figure.name
    assert (tmp_path / f"{figure}.png").stat().st_size > 10_000
    record = json.loads((tmp_path / f"{figure}.json").read_text())
    labels = [entry["label"] for entry in config.figure.runs]
    assert sorted(record["runs"]) == sorted(labels)
    folders = {label: record["runs"][label]["run_folder"] for label in labels}
    for label, folder in folders.items():
        assert (tmp_path / folder / "final.mrc").exists()
    # Runs are stored by what they compute: distinct settings get distinct folders, the default run is shared.
    assert len(set(folders.values())) == len(set((e["method"], json.dumps(e["overrides"], sort_keys=True))
                                                 for e in config.figure.runs))
    if name != "fig5":
        assert "sagd" in os.listdir(tmp_path)  # made by fig5, reused
    if config.figure.kind in ("compare", "slices"):  # FSC against the truth, recorded per run
        from recon import metrics
        from recon.io import mrc

        key = "final_fsc_0.5_angstrom" if config.figure.kind == "compare" else "fsc_0.5_angstrom"
        truth, pixel = mrc.read_map(str(tiny_data / "ground_truth.mrc"))
        # The tiny variants run 10 iterations: a smoke test of the figure's pipeline, not of what the methods
        # learn (tests/test_reconstruct.py and the benchmarks measure that). What is tested is that each number
        # the figure records is the FSC of that run's map against the truth.
        for label in labels:
            recorded = record["runs"][label][key]
            final, _ = mrc.read_map(str(tmp_path / folders[label] / "final.mrc"))
            recomputed = metrics.evaluate_maps(final, truth, pixel)[0]["fsc_0.5_angstrom"]
            # the recorded number (two decimals) is the run's map against the truth (the last snapshot: the final map)
            assert recorded == pytest.approx(recomputed, abs=0.006), (label, recorded, recomputed)


def test_run_folders_named_by_what_they_compute():
    from experiments import paper_figures
    from experiments.configs import fig10

    config = fig10.get_config("tiny")
    assert config.prior.kind == "exponential"  # the base config's prior, so this override changes nothing
    assert paper_figures.run_folder_name(config, "sagd", {"prior.kind": "exponential"}) == "sagd"
    assert paper_figures.run_folder_name(config, "sagd", {"prior.kind": "car"}) == "sagd__prior.kind=car"
    assert paper_figures.run_folder_name(config, "em", {"sampling.s0": "10"}) == "em"  # 10 == 10.0
    assert paper_figures.run_folder_name(config, "sagd", {"sampling.s0": "3", "prior.kind": "car"}) == \
        "sagd__prior.kind=car__sampling.s0=3"
    with pytest.raises(Exception, match="no field"):
        paper_figures.run_folder_name(config, "sagd", {"prior.knd": "car"})
