"""build_engine.sh on a device without ``sha256sum`` (review 4 finding 1): it hashed inside a printf argument, where
``set -e`` does not stop, and wrote ENGINE.source.json with empty hashes; the edge runner then called every engine
"replaced since the build" and recorded no source. Now it falls back to ``shasum -a 256`` or ``$PYTHON``'s hashlib,
writes no sidecar (one warning) when none is there, and the runner reads a sidecar without hashes as no build record
(the export.json rule)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from distill.bench import edge_runner
from tests.export.test_tensorrt_script import _fake_trtexec

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _path_without(tmp_path: Path, *missing: str) -> str:
    """A folder of links to every command of /usr/bin and /bin but ``missing``."""
    bin_dir = tmp_path / "without"
    bin_dir.mkdir()
    for d in ("/usr/bin", "/bin"):
        for n in os.listdir(d):
            if n not in missing and not (bin_dir / n).exists():
                os.symlink(os.path.join(d, n), bin_dir / n)
    return str(bin_dir)


def _build(export_dir: Path, tmp_path: Path, python: str, *missing: str, shasum: str | None = None,
           sha256sum: str | None = None) -> tuple[Path, subprocess.CompletedProcess]:
    """Run build_engine.sh with ``missing`` off PATH; ``shasum``, ``sha256sum``: bodies of fakes put first on PATH."""
    folder = Path(shutil.copytree(export_dir, tmp_path / "exp"))
    fake = tmp_path / "fake"
    fake.mkdir()
    _fake_trtexec(fake, "[TensorRT v100300]")
    for name, body in (("shasum", shasum), ("sha256sum", sha256sum)):
        if body is not None:
            (fake / name).write_text(f"#!/bin/sh\n{body}\n")
            (fake / name).chmod(0o755)
    env = {"PATH": f"{fake}:{_path_without(tmp_path, *missing)}", "TRTEXEC_LOG": str(tmp_path / "t.log"),
           "SKIP_CHECK": "1", "PYTHON": python, "POLYGRAPHY": "no-such-polygraphy"}
    proc = subprocess.run(["bash", str(folder / "build_engine.sh")], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    return folder, proc


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# a shasum that works (hashing with this interpreter by its absolute path) and leaves a mark: with no sha256sum and
# PYTHON a missing command, only it can have written the record, whether or not this machine has a real shasum
_WORKING_SHASUM = (f'[ "$1 $2" = "-a 256" ] || exit 3\ntouch "$(dirname "$0")/shasum-ran"\nexec {sys.executable} -c '
                   '"import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], \'rb\').read()).hexdigest(), sys.argv[1])" "$3"')
# a shasum on PATH that fails, as where perl lacks Digest::SHA
_FAILING_SHASUM = "echo \"Can't locate Digest/SHA.pm in @INC\" >&2; exit 2"


@pytest.mark.parametrize(("python", "shasum"), [("no-such-python", _WORKING_SHASUM), (sys.executable, None),
                                                (sys.executable, _FAILING_SHASUM)],
                         ids=["shasum", "python", "python after a failing shasum"])
def test_without_sha256sum_another_hasher_writes_the_record(export_dir: Path, tmp_path: Path, python: str,
                                                            shasum: str | None) -> None:
    """Review 5 #4/#8: the "shasum" case passed a working python too, so without shasum it tested the python
    fallback; and a shasum that fails stopped the fallback (no record, "no sha256" blamed)."""
    folder, proc = _build(export_dir, tmp_path, python, "sha256sum", "shasum", shasum=shasum)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "fake" / "shasum-ran").exists() == (shasum == _WORKING_SHASUM)
    record = json.loads((folder / "model.fp32.engine.source.json").read_text())
    assert (record["engine_sha256"], record["onnx_sha256"]) == (
        _sha(folder / "model.fp32.engine"), _sha(folder / "model.fp32.onnx"))
    assert edge_runner.engine_source(folder / "model.fp32.engine", 10) == {
        "onnx": "model.fp32.onnx", "sha256": _sha(folder / "model.fp32.onnx")}


def test_one_file_that_cannot_be_hashed_leaves_the_other_engines_their_records(export_dir: Path,
                                                                                tmp_path: Path) -> None:
    """Review 5 #4: one failed hash set NO_HASHER, so no later engine got a record either."""
    hasher = (f'case "$1" in *model.fp32.engine) exit 1;; esac\nexec {sys.executable} -c '
              '"import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], \'rb\').read()).hexdigest(), sys.argv[1])" "$1"')
    folder, proc = _build(export_dir, tmp_path, "no-such-python", "sha256sum", "shasum", sha256sum=hasher)
    assert proc.returncode == 0, proc.stderr
    assert "cannot hash model.fp32.engine" in proc.stderr and "no sha256" not in proc.stderr, proc.stderr
    engines = sorted(p.name for p in folder.glob("*.engine"))
    records = sorted(p.name.removesuffix(".source.json") for p in folder.glob("*.source.json"))
    assert len(engines) > 1 and records == [e for e in engines if e != "model.fp32.engine"], (engines, records)


def test_without_any_hasher_no_record_is_written_and_export_json_is_used(export_dir: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    folder, proc = _build(export_dir, tmp_path, "no-such-python", "sha256sum", "shasum")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("warning: no sha256") == 1, proc.stderr
    assert not list(folder.glob("*.source.json"))
    assert edge_runner.engine_source(folder / "model.fp32.engine", 10) == {
        "onnx": "model.fp32.onnx", "sha256": _sha(folder / "model.fp32.onnx")}
    assert "replaced since the build" not in capsys.readouterr().err


def test_a_record_with_empty_hashes_falls_back_to_export_json(export_dir: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A sidecar an older build_engine.sh wrote without sha256sum."""
    folder = Path(shutil.copytree(export_dir, tmp_path / "exp"))
    (folder / "model.fp32.engine").write_bytes(b"engine")
    (folder / "model.fp32.engine.source.json").write_text(json.dumps(
        {"engine": "model.fp32.engine", "engine_sha256": "", "onnx": "model.fp32.onnx", "onnx_sha256": "",
         "trt_major": 10}))
    os.utime(folder / "model.fp32.onnx", (1, 1))
    assert edge_runner.engine_source(folder / "model.fp32.engine", 10) == {
        "onnx": "model.fp32.onnx", "sha256": _sha(folder / "model.fp32.onnx")}
    err = capsys.readouterr().err
    assert "not a build record" in err and "replaced since the build" not in err
