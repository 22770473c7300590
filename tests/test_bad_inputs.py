"""The malformed-input corpus (tests/corpus/, written by tests/corpus/make_corpus.py without recon's own writers):
each case given to the reconstruction command gets one line on stderr that starts with ``error:``, names the
offending file and the problem, a non-zero exit, no traceback, and no output (the work folder is not created)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

CORPUS = REPO / "tests" / "corpus"
CASES = json.loads((CORPUS / "cases.json").read_text())


def test_corpus_is_complete_and_current():
    assert len(CASES) >= 20
    on_disk = {p.name for p in (CORPUS / "cases").iterdir() if p.is_dir()}
    assert on_disk == set(CASES), "rerun tests/corpus/make_corpus.py and commit tests/corpus/"


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gets_one_clear_line(name, tmp_path):
    case = CASES[name]
    workdir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "recon.reconstruct", "--particles", str(CORPUS / "cases" / case["particles"]),
         "--workdir", str(workdir), "--config", "experiments/configs/tiny.py"],
        cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert case["names"] in lines[0] and case["expect"] in lines[0], lines[0]
    assert not workdir.exists()
    assert result.stdout.strip() == ""
