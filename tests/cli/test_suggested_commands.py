"""A command a message suggests is shell-quoted: pasted as printed, it runs on a path with a space."""
from __future__ import annotations

import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest

import distill.api_teacher
from distill.bench.run import resolve_models
from distill.cli import EXIT_ERROR, main
from distill.errors import DistillError
from distill.records import CHECKPOINT_POINTER, CHECKPOINTS_DIR, STUDENT_SPEC
from tests.shapes import make_shapes_root


def _suggested(line: str, after: str) -> list[str]:
    """The argv the shell makes of the command that follows ``after`` in ``line``."""
    assert after in line, line
    return shlex.split(line.split(after, 1)[1])


def test_cache_build_suggests_an_inspect_that_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_shapes_root(tmp_path / "data", ["red"], per_class=1)
    out = tmp_path / "my cache"
    assert main(["cache", "build", "--data", str(root), "--out", str(out), "--arch", "distill-demo-vit",
                 "--pretrained", "none", "--workers", "0", "--no-progress"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    argv = _suggested(line, "inspect it with: ")
    assert argv == ["distill", "cache", "inspect", str(out)]
    assert main(argv[1:]) == 0  # as the user would paste it


def test_a_run_folder_in_use_suggests_a_resume_that_names_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "my run"
    (run / CHECKPOINTS_DIR).mkdir(parents=True)
    (run / CHECKPOINTS_DIR / CHECKPOINT_POINTER).write_text("{}")
    assert main(["train", "-c", "kd", "--set", f"run.out={run}"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert _suggested(err.split(" to continue it")[0], "pass ") == ["--resume", str(run)]


def test_bootstrap_suggests_a_teacher_eval_that_names_its_paths(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_shapes_root(tmp_path / "my data", ["red"], per_class=1)
    out, cmap = tmp_path / "my teacher", tmp_path / "class map.yaml"
    cmap.write_text("circle: circle\n")
    ckpt = out / "open_clip_model.safetensors"
    monkeypatch.setattr(distill.api_teacher, "bootstrap_teacher",  # what it prints, not the training
                        lambda *a, **k: SimpleNamespace(checkpoint=ckpt.name))
    assert main(["teacher", "bootstrap", "--data", str(root), "--out", str(out), "--class-map", str(cmap),
                 "--no-progress"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("check it:"))
    assert _suggested(line, "check it:") == ["distill", "teacher", "eval", "--pretrained", str(ckpt),
                                              "--data", str(root), "--class-map", str(cmap)]


def test_bench_names_the_export_of_a_checkpoint_folder_quoted(tmp_path: Path) -> None:
    ckpt = tmp_path / "my ckpt"
    ckpt.mkdir()
    (ckpt / STUDENT_SPEC).write_text("{}")
    with pytest.raises(DistillError) as e:
        resolve_models(ckpt, "ort-cpu")
    assert _suggested(str(e.value).removesuffix(")"), "'ort-cpu': ") == ["distill", "export", str(ckpt), "--out", "DIR"]
