"""`distill demo --quick`: the main job end to end at test size, and its idempotent rerun."""
from __future__ import annotations

import json
import time

import pytest

from distill.cli import main as cli


@pytest.mark.slow
def test_quick_demo_end_to_end_and_rerun(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    root = out / "data" / "digits-quick-seed0"
    assert (root / "suite.json").is_file()
    assert (out / "teacher" / "open_clip_model.safetensors").is_file()
    manifest = json.loads((out / "cache" / "manifest.json").read_text())
    assert manifest["views"]["count"] == 2 and manifest["teacher"]["arch"] == "distill-demo-rn"
    for run in ("erm", "kd"):
        summary = json.loads((out / "runs" / run / "summary.json").read_text())
        assert set(summary["test_acc"]) == {"mnist", "optdigits", "mnist_m", "mnist_c"}
        assert (out / "runs" / run / "checkpoints" / "best" / "model.safetensors").is_file()
    table = (out / "results.md").read_text()
    assert "teacher (zs)" in table and "erm" in table and "kd" in table
    for where in ("data", "teacher", "cache", "runs"):  # it says where each artifact went
        assert f"  {where}" in printed

    # a rerun finds every stage complete and skips it
    t0 = time.time()
    assert cli(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    assert "already trained" in capsys.readouterr().out
    assert time.time() - t0 < 60
