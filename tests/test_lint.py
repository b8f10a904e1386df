"""The linter passes on src, tests and benchmarks: ruff, pinned in the ``dev`` extra, with the rules in pyproject.toml
(run here so that CI's one test command runs it too)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    assert importlib.util.find_spec("ruff") is not None, "ruff is missing: install the dev extra (bash scripts/setup.sh)"
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
                          "src", "tests", "benchmarks"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, f"ruff check src tests benchmarks:\n{run.stdout}{run.stderr}"
