"""An output folder that is an existing file (or lies under one) is one ``error:`` line naming it, exit 1, for
every command that writes a folder (distill.utils.io.check_out_dir), and the file is left as it was."""
from __future__ import annotations

from pathlib import Path

import pytest

from distill.cli import EXIT_ERROR, main
from distill.errors import DistillError
from distill.student.model import Student, default_spec, save_student
from tests.shapes import CLASSES, make_shapes_root


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_shapes_root(tmp_path_factory.mktemp("outfile") / "data", ["red", "blue"], per_class=4)


def _argv(command: str, root: Path, out: Path, tmp_path: Path) -> list[str]:
    if command == "materialize":
        return ["data", "materialize", "--out", str(out), "--quick"]
    if command == "cache":
        return ["cache", "build", "--data", str(root), "--out", str(out), "--arch", "distill-demo-vit",
                "--pretrained", "none", "--workers", "0"]
    if command == "bootstrap":
        return ["teacher", "bootstrap", "--data", str(root), "--out", str(out), "--quick", "--threads", "1"]
    if command == "train":
        return ["train", "-c", "erm", "--set", f"data.root={root}", "--set", "data.source=[red]",
                "--set", "data.target=[blue]", "--set", "student.arch=test_resnet", "--set", "student.input_size=16",
                "--set", "run.workers=0", "--set", f"run.out={out}"]
    ckpt = save_student(Student(default_spec("test_resnet", CLASSES, 16)), tmp_path / "src" / "best",
                        extra_provenance={"source_domains": ["red"]})
    return ["adapt", "--source-checkpoint", str(ckpt), "--target", "blue", "--data", str(root), "--strategy", "shot",
            "--out", str(out), "--set", "run.workers=0"]


@pytest.mark.parametrize("command", ["materialize", "cache", "bootstrap", "train", "adapt"])
@pytest.mark.parametrize("under", [False, True], ids=["the-file", "under-the-file"])
def test_out_that_is_a_file_is_one_line(command, under, root, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    out = afile / "run" if under else afile
    assert main(_argv(command, root, out, tmp_path) + ["--no-progress"]) == EXIT_ERROR
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("strategy 'shot'")]
    assert len(err) == 1 and err[0].startswith("error: ") and str(out) in err[0], err
    assert ("is a file, not a folder" if under else "exists and is not a folder") in err[0]
    flag = "run.out" if command == "train" else "--out"
    assert f"choose another {flag}" in err[0]
    assert afile.read_text() == "keep me\n"


def test_train_resume_of_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["train", "--resume", str(tmp_path / "afile")]) == EXIT_ERROR
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'afile' / 'config.yaml'}: config file not found"


def test_make_out_dir(tmp_path):
    from distill.utils.io import check_out_dir, make_out_dir

    assert make_out_dir(tmp_path / "a" / "b").is_dir() and check_out_dir(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "f").write_text("x")
    with pytest.raises(DistillError, match="cannot create this folder|is a file"):
        make_out_dir(tmp_path / "f" / "g", "run.out")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(DistillError, match="exists and is not a folder"):
        check_out_dir(tmp_path / "dangling")


@pytest.mark.parametrize("argv", [["qad", "CKPT", "--out"], ["export", "CKPT", "--format", "timm", "--out"]])
def test_qad_and_timm_export_out_naming_a_file_is_one_line(tmp_path, capsys, argv):
    """The review found `distill qad --out FILE` and `distill export --format timm --out FILE` still tracebacks."""
    from distill.cli import main

    afile = tmp_path / "afile"
    afile.write_text("keep")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    assert main([a if a != "CKPT" else str(ckpt) for a in argv] + [str(afile)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and str(afile) in err, err
    assert afile.read_text() == "keep"
