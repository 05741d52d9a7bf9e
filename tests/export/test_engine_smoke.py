"""build_engine.sh runs each engine with trtexec where no polygraphy check runs it (issue 21, item 4): without
polygraphy, or for an export without calibration images, an engine that builds but does not run was first seen when
the edge runner timed it. It runs once at each distinct batch of the profile (min, opt, max; issue s31-A: at the opt
batch only, an engine out of memory at the max batch was first seen when timed). The script is written here for three
tiny stand-in ONNX files and run by bash with a fake ``trtexec`` recording its arguments (as test_tensorrt_script
does)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from distill.export.tensorrt_script import write_build_script
from tests.export.test_tensorrt_script import _fake_trtexec
from tests.report.test_engine_join import ENGINES

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _smoke(batch: int) -> list[str]:
    """trtexec's arguments after --loadEngine for one inference at ``batch``."""
    return [f"--shapes=input:{batch}x3x32x32", "--iterations=1", "--warmUp=0", "--duration=0"]


def _folder(tmp_path: Path, reference: str | None, batches: tuple[int, int, int] = (1, 8, 32)) -> Path:
    folder = tmp_path / "exp"
    folder.mkdir()
    for name in ("model.fp32.onnx", "model.fp16.onnx", "model.int8-tensorrt.onnx"):
        (folder / name).write_bytes(name.encode())
    write_build_script(folder, ENGINES, "input", (3, 32, 32), batches, reference=reference)
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


def _smoke_runs(calls: list[list[str]]) -> dict[str, list[list[str]]]:
    """Each engine's trtexec --loadEngine runs, in order: the arguments after --loadEngine."""
    runs: dict[str, list[list[str]]] = {}
    for c in calls:
        if c and c[0].startswith("--loadEngine="):
            runs.setdefault(c[0].split("=", 1)[1], []).append(c[1:])
    return runs


@pytest.mark.parametrize("banner", ["[TensorRT v100300]", "[TensorRT v11.1.0.106]"])
@pytest.mark.parametrize("reference", ["model.fp32.onnx", None])  # polygraphy missing; no calibration images
def test_each_engine_runs_at_each_batch_without_a_polygraphy_check(tmp_path: Path, banner: str,
                                                                  reference: str | None) -> None:
    folder = _folder(tmp_path, reference)
    proc, calls = _run(folder, tmp_path, banner)
    assert proc.returncode == 0, proc.stderr
    runs = _smoke_runs(calls)
    assert list(runs) == ["model.fp32.engine", "model.fp16.engine", "model.int8.engine"]  # after all were built
    # the profile's min, opt and max batch, one trtexec call (one iteration) each
    assert all(args == [_smoke(1), _smoke(8), _smoke(32)] for args in runs.values()), runs
    assert [i for i, c in enumerate(calls) if c[0].startswith("--loadEngine=")] == list(range(3, 12))
    assert [line for line in proc.stdout.splitlines() if ": ran at batch" in line] == [
        f"{e['engine']}: ran at batch 1, 8, 32 (trtexec --loadEngine, one inference each)" for e in ENGINES]
    assert proc.stdout.rstrip().splitlines()[-1].startswith("built 3 engine(s)")
    assert not list(folder.glob("*.smoke.log"))  # kept only when a run fails


def _failing_trtexec(tmp_path: Path, *failing: str, shapes: str = "") -> Path:
    """A fake trtexec whose ``--loadEngine`` of each of ``failing`` fails (out of memory), with ``shapes``: only at
    that ``--shapes`` value; it logs every call."""
    bin_dir = tmp_path / "failbin"
    bin_dir.mkdir()
    at = f'"--shapes={shapes} "' if shapes else ""
    cases = "".join(f'  *" --loadEngine={e} "*{at}*) echo "[E] Error[2]: out of memory"; exit 2;;\n' for e in failing)
    (bin_dir / "trtexec").write_text(
        '#!/usr/bin/env bash\nfor a in "$@"; do [ "$a" = --help ] && { echo "[TensorRT v100300]"; exit 0; }; done\n'
        'echo "$@" >> "$TRTEXEC_LOG"\n'
        'for a in "$@"; do case "$a" in --saveEngine=*) echo "engine ${a#--saveEngine=}" > "${a#--saveEngine=}";;\n'
        f'  esac; done\ncase " $* " in\n{cases}esac\n')
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


def test_an_engine_that_fails_at_the_max_batch_is_moved_aside(tmp_path: Path) -> None:
    """Issue s31-A: the smoke run used the profile's opt batch only, so an engine out of memory at its max batch (a
    small Jetson) passed the build and failed when the edge runner timed it. Now it fails here: moved aside, named."""
    folder = _folder(tmp_path, None)
    trtexec = _failing_trtexec(tmp_path, "model.fp16.engine", shapes="input:32x3x32x32")
    proc, calls = _run(folder, tmp_path, trtexec=trtexec)
    assert proc.returncode == 1, proc.stderr
    runs = _smoke_runs(calls)
    assert all(args == [_smoke(1), _smoke(8), _smoke(32)] for args in runs.values()), runs  # the others run on
    said = [line for line in proc.stderr.splitlines() if "does not run" in line]
    assert len(said) == 1 and said[0].startswith("model.fp16.engine was built but does not run at batch 32"), said
    assert "--shapes=input:32x3x32x32" in said[0] and "its log: model.fp16.engine.smoke.log" in said[0]
    assert proc.stderr.rstrip().splitlines()[-1].startswith("1 of 3 engine(s) failed to run: model.fp16.engine (")
    assert not (folder / "model.fp16.engine").exists() and (folder / "model.fp16.engine.failed").is_file()
    log = (folder / "model.fp16.engine.smoke.log").read_text()  # all three runs, the failing one last
    assert [line.split(":")[0] for line in log.splitlines() if line.startswith("==")] == [
        "== batch 1", "== batch 8", "== batch 32"] and log.rstrip().endswith("out of memory")
    assert (folder / "model.fp32.engine").is_file() and (folder / "model.int8.engine").is_file()


@pytest.mark.parametrize("batches,runs", [((8, 8, 32), [8, 32]), ((1, 8, 8), [1, 8]), ((4, 4, 4), [4])])
def test_one_trtexec_call_per_distinct_batch(tmp_path: Path, batches: tuple[int, int, int], runs: list[int]) -> None:
    folder = _folder(tmp_path, None, batches)
    proc, calls = _run(folder, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert all(args == [_smoke(b) for b in runs] for args in _smoke_runs(calls).values()), calls
    assert f"model.fp32.engine: ran at batch {', '.join(map(str, runs))} (trtexec" in proc.stdout


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
