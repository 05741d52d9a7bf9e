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
from tests.report.test_engine_join import ENGINES

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
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


def _failing_trtexec(tmp_path: Path, *failing: str) -> Path:
    """A fake trtexec whose ``--loadEngine`` of each of ``failing`` fails (out of memory); it logs every call."""
    bin_dir = tmp_path / "failbin"
    bin_dir.mkdir()
    cases = "".join(f'  --loadEngine={e}) echo "[E] Error[2]: out of memory"; exit 2;;\n' for e in failing)
    (bin_dir / "trtexec").write_text(
        '#!/usr/bin/env bash\nfor a in "$@"; do [ "$a" = --help ] && { echo "[TensorRT v100300]"; exit 0; }; done\n'
        'echo "$@" >> "$TRTEXEC_LOG"\n'
        'for a in "$@"; do case "$a" in --saveEngine=*) echo "engine ${a#--saveEngine=}" > "${a#--saveEngine=}";;\n'
        f'{cases}  esac; done\n')
    (bin_dir / "trtexec").chmod(0o755)
    return bin_dir / "trtexec"


@pytest.mark.parametrize("reference", ["model.fp32.onnx", None])  # polygraphy missing; no calibration images
def test_an_engine_that_does_not_run_is_moved_aside_and_the_rest_still_run(tmp_path: Path,
                                                                           reference: str | None) -> None:
    """Review 1 (L3): the engine is moved aside, not deleted (a transient failure, a busy GPU, would lose a long Orin
    build); the engines after it are still run; one line names the failures; the script fails at the end."""
    folder = _folder(tmp_path, reference)
    proc, calls = _run(folder, tmp_path, trtexec=_failing_trtexec(tmp_path, "model.fp32.engine"))
    assert proc.returncode == 1
    assert list(_smoke_runs(calls)) == ["model.fp32.engine", "model.fp16.engine", "model.int8.engine"], proc.stderr
    said = [line for line in proc.stderr.splitlines() if "does not run" in line]
    assert len(said) == 1 and said[0].startswith("model.fp32.engine was built but does not run"), proc.stderr
    assert "its log: model.fp32.engine.smoke.log" in said[0]
    assert "moved aside to model.fp32.engine.failed" in said[0]
    assert "mv model.fp32.engine.failed model.fp32.engine" in said[0]  # how to put it back
    assert "[E] Error[2]: out of memory" in proc.stderr  # trtexec's last lines
    assert proc.stderr.rstrip().splitlines()[-1].startswith(
        "1 of 3 engine(s) failed to run: model.fp32.engine (each moved aside as ENGINE.failed")
    assert not (folder / "model.fp32.engine").exists()  # the runner cannot time it as if good
    assert (folder / "model.fp32.engine.failed").read_text() == "engine model.fp32.engine\n"  # kept, bytes intact
    assert (folder / "model.fp32.engine.source.json").is_file()  # still right once it is moved back
    assert (folder / "model.fp32.engine.smoke.log").is_file()
    assert (folder / "model.fp16.engine").is_file() and (folder / "model.int8.engine").is_file()  # ran: kept
    assert not (folder / "model.fp16.engine.smoke.log").exists()
    assert "built 3 engine(s)" not in proc.stdout


def test_every_failing_engine_is_named_once(tmp_path: Path) -> None:
    folder = _folder(tmp_path, None)
    proc, calls = _run(folder, tmp_path, trtexec=_failing_trtexec(tmp_path, "model.fp16.engine", "model.int8.engine"))
    assert proc.returncode == 1 and len(_smoke_runs(calls)) == 3
    assert [line for line in proc.stderr.splitlines() if "failed to run" in line] == [
        "2 of 3 engine(s) failed to run: model.fp16.engine model.int8.engine (each moved aside as ENGINE.failed,"
        " its log ENGINE.smoke.log)"]
    assert sorted(p.name for p in folder.glob("*.failed")) == ["model.fp16.engine.failed", "model.int8.engine.failed"]


def test_a_rebuild_clears_what_an_earlier_failure_moved_aside(tmp_path: Path) -> None:
    folder = _folder(tmp_path, None)
    (folder / "model.fp16.engine.failed").write_text("old")
    (folder / "model.fp16.engine.smoke.log").write_text("old")
    (folder / "model.int8.engine.check.log").write_text("old")  # the polygraphy check's log of a failed engine
    proc, _ = _run(folder, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not (folder / "model.fp16.engine.failed").exists() and not (folder / "model.fp16.engine.smoke.log").exists()
    assert not (folder / "model.int8.engine.check.log").exists()


@pytest.mark.parametrize("reference", ["model.fp32.onnx", None])  # review 1: without calibration images too
def test_skip_check_skips_the_run_too(tmp_path: Path, reference: str | None) -> None:
    folder = _folder(tmp_path, reference)
    proc, calls = _run(folder, tmp_path, env={"SKIP_CHECK": "1"})
    assert proc.returncode == 0 and len(calls) == 3 and _smoke_runs(calls) == {}, proc.stderr
