"""An adaptation without a teacher cache (``shot``) takes the split rule of the source checkpoint's run.

It used a fixed rule (test fraction 0.3, split seed 0, no teacher pool) whatever the source run had split with:
the adapted student's target test images were not the source run's (its accuracies not comparable with the source
run's), and a bootstrapped teacher's pool images (``pretrain_fraction``, held out of every student split) became
target train and test images. A cache's rule still wins where there is one, and ``--set data.*`` over both; a
checkpoint whose run is not found keeps the old rule, with one warning line.
"""
from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from distill.cli import main as cli
from distill.config import load_train_config
from distill.data import DomainFolder
from distill.errors import DistillWarning
from distill.records import RUN_CONFIG
from distill.student.model import Student, default_spec, save_student
from distill.teacher import Teacher
from distill.teacher.cache import CacheOptions, build_cache
from distill.train import train
from distill.train.adapt import adapt_recipe, adapt_train_config
from distill.train.build import with_split_rule
from tests.shapes import CLASSES

#: the source run's split, as its cache has it: none of it the adaptation's old fixed rule (0.3, seed 0, no pool)
RULE = {"test_fraction": 0.25, "split_seed": 7, "val_fraction": 0.125, "pretrain_fraction": 0.2}
QUIET = {"workers": 0, "device": "cpu", "progress": False}


@pytest.fixture(scope="module")
def source_run(tiny_root, tmp_path_factory) -> Path:
    """RUN of a kd student trained 1 epoch on red + green (target blue) from a cache split by :data:`RULE`."""
    torch.manual_seed(0)
    where = tmp_path_factory.mktemp("source")
    folder = DomainFolder(tiny_root, **RULE)
    teacher = Teacher("distill-demo-vit", None, folder.classes, ["a photo of a {}."])
    cache = build_cache(folder, teacher, where / "cache", CacheOptions(views=1, seed=0), num_workers=0, progress=False)
    base = {"data": {"root": str(tiny_root), "source": ["red", "green"], "target": ["blue"]}, "cache": str(cache),
            "student": {"arch": "test_resnet", "input_size": 16}, "strategy": {"name": "kd"},
            "optim": {"epochs": 1, "batch_size": 4}, "run": {"out": str(where / "run"), **QUIET}}
    train(load_train_config(None, base=base))
    return where / "run"


def _split(run: Path, root: Path, split: str) -> list[str]:
    """The blue images in ``split`` under the rule ``run`` recorded in its config.yaml."""
    rule = load_train_config(run / RUN_CONFIG).data.split_rule()
    return sorted(s.relpath for s in DomainFolder(root, rule).select(["blue"], split))


def test_a_shot_adaptation_tests_on_the_source_runs_target_test_images(source_run, tiny_root, tmp_path):
    out = tmp_path / "shot"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DistillWarning)  # the run is found: nothing to warn of
        assert cli(["adapt", "--source-checkpoint", str(source_run / "checkpoints" / "best"), "--target", "blue",
                    "--data", str(tiny_root), "--strategy", "shot", "--out", str(out), "--set", "optim.epochs=1",
                    "--set", "optim.batch_size=4", "--set", "run.workers=0", "--set", "run.device=cpu",
                    "--no-progress"]) == 0
    assert _split(out, tiny_root, "test") == _split(source_run, tiny_root, "test")
    pool = set(_split(source_run, tiny_root, "pretrain"))
    assert pool and not pool & set(_split(out, tiny_root, "train") + _split(out, tiny_root, "test"))
    cfg = load_train_config(out / RUN_CONFIG).data
    assert {k: getattr(cfg, k) for k in RULE} == RULE


def test_set_wins_and_a_cache_rule_still_comes_first(source_run, tiny_root, tiny_cache):
    ckpt = source_run / "checkpoints" / "best"
    shot = adapt_recipe(ckpt, ["blue"], tiny_root, strategy="shot")
    given = load_train_config(None, ["data.test_fraction=0.5"], base=shot)
    assert (given.data.test_fraction, given.data.split_seed, given.data.pretrain_fraction) == (0.5, 7, 0.2)
    # sfda with a cache (tiny_cache: 30% test, seed 0, no pool): the cache's rule, not the source run's
    sfda = adapt_recipe(ckpt, ["blue"], tiny_root, caches=[tiny_cache], strategy="sfda")["data"]
    assert (sfda["test_fraction"], sfda["split_seed"], sfda["pretrain_fraction"]) == (0.3, 0, 0.0)


def test_a_moved_checkpoint_finds_its_run_through_student_json(source_run, tiny_root, tmp_path):
    moved = tmp_path / "elsewhere" / "best"
    shutil.copytree(source_run / "checkpoints" / "best", moved)  # provenance.run still names the run
    data = adapt_recipe(moved, ["blue"], tiny_root, strategy="shot")["data"]
    assert {k: data[k] for k in RULE} == RULE


def test_no_run_found_is_one_warning_and_the_old_rule(tiny_root, tmp_path, capsys):
    ckpt = save_student(Student(default_spec("test_resnet", CLASSES, 16)), tmp_path / "bare" / "best",
                        extra_provenance={"source_domains": ["red"]})
    with pytest.warns(DistillWarning, match=r"the run that trained it was not found .*test_fraction 0\.3, "):
        data = adapt_recipe(ckpt, ["blue"], tiny_root, strategy="shot")["data"]
    assert (data["test_fraction"], data["split_seed"], data.get("pretrain_fraction", 0.0)) == (0.3, 0, 0.0)
    with pytest.warns(DistillWarning) as record:  # the CLI prints it as one `warning: ...` line (distill.cli._log)
        assert cli(["adapt", "--source-checkpoint", str(ckpt), "--target", "blue", "--data", str(tiny_root),
                    "--strategy", "shot", "--out", str(tmp_path / "run"), "--set", "optim.epochs=0"]) == 1
    said = [str(w.message) for w in record if "was not found" in str(w.message)]
    assert len(said) == 1 and said[0].startswith(f"{ckpt}: the run that trained it") and "\n" not in said[0]
    assert "(set data.KEY=VALUE to give the source run's)" in said[0]  # no --set said to an api.adapt caller
    assert "optim.epochs" in capsys.readouterr().err  # the --set error still ends the command


def test_a_checkpoint_copied_beside_a_recipe_file_takes_its_own_runs_rule(source_run, tiny_root, tmp_path):
    """A copy of RUN/checkpoints/best in a project folder that holds a recipe named config.yaml (the split left
    unset, as the built-in recipes leave it): the rule is the source run's (student.json's provenance.run), not the
    recipe's defaults (review 3: the first config.yaml found above the checkpoint won)."""
    project = tmp_path / "project"
    copied = project / "best"
    shutil.copytree(source_run / "checkpoints" / "best", copied)
    (project / RUN_CONFIG).write_text(yaml.safe_dump({"data": {"root": str(tiny_root), "source": ["red"]},
                                                      "cache": "x", "strategy": {"name": "kd"}}))
    data = adapt_recipe(copied, ["blue"], tiny_root, strategy="shot")["data"]
    assert {k: data[k] for k in RULE} == RULE


@pytest.mark.parametrize("writer", ["qad", "export --classes"])
def test_a_qad_or_retargeted_checkpoint_finds_its_run_through_relative_run(source_run, tiny_root, tmp_path, writer):
    """``QAD_DIR/checkpoint`` and ``EXPORT/checkpoint`` (``distill export --classes``) name their run by its name in
    ``provenance.run`` and by ``relative.run``, a path relative to the checkpoint
    (:func:`distill.export.training_run.checkpoint_provenance`): adapting one found no run (``provenance.run`` was read
    as a path) and took the warned default rule instead of the source run's."""
    from distill.export.training_run import checkpoint_provenance
    from distill.records import EXPORT_CHECKPOINT
    from distill.student.model import load_student

    run = tmp_path / "tree" / "runs" / "kd"
    shutil.copytree(source_run, run)
    out = tmp_path / "tree" / "export" / "kd" / ("qad" if writer == "qad" else "classes")
    student = load_student(run / "checkpoints" / "best")
    # as qad.py and pipeline.py write it: the provenance of a checkpoint in its run names the run resolved
    student.spec.provenance = checkpoint_provenance(student.spec.provenance, {"run": str(run.resolve())},
                                                    out / EXPORT_CHECKPOINT)
    ckpt = save_student(student, out / EXPORT_CHECKPOINT,
                        extra_provenance={"qad": {"from": "checkpoints/best"}} if writer == "qad" else None)
    prov = json.loads((ckpt / "student.json").read_text())["provenance"]
    assert (prov["run"], prov["relative"]) == ("kd", {"run": "../../../../runs/kd"})  # what the writers record
    with warnings.catch_warnings():
        warnings.simplefilter("error", DistillWarning)  # the run is found: nothing to warn of
        data = adapt_recipe(ckpt, ["blue"], tiny_root, strategy="shot")["data"]
    assert {k: data[k] for k in RULE} == RULE
    # an older checkpoint's absolute provenance.run is still read (no relative.run)
    spec = json.loads((ckpt / "student.json").read_text())
    spec["provenance"] = {**spec["provenance"], "run": str(run)}
    del spec["provenance"]["relative"]
    (ckpt / "student.json").write_text(json.dumps(spec))
    data = adapt_recipe(ckpt, ["blue"], tiny_root, strategy="shot")["data"]
    assert {k: data[k] for k in RULE} == RULE


def test_every_split_key_given_with_set_is_no_warning(tiny_root, tmp_path, capsys):
    """A checkpoint whose run is not found, adapted with every split key given (``--set data.KEY=...``): the rule is
    the one given, so the warning that the default rule was taken is not said (it was)."""
    ckpt = save_student(Student(default_spec("test_resnet", CLASSES, 16)), tmp_path / "bare" / "best",
                        extra_provenance={"source_domains": ["red"]})
    given = [f"data.{k}={v}" for k, v in RULE.items()]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DistillWarning)
        assert cli(["adapt", "--source-checkpoint", str(ckpt), "--target", "blue", "--data", str(tiny_root),
                    "--strategy", "shot", "--out", str(tmp_path / "run"), "--set", "optim.epochs=0",
                    *[a for item in given for a in ("--set", item)]]) == 1
    assert "optim.epochs" in capsys.readouterr().err  # the --set error ends the command, no warning before it
    cfg = adapt_train_config(ckpt, "blue", tiny_root, strategy="shot", items=given)
    assert {k: getattr(cfg.data, k) for k in RULE} == RULE
    with pytest.warns(DistillWarning, match=r"not found .*split_seed 0, val_fraction 0\.1, pretrain_fraction 0 "):
        adapt_train_config(ckpt, "blue", tiny_root, strategy="shot", items=given[:1])  # the others: the defaults


def test_adapting_with_a_cache_split_otherwise_than_the_source_run_is_one_warning(source_run, tiny_root, tiny_cache,
                                                                                   tmp_path):
    """``distill adapt --cache C``: the run splits by C's rule (tiny_cache: 30% test, seed 0, no pool), not by the
    source run's (:data:`RULE`); the adapted student is then tested on other target images than its source run, which
    was said nowhere. One warning line naming the cache, the source run's config and both rules."""
    ckpt = source_run / "checkpoints" / "best"
    with pytest.warns(DistillWarning) as record:
        assert cli(["adapt", "--source-checkpoint", str(ckpt), "--target", "blue", "--data", str(tiny_root),
                    "--cache", str(tiny_cache), "--strategy", "sfda", "--out", str(tmp_path / "sfda"),
                    "--set", "optim.epochs=1", "--set", "optim.batch_size=4", "--set", "run.workers=0",
                    "--set", "run.device=cpu", "--no-progress"]) == 0
    said = [str(w.message) for w in record if "source run" in str(w.message)]
    assert len(said) == 1 and "\n" not in said[0], said
    assert said[0].startswith(f"cache {tiny_cache} splits the data with test_fraction 0.3, split_seed 0, "
                              f"val_fraction 0.1, pretrain_fraction 0, the source run ({source_run / RUN_CONFIG}) "
                              "with test_fraction 0.25, split_seed 7, val_fraction 0.125, pretrain_fraction 0.2: ")


def test_adapting_with_a_cache_split_as_the_source_run_says_nothing(source_run, tiny_root):
    """``distill adapt --cache C`` where C is split by the source run's rule (its own cache, :data:`RULE`), as the
    demo's sfda stage adapts: nothing to say. The test of the line above checked this case with the cache removed, so
    a warning said for any cache passed every test (review 1, finding 3)."""
    cache = source_run.parent / "cache"
    cfg = load_train_config(None, base=adapt_recipe(source_run / "checkpoints" / "best", ["blue"], tiny_root,
                                                    caches=[cache], strategy="sfda"))
    assert cfg.caches() == [cache]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DistillWarning)
        assert with_split_rule(cfg).data.model_dump(include=set(RULE)) == RULE


def _recipe(tmp_path: Path, tiny_root: Path, ckpt: Path, **data: object) -> Path:
    """An adaptation recipe file (shot, no cache) adapting ``ckpt`` to blue; ``data``: split keys it sets."""
    recipe = {"data": {"root": str(tiny_root), "source": ["red", "green"], "target": ["blue"], **data},
              "source_checkpoint": str(ckpt), "student": {"arch": "test_resnet", "input_size": 16},
              "strategy": {"name": "shot"}, "optim": {"epochs": 1, "batch_size": 4},
              "run": {"out": str(tmp_path / "shot"), **QUIET}}
    path = tmp_path / "shot.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_train_of_an_adaptation_recipe_takes_the_source_runs_split_as_adapt_does(source_run, tiny_root, tmp_path):
    """``distill train -c RECIPE`` of an adaptation recipe (a ``source_checkpoint``, no cache) split by the defaults
    the keys it leaves unset, where ``distill adapt`` of the same checkpoint takes the source run's: the same
    adaptation tested on other target images, and a bootstrapped teacher's pool (the source run kept out) trained
    on. It takes the source run's now; keys it sets otherwise are one warning line; a run not found too."""
    ckpt = source_run / "checkpoints" / "best"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DistillWarning)  # the run is found and the rule is its: nothing to warn of
        assert cli(["train", "-c", str(_recipe(tmp_path, tiny_root, ckpt))]) == 0
    out = tmp_path / "shot"
    assert _split(out, tiny_root, "test") == _split(source_run, tiny_root, "test")
    assert {k: getattr(load_train_config(out / RUN_CONFIG).data, k) for k in RULE} == RULE
    # a key the recipe sets otherwise than the source run: it wins, in one warning line naming both
    cfg = load_train_config(_recipe(tmp_path, tiny_root, ckpt, test_fraction=0.3))
    with pytest.warns(DistillWarning, match=r"^this run splits the data with test_fraction 0\.3, the source run .* "
                                            r"with test_fraction 0\.25: the adapted student would be tested on other"):
        assert with_split_rule(cfg).data.model_dump(include=set(RULE)) == {**RULE, "test_fraction": 0.3}
    # the source run not found: the defaults for the keys left unset, in one warning line, as adapt says it
    bare = save_student(Student(default_spec("test_resnet", CLASSES, 16)), tmp_path / "bare" / "best",
                        extra_provenance={"source_domains": ["red"]})
    cfg = load_train_config(_recipe(tmp_path, tiny_root, bare, test_fraction=0.25))
    with pytest.warns(DistillWarning, match=r"the run that trained it was not found .*; training with split_seed 0, "
                                            r"val_fraction 0\.1, pretrain_fraction 0 \("):
        with_split_rule(cfg)


def test_built_in_adaptation_recipes_without_a_cache_leave_the_split_rule_to_the_source_run():
    """shot.yaml spelled the demo's rule out (test 0.3, pool 0.3): adapting another checkpoint with it split that
    checkpoint's target domains by the demo's rule, not by its run's."""
    from distill.recipes import list_recipes, load_recipe

    adaptations = [load_recipe(name) for name in list_recipes()]
    adaptations = [cfg for cfg in adaptations if cfg.source_checkpoint is not None and not cfg.caches()]
    assert adaptations  # shot
    for cfg in adaptations:
        assert cfg.data.split_keys() == {}, cfg.strategy.name


def test_a_resumed_adaptation_does_not_say_its_split_rule_again(source_run, tiny_root, tmp_path):
    """An adaptation whose rule is not its source run's says so once, when it starts; ``--resume`` continues it as
    saved (``--set`` is refused with it), so it says nothing: it warned on every resume, advising ``set
    data.KEY=VALUE`` (review 1, finding 1)."""
    recipe = _recipe(tmp_path, tiny_root, source_run / "checkpoints" / "best", test_fraction=0.3)
    with pytest.warns(DistillWarning, match=r"^this run splits the data with test_fraction 0\.3, the source run "):
        assert cli(["train", "-c", str(recipe)]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", DistillWarning)
        assert cli(["train", "--resume", str(tmp_path / "shot")]) == 0


def test_a_source_run_with_a_relative_data_root_is_compared_from_any_folder(source_run, tiny_root, tmp_path,
                                                                           monkeypatch):
    """A source run written before paths were stored absolute keeps ``data.root`` relative to where it was started;
    it was compared with the adaptation's root relative to the current folder, so whether an adaptation split
    otherwise was said depended on ``cd`` (review 1, finding 2). It is resolved as ``--resume`` resolves it."""
    tree = tmp_path / "tree"
    run = tree / "runs" / "kd_rel"
    shutil.copytree(source_run, run)
    (tree / "data").symlink_to(tiny_root, target_is_directory=True)
    saved = yaml.safe_load((run / RUN_CONFIG).read_text())
    saved["data"]["root"], saved["run"]["out"] = "data", "runs/kd_rel"  # as a run started in tree/ wrote them
    (run / RUN_CONFIG).write_text(yaml.safe_dump(saved))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = adapt_train_config(run / "checkpoints" / "best", "blue", tree / "data", strategy="shot",
                             items=["data.test_fraction=0.3", f"run.out={tmp_path / 'out'}"])
    with pytest.warns(DistillWarning, match="^" + re.escape(f"this run splits the data with test_fraction 0.3, the "
                                                            f"source run ({run / RUN_CONFIG}) with test_fraction 0.25: ")):
        with_split_rule(cfg)


def test_a_bare_run_name_in_provenance_is_not_a_folder_here(source_run, tiny_root, tmp_path, monkeypatch):
    """A qad / ``export --classes`` checkpoint names its run by name in ``provenance.run``, with no ``relative.run``
    where relpath failed (another drive): adapted from a folder holding another run of that name, it took that run's
    rule silently (review 1, finding 4). It is not found: the defaults, in one warning line."""
    other = tmp_path / "other"
    shutil.copytree(source_run, other / "kd")
    saved = yaml.safe_load((other / "kd" / RUN_CONFIG).read_text())
    saved["data"].update(test_fraction=0.5, split_seed=3)  # an unrelated run named kd
    (other / "kd" / RUN_CONFIG).write_text(yaml.safe_dump(saved))
    ship = tmp_path / "ship" / "checkpoint"
    shutil.copytree(source_run / "checkpoints" / "best", ship)
    spec = json.loads((ship / "student.json").read_text())
    spec["provenance"]["run"] = "kd"
    spec["provenance"].pop("relative", None)
    (ship / "student.json").write_text(json.dumps(spec))
    monkeypatch.chdir(other)
    with pytest.warns(DistillWarning, match=r"the run that trained it was not found"):
        data = adapt_recipe(ship, ["blue"], tiny_root, strategy="shot")["data"]
    assert (data["test_fraction"], data["split_seed"]) == (0.3, 0)
