"""Which Python runs build_engine.sh's comparison (``tensorrt_check.py``, which imports polygraphy and numpy).

It ran ``$PYTHON``, default ``python3``: on a Jetson polygraphy is often pip-installed in a venv, so ``python3`` cannot
import it and every comparison failed with "see polygraphy.log", nothing pointing at ``PYTHON=``. Now, without
``PYTHON=``, it is the Python of the polygraphy used (its ``#!`` line: a path, ``#!/usr/bin/env NAME``, or pip's
``/bin/sh`` wrapper for a long path), else ``python3``; ``PYTHON=`` still wins; and a comparison failing because its
Python cannot import a module says which Python ran it and to set ``PYTHON=``.

Here ``python3`` on PATH is a stand-in that cannot import polygraphy; the venv's ``python3`` is a wrapper logging its
arguments and running this interpreter (which imports the fake polygraphy of ``tests/export/fakes``).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.export.test_tensorrt_script import FAKES, _agreements, _fake_trtexec

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
NO_POLYGRAPHY = "No module named 'polygraphy'"


@pytest.fixture
def folder(export_dir: Path, tmp_path: Path) -> Path:
    """A copy of the session's export (fp32, fp16, both int8 flavours; 64 calibration images)."""
    return Path(shutil.copytree(export_dir, tmp_path / "exp"))


def _bins(tmp_path: Path) -> tuple[Path, Path]:
    """bin/ (trtexec; a python3 without polygraphy) and venv/bin (python3, python3-venv: this interpreter; also as
    "my venv/bin", a path a #! line cannot hold)."""
    bin_dir, venv = tmp_path / "bin", tmp_path / "venv" / "bin"
    bin_dir.mkdir()
    venv.mkdir(parents=True)
    (tmp_path / "my venv").symlink_to(venv.parent)
    _fake_trtexec(bin_dir, "[TensorRT v100300]")
    (bin_dir / "python3").write_text(  # as a python3 without polygraphy fails on tensorrt_check.py
        f'#!/usr/bin/env bash\necho "Traceback (most recent call last):" >&2\necho "ModuleNotFoundError: {NO_POLYGRAPHY}" >&2\n'
        "exit 1\n")
    for name in ("python3", "python3-venv"):
        (venv / name).write_text(f'#!/usr/bin/env bash\necho "$*" >> "$PY_LOG"\nexec "{sys.executable}" "$@"\n')
    for exe in (*bin_dir.iterdir(), *venv.iterdir()):
        exe.chmod(0o755)
    return bin_dir, venv


def _polygraphy(tmp_path: Path, venv: Path, style: str) -> Path:
    """A polygraphy console script run by the venv's Python, its #! line in ``style``; "bash": a bash wrapper."""
    spaced = tmp_path / "my venv" / "bin"  # a #! line cannot hold it
    body = f'import runpy\nrunpy.run_path("{FAKES / "polygraphy_cli.py"}", run_name="__main__")\n'
    head = {"path": f"#!{venv}/python3\n",  # pip's usual line
            "env": "#!/usr/bin/env python3-venv\n",
            "sh": f"#!/bin/sh\n'''exec' \"{spaced}/python3\" \"$0\" \"$@\"\n' '''\n",  # pip's, for a long or spaced path
            "bash": f'#!/usr/bin/env bash\nexec "{sys.executable}" "{FAKES / "polygraphy_cli.py"}" "$@"\n'}[style]
    exe = tmp_path / "polygraphy"
    exe.write_text(head + (body if style != "bash" else ""))
    exe.chmod(0o755)
    return exe


def _run(folder: Path, tmp_path: Path, style: str, env: dict[str, str] | None = None
         ) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir, venv = _bins(tmp_path)
    log = tmp_path / "python.log"
    full = {"PATH": f"{bin_dir}:{venv}:/usr/bin:/bin", "TRTEXEC_LOG": str(tmp_path / "trtexec.log"),
            "POLYGRAPHY_LOG": str(tmp_path / "polygraphy.log"), "PY_LOG": str(log), "PYTHONPATH": str(FAKES),
            "POLYGRAPHY": str(_polygraphy(tmp_path, venv, style)), **(env or {})}
    proc = subprocess.run(["bash", str(folder / "build_engine.sh")], env=full, capture_output=True, text=True,
                          timeout=300, check=False)
    checks = [line for line in (log.read_text().splitlines() if log.exists() else [])
              if line.startswith("tensorrt_check.py ")]  # the comparisons the venv's Python ran
    return proc, checks


@pytest.mark.parametrize("style", ["path", "env", "sh"])
def test_the_comparison_runs_under_polygraphys_own_python(folder: Path, tmp_path: Path, style: str) -> None:
    proc, checks = _run(folder, tmp_path, style)
    assert proc.returncode == 0, proc.stderr
    assert len(_agreements(proc.stdout)) == 4 and len(checks) == 4, (proc.stdout, checks)
    assert "comparison failed" not in proc.stderr


def test_python_given_wins_and_a_missing_module_names_it(folder: Path, tmp_path: Path) -> None:
    python = str(tmp_path / "bin" / "python3")  # made by _run: cannot import polygraphy
    proc, checks = _run(folder, tmp_path, "path", {"PYTHON": python})
    assert proc.returncode == 1 and checks == [], proc.stderr
    said = [line for line in proc.stderr.splitlines() if line.startswith("comparing ")]
    assert len(said) == 4 and said[0] == (
        f"comparing model.fp32.engine with ONNX Runtime on model.fp32.onnx failed: PYTHON={python}, which runs"
        " tensorrt_check.py, cannot import 'polygraphy': set PYTHON= to a Python that imports polygraphy and numpy (the"
        " one polygraphy is installed for); see tensorrt_check/polygraphy.log"), said
    last = proc.stderr.rstrip().splitlines()[-1]
    assert f"(PYTHON={python} cannot import 'polygraphy': set PYTHON= to a Python that imports polygraphy" in last, last
    assert NO_POLYGRAPHY in (folder / "tensorrt_check" / "polygraphy.log").read_text()


def test_a_polygraphy_that_is_no_python_script_leaves_python3_and_says_so(folder: Path, tmp_path: Path) -> None:
    proc, _ = _run(folder, tmp_path, "bash")
    assert proc.returncode == 1, proc.stderr
    said = [line for line in proc.stderr.splitlines() if line.startswith("comparing ")]
    assert len(said) == 4 and all(
        "failed: python3 (the default: " in line and "names no Python in a #! line; PYTHON= names another), which runs"
        " tensorrt_check.py, cannot import 'polygraphy': set PYTHON=" in line for line in said), said
