"""What the CLI writes where (distill/cli/__init__.py's conventions): a reader that stops early (`| head`) gets no
traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.shapes import make_shapes_root

REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return {**env, "PYTHONPATH": str(REPO), **extra}


@pytest.mark.parametrize("unbuffered", ["1", ""])  # print() fails at once, or the interpreter's last flush does
def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path, unbuffered: str) -> None:
    """`distill data summary ROOT | head -2`: once head has its lines, the command ends quietly (exit 1, as in the
    Python docs' "Note on SIGPIPE"), not with a BrokenPipeError traceback."""
    root = make_shapes_root(tmp_path / "d", ["red"], per_class=1)
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written
    try:
        res = subprocess.run([sys.executable, "-m", "distill", "data", "summary", str(root)], stdout=write,
                             stderr=subprocess.PIPE, text=True, timeout=120, cwd=REPO,
                             env=_env(PYTHONUNBUFFERED=unbuffered))
    finally:
        os.close(write)
    assert "Traceback" not in res.stderr and "BrokenPipeError" not in res.stderr, res.stderr
    assert res.returncode == 1
