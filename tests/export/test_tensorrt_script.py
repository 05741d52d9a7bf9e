"""build_engine.sh on TensorRT 10 and 11, run here with a fake ``trtexec`` and a fake ``polygraphy``.

The fakes record their arguments: which block of the script ran (the version branch), the exact
trtexec flags of each engine, and the polygraphy runs of the engine check, whose agreement line the
script prints. The real polygraphy is used only in the last test, where it is importable (its ONNX
Runtime backend: no TensorRT here).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from distill.bench import edge_runner
from distill.errors import DistillError
from distill.export import engine_check
from distill.export.images import ImageSet
from distill.export.tensorrt import tensorrt_major
from distill.export.tensorrt_script import CHECK_DIR, CHECK_IMAGES_FILE, CHECK_SCRIPT, write_check_files

FAKES = Path(__file__).parent / "fakes"
REMOVED_IN_11 = ("--int8", "--fp16", "--best", "--calib")
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _fake_trtexec(bin_dir: Path, banner: str) -> None:
    exe = bin_dir / "trtexec"
    exe.write_text('#!/usr/bin/env bash\n'
                   'for a in "$@"; do [ "$a" = --help ] && { echo "&&&& RUNNING TensorRT.trtexec %s # trtexec --help"; '
                   'echo "=== Model Options ==="; exit 0; }; done\n'
                   'echo "$*" >> "$TRTEXEC_LOG"\n'
                   'for a in "$@"; do case "$a" in --saveEngine=*) echo engine > "${a#--saveEngine=}";; esac; done\n'
                   % banner)
    exe.chmod(0o755)


def _run(folder: Path, tmp_path: Path, banner: str, env: dict[str, str] | None = None,
         polygraphy: bool = True) -> tuple[subprocess.CompletedProcess, list[list[str]], list[list[str]]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _fake_trtexec(bin_dir, banner)
    fake_polygraphy = bin_dir / "polygraphy"
    fake_polygraphy.write_text(f'#!/usr/bin/env bash\nexec "{sys.executable}" "{FAKES / "polygraphy_cli.py"}" "$@"\n')
    fake_polygraphy.chmod(0o755)
    full = {"PATH": f"{bin_dir}:/usr/bin:/bin", "TRTEXEC_LOG": str(tmp_path / "trtexec.log"),
            "POLYGRAPHY_LOG": str(tmp_path / "polygraphy.log"), "PYTHON": sys.executable,
            "POLYGRAPHY": str(fake_polygraphy) if polygraphy else "no-such-polygraphy",
            "PYTHONPATH": str(FAKES), **(env or {})}
    proc = subprocess.run(["bash", str(folder / "build_engine.sh")], env=full, capture_output=True, text=True,
                          timeout=300, check=False)
    logs = [[line.split() for line in (tmp_path / name).read_text().splitlines()] if (tmp_path / name).exists() else []
            for name in ("trtexec.log", "polygraphy.log")]
    return proc, logs[0], logs[1]


@pytest.fixture
def folder(export_dir: Path, tmp_path: Path) -> Path:
    """A copy of the session's export (fp32, fp16, both int8 flavours; 64 calibration images)."""
    return Path(shutil.copytree(export_dir, tmp_path / "exp"))


def _by_engine(calls: list[list[str]]) -> dict[str, list[str]]:
    """Each engine's build call (--saveEngine); trtexec's --loadEngine runs after the build are left out."""
    builds = [(next((a for a in c if a.startswith("--saveEngine=")), None), c) for c in calls]
    return {a.split("=", 1)[1]: c for a, c in builds if a is not None}


def test_the_export_writes_the_check_files(export_dir: Path) -> None:
    assert (export_dir / CHECK_SCRIPT).read_text() == Path(engine_check.__file__).read_text()
    with np.load(export_dir / CHECK_IMAGES_FILE) as z:
        assert z["images"].shape == (64, 32, 32, 3) and z["images"].dtype == np.uint8
        assert str(z["input_name"]) == "input" and (int(z["batch"]), int(z["min_batch"])) == (8, 1)


@pytest.mark.parametrize("banner", ["[TensorRT v100300] [b17]", "[TensorRT v10.3.0.30]"])
def test_tensorrt_10_uses_the_precision_flags(folder: Path, tmp_path: Path, banner: str) -> None:
    proc, trtexec, _ = _run(folder, tmp_path, banner, {"SKIP_CHECK": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "TensorRT 10: precision flags" in proc.stdout and "engine check skipped" in proc.stdout
    calls = _by_engine(trtexec)
    assert set(calls) == {"model.fp32.engine", "model.fp16.engine", "model.int8.engine"}
    assert "--onnx=model.int8-tensorrt.onnx" in calls["model.int8.engine"]
    assert calls["model.int8.engine"][-2:] == ["--int8", "--fp16"]
    assert "--onnx=model.fp32.onnx" in calls["model.fp16.engine"] and calls["model.fp16.engine"][-1] == "--fp16"
    assert not {"--int8", "--fp16", "--stronglyTyped"} & set(calls["model.fp32.engine"])
    assert [e for e, args in calls.items() if "--noTF32" in args] == ["model.fp32.engine"]  # fp32 without TF32
    assert all("--skipInference" in args for args in calls.values())  # build only, no timing run after it
    assert all((folder / e).exists() for e in calls)


@pytest.mark.parametrize("banner,env", [("[TensorRT v110000] [b10]", {}), ("[TensorRT v11.1.0.106] [b48]", {}),
                                        ("[TensorRT v100300]", {"TRT_MAJOR": "11"})])
def test_tensorrt_11_is_strongly_typed(folder: Path, tmp_path: Path, banner: str, env: dict[str, str]) -> None:
    proc, trtexec, _ = _run(folder, tmp_path, banner, {"SKIP_CHECK": "1", **env})
    assert proc.returncode == 0, proc.stderr
    assert "TensorRT 11: strongly typed" in proc.stdout
    calls = _by_engine(trtexec)
    assert set(calls) == {"model.fp32.engine", "model.fp16.engine", "model.int8.engine"}
    for args in calls.values():
        assert "--stronglyTyped" not in args  # a deprecated no-op in 11: networks are always strongly typed
        assert not [a for a in args if a.split("=")[0] in REMOVED_IN_11], args  # trtexec 11 would refuse them
    assert "--onnx=model.fp16.onnx" in calls["model.fp16.engine"]  # fp16 from the fp16 ONNX
    assert [e for e, args in calls.items() if "--noTF32" in args] == ["model.fp32.engine"]  # fp32 without TF32
    assert all("--skipInference" in args for args in calls.values())  # build only, no timing run after it
    assert "--onnx=model.int8-tensorrt.onnx" in calls["model.int8.engine"]  # int8 from the Q/DQ nodes


@pytest.mark.parametrize("banner,message", [("[TensorRT v8502]", "TensorRT 8 is too old"),
                                            ("no banner", "cannot tell which TensorRT")])
def test_old_or_unknown_tensorrt_stops_before_building(folder: Path, tmp_path: Path, banner: str,
                                                       message: str) -> None:
    proc, trtexec, _ = _run(folder, tmp_path, banner)
    assert proc.returncode == 1 and message in proc.stderr and trtexec == []


def test_too_old_names_the_jetpacks_that_ship_tensorrt_10(folder: Path, tmp_path: Path) -> None:
    """JetPack 6.0 ships TensorRT 8.6; only 6.1 and 6.2 ship 10.3 (QA H finding 9): neither the script's refusal nor
    the Python builder's (``tensorrt_major``) may tell a JetPack 6.0 user that theirs ships 10.3 ("6.x ships 10.3")."""
    proc, trtexec, _ = _run(folder, tmp_path, "[TensorRT v8602]")
    assert proc.returncode == 1 and trtexec == []
    with pytest.raises(DistillError, match="TensorRT 8.6.2 is too old") as e:
        tensorrt_major("8.6.2")
    for said in (" ".join(proc.stderr.split()), str(e.value)):
        assert "JetPack 6.1 and 6.2 ship 10.3" in said and "JetPack 6.0 ships 8.6" in said, said
        assert "6.x ships" not in said, said


@pytest.mark.parametrize("banner,tegra,noted", [("[TensorRT v110100]", True, True), ("[TensorRT v100300]", True, False),
                                                ("[TensorRT v110100]", False, False)])
def test_tensorrt_11_on_a_jetson_says_what_nvidia_supports(folder: Path, tmp_path: Path, banner: str, tegra: bool,
                                                           noted: bool) -> None:
    """NVIDIA's "Migrating TensorRT from 10.x to 11.x on Jetson/JetPack" pages: JetPack is not supported in 11.2.1,
    11.3.0, 11.4.0, 11.5.0; 11.4.1 supports JetPack 7.2.2+; JetPack 6.x stays on 10.x. A note, and the build goes on."""
    release = tmp_path / "nv_tegra_release"
    if tegra:
        release.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    proc, trtexec, _ = _run(folder, tmp_path, banner, {"SKIP_CHECK": "1", "NV_TEGRA_RELEASE": str(release)})
    assert proc.returncode == 0 and len(trtexec) == 3, proc.stderr
    note = " ".join(proc.stderr.split())
    assert ("on a Jetson" in note) == noted
    if noted:
        for said in ("JetPack is not supported in TensorRT 11.2.1, 11.3.0, 11.4.0 and 11.5.0",
                     "TensorRT 11.4.1 supports JetPack 7.2.2 or later on Jetson AGX Orin and Jetson Thor",
                     "Jetson Orin on JetPack 6.x must remain on the TensorRT 10.x of its JetPack"):
            assert said in note, note


@pytest.mark.parametrize("banner,sources", [
    ("[TensorRT v100300]", {"model.fp16.engine": ["model.fp32.onnx"],
                            "model.int8.engine": ["model.int8-tensorrt.onnx", "model.fp32.onnx"]}),
    ("[TensorRT v110000]", {"model.fp16.engine": ["model.fp16.onnx", "model.fp32.onnx"],
                            "model.int8.engine": ["model.int8-tensorrt.onnx", "model.fp32.onnx"]})])
def test_engines_are_compared_with_onnx_runtime(folder: Path, tmp_path: Path, banner: str,
                                                sources: dict[str, list[str]]) -> None:
    proc, _, polygraphy = _run(folder, tmp_path, banner)
    assert proc.returncode == 0, proc.stderr
    runs = {(c[1], "--trt" in c) for c in polygraphy}
    onnx_files = {"model.fp32.onnx", *(f for fs in sources.values() for f in fs)}
    assert runs == {(f, False) for f in onnx_files} | {(e, True) for e in ("model.fp32.engine", *sources)}
    for c in polygraphy:  # every run on the calibration images, the engine as an engine
        assert c[c.index("--data-loader-script") + 1] == f"{CHECK_SCRIPT}:load_data"
        assert ("--model-type" in c) == ("--trt" in c) and ("--onnxrt" in c) != ("--trt" in c)
    lines = [line for line in proc.stdout.splitlines() if "top-1 agreement" in line and not line.startswith(" ")]
    expected = [("model.fp32.engine", "model.fp32.onnx")] + [(e, f) for e, fs in sources.items() for f in fs]
    assert [line.split(":")[0] for line in lines] == [f"{e} vs ONNX Runtime on {f}" for e, f in expected]
    # the fake engine flips the top-1 class of the first image of each of the 8 batches of 8
    assert all("top-1 agreement 87.50 % (56/64 calibration images)" in line for line in lines), lines
    assert (folder / CHECK_DIR / "polygraphy.log").exists()


def test_no_polygraphy_builds_and_says_so(folder: Path, tmp_path: Path) -> None:
    proc, trtexec, _ = _run(folder, tmp_path, "[TensorRT v100300]", polygraphy=False)
    assert proc.returncode == 0 and "polygraphy not found" in proc.stderr
    # 3 builds, then each engine run by trtexec at the profile's 3 batches instead of the check (test_engine_smoke.py)
    assert [c[0].split("=")[0] for c in trtexec] == ["--onnx"] * 3 + ["--loadEngine"] * 9, trtexec


def test_check_images_load_like_the_export(export_dir: Path) -> None:
    """The data loader's batches are the export's own normalized calibration images, in the profile's batch."""
    with np.load(export_dir / CHECK_IMAGES_FILE) as z:
        images = ImageSet(z["images"], np.zeros(len(z["images"]), np.int64), np.asarray(["x"] * len(z["images"])),
                          tuple(z["mean"].tolist()), tuple(z["std"].tolist()), [])
    batches = list(engine_check.load_data(export_dir / CHECK_IMAGES_FILE))
    assert [b["input"].shape[0] for b in batches] == [8] * 8
    assert np.array_equal(np.concatenate([b["input"] for b in batches]), images.normalize(images.images))


def test_write_check_files_spreads_and_drops_short_batches(tmp_path: Path) -> None:
    imgs = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1).repeat(3, axis=3)
    images = ImageSet(imgs, np.zeros(10, np.int64), np.asarray(["d"] * 10), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), [])
    write_check_files(tmp_path, images, "x", (4, 4, 8), count=5)
    with np.load(tmp_path / CHECK_IMAGES_FILE) as z:
        assert z["images"][:, 0, 0, 0].tolist() == [0, 2, 4, 6, 9]  # spread over all domains, not the first 5
    assert [len(b["x"]) for b in engine_check.load_data(tmp_path / CHECK_IMAGES_FILE)] == [4]  # 1 < min batch 4
    assert engine_check.batch_sizes(5, 4, 4) == [4] and engine_check.batch_sizes(5, 4, 1) == [4, 1]
    assert engine_check.batch_sizes(3, 8, 1) == [3] and engine_check.batch_sizes(3, 8, 4) == []


def test_agreement() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.5]], np.float32)
    test = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.25]], np.float32)
    assert engine_check.agreement(ref, test) == (2, 3, 1.0)
    with pytest.raises(SystemExit):
        engine_check.agreement(ref, test[:2])


def test_with_the_real_polygraphy_on_onnx_runtime(export_dir: Path, tmp_path: Path) -> None:
    """polygraphy's own CLI, data loader and saved outputs (ONNX Runtime backend), read by tensorrt_check.py:
    the int8 QDQ model vs fp32, against the same agreement computed with onnxruntime directly."""
    pytest.importorskip("polygraphy")
    folder = Path(shutil.copytree(export_dir, tmp_path / "exp"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    run = [sys.executable, "-c", "import sys; from polygraphy.tools import main; sys.exit(main())", "run"]
    for name in ("model.fp32.onnx", "model.int8-tensorrt.onnx"):
        subprocess.run([*run, name, "--onnxrt", "--data-loader-script", f"{CHECK_SCRIPT}:load_data",
                        "--save-outputs", f"{name}.json"], cwd=folder, env=env, check=True, capture_output=True)
    out = subprocess.run([sys.executable, CHECK_SCRIPT, "model.fp32.onnx.json", "model.int8-tensorrt.onnx.json"],
                         cwd=folder, env=env, check=True, capture_output=True, text=True).stdout
    x = np.concatenate([b["input"] for b in engine_check.load_data(folder / CHECK_IMAGES_FILE)])
    logits = [ort.InferenceSession(str(folder / f), providers=["CPUExecutionProvider"]).run(["logits"], {"input": x})[0]
              for f in ("model.fp32.onnx", "model.int8-tensorrt.onnx")]
    same, n, _ = engine_check.agreement(*logits)
    assert f"top-1 agreement {100.0 * same / n:.2f} % ({same}/{n} calibration images)" in out


@pytest.mark.parametrize("env,message", [
    ({"TRTEXEC": "/nonexistent/trtexec"}, "TRTEXEC=/nonexistent/trtexec: not an executable file"),
    ({"TRT_MAJOR": "abc"}, "TRT_MAJOR=abc: not a TensorRT major version")])
def test_a_bad_setting_is_named_in_the_error(folder: Path, tmp_path: Path, env: dict[str, str], message: str) -> None:
    """QA finding 9: a TRTEXEC set by hand was reported as 'trtexec not found ... or set TRTEXEC=', a bad TRT_MAJOR
    as 'cannot tell which TensorRT': neither named the value that was wrong."""
    proc, trtexec, _ = _run(folder, tmp_path, "[TensorRT v100300]", env)
    assert proc.returncode == 1 and message in proc.stderr and trtexec == [], proc.stderr


def test_a_failed_rebuild_leaves_no_engine_of_the_earlier_run(folder: Path, tmp_path: Path) -> None:
    proc, _, _ = _run(folder, tmp_path, "[TensorRT v100300]", {"SKIP_CHECK": "1"})
    assert proc.returncode == 0 and (folder / "model.fp32.engine").exists()
    failing = tmp_path / "failbin"
    failing.mkdir()
    (failing / "trtexec").write_text('#!/usr/bin/env bash\nfor a in "$@"; do [ "$a" = --help ] && '
                                     '{ echo "[TensorRT v100300]"; exit 0; }; done\nexit 3\n')
    (failing / "trtexec").chmod(0o755)
    proc, _, _ = _run(folder, tmp_path, "[TensorRT v100300]", {"SKIP_CHECK": "1", "TRTEXEC": str(failing / "trtexec")})
    assert proc.returncode == 3
    assert not list(folder.glob("*.engine"))  # nothing stale to benchmark by mistake
    assert "failed (exit 3) building model.fp32.engine; built before it: none" in proc.stderr


def test_the_check_prints_only_agreement_lines_and_ends_with_a_summary(folder: Path, tmp_path: Path) -> None:
    """polygraphy's own [I]/[W] lines went to stdout between the agreement lines, and nothing summed up the run."""
    fakes = tmp_path / "noisy"
    fakes.mkdir()
    # polygraphy's logger prints on loading saved results: the fake module does too
    (fakes / "sitecustomize.py").write_text("print('[W] \\'colored\\' module is not installed')\n")
    proc, _, _ = _run(folder, tmp_path, "[TensorRT v100300]", {"PYTHONPATH": f"{FAKES}:{fakes}"})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert not [line for line in out if line.startswith(("[W]", "[I]"))], out
    assert "[W] 'colored' module is not installed" in (folder / CHECK_DIR / "polygraphy.log").read_text()
    agreements = [line for line in out if "top-1 agreement" in line]
    end = out.index("built 3 engine(s): model.fp32.engine model.fp16.engine model.int8.engine")
    n = len(agreements) // 2  # each printed as checked, then again in the summary
    assert n == 4 and out[end + 1:] == [f"  {a}" for a in agreements[:n]] + [f"polygraphy's log: {CHECK_DIR}/polygraphy.log"]


@pytest.mark.parametrize("banner,env,version", [("[TensorRT v100300]", {}, "10.3.0"),
                                               ("[TensorRT v11.1.0.106] [b48]", {}, "11.1.0.106"),
                                               ("no banner", {"bindings": "10.7.0.23"}, "10.7.0.23"),
                                               ("[TensorRT v100300]", {"TRT_MAJOR": "11"}, None)])
def test_each_engine_records_the_onnx_it_was_built_from(folder: Path, tmp_path: Path, banner: str,
                                                        env: dict[str, str], version: str | None) -> None:
    """Review 3 finding 2: the edge runner named whatever ONNX sat beside the engine when it was timed; an export
    copied over the device folder without a rebuild gave the old engine the new export's accuracy. build_engine.sh now
    writes ENGINE.source.json at build time, and the runner's engine_source reads it. With the major (``trt_major``,
    for older readers) it records the full TensorRT version (``trt_version``: engines are not portable across minor
    versions either), from trtexec's banner or else the Python bindings; none where TRT_MAJOR overrides the major."""
    env = dict(env)
    if "bindings" in env:  # no banner: the script asks the Python bindings
        fake = tmp_path / "bindings"
        fake.mkdir()
        (fake / "tensorrt.py").write_text(f"__version__ = {env.pop('bindings')!r}\n")
        env["PYTHONPATH"] = f"{FAKES}:{fake}"
    proc, _, _ = _run(folder, tmp_path, banner, {"SKIP_CHECK": "1", **env})
    assert proc.returncode == 0, proc.stderr
    major = int(env.get("TRT_MAJOR") or str(version).split(".")[0])
    fp16_from = "model.fp16.onnx" if major >= 11 else "model.fp32.onnx"
    for engine, onnx in (("model.fp32.engine", "model.fp32.onnx"), ("model.fp16.engine", fp16_from),
                         ("model.int8.engine", "model.int8-tensorrt.onnx")):
        record = json.loads((folder / f"{engine}.source.json").read_text())
        assert record == {"engine": engine, "engine_sha256": hashlib.sha256((folder / engine).read_bytes()).hexdigest(),
                          "onnx": onnx, "onnx_sha256": hashlib.sha256((folder / onnx).read_bytes()).hexdigest(),
                          "trt_major": major, **({"trt_version": version} if version else {})}
    built_from = hashlib.sha256((folder / "model.int8-tensorrt.onnx").read_bytes()).hexdigest()
    (folder / "model.int8-tensorrt.onnx").write_bytes(b"a newer export's QDQ file, copied over without a rebuild")
    assert edge_runner.engine_source(folder / "model.int8.engine", major) == {
        "onnx": "model.int8-tensorrt.onnx", "sha256": built_from}


def _agreements(stdout: str) -> list[str]:
    """The agreement lines as each check printed them (the summary repeats them, indented)."""
    return [line.split(":")[0] for line in stdout.splitlines() if "top-1 agreement" in line and not line.startswith(" ")]


def test_an_engine_that_fails_under_polygraphy_is_moved_aside_and_the_rest_are_still_compared(folder: Path,
                                                                                              tmp_path: Path) -> None:
    """Issue s31-A: the first failing polygraphy run stopped the script (exit 1 in pg), so the engines after it were
    never compared, and the failing engine stayed in place for the edge runner to time. Now, as the trtexec smoke run
    does, it is moved aside with its log, every other engine is compared, and one line at the end names it."""
    proc, _, polygraphy = _run(folder, tmp_path, "[TensorRT v100300]", {"POLYGRAPHY_FAIL": "model.fp32.engine"})
    assert proc.returncode == 1, proc.stderr
    assert [c[1] for c in polygraphy if "--trt" in c] == ["model.fp32.engine", "model.fp16.engine",
                                                          "model.int8.engine"]  # the failing one run once, not twice
    assert _agreements(proc.stdout) == ["model.fp16.engine vs ONNX Runtime on model.fp32.onnx",
                                        "model.int8.engine vs ONNX Runtime on model.int8-tensorrt.onnx",
                                        "model.int8.engine vs ONNX Runtime on model.fp32.onnx"]
    said = [line for line in proc.stderr.splitlines() if "does not run" in line]
    assert len(said) == 1 and said[0].startswith("model.fp32.engine was built but does not run under polygraphy")
    assert "its log: model.fp32.engine.check.log" in said[0] and "mv model.fp32.engine.failed model.fp32.engine" in said[0]
    assert "[E] fake polygraphy: cannot run model.fp32.engine" in proc.stderr  # the run's last lines
    assert proc.stderr.rstrip().splitlines()[-1] == (
        "engine check failed: 1 of 3 engine(s) failed to run under polygraphy: model.fp32.engine (each moved aside as"
        f" ENGINE.failed, its log ENGINE.check.log); polygraphy's log: {CHECK_DIR}/polygraphy.log")
    assert not (folder / "model.fp32.engine").exists() and (folder / "model.fp32.engine.failed").read_text() == "engine\n"
    assert "cannot run model.fp32.engine" in (folder / "model.fp32.engine.check.log").read_text()
    assert "cannot run model.fp32.engine" in (folder / CHECK_DIR / "polygraphy.log").read_text()
    assert (folder / "model.fp16.engine").is_file() and (folder / "model.int8.engine").is_file()
    assert [p.name for p in folder.glob("*.check.log")] == ["model.fp32.engine.check.log"]  # kept where it failed
    assert "built 3 engine(s)" in proc.stdout  # the summary is still printed


@pytest.mark.parametrize("fail,agreed,line", [
    ("model.fp32.onnx", ["model.int8.engine vs ONNX Runtime on model.int8-tensorrt.onnx"],
     "ONNX Runtime failed on model.fp32.onnx (no engine compared with it)"),
    ("model.fp32.engine,model.int8-tensorrt.onnx",
     ["model.fp16.engine vs ONNX Runtime on model.fp32.onnx", "model.int8.engine vs ONNX Runtime on model.fp32.onnx"],
     "1 of 3 engine(s) failed to run under polygraphy: model.fp32.engine (each moved aside as ENGINE.failed, its log"
     " ENGINE.check.log); ONNX Runtime failed on model.int8-tensorrt.onnx (no engine compared with it)")])
def test_a_failing_onnx_runtime_reference_skips_its_comparisons_and_moves_no_engine(
        folder: Path, tmp_path: Path, fail: str, agreed: list[str], line: str) -> None:
    """ONNX Runtime failing on an ONNX file (onnxruntime missing, say) is not an engine's fault: the comparisons with
    that file are skipped, its run is tried once, no engine is moved aside for it, every engine is still run by
    polygraphy (a broken one is still caught), and the script fails at the end with one line naming every failure.
    Before, the first failure stopped the script there."""
    proc, _, polygraphy = _run(folder, tmp_path, "[TensorRT v100300]", {"POLYGRAPHY_FAIL": fail})
    assert proc.returncode == 1, proc.stderr
    assert [c[1] for c in polygraphy if "--trt" in c] == ["model.fp32.engine", "model.fp16.engine", "model.int8.engine"]
    ort = [c[1] for c in polygraphy if "--onnxrt" in c]
    assert sorted(ort) == ["model.fp32.onnx", "model.int8-tensorrt.onnx"], ort  # each tried once
    assert _agreements(proc.stdout) == agreed
    assert proc.stderr.rstrip().splitlines()[-1] == f"engine check failed: {line}; polygraphy's log: {CHECK_DIR}/polygraphy.log"
    moved = sorted(p.name for p in folder.glob("*.failed"))
    assert moved == (["model.fp32.engine.failed"] if "model.fp32.engine" in fail else [])
    reference = fail.split(",")[-1]
    assert f"ONNX Runtime's run of {reference} failed" in proc.stderr
    assert "built 3 engine(s)" in proc.stdout


def test_a_failing_comparison_is_named_and_its_engine_stays(folder: Path, tmp_path: Path) -> None:
    """The engine ran under polygraphy, but its outputs cannot be compared (here: one batch fewer): both its comparisons
    are named in the last line, the engine is not moved aside, the other engines are compared; before, exit 1 at once."""
    proc, _, _ = _run(folder, tmp_path, "[TensorRT v100300]", {"POLYGRAPHY_SHORT": "model.int8.engine"})
    assert proc.returncode == 1, proc.stderr
    assert _agreements(proc.stdout) == ["model.fp32.engine vs ONNX Runtime on model.fp32.onnx",
                                        "model.fp16.engine vs ONNX Runtime on model.fp32.onnx"]
    assert proc.stderr.rstrip().splitlines()[-1] == (
        "engine check failed: comparison failed: model.int8.engine vs model.int8-tensorrt.onnx, model.int8.engine vs"
        f" model.fp32.onnx; polygraphy's log: {CHECK_DIR}/polygraphy.log")
    assert (folder / "model.int8.engine").is_file() and not list(folder.glob("*.failed"))
    assert "outputs differ in shape" in (folder / CHECK_DIR / "polygraphy.log").read_text()
