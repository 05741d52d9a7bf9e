"""build_engine.sh's polygraphy check when polygraphy cannot run TensorRT, and the batches it does not run (issue
s31-A follow-ups).

1. A polygraphy that cannot run TensorRT at all (on a Jetson: pip-installed in a venv without JetPack's ``tensorrt``
   bindings) failed on every engine, and every freshly built engine was moved aside. Now its failure is not taken as
   the engines': polygraphy's own "cannot import tensorrt" message (here from the real polygraphy, which has no
   TensorRT on this machine), or its failing on every engine, makes the script run each engine by trtexec at every
   batch instead, move none aside for polygraphy, say so in one line, and exit 1 (the comparison did not happen).
2. polygraphy runs the engines at the opt batch only: each engine that passed is now also run by trtexec at the
   profile's other batches (min, max), so one out of memory at the max batch is caught on that path too.

Run by bash with the fake ``trtexec`` of test_tensorrt_script (and the failing one of test_engine_smoke).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from distill.export.engine_check import load_data
from distill.export.tensorrt_script import CHECK_DIR, CHECK_IMAGES_FILE, write_build_script
from tests.export.test_engine_smoke import _failing_trtexec, _smoke, _smoke_runs
from tests.export.test_tensorrt_script import FAKES, _agreements, _fake_trtexec, _run
from tests.report.test_engine_join import ENGINES

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
NAMES = [e["engine"] for e in ENGINES]
NO_TRT = "Module: 'tensorrt' is required but could not be imported"  # polygraphy's lazy importer, 0.47 to 0.53


@pytest.fixture
def folder(export_dir: Path, tmp_path: Path) -> Path:
    """A copy of the session's export (fp32, fp16, both int8 flavours; 64 calibration images, batch 1/8/32)."""
    return Path(shutil.copytree(export_dir, tmp_path / "exp"))


def _real_polygraphy(tmp_path: Path) -> Path:
    """The installed polygraphy's CLI (no TensorRT on this machine), logging its arguments as the fake does."""
    if importlib.util.find_spec("polygraphy") is None:
        pytest.skip("polygraphy is not importable")
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is importable here: polygraphy would run the stand-in engines")
    exe = tmp_path / "real-polygraphy"
    exe.write_text('#!/usr/bin/env bash\necho "$*" >> "$POLYGRAPHY_LOG"\n'  # its own site-packages, not the fakes
                   f'PYTHONPATH= exec "{sys.executable}" -c "import sys; from polygraphy.tools import main; '
                   'sys.exit(main())" "$@"\n')
    exe.chmod(0o755)
    return exe


def _last(stderr: str) -> str:
    return stderr.rstrip().splitlines()[-1]


@pytest.mark.parametrize("engines", [ENGINES, ENGINES[:1]])  # one engine: polygraphy's own message tells
def test_a_polygraphy_without_tensorrt_moves_no_engine_aside(folder: Path, tmp_path: Path,
                                                            engines: list[dict[str, str]]) -> None:
    names = [e["engine"] for e in engines]
    write_build_script(folder, engines, "input", (3, 32, 32), (1, 8, 32), reference="model.fp32.onnx")
    proc, trtexec, polygraphy = _run(folder, tmp_path, "[TensorRT v100300]",
                                     {"POLYGRAPHY": str(_real_polygraphy(tmp_path))})
    assert proc.returncode == 1, proc.stderr
    assert NO_TRT in (folder / CHECK_DIR / "polygraphy.log").read_text()
    assert [c[1] for c in polygraphy if "--trt" in c] == ["model.fp32.engine"]  # the first one tells: no more runs
    assert not list(folder.glob("*.failed")) and all((folder / n).is_file() for n in names)  # none moved aside
    assert not list(folder.glob("*.check.log"))  # no engine's failure
    runs = _smoke_runs(trtexec)
    assert list(runs) == names and all(r == [_smoke(1), _smoke(8), _smoke(32)] for r in runs.values()), runs
    last = _last(proc.stderr)
    assert last.startswith("engine check failed: polygraphy could not run TensorRT: it cannot import tensorrt"), last
    for said in ("no engine was compared with ONNX Runtime", "the engines ran under trtexec instead",
                 "fix: install polygraphy for a Python that imports the tensorrt of this TensorRT",
                 "--system-site-packages", "POLYGRAPHY=none builds without the comparison",
                 f"polygraphy's log: {CHECK_DIR}/polygraphy.log"):
        assert said in last, said
    assert f"built {len(names)} engine(s)" in proc.stdout and _agreements(proc.stdout) == []


def test_a_polygraphy_without_tensorrt_still_lets_trtexec_catch_a_broken_engine(folder: Path, tmp_path: Path) -> None:
    env = {"POLYGRAPHY": str(_real_polygraphy(tmp_path)),
           "TRTEXEC": str(_failing_trtexec(tmp_path, "model.int8.engine", shapes="input:32x3x32x32"))}
    proc, trtexec, _ = _run(folder, tmp_path, "[TensorRT v100300]", env)
    assert proc.returncode == 1, proc.stderr
    assert sorted(p.name for p in folder.glob("*.failed")) == ["model.int8.engine.failed"]
    assert "model.int8.engine was built but does not run at batch 32" in proc.stderr
    assert _last(proc.stderr).startswith(
        "engine check failed: 1 of 3 engine(s) failed to run under trtexec: model.int8.engine (each moved aside as"
        " ENGINE.failed, its log ENGINE.smoke.log); polygraphy could not run TensorRT")


def test_a_polygraphy_failing_on_every_engine_moves_none_aside(folder: Path, tmp_path: Path) -> None:
    """No "cannot import tensorrt" (its tensorrt imports, but is not the TensorRT that built the engines, say): it ran
    no engine of this build, so its failures are not taken as the engines'; trtexec runs them all instead."""
    proc, trtexec, polygraphy = _run(folder, tmp_path, "[TensorRT v100300]", {"POLYGRAPHY_FAIL": ",".join(NAMES)})
    assert proc.returncode == 1, proc.stderr
    assert [c[1] for c in polygraphy if "--trt" in c] == NAMES  # each engine tried
    assert not list(folder.glob("*.failed")) and all((folder / n).is_file() for n in NAMES)
    assert sorted(p.name for p in folder.glob("*.check.log")) == sorted(f"{n}.check.log" for n in NAMES)  # kept
    assert all(r == [_smoke(1), _smoke(8), _smoke(32)] for r in _smoke_runs(trtexec).values())
    assert len(_smoke_runs(trtexec)) == 3
    last = _last(proc.stderr)
    assert last.startswith("engine check failed: polygraphy ran no engine: it failed on every one (3 of 3"), last
    assert "its tensorrt is likely not the TensorRT 10.3.0 trtexec built with" in last and "fix:" in last
    assert "does not run under polygraphy" not in proc.stderr  # no engine blamed


def test_an_engine_that_passes_polygraphy_runs_under_trtexec_at_the_other_batches(folder: Path,
                                                                                  tmp_path: Path) -> None:
    """polygraphy ran the opt batch (8); trtexec then runs min (1) and max (32), not 8 again."""
    proc, trtexec, _ = _run(folder, tmp_path, "[TensorRT v100300]")
    assert proc.returncode == 0, proc.stderr
    runs = _smoke_runs(trtexec)
    assert list(runs) == NAMES and all(r == [_smoke(1), _smoke(32)] for r in runs.values()), runs
    assert [line for line in proc.stdout.splitlines() if ": ran at batch" in line] == [
        f"{n}: ran at batch 1, 32 (trtexec --loadEngine, one inference each)" for n in NAMES]
    assert len(_agreements(proc.stdout)) == 4  # TensorRT 10: fp16 from the fp32 ONNX, so one comparison for it


def test_an_engine_out_of_memory_at_the_max_batch_is_caught_after_polygraphy(folder: Path, tmp_path: Path) -> None:
    trtexec = _failing_trtexec(tmp_path, "model.fp16.engine", shapes="input:32x3x32x32")
    proc, calls, _ = _run(folder, tmp_path, "[TensorRT v100300]", {"TRTEXEC": str(trtexec)})
    assert proc.returncode == 1, proc.stderr
    assert "model.fp16.engine vs ONNX Runtime on model.fp32.onnx" in _agreements(proc.stdout)  # it passed the check
    assert "model.fp16.engine was built but does not run at batch 32" in proc.stderr
    assert sorted(p.name for p in folder.glob("*.failed")) == ["model.fp16.engine.failed"]
    assert (folder / "model.fp16.engine.smoke.log").is_file()
    assert _smoke_runs(calls)["model.int8.engine"] == [_smoke(1), _smoke(32)]  # the others still run
    assert _last(proc.stderr) == (
        "engine check failed: 1 of 3 engine(s) failed to run under trtexec: model.fp16.engine (each moved aside as"
        f" ENGINE.failed, its log ENGINE.smoke.log); polygraphy's log: {CHECK_DIR}/polygraphy.log")


def test_an_engine_polygraphy_cannot_run_is_not_run_by_trtexec_too(folder: Path, tmp_path: Path) -> None:
    """polygraphy ran the other engines: its failure is this engine's (moved aside as before); the rest get trtexec."""
    proc, trtexec, _ = _run(folder, tmp_path, "[TensorRT v100300]", {"POLYGRAPHY_FAIL": "model.fp16.engine"})
    assert proc.returncode == 1, proc.stderr
    assert list(_smoke_runs(trtexec)) == ["model.fp32.engine", "model.int8.engine"]
    assert sorted(p.name for p in folder.glob("*.failed")) == ["model.fp16.engine.failed"]
    assert "polygraphy could not run TensorRT" not in proc.stderr and "polygraphy ran no engine" not in proc.stderr


@pytest.mark.parametrize("batches,check_images,after", [
    ((4, 4, 4), 64, []), ((8, 8, 32), 64, [32]),
    # fewer check images (64) than the opt batch: polygraphy runs one batch of 64, not 128, so trtexec runs opt too
    ((1, 128, 256), 64, [1, 128, 256]),
    ((4, 60, 64), 64, [64]),  # polygraphy runs 60, then the last 4 (the min batch): trtexec runs max only
    ((1, 8, 32), None, [1, 8, 32])])  # not told how many: every batch
def test_trtexec_runs_only_the_batches_polygraphy_did_not(folder: Path, tmp_path: Path, batches: tuple[int, int, int],
                                                          check_images: int | None, after: list[int]) -> None:
    """The fake polygraphy runs the data loader's batches of the folder's 64 check images, as polygraphy does."""
    write_build_script(folder, ENGINES, "input", (3, 32, 32), batches, reference="model.fp32.onnx",
                       check_images=check_images)
    # the check's images are the export's (opt 8, min 1): the data loader is told this profile's
    with np.load(folder / CHECK_IMAGES_FILE) as z:
        saved = {k: z[k] for k in z.files}
    np.savez(folder / CHECK_IMAGES_FILE, **{**saved, "batch": np.asarray(batches[1]), "min_batch": np.asarray(batches[0])})
    ran = {len(b["input"]) for b in load_data(folder / CHECK_IMAGES_FILE)}
    if check_images is not None:  # exactly the profile's batches polygraphy's data loader does not make
        assert set(after) == set(batches) - ran
    proc, trtexec, _ = _run(folder, tmp_path, "[TensorRT v100300]")
    assert proc.returncode == 0, proc.stderr
    assert _smoke_runs(trtexec) == ({n: [_smoke(b) for b in after] for n in NAMES} if after else {})


def test_polygraphy_none_runs_the_engines_by_trtexec_only(folder: Path, tmp_path: Path) -> None:
    proc, trtexec, polygraphy = _run(folder, tmp_path, "[TensorRT v100300]", {"POLYGRAPHY": "none"})
    assert proc.returncode == 0, proc.stderr
    assert "engine check skipped (POLYGRAPHY=none)" in proc.stderr and polygraphy == []
    assert all(r == [_smoke(1), _smoke(8), _smoke(32)] for r in _smoke_runs(trtexec).values())
    assert len(_smoke_runs(trtexec)) == 3


def test_ctrl_c_during_a_polygraphy_run_stops_the_script(folder: Path, tmp_path: Path) -> None:
    """Review s31-1: polygraphy's TensorRT logger turns Ctrl-C into SIGTERM, and bash goes on after a command that did
    not die of SIGINT itself: the check took the interrupted run as the engine's failure, went on to the next engines
    and moved the engine aside (exit 1). Now Ctrl-C stops the script there: exit 130, nothing moved aside."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_trtexec(bin_dir, "[TensorRT v100300]")
    (bin_dir / "polygraphy").write_text(f'#!/usr/bin/env bash\nexec "{sys.executable}" "{FAKES / "polygraphy_cli.py"}" "$@"\n')
    (bin_dir / "polygraphy").chmod(0o755)
    log = tmp_path / "polygraphy.log"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "TRTEXEC_LOG": str(tmp_path / "trtexec.log"), "POLYGRAPHY_LOG": str(log),
           "PYTHON": sys.executable, "POLYGRAPHY": str(bin_dir / "polygraphy"), "PYTHONPATH": str(FAKES),
           "POLYGRAPHY_HANG": "model.fp32.engine"}
    # its own process group, as a terminal's foreground job; SIGINT not ignored (a test runner's worker may ignore it)
    proc = subprocess.Popen(["bash", str(folder / "build_engine.sh")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for _ in range(600):
            if Path(f"{log}.hang").exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert Path(f"{log}.hang").exists(), proc.communicate()
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole foreground group
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert err.rstrip().splitlines()[-1].startswith("interrupted: stopped before the end"), err
    assert [line.split()[1] for line in log.read_text().splitlines() if "--trt" in line] == ["model.fp32.engine"]
    assert not list(folder.glob("*.failed")) and (folder / "model.fp32.engine").is_file()
    assert "built 3 engine(s)" not in out


@pytest.mark.parametrize("engines", [ENGINES[:1], ENGINES])  # one: a QAD folder's only engine
def test_engines_that_trtexec_cannot_run_either_are_not_blamed_on_polygraphy(folder: Path, tmp_path: Path,
                                                                            engines: list[dict[str, str]]) -> None:
    """Review s31-1: polygraphy failing on every engine was taken as polygraphy's failure even where trtexec then
    failed on every one too (a QAD folder's one broken engine, always "every engine"): the last line told the user to
    reinstall polygraphy and said none was moved aside for it. Now the engines are named under both, no polygraphy fix."""
    names = [e["engine"] for e in engines]
    write_build_script(folder, engines, "input", (3, 32, 32), (1, 8, 32), reference="model.fp32.onnx")
    proc, _, _ = _run(folder, tmp_path, "[TensorRT v100300]",
                      {"POLYGRAPHY_FAIL": ",".join(names), "TRTEXEC": str(_failing_trtexec(tmp_path, *names))})
    assert proc.returncode == 1, proc.stderr
    n = len(names)
    assert _last(proc.stderr) == (
        f"engine check failed: {n} of {n} engine(s) failed to run under polygraphy: {' '.join(names)} (each moved aside"
        f" as ENGINE.failed, its log ENGINE.check.log); {n} of {n} engine(s) failed to run under trtexec:"
        f" {' '.join(names)} (each moved aside as ENGINE.failed, its log ENGINE.smoke.log); polygraphy's log:"
        f" {CHECK_DIR}/polygraphy.log")
    assert sorted(p.name for p in folder.glob("*.failed")) == sorted(f"{e}.failed" for e in names)
    assert all((folder / f"{e}.check.log").is_file() and (folder / f"{e}.smoke.log").is_file() for e in names)


def test_a_polygraphy_failing_on_every_run_is_not_said_to_lack_tensorrt(folder: Path, tmp_path: Path) -> None:
    """Review s31-1 (L2): polygraphy failing on ONNX Runtime's runs too (its Python lacks numpy, its data loader fails)
    was said to have a tensorrt that is not this TensorRT. The engines are still kept and run by trtexec; the reason
    given is now polygraphy's every run failing."""
    everything = [*NAMES, "model.fp32.onnx", "model.int8-tensorrt.onnx"]
    proc, trtexec, _ = _run(folder, tmp_path, "[TensorRT v100300]", {"POLYGRAPHY_FAIL": ",".join(everything)})
    assert proc.returncode == 1, proc.stderr
    assert not list(folder.glob("*.failed")) and len(_smoke_runs(trtexec)) == 3
    last = _last(proc.stderr)
    assert "polygraphy failed on every run, ONNX Runtime's too" in last and "its tensorrt is likely" not in last, last
