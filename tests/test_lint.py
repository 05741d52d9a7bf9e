"""Lint is part of the test command: `make test` runs ruff and mypy before pytest, and ruff's verdict on the tree is
also a test here, so a plain `python -m pytest` lists the violations too (ruff takes about a second; mypy, slower
on a cold cache, runs in `make test` only). Configuration: [tool.ruff] and [tool.mypy] in pyproject.toml."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_test_lints_before_pytest() -> None:
    """`make -n` prints the commands without running them: install, ruff, mypy, then pytest."""
    out = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    steps = [line for line in out.splitlines() if line.strip()]
    at = {tool: next((i for i, line in enumerate(steps) if f"-m {tool}" in line), None) for tool in ("ruff", "mypy", "pytest")}
    assert None not in at.values() and at["ruff"] < at["pytest"] and at["mypy"] < at["pytest"], steps


def test_ruff_finds_nothing() -> None:
    if importlib.util.find_spec("ruff") is None:
        if os.environ.get("CI"):
            pytest.fail("ruff is not installed: install the dev extra (scripts/install.sh dev)")
        pytest.skip("ruff is not installed (the dev extra: scripts/install.sh dev)")
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, f"ruff check found (fix with `ruff check --fix .`, then by hand):\n{res.stdout}{res.stderr}"
