"""QA G F12, F13: ``distill qad --out`` an export folder (``--export`` itself) replaced the export's int8 file, and
``distill export --out`` a teacher cache or a qad folder mixed its files in. Every stage's output folder now refuses
another stage's folder in one line and writes nothing (:mod:`distill.outputs`); its own earlier output it replaces."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from distill.cli import main
from distill.errors import DistillError

EXPORT_FLAGS = ["--precision", "fp32", "--eval-count", "4", "--exporter", "torchscript", "--no-build-engine"]


def _files(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and its sha256: what must be there, byte for byte, after a refusal."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("api", [False, True])
def test_qad_into_its_own_export_folder_is_refused_and_the_export_kept(export_dir: Path, run_ckpt: Path,
                                                                       tmp_path: Path, capsys, api: bool) -> None:
    """F12: ``distill qad CKPT --out EXP --export EXP`` (API: ``qad(..., out_dir=EXP, export_dir=EXP)``)."""
    exp = tmp_path / "exp"
    shutil.copytree(export_dir, exp)  # a copy: the session's export must stay as it is
    before = _files(exp)
    if api:
        from distill.api import qad

        with pytest.raises(DistillError) as e:
            qad(checkpoint=str(run_ckpt), out_dir=str(exp), export_dir=str(exp), epochs=1)
        line = str(e.value)
    else:
        assert main(["qad", str(run_ckpt), "--out", str(exp), "--export", str(exp), "--epochs", "1"]) == 1
        line = _one_error(capsys).removeprefix("error: ")
    assert line.startswith(f"{exp}: is an export folder (export.json); distill qad's files would mix"), line
    assert line.endswith("give --out a folder of its own, e.g. qad/exp"), line
    assert _files(exp) == before


def test_qad_into_a_teacher_cache_is_refused(run_ckpt: Path, tiny_cache: Path, capsys) -> None:
    before = _files(tiny_cache)
    assert main(["qad", str(run_ckpt), "--out", str(tiny_cache), "--epochs", "1"]) == 1
    line = _one_error(capsys)
    assert line.startswith(f"error: {tiny_cache}: is a teacher cache (manifest.json)"), line
    assert _files(tiny_cache) == before


@pytest.mark.parametrize("api", [False, True])
def test_an_export_into_a_teacher_cache_is_refused(run_ckpt: Path, tiny_root: Path, tiny_cache: Path, capsys,
                                                   api: bool) -> None:
    """F13: ``export(ckpt, "cache")`` wrote model.fp32.onnx, build_engine.sh and export.json among the shards."""
    before = _files(tiny_cache)
    if api:
        from distill.api import export

        with pytest.raises(DistillError) as e:
            export(str(run_ckpt), str(tiny_cache), precisions="fp32", data_root=str(tiny_root), eval_count=4)
        line = str(e.value)
    else:
        assert main(["export", str(run_ckpt), "--out", str(tiny_cache), "--data", str(tiny_root), *EXPORT_FLAGS]) == 1
        line = _one_error(capsys).removeprefix("error: ")
    assert line.startswith(f"{tiny_cache}: is a teacher cache (manifest.json); the export's files would mix"), line
    assert _files(tiny_cache) == before


def test_an_export_into_a_qad_folder_is_refused(export_dir: Path, run_ckpt: Path, tiny_root: Path, tmp_path: Path,
                                                capsys) -> None:
    """F13: export.json beside qad.json made ``distill bench`` of the folder time the export's files, not qad's."""
    folder = tmp_path / "qadkd"
    folder.mkdir()
    (folder / "qad.json").write_text("{}")  # what makes it a qad folder (the refusal reads nothing else)
    shutil.copy(export_dir / "model.int8-ort-cpu.onnx", folder)
    before = _files(folder)
    assert main(["export", str(run_ckpt), "--out", str(folder), "--data", str(tiny_root), *EXPORT_FLAGS]) == 1
    line = _one_error(capsys)
    assert line.startswith(f"error: {folder}: is a distill qad folder (qad.json); the export's files would mix"), line
    assert "distill bench of it would time them, not qad's int8 files" in line and line.endswith("e.g. exports/qadkd")
    assert _files(folder) == before


def test_a_timm_export_into_a_checkpoint_folder_is_refused_and_its_weights_kept(run_ckpt: Path, tmp_path: Path,
                                                                               capsys) -> None:
    """``distill export CKPT --out CKPT --format timm`` replaced the checkpoint's model.safetensors (the same name)
    with timm's, keyed otherwise: the checkpoint no longer loaded."""
    ckpt = tmp_path / "best"
    shutil.copytree(run_ckpt, ckpt)
    before = _files(ckpt)
    assert main(["export", str(ckpt), "--out", str(ckpt), "--format", "timm"]) == 1
    line = _one_error(capsys)
    assert line.startswith(f"error: {ckpt}: is a checkpoint folder (student.json); the timm export's files"), line
    assert _files(ckpt) == before


def test_a_teacher_bootstrap_into_a_teacher_cache_is_refused(tiny_root: Path, tiny_cache: Path, capsys) -> None:
    before = _files(tiny_cache)
    assert main(["teacher", "bootstrap", "--data", str(tiny_root), "--out", str(tiny_cache), "--quick"]) == 1
    line = _one_error(capsys)
    assert line.startswith(f"error: {tiny_cache}: is a teacher cache (manifest.json); the bootstrap's files"), line
    assert _files(tiny_cache) == before


def test_an_export_into_a_runs_checkpoints_folder_is_refused(run_ckpt: Path, tiny_root: Path, capsys) -> None:
    """RUN/checkpoints (last.json and the step checkpoints) is the run's too, not only RUN and RUN/checkpoints/best."""
    checkpoints = run_ckpt.parent
    before = _files(checkpoints.parent)
    assert main(["export", str(run_ckpt), "--out", str(checkpoints), "--data", str(tiny_root), *EXPORT_FLAGS]) == 1
    line = _one_error(capsys)
    assert line.startswith(f"error: {checkpoints}: is a training run's checkpoints folder; the export's files"), line
    assert _files(checkpoints.parent) == before
