"""build_engine.sh runs each engine once with trtexec where no polygraphy check runs it (issue 21, item 4): without
polygraphy, or for an export without calibration images, an engine that builds but does not run was first seen when
the edge runner timed it. The script is written here for three tiny stand-in ONNX files and run by bash with a fake
``trtexec`` recording its arguments (as test_tensorrt_script does)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from distill.export.tensorrt_script import write_build_script
from tests.export.test_tensorrt_script import _fake_trtexec

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
ENGINES = [{"onnx": "model.fp32.onnx", "onnx_strongly_typed": "model.fp32.onnx", "engine": "model.fp32.engine",
            "precision": "fp32"},
           {"onnx": "model.fp32.onnx", "onnx_strongly_typed": "model.fp16.onnx", "engine": "model.fp16.engine",
            "precision": "fp16"},
           {"onnx": "model.int8-tensorrt.onnx", "onnx_strongly_typed": "model.int8-tensorrt.onnx",
            "engine": "model.int8.engine", "precision": "int8"}]
SMOKE = ["--shapes=input:8x3x32x32", "--iterations=1", "--warmUp=0", "--duration=0"]


def _folder(tmp_path: Path, reference: str | None) -> Path:
    folder = tmp_path / "exp"
    folder.mkdir()
    for name in ("model.fp32.onnx", "model.fp16.onnx", "model.int8-tensorrt.onnx"):
        (folder / name).write_bytes(name.encode())
    write_build_script(folder, ENGINES, "input", (3, 32, 32), (1, 8, 32), reference=reference)
    return folder


def _run(folder: Path, tmp_path: Path, banner: str = "[TensorRT v100300]", env: dict[str, str] | None = None,
         trtexec: Path | None = None) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _fake_trtexec(bin_dir, banner)
    log = tmp_path / "trtexec.log"
    full = {"PATH": f"{bin_dir}:/usr/bin:/bin", "TRTEXEC_LOG": str(log), "POLYGRAPHY": "no-such-polygraphy",
            **({"TRTEXEC": str(trtexec)} if trtexec else {}), **(env or {})}
    proc = subprocess.run(["bash", str(folder / "build_engine.sh")], env=full, capture_output=True, text=True,
                          timeout=60, check=False)
    calls = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def _smoke_runs(calls: list[list[str]]) -> dict[str, list[str]]:
    return {c[0].split("=", 1)[1]: c[1:] for c in calls if c and c[0].startswith("--loadEngine=")}


@pytest.mark.parametrize("banner", ["[TensorRT v100300]", "[TensorRT v11.1.0.106]"])
@pytest.mark.parametrize("reference", ["model.fp32.onnx", None])  # polygraphy missing; no calibration images
def test_each_engine_runs_once_without_a_polygraphy_check(tmp_path: Path, banner: str, reference: str | None) -> None:
    folder = _folder(tmp_path, reference)
    proc, calls = _run(folder, tmp_path, banner)
    assert proc.returncode == 0, proc.stderr
    runs = _smoke_runs(calls)
    assert list(runs) == ["model.fp32.engine", "model.fp16.engine", "model.int8.engine"]  # after all were built
    assert all(args == SMOKE for args in runs.values()), runs  # the profile's opt batch, one iteration
    assert [i for i, c in enumerate(calls) if c[0].startswith("--loadEngine=")] == [3, 4, 5]
    assert [line for line in proc.stdout.splitlines() if "ran once" in line] == [
        f"{e['engine']}: ran once (trtexec --loadEngine, batch 8)" for e in ENGINES]
    assert proc.stdout.rstrip().splitlines()[-1].startswith("built 3 engine(s)")
    assert not list(folder.glob("*.smoke.log"))  # kept only when a run fails


def test_an_engine_that_does_not_run_fails_the_build_and_is_removed(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "model.fp32.onnx")
    failing = tmp_path / "failbin"
    failing.mkdir()
    (failing / "trtexec").write_text(
        '#!/usr/bin/env bash\nfor a in "$@"; do [ "$a" = --help ] && { echo "[TensorRT v100300]"; exit 0; }; done\n'
        'for a in "$@"; do case "$a" in --saveEngine=*) echo engine > "${a#--saveEngine=}";;\n'
        '  --loadEngine=model.fp16.engine) echo "[E] Error[2]: out of memory"; exit 2;; esac; done\n')
    (failing / "trtexec").chmod(0o755)
    proc, _ = _run(folder, tmp_path, trtexec=failing / "trtexec")
    assert proc.returncode == 1
    said = [line for line in proc.stderr.splitlines() if "does not run" in line]
    assert len(said) == 1 and said[0].startswith("model.fp16.engine was built but does not run"), proc.stderr
    assert "its log: model.fp16.engine.smoke.log" in said[0] and "removed it" in said[0]
    assert "[E] Error[2]: out of memory" in proc.stderr  # trtexec's last lines
    assert not (folder / "model.fp16.engine").exists() and not (folder / "model.fp16.engine.source.json").exists()
    assert (folder / "model.fp16.engine.smoke.log").is_file()
    assert (folder / "model.fp32.engine").is_file()  # ran before it: kept
    assert "built 3 engine(s)" not in proc.stdout


@pytest.mark.parametrize("reference", ["model.fp32.onnx", None])  # review 1: without calibration images too
def test_skip_check_skips_the_run_too(tmp_path: Path, reference: str | None) -> None:
    folder = _folder(tmp_path, reference)
    proc, calls = _run(folder, tmp_path, env={"SKIP_CHECK": "1"})
    assert proc.returncode == 0 and len(calls) == 3 and _smoke_runs(calls) == {}, proc.stderr
