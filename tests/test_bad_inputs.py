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


@pytest.mark.parametrize("config", ["tiny", "plain"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gets_one_clear_line(name, config, tmp_path):
    """With a config, and as the plain command (settings derived from the data, read after the checks)."""
    case = CASES[name]
    workdir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "recon.reconstruct", "--particles", str(CORPUS / "cases" / case["particles"]),
         "--workdir", str(workdir), *(["--config", "experiments/configs/tiny.py"] if config == "tiny" else [])],
        cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    # the plain command refuses a set under 50 particles before looking at its pixels: also one line naming it
    expected = [case["expect"]] + (["particles: too few for an ab initio reconstruction"] if config == "plain" else [])
    assert case["names"] in lines[0] and any(e in lines[0] for e in expected), lines[0]
    assert not workdir.exists()
    assert result.stdout.strip() == ""


def reconstruct(*args):
    return subprocess.run([sys.executable, "-m", "recon.reconstruct", *args], cwd=REPO,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("flag, expect", [
    ("--config.prior.knd=car", "error: --config.prior.knd: no such setting; did you mean --config.prior.kind?"),
    ("--config.sampling.s00=3", "error: --config.sampling.s00: no such setting; did you mean --config.sampling.s0?"),
    ("--config.nothing_like_it=1", "error: --config.nothing_like_it: no such setting (--help lists them)"),
    ("--config.batch_size=abc", "error: flag --config.batch_size=abc: invalid literal for int()"),
])
def test_a_bad_config_key_is_one_line_naming_it(flag, expect, tmp_path):
    result = reconstruct("--particles", "x.star", "--workdir", str(tmp_path / "run"), flag)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith(expect), \
        result.stderr
    assert not (tmp_path / "run").exists()


def test_help_lists_the_flags_and_config_keys_and_exits_0():
    result = reconstruct("--help")
    assert result.returncode == 0, result.stderr
    for text in ("--particles", "--workdir", "--config.sampling.s0=3.0", "--config.particle_radius_angstrom=0.0",
                 "--config.automatic=True"):
        assert text in result.stdout, text
