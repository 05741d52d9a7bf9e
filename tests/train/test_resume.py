"""Exact resume mid-epoch for every registered strategy: a run interrupted after epoch 1 and resumed
ends byte for byte where the uninterrupted run ends (last checkpoint: weights, optimizer, RNG state;
best student; metrics.csv).

Every strategy gets an in-process crash (the process raises right after checkpoint step k, and a
new trainer resumes from disk with the global RNG scrambled, as a fresh process would have it);
two of them are killed with SIGKILL in a subprocess and resumed by ``distill train --resume``,
one with DataLoader workers.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from distill.config import load_train_config
from distill.data.view_policy import preset
from distill.strategies import get_strategy, list_strategies
from tests.shapes import CLASSES, make_shapes_root

REPO = Path(__file__).resolve().parents[2]
SOURCE, TARGET = ["red", "green"], ["blue"]
TEACHER = {"arch": "distill-demo-vit", "pretrained": None, "templates": ["a photo of a {}."]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(data root, cache with 2 views + adversarial views of the source train split, source checkpoint)."""
    from distill.data import DomainFolder
    from distill.student.model import Student, default_spec, save_student
    from distill.teacher import Teacher
    from distill.teacher.cache import AdversarialOptions, CacheOptions, build_adversarial_views, build_cache

    root = make_shapes_root(tmp_path_factory.mktemp("resume_data"), SOURCE + TARGET, per_class=8)
    ds = DomainFolder(root, test_fraction=0.3)
    torch.manual_seed(0)
    teacher = Teacher(TEACHER["arch"], None, ds.classes, TEACHER["templates"])
    cache = build_cache(ds, teacher, tmp_path_factory.mktemp("resume_cache") / "c",
                        CacheOptions(views=2, seed=3, shard_size=32), num_workers=0, progress=False)
    build_adversarial_views(ds, teacher, cache, AdversarialOptions(views=2, epsilon=8 / 255, steps=2, seed=5,
                                                                   domains=SOURCE), shard_size=32, progress=False)
    # a `--policy fm` cache (photometric ops, mixup/cutmix partners) for strategies that need augmented views
    fm_cache = build_cache(ds, teacher, tmp_path_factory.mktemp("resume_fm_cache") / "c",
                           CacheOptions(views=2, seed=3, shard_size=32, policy=preset("fm")), num_workers=0,
                           progress=False)
    torch.manual_seed(0)
    ckpt = save_student(Student(default_spec("test_resnet", CLASSES, 16)), tmp_path_factory.mktemp("src") / "best",
                        {"source_domains": SOURCE})
    return root, cache, ckpt, fm_cache


def _cfg(world, strategy: str, out: Path, workers: int = 0, policy_cache: bool = False) -> dict:
    root, cache, ckpt, fm_cache = world
    cls = get_strategy(strategy)
    if cls.needs.augmented_views or policy_cache:
        cache = fm_cache
    cfg = {
        "data": {"root": str(root), "source": SOURCE, "target": TARGET, "test_fraction": 0.3},
        "cache": str(cache),
        "student": {"arch": "test_resnet", "input_size": 16},
        "strategy": {"name": strategy},
        # batch 4: the target domain's train split (source-free strategies) still gives >= 2 steps/epoch
        "optim": {"epochs": 2, "batch_size": 4, "lr": 0.01, "warmup_epochs": 0.5},
        "run": {"out": str(out), "workers": workers, "progress": False, "seed": 1, "save_every": 1},
    }
    if cls.needs.online_teacher:
        cfg["teacher"] = dict(TEACHER)
    if strategy == "adv_kd":
        cfg["strategy"]["steps"] = 1
    if cls.needs.source_checkpoint:
        cfg["source_checkpoint"] = str(ckpt)
    return cfg


def _steps_per_epoch(cfg: dict) -> int:
    from distill.train import Trainer, build

    return Trainer(build(load_train_config(None, base={**cfg, "run": {**cfg["run"], "out": cfg["run"]["out"] + "-probe"}}))).steps_per_epoch


def _assert_same_run(a: Path, b: Path) -> None:
    """Byte-for-byte: the last checkpoint (student, strategy, optimizer, scheduler, RNG, history), best, metrics."""
    la, lb = (yaml.safe_load((r / "checkpoints" / "last.json").read_text()) for r in (a, b))
    assert la == lb, "the runs end at different checkpoints"
    for name in ("model.safetensors", "train_state.safetensors", "train_state.json"):
        fa, fb = a / "checkpoints" / la["dir"] / name, b / "checkpoints" / lb["dir"] / name
        assert fa.read_bytes() == fb.read_bytes(), f"checkpoints/{la['dir']}/{name} differs after resume"
    assert (a / "checkpoints" / "best" / "model.safetensors").read_bytes() == \
        (b / "checkpoints" / "best" / "model.safetensors").read_bytes(), "best student differs after resume"
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()


class _Crash(RuntimeError):
    pass


@pytest.mark.parametrize("strategy", list_strategies())
def test_crash_mid_epoch_2_then_resume_is_byte_identical(world, tmp_path, monkeypatch, strategy):
    summary = _crash_then_resume(world, tmp_path, monkeypatch, lambda out: _cfg(world, strategy, out))
    assert "unlabeled" not in summary  # a run without a pool writes the summary it always wrote


def test_crash_then_resume_with_an_unlabeled_pool_is_byte_identical(world, tmp_path, monkeypatch):
    """The pool's own order (cycling: 1.5 pool images per labelled one) replays exactly after a crash."""
    def with_pool(out: Path) -> dict:
        cfg = _cfg(world, "kd", out)
        cfg["data"] = {**cfg["data"], "unlabeled": TARGET, "unlabeled_ratio": 1.5}
        cfg["optim"] = {**cfg["optim"], "batch_size": 2}  # 3 pool images per step (ratio 1.5 of a batch of 2)
        return cfg

    summary = _crash_then_resume(world, tmp_path, monkeypatch, with_pool)
    pool = load_train_config(None, base=with_pool(tmp_path / "x"))
    from distill.data import DomainFolder

    images = len(DomainFolder(pool.data.root, test_fraction=0.3).select(TARGET, "train"))
    assert summary["unlabeled"] == {"domains": TARGET, "images": images, "ratio": 1.5}


def test_crash_then_resume_on_a_policy_cache_with_a_pool_and_workers_is_byte_identical(world, tmp_path, monkeypatch):
    """fm on a `--policy fm` cache (mixed views rendered on the decode path by 2 workers) + a pool replays exactly."""
    def fm_pool(out: Path) -> dict:
        cfg = _cfg(world, "fm", out, workers=2)
        cfg["strategy"]["alpha"] = 0.5  # the mixed label loss too
        cfg["data"] = {**cfg["data"], "unlabeled": TARGET}
        return cfg

    _crash_then_resume(world, tmp_path, monkeypatch, fm_pool)


def test_crash_then_resume_with_an_unlabeled_folder_pool_is_byte_identical(world, tmp_path, monkeypatch):
    """A folder outside data.root in the pool (cached with `cache build --unlabeled`) replays exactly after a crash."""
    from distill.data import DomainFolder
    from distill.data.unlabeled import add_folders, scan_folders
    from distill.teacher import Teacher
    from distill.teacher.cache import CacheOptions, build_cache
    from tests.shapes import COLOURS, draw

    root = world[0]
    cam = tmp_path / "field" / "cam"
    for k in range(7):  # flat and nested, no class folders
        (cam / ("night" if k % 2 else "")).mkdir(parents=True, exist_ok=True)
        draw(CLASSES[k % 3], COLOURS["blue"], 9000 + k, k).save(cam / ("night" if k % 2 else "") / f"{k}.png")
    ds = DomainFolder(root, test_fraction=0.3)
    add_folders(ds, scan_folders([str(cam)], root, "--unlabeled"))
    torch.manual_seed(0)
    cache = build_cache(ds, Teacher(TEACHER["arch"], None, ds.classes, TEACHER["templates"]), tmp_path / "cache",
                        CacheOptions(views=2, seed=3, shard_size=32), num_workers=0, progress=False)

    def with_folder(out: Path) -> dict:
        cfg = _cfg(world, "kd", out)
        cfg["cache"] = str(cache)
        cfg["data"] = {**cfg["data"], "unlabeled": [str(cam)], "unlabeled_ratio": 1.5}
        cfg["optim"] = {**cfg["optim"], "batch_size": 2}  # 3 pool images per step: the 7-image folder cycles
        return cfg

    summary = _crash_then_resume(world, tmp_path, monkeypatch, with_folder)
    assert summary["unlabeled"] == {"domains": [], "images": 7, "ratio": 1.5,
                                    "folders": [{"name": "cam", "path": str(cam.resolve()), "images": 7}]}


def _crash_then_resume(world, tmp_path, monkeypatch, make_cfg) -> dict:
    """Train once uninterrupted and once crashed after the first step of epoch 2 and resumed; the same bytes.
    Returns the uninterrupted run's summary.json."""
    from distill.train import Checkpoints, train

    full, crashed = tmp_path / "full", tmp_path / "crashed"
    spe = _steps_per_epoch(make_cfg(tmp_path / "p"))
    assert spe >= 2, "the crash must land inside epoch 2"
    crash_at = spe + 1  # the first step of epoch 2 is done and saved
    train(load_train_config(None, base=make_cfg(full)))

    save = Checkpoints.save

    def save_then_crash(self, step, strategy_, state):
        path = save(self, step, strategy_, state)
        if step == crash_at:
            raise _Crash(step)
        return path

    monkeypatch.setattr(Checkpoints, "save", save_then_crash)
    with pytest.raises(_Crash):
        train(load_train_config(None, base=make_cfg(crashed)))
    monkeypatch.setattr(Checkpoints, "save", save)
    assert not (crashed / "summary.json").exists()
    assert f'"step": {crash_at}' in (crashed / "checkpoints" / "last.json").read_text()

    torch.manual_seed(12345)  # a fresh process: whatever the global RNG holds, resume must not depend on it
    torch.rand(7)
    train(load_train_config(crashed / "config.yaml"), resume=True)
    _assert_same_run(full, crashed)
    return json.loads((full / "summary.json").read_text())


def _train_subprocess(args: list[str], env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "distill", "train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("strategy, workers", [("adv_cached", 2), ("adv_kd", 0)])
def test_kill9_mid_epoch_2_then_resume_is_byte_identical(world, tmp_path, strategy, workers):
    from distill.train import train

    full, killed = tmp_path / "full", tmp_path / "killed"
    cfg = _cfg(world, strategy, full, workers)
    spe = _steps_per_epoch(cfg)
    kill_at = spe + 1
    train(load_train_config(None, base=cfg))
    p = tmp_path / "kill.yaml"
    p.write_text(yaml.safe_dump(_cfg(world, strategy, killed, workers)))
    proc = _train_subprocess(["-c", str(p)], {"DISTILL_TRAIN_STEP_DELAY": "0.4"})
    last = killed / "checkpoints" / "last.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if last.is_file() and f'"step": {kill_at}' in last.read_text():
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    out = proc.communicate()[0]
    assert f'"step": {kill_at}' in last.read_text(), f"not killed at step {kill_at} (mid-epoch 2):\n{out}"
    assert not (killed / "summary.json").exists()

    resumed = _train_subprocess(["--resume", str(killed)])
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    assert "resumed from" in out
    _assert_same_run(full, killed)


def test_crash_then_resume_with_weight_ema_is_byte_identical(world, tmp_path, monkeypatch):
    """optim.ema_decay: the EMA student (in every step checkpoint) resumes bit for bit, and it is what is selected."""
    def with_ema(out: Path) -> dict:
        cfg = _cfg(world, "kd", out)
        cfg["optim"] = {**cfg["optim"], "ema_decay": 0.6}
        return cfg

    summary = _crash_then_resume(world, tmp_path, monkeypatch, with_ema)
    assert summary["ema_decay"] == 0.6


def test_crash_then_resume_selecting_on_teacher_agreement_is_byte_identical(world, tmp_path, monkeypatch):
    """run.select_on teacher_agreement (with an EMA student): the best agreement is in every step checkpoint, so
    the resumed run keeps the uninterrupted run's best; resuming it under another select_on is refused."""
    from distill.errors import DistillError
    from distill.train import train

    def on_agreement(out: Path) -> dict:
        cfg = _cfg(world, "kd", out)
        cfg["data"] = {**cfg["data"], "unlabeled": TARGET}
        cfg["optim"] = {**cfg["optim"], "epochs": 3, "ema_decay": 0.6}
        cfg["run"] = {**cfg["run"], "select_on": "teacher_agreement"}
        return cfg

    summary = _crash_then_resume(world, tmp_path, monkeypatch, on_agreement)
    assert summary["selected_on"] == "teacher_agreement" and summary["selected_value"] == summary["teacher_agreement"]
    from distill.train import Checkpoints

    state = Checkpoints.load(Checkpoints(tmp_path / "crashed").last())
    assert state["select_on"] == "teacher_agreement" and state["best"] == summary["selected_value"]
    cfg = load_train_config(tmp_path / "crashed" / "config.yaml", ["run.select_on=source_val"])
    with pytest.raises(DistillError, match="selected on teacher_agreement; resume with run.select_on=teacher_agreement"):
        train(cfg, resume=True)


@pytest.mark.parametrize("strategy", list_strategies())
def test_every_strategy_trains_with_weight_ema(world, tmp_path, strategy):
    """optim.ema_decay with each strategy: its predict (vl2v folds its head) runs on the EMA student, which is saved."""
    from distill.student.model import load_student
    from distill.train import train

    cfg = _cfg(world, strategy, tmp_path / "run")
    cfg["optim"] = {**cfg["optim"], "epochs": 1, "ema_decay": 0.5}
    cfg["run"] = {**cfg["run"], "save_every": 0}
    summary = train(load_train_config(None, base=cfg))
    assert summary.ema_decay == 0.5
    load_student(tmp_path / "run" / "checkpoints" / "best")  # a complete student
