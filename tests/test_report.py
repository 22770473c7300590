"""The HTML report: refusals and the isosurface renderer on a shape whose surface is known. (That every run writes
a self-contained report with every section, and the FSC against a reference: tests/test_reconstruct.py.)"""

import subprocess
import sys

import numpy as np

from recon import report
from tests.conftest import REPO


def test_report_refuses_a_folder_without_a_map(tmp_path):
    result = subprocess.run([sys.executable, "-m", "recon.report", "--workdir", str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "final.mrc" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "report.html").exists()


def test_report_of_a_run_not_finished_shows_its_newest_snapshot(tmp_path):
    """A work folder with snapshots at iterations 10 and 20 and no final.mrc (a run going, or killed): the report
    is written from iteration 20's map and says so."""
    from recon.io import mrc

    rng = np.random.default_rng(0)
    for iteration in (10, 20):
        mrc.write_map(tmp_path / "maps" / f"iter_{iteration:08d}.mrc",
                      rng.normal(size=(16, 16, 16)).astype(np.float32), 5.0)
    (tmp_path / "metrics.jsonl").write_text("".join(
        f'{{"iteration": {i}, "seconds": {i}.0, "resolution_angstrom": 30.0, "objective": 1.0}}\n'
        for i in range(1, 21)))
    result = subprocess.run([sys.executable, "-m", "recon.report", "--workdir", str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "report.html").read_text()
    assert "maps/iter_00000020.mrc (the run has not finished" in text


def test_isosurface_of_a_ball_is_a_disk_lit_like_a_sphere():
    """A ball of radius 8 in a 32^3 box: each view's silhouette is the disk of radius 8 (area pi r^2 within the
    voxel staircase), and the quarter facing the light (upper left: -x, +y with origin="lower") is brighter than the
    opposite one."""
    size, radius = 32, 8.0
    c = np.arange(size) - size // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    ball = (x**2 + y**2 + z**2 <= radius**2).astype(float)
    for view in report.isosurface_views(ball, 0.5):
        hit = view > 0
        assert abs(hit.sum() / (np.pi * radius**2) - 1) < 0.1
        yy, xx = np.nonzero(hit)
        rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
        upper_left = hit & (cols < xx.mean()) & (rows > yy.mean())
        lower_right = hit & (cols > xx.mean()) & (rows < yy.mean())
        assert view[upper_left].mean() > view[lower_right].mean() + 0.2
