"""A resume on data other than the run started on is refused (distill/train/data_identity.py, RUN/data.json).

Before, a run without a cache resumed on a data.root that had gained or changed images without a word (sample
indices, and so every draw, then name other images), and a run with a cache compared the cache with today's
data, not with the run's.
"""
from __future__ import annotations

import json
import shutil

import pytest

from distill.cli import EXIT_ERROR, EXIT_INTERRUPTED
from distill.cli import main as cli
from distill.records import RUN_DATA
from distill.train import Checkpoints

COMMON = ["--set", "run.workers=0", "--set", "run.device=cpu", "--set", "run.save_every=1", "--set", "run.seed=1",
          "--set", "optim.epochs=2", "--set", "optim.batch_size=4", "--set", "student.arch=test_resnet", "--set",
          "student.input_size=16", "--set", "data.source=[red]", "--set", "data.target=[blue]", "--set",
          "data.pretrain_fraction=0", "--no-progress"]


def _cut_run(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``args`` and stop it (as Ctrl-C does) right after its second checkpoint."""
    save = Checkpoints.save

    def save_then_interrupt(self, step, strategy, state):
        path = save(self, step, strategy, state)
        if step == 2:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(Checkpoints, "save", save_then_interrupt)
    assert cli(args) == EXIT_INTERRUPTED
    monkeypatch.setattr(Checkpoints, "save", save)


def test_a_resume_on_changed_data_is_refused_and_on_the_same_data_goes_on(tiny_root, tmp_path, monkeypatch, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(tiny_root, data)
    _cut_run(["train", "-c", "erm", "--set", f"data.root={data}", "--set", "cache=null", "--set", f"run.out={run}",
              *COMMON], monkeypatch)
    recorded = json.loads((run / RUN_DATA).read_text())
    images = recorded["dataset"]["images"]
    extra = data / "red" / "circle" / "extra.png"
    shutil.copy(data / "red" / "circle" / "0.png", extra)  # one image more
    capsys.readouterr()
    assert cli(["train", "--resume", str(run), "--no-progress"]) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --resume {run}: the data's image count changed ({images} -> {images + 1}) since "
                          f"the run started ({run / RUN_DATA})"), err
    assert len(err.splitlines()) == 1
    extra.unlink()
    same = data / "red" / "circle" / "1.png"  # same count, one file's bytes changed: the file list's sizes
    same.write_bytes(same.read_bytes() + b"\0")
    assert cli(["train", "--resume", str(run), "--no-progress"]) == EXIT_ERROR
    assert "the data's file list (paths, sizes) changed since the run started" in capsys.readouterr().err
    same.write_bytes(same.read_bytes()[:-1])
    assert cli(["train", "--resume", str(run), "--no-progress"]) == 0  # the data it started on: goes on
    assert json.loads((run / RUN_DATA).read_text()) == recorded


def test_a_cache_whose_targets_mean_something_else_is_refused(tiny_root, tiny_cache, tmp_path, monkeypatch, capsys):
    """A cache rebuilt after the run started passes the cache's own check against the data; the run's record says
    what the rows it trained on meant (a moved cache of the same teacher, templates and views is the same)."""
    run, moved = tmp_path / "run", tmp_path / "moved-cache"
    shutil.copytree(tiny_cache, moved)
    _cut_run(["train", "-c", "kd", "--set", f"data.root={tiny_root}", "--set", f"cache={tiny_cache}",
              "--set", f"run.out={run}", *COMMON], monkeypatch)
    recorded = json.loads((run / RUN_DATA).read_text())
    assert [c["teacher"]["arch"] for c in recorded["caches"]] == ["distill-demo-vit"]
    changed = json.loads(json.dumps(recorded))
    changed["caches"][0]["templates"] = ["a drawing of a {}."]  # as if the run had started on another build
    (run / RUN_DATA).write_text(json.dumps(changed))
    capsys.readouterr()
    assert cli(["train", "--resume", str(run), "--no-progress"]) == EXIT_ERROR
    assert f"cache {tiny_cache}: its templates changed since the run started" in capsys.readouterr().err
    (run / RUN_DATA).write_text(json.dumps(recorded))
    config = run / "config.yaml"  # the cache moved, and the run's config edited to say where
    config.write_text(config.read_text().replace(str(tiny_cache), str(moved)))
    assert cli(["train", "--resume", str(run), "--no-progress"]) == 0
