"""A resume on data other than the run started on is refused (distill/train/data_identity.py, RUN/data.json).

Before, a run without a cache resumed on a data.root that had gained or changed images without a word (sample
indices, and so every draw, then name other images), and a run with a cache compared the cache with today's
data, not with the run's.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from distill.cli import EXIT_ERROR, EXIT_INTERRUPTED
from distill.cli import main as cli
from distill.data.folder import DomainFolder
from distill.records import RUN_CONFIG, RUN_DATA
from distill.teacher import Teacher
from distill.teacher.cache import CacheOptions, build_cache
from distill.train import Checkpoints

COMMON = ["--set", "run.workers=0", "--set", "run.device=cpu", "--set", "run.save_every=1", "--set", "run.seed=1",
          "--set", "optim.epochs=2", "--set", "optim.batch_size=4", "--set", "student.arch=test_resnet", "--set",
          "student.input_size=16", "--set", "data.source=[red]", "--set", "data.target=[blue]", "--set",
          "data.pretrain_fraction=0", "--no-progress"]


def _cut_run(args: list[str], monkeypatch: pytest.MonkeyPatch, at: int = 2) -> None:
    """Run ``args`` and stop it (as Ctrl-C does) right after checkpoint ``at`` (0: before the first)."""
    save = Checkpoints.save

    def save_then_interrupt(self, step, strategy, state):
        if at == 0:
            raise KeyboardInterrupt
        path = save(self, step, strategy, state)
        if step == at:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(Checkpoints, "save", save_then_interrupt)
    assert cli(args) == EXIT_INTERRUPTED
    monkeypatch.setattr(Checkpoints, "save", save)


def _resume(run) -> int:
    return cli(["train", "--resume", str(run), "--no-progress"])


def _erm(data, run, *more: str) -> list[str]:
    return ["train", "-c", "erm", "--set", f"data.root={data}", "--set", "cache=null", "--set", f"run.out={run}",
            *more, *COMMON]


def test_a_resume_on_changed_data_is_refused_and_on_the_same_data_goes_on(tiny_root, tmp_path, monkeypatch, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(tiny_root, data)
    _cut_run(_erm(data, run), monkeypatch)
    recorded = json.loads((run / RUN_DATA).read_text())
    red = recorded["images"]["red"]
    extra = data / "red" / "circle" / "extra.png"
    shutil.copy(data / "red" / "circle" / "0.png", extra)  # one image more
    capsys.readouterr()
    assert _resume(run) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --resume {run}: 'red': its image count changed ({red} -> {red + 1}) since the run "
                          f"started ({run / RUN_DATA})"), err
    assert len(err.splitlines()) == 1
    extra.unlink()
    same = data / "red" / "circle" / "1.png"  # same count, one file's bytes changed: the file list's sizes
    same.write_bytes(same.read_bytes() + b"\0")
    assert _resume(run) == EXIT_ERROR
    assert "the data's file list (paths, sizes) changed since the run started" in capsys.readouterr().err
    same.write_bytes(same.read_bytes()[:-1])
    config = run / RUN_CONFIG  # a split key edited into the run's config: named with both values
    saved = config.read_text()
    config.write_text(saved.replace("val_fraction: 0.1", "val_fraction: 0.2"))
    assert _resume(run) == EXIT_ERROR
    assert "data.val_fraction changed (0.1 -> 0.2) since the run started" in capsys.readouterr().err
    config.write_text(saved)
    assert _resume(run) == 0  # the data it started on: goes on
    assert json.loads((run / RUN_DATA).read_text()) == recorded


def test_a_pool_folder_outside_the_data_root_is_part_of_the_data(tiny_root, tmp_path, monkeypatch, capsys):
    """Review 1 H1: the first record hashed the domains under data.root only; a pool folder that gained images
    resumed silently (its summary then counted the new ones)."""
    data, run, pool = tmp_path / "data", tmp_path / "run", tmp_path / "pool"
    shutil.copytree(tiny_root, data)
    pool.mkdir()
    for k in range(8):
        shutil.copy(tiny_root / "blue" / "circle" / f"{k}.png", pool / f"p{k}.png")
    _cut_run(_erm(data, run, "--set", f"data.unlabeled=[{pool}]", "--set", "data.unlabeled_ratio=0.5"), monkeypatch)
    images = json.loads((run / RUN_DATA).read_text())["images"]
    assert images["pool"] == 8
    shutil.copy(pool / "p0.png", pool / "p8.png")
    capsys.readouterr()
    assert _resume(run) == EXIT_ERROR
    assert "'pool': its image count changed (8 -> 9) since the run started" in capsys.readouterr().err
    (pool / "p8.png").unlink()
    assert _resume(run) == 0


def test_an_older_run_and_a_run_cut_before_its_first_checkpoint_record_the_data_now(tiny_root, tmp_path, monkeypatch,
                                                                                    capsys):
    data, old, early = tmp_path / "data", tmp_path / "old", tmp_path / "early"
    shutil.copytree(tiny_root, data)
    _cut_run(_erm(data, old), monkeypatch)
    (old / RUN_DATA).unlink()  # as a run written before the record
    shutil.copy(data / "red" / "circle" / "0.png", data / "red" / "circle" / "extra.png")
    capsys.readouterr()
    assert _resume(old) == 0
    assert f"warning: {old} has no {RUN_DATA} (a run from before distill recorded its data)" in capsys.readouterr().err
    assert (old / RUN_DATA).is_file()
    _cut_run(_erm(data, early), monkeypatch, at=0)  # no checkpoint: a resume starts it over, on today's data
    (data / "red" / "circle" / "extra.png").unlink()
    assert _resume(early) == 0
    assert json.loads((early / RUN_DATA).read_text())["images"] == json.loads((old / RUN_DATA).read_text())["images"] \
        | {"red": json.loads((old / RUN_DATA).read_text())["images"]["red"] - 1}


def test_a_rebuilt_cache_whose_rows_differ_is_refused_and_a_moved_one_is_not(tiny_root, tiny_cache, tmp_path,
                                                                           monkeypatch, capsys):
    """A cache rebuilt after the run started passes the cache's own check against the data (same teacher, data,
    views); the run's record says what its rows were (review 1 M1: dtype and layout were not compared)."""
    run, moved, rebuilt = tmp_path / "run", tmp_path / "moved-cache", tmp_path / "rebuilt"
    shutil.copytree(tiny_cache, moved)
    torch.manual_seed(0)
    ds = DomainFolder(tiny_root, test_fraction=0.3)
    build_cache(ds, Teacher("distill-demo-vit", None, ds.classes, ["a photo of a {}."]), rebuilt,
                CacheOptions(views=2, seed=3, shard_size=16, dtype="float32"), num_workers=0, progress=False)
    _cut_run(["train", "-c", "kd", "--set", f"data.root={tiny_root}", "--set", f"cache={tiny_cache}",
              "--set", f"run.out={run}", *COMMON], monkeypatch)
    config = run / RUN_CONFIG  # the cache moved or rebuilt elsewhere, and the run's config edited to say where
    saved = yaml.safe_load(config.read_text())
    capsys.readouterr()
    config.write_text(yaml.safe_dump({**saved, "cache": str(rebuilt)}))
    assert _resume(run) == EXIT_ERROR
    assert f"cache {rebuilt}: manifest.json's dtype, row_dtypes changed since the run started" in \
        capsys.readouterr().err
    config.write_text(yaml.safe_dump({**saved, "cache": str(moved)}))
    assert _resume(run) == 0
