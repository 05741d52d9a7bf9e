"""`distill bench QAD_DIR` times the int8 files a `distill qad` folder's qad.json names (QAD's, and PTQ's copy when
the no-harm rule wrote it). Before, a qad folder was refused with "folder has neither export.json nor student.json",
which named no way to time QAD's files."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from distill.cli import main
from distill.records import QADRecord

FAST = ["--warmup", "0", "--iters", "2", "--threads", "1"]


def _qad_folder(small_onnx: Path, folder: Path, ptq: bool) -> Path:
    folder.mkdir()
    shutil.copy(small_onnx, folder / "model.int8-ort-cpu.onnx")
    if ptq:
        shutil.copy(small_onnx, folder / "model.int8-ort-cpu.ptq.onnx")
    QADRecord(
        checkpoint=str(folder / "ckpt"), student="test_resnet", flavour="ort-cpu", library="torch.ao (test)",
        teacher="fp32", config={"out_dir": str(folder), "flavour": "ort-cpu"}, calibration_images=4, test_images=4,
        ptq={"calibration": {"a": 0.0}, "test": {"a": 0.0}}, qad={"calibration": {"a": 0.0}, "test": {"a": 0.0}},
        qad_file="model.int8-ort-cpu.onnx", tuned_checkpoint="checkpoint", qdq_check={}, torch_vs_onnx={},
        elapsed_s=1.0, within_target=True, ship="ptq" if ptq else "qad",
        ptq_file="model.int8-ort-cpu.ptq.onnx" if ptq else None).write(folder)
    return folder


def test_bench_of_a_qad_folder_times_its_int8_files(small_onnx: Path, tmp_path: Path) -> None:
    qad = _qad_folder(small_onnx, tmp_path / "qad", ptq=True)
    out = tmp_path / "bench.jsonl"
    assert main(["bench", str(qad), "--interleave", "--batch", "1", *FAST, "--out", str(out)]) == 0
    timed = [Path(json.loads(line)["model"]).name for line in out.read_text().splitlines()]
    assert timed == ["model.int8-ort-cpu.onnx", "model.int8-ort-cpu.ptq.onnx"]


def test_a_qad_folder_without_its_file_is_one_line(small_onnx: Path, tmp_path: Path, capsys) -> None:
    qad = _qad_folder(small_onnx, tmp_path / "qad", ptq=False)
    (qad / "model.int8-ort-cpu.onnx").unlink()
    assert main(["bench", str(qad), "--batch", "1", *FAST]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.int8-ort-cpu.onnx" in err[0] and "qad.json" in err[0], err


def test_a_folder_of_nothing_known_names_what_to_pass(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["bench", str(tmp_path / "empty"), "--batch", "1", *FAST]) == 1
    err = capsys.readouterr().err.strip()
    assert "qad.json" in err and ".onnx" in err, err
