"""``distill.api.bootstrap_teacher``: ``distill teacher bootstrap`` from Python (QA G F6: the demo teacher, the docs'
way to get a teacher offline, had no API function). Same options and defaults as the command; the typed
teacher.json back; torch's thread count and the global generators left as found."""
from __future__ import annotations

import inspect
import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from distill import api
from distill.cli import build_parser
from distill.errors import DistillError, UnknownKeyword
from distill.records import TeacherManifest


def _tree(root: Path) -> Path:
    for d, shade in (("light", 220), ("dark", 40)):
        for c, color in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
            (root / d / c).mkdir(parents=True)
            for i in range(6):
                img = Image.new("RGB", (16, 16), (shade,) * 3)
                img.paste(Image.new("RGB", (6 + i % 3, 6), color), (i, 4))
                img.save(root / d / c / f"{i}.png")
    return root


def test_bootstrap_teacher_trains_and_returns_its_manifest(tmp_path: Path) -> None:
    data = _tree(tmp_path / "data")
    threads, draw = torch.get_num_threads(), random.getstate()
    manifest = api.bootstrap_teacher(data, tmp_path / "teacher", pretrain_fraction=0.5, epochs=1, batch_size=4,
                                     max_per_domain=0, threads=1, progress=False)
    assert manifest == TeacherManifest.read(tmp_path / "teacher")
    assert (tmp_path / "teacher" / manifest.checkpoint).is_file() and manifest.classes == ["blue", "red"]
    assert manifest.dataset.pretrain is not None and manifest.dataset.pretrain.fraction == 0.5
    assert torch.get_num_threads() == threads and random.getstate() == draw


def test_bad_arguments_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(UnknownKeyword, match=r"unknown keyword argument 'epoch' \(did you mean 'epochs'\?\)"):
        api.bootstrap_teacher(tmp_path, tmp_path / "t", epoch=1)  # type: ignore[call-arg]
    with pytest.raises(DistillError, match="bootstrap_teacher: data must be a path"):
        api.bootstrap_teacher(5, tmp_path / "t")  # type: ignore[arg-type]
    with pytest.raises(DistillError, match="threads must be an int >= 1, got 0"):
        api.bootstrap_teacher(tmp_path, tmp_path / "t", threads=0)


def test_defaults_are_the_commands() -> None:
    args = vars(build_parser().parse_args(["teacher", "bootstrap", "--data", "d", "--out", "o"]))
    params = inspect.signature(api.bootstrap_teacher).parameters
    flags = {k: v for k, v in args.items() if k not in ("command", "teacher_command", "func", "_parser", "data", "out")}
    flags["progress"] = not flags.pop("no_progress")
    assert set(flags) == set(params) - {"data", "out"}
    assert {k: params[k].default for k in flags} == flags
