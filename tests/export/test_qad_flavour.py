"""`distill qad --export DIR` without `--flavour` follows the export (issue 21 "Edge"). Before, QAD tuned the ort-cpu
file whatever the export recommended: after `distill export --int8-flavour both` recommended the tensorrt file, QAD
tuned the other one, and the report only said in words that the two did not match. Now an export with one int8
flavour gives that one, one with both gives the flavour its recommendation ships as int8 (read from export.json's
typed record), each said in one line; an explicit `--flavour` wins; a flavour the export has no file of is one line
naming the folder and the flavours it has."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from distill.cli import build_parser, main
from distill.cli.qad import FLAGS, config_options
from distill.errors import DistillError
from distill.export.qad_config import QADConfig, QADRecord
from distill.export.qad_flavour import qad_flavour
from distill.export.tensorrt_script import BUILD_SCRIPT

from ..report.test_engine_join import write_export
from .test_trt_workspace_flag import _workspaces

ORT = {"file": "model.int8-ort-cpu.onnx", "bytes": 1000, "sha256": "ab" * 32, "precision": "int8",
       "runtime": "onnxruntime", "flavour": "ort-cpu"}


def _recommend(folder: Path, precision: str, flavour: str | None) -> None:
    raw = json.loads((folder / "export.json").read_text())
    raw["recommendation"] = {"precision": precision, "flavour": flavour, "reason": "measured",
                             "speedup_measured": False}
    (folder / "export.json").write_text(json.dumps(raw))


def _export(tmp_path: Path, flavours: tuple[str, ...], recommended: tuple[str, str | None] | None) -> Path:
    """export.json listing fp32, fp16 and an int8 file of each flavour (write_export lists the tensorrt one)."""
    folder = write_export(tmp_path / "exp", "1")
    raw = json.loads((folder / "export.json").read_text())
    models: list[dict[str, Any]] = [m for m in raw["models"] if m.get("flavour") in (None, *flavours)]
    if "ort-cpu" in flavours:
        models.append(ORT)
    raw["models"] = models
    (folder / "export.json").write_text(json.dumps(raw))
    for m in models:
        (folder / m["file"]).write_bytes(b"onnx")
    if recommended is not None:
        _recommend(folder, *recommended)
    return folder


@pytest.mark.parametrize("recommended, taken", [(("int8", "tensorrt"), "tensorrt"), (("int8", "ort-cpu"), "ort-cpu")])
def test_with_both_flavours_qad_takes_the_one_the_export_recommends(tmp_path: Path, recommended: tuple[str, str],
                                                                     taken: str) -> None:
    export = _export(tmp_path, ("ort-cpu", "tensorrt"), recommended)
    choice = qad_flavour(None, export)
    assert choice.flavour == taken
    assert choice.why.startswith(f"int8 flavour {taken}: ") and "recommends" in choice.why
    assert str(export / "export.json") in choice.why and "\n" not in choice.why


@pytest.mark.parametrize("recommended", [("fp32", None), ("fp16", None), None])
def test_an_export_that_recommends_no_int8_leaves_the_default_and_says_so(tmp_path: Path,
                                                                          recommended: tuple[str, None] | None) -> None:
    choice = qad_flavour(None, _export(tmp_path, ("ort-cpu", "tensorrt"), recommended))
    assert choice.flavour == "ort-cpu" and choice.why.startswith("int8 flavour ort-cpu (the default): ")
    assert ("recommends " + recommended[0] if recommended else "no recommendation") in choice.why
    assert "--flavour tensorrt" in choice.why


@pytest.mark.parametrize("only", ["ort-cpu", "tensorrt"])
def test_an_export_with_one_flavour_gives_that_one(tmp_path: Path, only: str) -> None:
    choice = qad_flavour(None, _export(tmp_path, (only,), ("fp32", None)))
    assert choice.flavour == only and "the only int8 file" in choice.why


def test_an_int8_file_listed_but_not_in_the_folder_is_not_taken(tmp_path: Path) -> None:
    export = _export(tmp_path, ("ort-cpu", "tensorrt"), ("int8", "tensorrt"))
    (export / "model.int8-tensorrt.onnx").unlink()
    choice = qad_flavour(None, export)
    assert choice.flavour == "ort-cpu" and "the only int8 file" in choice.why
    with pytest.raises(DistillError, match=r"no int8 file of flavour tensorrt \(its int8 file\(s\): ort-cpu\)"):
        qad_flavour("tensorrt", export)


def test_an_explicit_flavour_wins(tmp_path: Path) -> None:
    export = _export(tmp_path, ("ort-cpu", "tensorrt"), ("int8", "tensorrt"))
    assert qad_flavour("ort-cpu", export).flavour == "ort-cpu"
    assert qad_flavour("tensorrt", _export(tmp_path / "b", ("ort-cpu", "tensorrt"), ("int8", "ort-cpu"))
                       ).flavour == "tensorrt"


@pytest.mark.parametrize("flavours, given, has", [(("tensorrt",), "ort-cpu", "its int8 file(s): tensorrt"),
                                                  (("ort-cpu",), "tensorrt", "its int8 file(s): ort-cpu"),
                                                  ((), None, "no int8 file")])
def test_a_flavour_the_export_lacks_is_one_line_naming_the_folder_and_its_flavours(
        tmp_path: Path, flavours: tuple[str, ...], given: str | None, has: str) -> None:
    export = _export(tmp_path, flavours, None)
    with pytest.raises(DistillError) as e:
        qad_flavour(given, export)
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"{export}: no int8 file of flavour {given or 'ort-cpu'} ({has})")


def test_the_cli_refuses_a_flavour_the_export_lacks_before_reading_data(
        capsys: pytest.CaptureFixture, run_ckpt: Path, export_dir: Path, tmp_path: Path) -> None:
    export = Path(shutil.copytree(export_dir, tmp_path / "exp"))
    raw = json.loads((export / "export.json").read_text())
    raw["models"] = [m for m in raw["models"] if m.get("flavour") != "tensorrt"]
    (export / "export.json").write_text(json.dumps(raw))
    out = tmp_path / "q"
    assert main(["qad", str(run_ckpt), "--out", str(out), "--export", str(export), "--flavour", "tensorrt"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {export}: no int8 file of flavour tensorrt (its int8 file(s): ort-cpu); pass --flavour "
                   "ort-cpu, or drop --export to compare with plain PTQ"], err
    assert not out.exists()


def test_the_cli_and_the_python_api_share_the_unset_default() -> None:
    """`distill qad` without --flavour and `distill.api.qad` without ``flavour`` both leave it to the export."""
    args = build_parser().parse_args(["qad", "ck", "--out", "o"])
    assert QADConfig.from_options(config_options(args), names=FLAGS).flavour is None
    assert QADConfig(checkpoint="ck", out_dir="o").flavour is None
    assert QADConfig(checkpoint="ck", out_dir="o").int8_flavour == "ort-cpu"  # no export to follow


def test_distill_qad_tunes_the_file_the_export_recommends(capsys: pytest.CaptureFixture, run_ckpt: Path,
                                                           export_dir: Path, tmp_path: Path) -> None:
    """An `--int8-flavour both` export recommending its tensorrt file: QAD tunes that one (its build_engine.sh with
    the CLI's --trt-workspace-mib), says why in one line, and the decision line names QAD's int8 file."""
    export = Path(shutil.copytree(export_dir, tmp_path / "exp"))
    _recommend(export, "int8", "tensorrt")
    out = tmp_path / "q"
    assert main(["qad", str(run_ckpt), "--out", str(out), "--export", str(export), "--epochs", "1",
                 "--eval-count", "4", "--holdout-count", "16", "--trt-workspace-mib", "256"]) == 0
    captured = capsys.readouterr()
    said = [line for line in captured.err.splitlines() if line.startswith("int8 flavour ")]
    assert len(said) == 1 and said[0].startswith("int8 flavour tensorrt: ") and "recommends" in said[0], said
    record = QADRecord.read(out)
    assert record.flavour == "tensorrt" and record.qad_file == "model.int8-tensorrt.onnx"
    assert record.qad_config["flavour"] == "tensorrt"  # as resolved, not None
    assert _workspaces(out / BUILD_SCRIPT) == {"256"}
    assert record.tensorrt is not None and record.tensorrt.workspace_mib == 256
    assert f"{export}: ship int8 (tensorrt)" in captured.out and record.ship_file in captured.out


@pytest.mark.parametrize("flavour, flags, said", [
    ("ort-cpu", ["--trt-batches", "1,4,8", "--trt-workspace-mib", "2048"],
     "--trt-batches and --trt-workspace-mib apply to --flavour tensorrt only: ignored, this QAD tunes the ort-cpu file"),
    ("tensorrt", ["--reduce-range"],
     "--reduce-range applies to --flavour ort-cpu only: ignored, this QAD tunes the tensorrt file"),
])
def test_flags_of_the_flavour_not_taken_are_named_in_one_warning(
        capsys: pytest.CaptureFixture, run_ckpt: Path, export_dir: Path, tmp_path: Path, flavour: str,
        flags: list[str], said: str) -> None:
    """Review 1 (8): with the flavour now taken from the export, --trt-* on an export that gives ort-cpu (no
    build_engine.sh follows) and --reduce-range on one that gives tensorrt did nothing, without a word. (The missing
    --cache stops the command right after, before any data is read.)"""
    export = Path(shutil.copytree(export_dir, tmp_path / "exp"))
    raw = json.loads((export / "export.json").read_text())
    raw["models"] = [m for m in raw["models"] if m.get("flavour") in (None, flavour)]
    (export / "export.json").write_text(json.dumps(raw))
    assert main(["qad", str(run_ckpt), "--out", str(tmp_path / "q"), "--export", str(export), *flags,
                 "--cache", str(tmp_path / "no_cache")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("warning: ")] == [f"warning: {said}"], err
    assert err[-1].startswith("error: ") and "no_cache" in err[-1], err


def test_ignored_options_are_named_as_the_caller_spelled_them():
    """From Python the warning names keywords (fix-J's rule, review 3), under distill qad's flags the flags."""
    from distill.cli.qad import FLAGS
    from distill.export.qad_flavour import unused_flags
    from distill.spelling import option_names

    assert unused_flags("ort-cpu", (1, 8, 32), 512, None) == (
        "trt_batches and trt_workspace_mib apply to flavour=tensorrt only: ignored, this QAD tunes the ort-cpu file")
    assert unused_flags("tensorrt", None, None, False) == (
        "reduce_range=False applies to flavour=ort-cpu only: ignored, this QAD tunes the tensorrt file")
    with option_names(FLAGS):
        assert unused_flags("tensorrt", None, None, False).startswith("--no-reduce-range applies to --flavour ort-cpu")
        assert unused_flags("ort-cpu", None, 512, None).startswith("--trt-workspace-mib applies to --flavour tensorrt")
    assert unused_flags("ort-cpu", None, None, True) is None
