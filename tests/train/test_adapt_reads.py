"""A source-free adaptation reads only its target domains: its bad-image warning and its header's teacher
zero-shot name nothing of the source domains (QA I, 6)."""
from __future__ import annotations

import json

import torch

from distill.cli import main as cli
from distill.student.model import Student, default_spec, save_student
from distill.teacher.cache import TeacherCache
from tests.train.test_skip_bad import _warnings, world  # noqa: F401  (the module-scoped fixture)


def test_adapt_names_only_bad_images_and_zero_shot_of_its_target(world, tmp_path, capsys):  # noqa: F811
    root, cache, empty, truncated = world  # empty: a red (source) image; truncated: a blue one
    torch.manual_seed(0)
    classes = TeacherCache.open(cache).classes
    ckpt = save_student(Student(default_spec("test_resnet", classes, 16)), tmp_path / "best",
                        {"source_domains": ["red", "green"]})
    capsys.readouterr()
    assert cli(["adapt", "--source-checkpoint", str(ckpt), "--target", "blue", "--data", str(root), "--cache",
                str(cache), "--out", str(tmp_path / "sfda"), "--set", "optim.epochs=1", "--set", "optim.batch_size=4",
                "--set", "run.workers=0", "--set", "run.progress=false"]) == 0
    res = capsys.readouterr()
    lines = _warnings(res.err)
    assert len(lines) == 1 and truncated in lines[0] and empty not in lines[0], res.err
    header = next(line for line in res.out.splitlines() if line.startswith("training 'sfda'"))
    assert "teacher zero-shot: blue " in header and "red" not in header.split("teacher zero-shot:")[1], header
    summary = json.loads((tmp_path / "sfda" / "summary.json").read_text())
    assert [k["path"] for k in summary["skipped_images"]] == [truncated]
