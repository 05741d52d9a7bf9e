"""``distill teacher bootstrap`` runs :func:`distill.api.bootstrap_teacher` (review 2, L3): one code path, so the
command gets what the API does (its checks, torch's thread count put back after it, the global generators kept).

Before: the command built its own DomainFolder and settings and called the training directly; ``--threads`` stayed
set after it, and the API's docstring said the command called it.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import distill.api_teacher
from distill.cli import main
from distill.records import TeacherManifest
from distill.teacher.bootstrap.presets import DEMO_ARCH
from tests.shapes import make_shapes_root


def test_the_command_passes_its_flags_to_the_api(tmp_path, monkeypatch, capsys):
    calls = []

    def recorded(data, out, **options):
        calls.append((data, out, options))
        return SimpleNamespace(checkpoint="open_clip_model.safetensors")

    monkeypatch.setattr(distill.api_teacher, "bootstrap_teacher", recorded)
    assert main(["teacher", "bootstrap", "--data", "D", "--out", str(tmp_path / "t"), "--quick", "--epochs", "2",
                 "--pretrain-fraction", "0.4", "--threads", "1", "--no-progress"]) == 0
    assert calls == [("D", str(tmp_path / "t"), {
        "pretrain_fraction": 0.4, "arch": DEMO_ARCH, "epochs": 2, "batch_size": None, "lr": None,
        "max_per_domain": None, "quick": True, "class_map": None, "seed": 0, "skip_bad": False, "device": "cpu",
        "threads": 1, "progress": False})]
    assert f"teacher checkpoint: {tmp_path / 't' / 'open_clip_model.safetensors'}" in capsys.readouterr().out


def test_the_command_puts_torchs_threads_back(tmp_path, capsys):
    root = make_shapes_root(tmp_path / "data", ["red", "green"], per_class=6)
    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1
    assert main(["teacher", "bootstrap", "--data", str(root), "--out", str(tmp_path / "t"), "--quick",
                 "--threads", str(wanted), "--no-progress"]) == 0
    assert torch.get_num_threads() == before
    assert TeacherManifest.read(tmp_path / "t").dataset.pretrain is not None
    out = capsys.readouterr().out
    assert f"teacher manifest:   {tmp_path / 't' / 'teacher.json'}" in out


@pytest.mark.parametrize("flag, said", [(["--threads", "0"], "error: --threads must be an int >= 1, got 0"),
                                        (["--device", "tpu"], "error: --device")])
def test_bad_flags_are_named_as_flags(tmp_path, capsys, flag, said):
    root = make_shapes_root(tmp_path / "data", ["red"], per_class=2)
    assert main(["teacher", "bootstrap", "--data", str(root), "--out", str(tmp_path / "t"), "--quick", *flag]) == 1
    assert capsys.readouterr().err.splitlines()[-1].startswith(said)
