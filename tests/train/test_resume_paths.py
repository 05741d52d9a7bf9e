"""``--resume RUN`` from another working folder reads the files the run was started with (review 3, M3).

A run's config.yaml kept data.root, cache and adapt's source_checkpoint as typed; only run.out was fixed on
resume, so a resume from another folder failed to find the data, or found other data at the same relative
path. A new run now stores them absolute; an old run's relative ones are resolved against the folder the run
was started in as far as its path tells (distill/run_paths.py), else in the current folder with a warning, or the
resume is refused in one line.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from distill.cli import EXIT_INTERRUPTED
from distill.cli import main as cli
from distill.cli.train import resumed_config
from distill.config import load_train_config
from distill.errors import DistillError
from distill.student.model import Student, default_spec, save_student
from distill.train import Checkpoints
from tests.shapes import CLASSES, make_shapes_root
from tests.train.test_resume import _assert_same_run

COMMON = ["--set", "run.workers=0", "--set", "run.device=cpu", "--set", "run.save_every=1", "--set",
          "run.seed=1", "--set", "optim.epochs=2", "--set", "optim.batch_size=4", "--no-progress"]


@pytest.fixture
def started(tiny_root, tiny_cache, tmp_path) -> Path:
    """START: the folder runs are started in, holding the data, its cache and a source checkpoint (data, cache,
    src/best), all named by relative paths."""
    start = tmp_path / "start"
    shutil.copytree(tiny_root, start / "data")
    shutil.copytree(tiny_cache, start / "cache")  # a cache of the same images (the identity is relative paths)
    torch.manual_seed(0)
    save_student(Student(default_spec("test_resnet", CLASSES, 16)), start / "src" / "best",
                 {"source_domains": ["red", "green"]})
    return start


def _command(kind: str, out: str) -> list[str]:
    """A run started with relative paths only: kd on data + cache, or a shot adaptation of src/best."""
    if kind == "train":
        sets = ["data.root=data", "cache=cache", "data.source=[red]", "data.target=[blue]", "data.pretrain_fraction=0",
                "student.arch=test_resnet", "student.input_size=16", f"run.out={out}"]
        return ["train", "-c", "kd", *(a for item in sets for a in ("--set", item)), *COMMON]
    return ["adapt", "--strategy", "shot", "--source-checkpoint", "src/best", "--target", "blue", "--data", "data",
            "--out", out, "--set", "optim.lr=0.01", *COMMON]


@pytest.mark.parametrize("config_format", ["new", "old"])
@pytest.mark.parametrize("kind", ["train", "adapt"])
def test_a_run_started_elsewhere_resumes_exactly_from_another_folder(started, tmp_path, monkeypatch, capsys, kind,
                                                                     config_format):
    monkeypatch.chdir(started)
    assert cli(_command(kind, "runs/full")) == 0
    total = json.loads((started / "runs" / "full" / "checkpoints" / "last.json").read_text())["step"]
    crash_at = total // 2 + 1  # mid-epoch 2
    save = Checkpoints.save

    def save_then_interrupt(self, step, strategy, state):
        path = save(self, step, strategy, state)
        if step == crash_at:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(Checkpoints, "save", save_then_interrupt)
    assert cli(_command(kind, "runs/cut")) == EXIT_INTERRUPTED
    monkeypatch.setattr(Checkpoints, "save", save)
    run = started / "runs" / "cut"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    keys = {"data.root": saved["data"]["root"], "cache": saved.get("cache"), "source_checkpoint":
            saved.get("source_checkpoint")}
    want = {"data.root": str(started / "data"), "cache": str(started / "cache") if kind == "train" else None,
            "source_checkpoint": str(started / "src" / "best") if kind == "adapt" else None}
    assert keys == want, "a new run stores its paths absolute"
    assert saved["run"]["out"] == "runs/cut"  # as typed: --resume names the folder
    if config_format == "old":  # as an earlier distill wrote it: the paths as typed
        saved["data"]["root"] = "data"
        saved.update({"cache": "cache"} if kind == "train" else {"source_checkpoint": "src/best"})
        (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))

    elsewhere = tmp_path / "elsewhere"
    make_shapes_root(elsewhere / "data", ["red", "green", "blue"], per_class=4)  # other data at the same path
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert cli([kind, "--resume", str(run), "--no-progress"]) == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    assert "resumed from" in out and "warning" not in err, err
    _assert_same_run(started / "runs" / "full", run)


def _old_run(folder: Path, out: str, **paths: str) -> Path:
    """An earlier distill's run folder: config.yaml with the paths as typed (relative) and run.out ``out``."""
    cfg = {"data": {"root": paths.get("root", "data"), "source": ["red"], "target": ["blue"]},
           "strategy": {"name": "kd"}, "cache": paths.get("cache", "cache"),
           "teacher": {"arch": "distill-demo-vit", "pretrained": paths.get("pretrained", "openai")},
           "run": {"out": out}}
    run = folder / (out if not Path(out).is_absolute() else Path(out).name)
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run


def test_an_old_runs_relative_paths_are_those_of_the_folder_it_was_started_in(tmp_path, monkeypatch, capsys):
    start, here = tmp_path / "start", tmp_path / "here"
    for folder in (start, here):  # both folders hold data, cache and a teacher file at the same relative paths
        for sub in ("data", "cache"):
            (folder / sub).mkdir(parents=True)
        (folder / "t.safetensors").write_bytes(b"x")
    run = _old_run(start, "runs/kd", pretrained="t.safetensors")
    monkeypatch.chdir(here)
    cfg = resumed_config(run, [])
    assert (cfg.data.root, cfg.cache, cfg.teacher.pretrained, cfg.run.out) == (
        start / "data", start / "cache", str(start / "t.safetensors"), run)
    assert capsys.readouterr().err == ""
    # an open_clip tag is no path: it stays as written
    tagged = _old_run(tmp_path / "start2", "runs/kd", root=str(start / "data"), cache=str(start / "cache"))
    assert resumed_config(tagged, []).teacher.pretrained == "openai"

    # the start folder's data is gone: the start folder is only a guess, so the current folder's is taken, said once
    shutil.rmtree(start / "data")
    assert resumed_config(run, []).data.root == here / "data"
    config = run / "config.yaml"
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {config}: data.root 'data' is relative, and not in {start} (if the run was started in {start}, as "
        f"its folder's path ending in run.out runs/kd suggests): taken in the current folder {here}; write absolute "
        f"paths into {config} if that is not where the run was started"]
    # in neither folder: refused, naming the key and both places
    shutil.rmtree(here / "data")
    with pytest.raises(DistillError) as e:
        resumed_config(run, [])
    assert str(e.value) == (
        f"{config}: data.root 'data' is relative, and neither {start / 'data'} (if the run was started in {start}) "
        f"nor {here / 'data'} (in the current folder) exists: write the absolute path of data.root into {config}")
    assert cli(["train", "--resume", str(run)]) == 1
    assert capsys.readouterr().err.strip() == f"error: {e.value}"


@pytest.mark.parametrize("how", ["moved", "symlinked runs"])
def test_an_old_run_resumed_by_a_path_that_only_looks_like_its_start_is_read_in_the_current_folder(
        tmp_path, monkeypatch, capsys, how):
    """Review 25 M3: the start folder guessed from the run folder's path ending in run.out was wrong for a run folder
    since moved (run.out kd, now /archive/kd) or resumed by the target of a symlinked runs/: the resume was refused
    ("the run was started in /archive") though the data was in the current folder, which older versions used."""
    project = tmp_path / "project"
    for sub in ("data", "cache"):
        (project / sub).mkdir(parents=True)
    if how == "moved":  # started in project with run.out kd, then moved to archive/kd
        run = _old_run(tmp_path / "archive", "kd")
        guess = tmp_path / "archive"
    else:  # started in project with run.out runs/kd, project/runs a link to scratch/runs; resumed by scratch/runs/kd
        run = _old_run(tmp_path / "scratch", "runs/kd")
        (project / "runs").symlink_to(tmp_path / "scratch" / "runs")
        guess = tmp_path / "scratch"
    monkeypatch.chdir(project)
    cfg = resumed_config(run, [])
    assert (cfg.data.root, cfg.cache, cfg.run.out) == (project / "data", project / "cache", run)
    [warning] = capsys.readouterr().err.splitlines()
    assert warning.startswith(f"warning: {run / 'config.yaml'}: data.root 'data', cache 'cache' are relative, and not "
                              f"in {guess} (if the run was started in {guess}, ")
    assert warning.endswith(f"taken in the current folder {project}; write absolute paths into {run / 'config.yaml'} "
                            "if that is not where the run was started")


def test_an_old_run_whose_start_folder_cannot_be_told_takes_the_current_folder_and_says_so(tmp_path, monkeypatch,
                                                                                           capsys):
    here = tmp_path / "here"
    (here / "data").mkdir(parents=True)
    (here / "cache").mkdir()
    run = _old_run(tmp_path / "runs", str(tmp_path / "runs" / "kd"))  # run.out absolute: the cwd is not recorded
    monkeypatch.chdir(here)
    cfg = resumed_config(run, [])
    assert (cfg.data.root, cfg.cache) == (here / "data", here / "cache")
    config = run / "config.yaml"
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {config}: data.root 'data', cache 'cache' are relative, and the folder the run was started in "
        f"cannot be told (run.out {tmp_path / 'runs' / 'kd'}): taken in the current folder {here}; write absolute "
        f"paths into {config} if that is not where the run was started"]
    monkeypatch.chdir(tmp_path)  # and not there either: refused
    with pytest.raises(DistillError, match=rf"^{config}: data.root 'data' is relative, {tmp_path / 'data'} does not "
                                           r"exist, and the folder the run was started in cannot be told \(run.out "):
        resumed_config(run, [])


def test_a_new_run_stores_its_paths_absolute_and_tags_as_written(tmp_path, monkeypatch):
    from distill.run_paths import stored_paths

    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.pt").write_bytes(b"x")
    cfg = load_train_config(None, base={
        "data": {"root": "data", "source": ["red"], "class_map": "map.yaml", "unlabeled": ["blue", "./cam", "/abs"]},
        "strategy": {"name": "kd"}, "cache": ["c1", str(tmp_path / "c2")], "source_checkpoint": "src/best",
        "teacher": {"arch": "distill-demo-vit", "pretrained": "t.pt"}, "run": {"out": "runs/kd"}})
    stored = stored_paths(cfg)
    assert stored.data.root == tmp_path / "data" and stored.data.class_map == str(tmp_path / "map.yaml")
    assert stored.data.unlabeled == ["blue", str(tmp_path / "cam"), "/abs"]  # a domain name is no path
    assert stored.cache == [tmp_path / "c1", tmp_path / "c2"] and stored.source_checkpoint == tmp_path / "src" / "best"
    assert stored.teacher.pretrained == str(tmp_path / "t.pt") and stored.run.out == Path("runs/kd")
    tag = cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"pretrained": "laion2b_s34b_b79k"})})
    assert stored_paths(tag).teacher.pretrained == "laion2b_s34b_b79k"


def test_an_unlabeled_folder_of_a_user_unknown_here_is_kept_as_written() -> None:
    """Review 25c M2: Path.expanduser raises RuntimeError for '~nobody/...' (no such user here); export, qad and eval
    read every config path of an old run, and took that traceback. os.path.expanduser leaves it as written."""
    from distill.run_paths import _path

    assert _path("data.unlabeled", "~nobody-here-xyz/cam") == Path("~nobody-here-xyz/cam")
    assert _path("data.unlabeled", "~/cam") == Path.home() / "cam"
