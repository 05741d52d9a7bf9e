"""export, qad and eval of an older run from another working folder read the files the run was started with.

A run written before paths were stored absolute keeps data.root, data.class_map and cache as typed. ``distill
export RUN/checkpoints/best`` took them against the current folder: from another folder it failed ("no such data
root"), or, where that folder held other data at the same relative path, it scored and calibrated on that data and
took it for the run's (its split check compares against the run's data root). They are now resolved as ``--resume``
resolves them (distill/run_paths.py, tests/train/test_resume_paths.py): in the folder the run was started in (its
folder's path ending in run.out), else in the current folder with a warning; found nowhere, a default taken from
them is refused in one line naming the key.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from distill.cli import EXIT_ERROR, main
from distill.errors import DistillError
from distill.export import ExportConfig, export_checkpoint
from distill.export.log import ExportLog
from distill.export.training_run import TrainingRun, with_run_defaults
from distill.records import RUN_CONFIG


def _log() -> ExportLog:
    return ExportLog(lambda s: None)


def _old_run(run_ckpt: Path, start: Path, out: str = "runs/kd", **paths: str) -> Path:
    """The run_ckpt run as an earlier distill started it in ``start`` (data and cache there, by relative paths):
    its config.yaml keeps the paths as typed. Returns its best checkpoint."""
    run = start / out
    shutil.copytree(run_ckpt.parent.parent, run)
    cfg = {"data": {"root": paths.get("root", "data"), "source": ["clean", "dark"], "target": ["noisy"],
                    "test_fraction": 0.3, "split_seed": 0, **({"class_map": paths["class_map"]}
                                                            if "class_map" in paths else {})},
           "strategy": {"name": "kd"}, "cache": paths.get("cache", "cache"),
           "teacher": {"arch": "distill-demo-vit", "pretrained": "openai"}, "run": {"out": out}}
    (run / RUN_CONFIG).write_text(yaml.safe_dump(cfg))
    return run / "checkpoints" / "best"


@pytest.fixture
def folders(tiny_root: Path, tmp_path: Path) -> tuple[Path, Path]:
    """START (the run's data and cache) and HERE (other data, and a cache, at the same relative paths)."""
    import synthetic  # tests/export/ is on sys.path (conftest.py)

    start, here = tmp_path / "start", tmp_path / "here"
    shutil.copytree(tiny_root, start / "data")
    synthetic.make_tree(here / "data", per_class=4, seed=1)  # the run's classes and domains, other images
    for folder in (start, here):
        (folder / "cache").mkdir()
    return start, here


@pytest.mark.parametrize("how", ["as named", "through a symlinked runs folder"])
def test_an_old_run_exported_from_another_folder_uses_the_data_it_was_started_with(
        run_ckpt: Path, folders: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture, how: str) -> None:
    start, here = folders
    if how == "as named":
        ckpt = _old_run(run_ckpt, start)
    else:  # START/runs a link to scratch/runs: the config is found at its target, the start told by the link's path
        _old_run(run_ckpt, tmp_path / "scratch")
        (start / "runs").symlink_to(tmp_path / "scratch" / "runs")
        ckpt = start / "runs" / "kd" / "checkpoints" / "best"
    monkeypatch.chdir(here)
    log = _log()
    run = TrainingRun.of_checkpoint(ckpt, log)
    assert (run.config.data and run.config.data.root, run.config.cache) == (start / "data", start / "cache")
    assert not log.warnings
    cfg = with_run_defaults(ExportConfig(), run, _log())
    assert (cfg.data_root, cfg.caches) == (str(start / "data"), (str(start / "cache"),))
    # the split check knows the run's data by its resolved root: START's data keeps the run's split, HERE's is free
    with pytest.raises(DistillError, match="^export: test_fraction 0.5 differs from training's 0.3 "):
        with_run_defaults(ExportConfig(data_root=str(start / "data"), test_fraction=0.5), run, _log())
    assert with_run_defaults(ExportConfig(data_root="data", test_fraction=0.5), run, _log()).test_fraction == 0.5
    if how == "as named":  # the whole export, and eval's split check
        rep = export_checkpoint(ckpt, tmp_path / "exp", ExportConfig(exporter="torchscript", eval_count=4),
                                log=lambda s: None)
        assert rep.data["root"] == str(start / "data") and not rep.warnings
        eval_args = ["eval", str(ckpt), "--pgd-eps", "0", "--corruptions", "none", "--no-progress"]
        assert main([*eval_args, "--data", str(start / "data"), "--test-fraction", "0.5"]) == EXIT_ERROR
        assert "differs from training's 0.3" in capsys.readouterr().err
        assert main([*eval_args, "--data", "data", "--test-fraction", "0.5", "--json"]) == 0  # HERE's: other data


def test_an_old_runs_path_missing_where_it_was_started_is_taken_here_with_a_warning(
        run_ckpt: Path, folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    start, here = folders
    ckpt = _old_run(run_ckpt, start)
    shutil.rmtree(start / "data")
    monkeypatch.chdir(here)
    lines: list[str] = []
    log = ExportLog(lines.append)
    run = TrainingRun.of_checkpoint(ckpt, log)
    assert run.config.data is not None and run.config.data.root == here / "data"
    assert run.config.cache == start / "cache"
    config = run.config_file
    assert lines == [
        f"warning: {config}: data.root 'data' is relative, and not in {start} (if the run was started in {start}, as "
        f"its folder's path ending in run.out runs/kd suggests): taken in the current folder {here}; write absolute "
        f"paths into {config} if that is not where the run was started"]
    assert with_run_defaults(ExportConfig(), run, _log()).data_root == str(here / "data")


def test_an_old_runs_path_found_nowhere_is_refused_where_it_is_the_default(
        run_ckpt: Path, folders: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    start, here = folders
    ckpt = _old_run(run_ckpt, start, class_map="names.yaml")
    for folder in (start, here):
        shutil.rmtree(folder / "data")
        shutil.rmtree(folder / "cache")
    monkeypatch.chdir(here)
    log = _log()
    run = TrainingRun.of_checkpoint(ckpt, log)
    config = run.config_file
    assert not log.warnings
    with pytest.raises(DistillError) as e:  # int8 calibrates on the data: refused
        with_run_defaults(ExportConfig(precisions=("fp32", "int8")), run, _log())
    refusal = (f"{config}: data.root 'data' is relative, and neither {start / 'data'} (if the run was started in "
               f"{start}) nor {here / 'data'} (in the current folder) exists: write the absolute path of data.root "
               f"into {config}")
    assert str(e.value) == refusal
    assert main(["export", str(ckpt), "--out", str(tmp_path / "exp"), "--precision", "fp32,int8"]) == EXIT_ERROR
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {e.value}"]
    # fp32 only reads no data: it goes on without (and without the run's class map, which only names data's
    # classes), saying so in one line
    said: list[str] = []
    cfg = with_run_defaults(ExportConfig(), run, ExportLog(said.append))
    assert cfg.data_root is None and cfg.class_map is None
    assert [line for line in said if "data.root" in line] == [
        f"warning: {refusal}: exporting without data; pass data_root=ROOT, the dataset's folder here, to measure accuracy"]
    # the data named: the run's class map is still its default, and refused in one line naming it
    with pytest.raises(DistillError, match=rf"^{config}: data.class_map 'names.yaml' is relative, and neither "):
        with_run_defaults(ExportConfig(data_root=str(tmp_path)), run, _log())
    # a class map named too: the export goes on, without the run's cache (a warning naming it)
    lines: list[str] = []
    cfg = with_run_defaults(ExportConfig(data_root=str(tmp_path), class_map="mine.yaml"), run, ExportLog(lines.append))
    assert cfg.caches == () and cfg.data_root == str(tmp_path)
    assert lines == [f"warning: {config}: cache 'cache' is relative, and neither {start / 'cache'} (if the run was "
                     f"started in {start}) nor {here / 'cache'} (in the current folder) exists: write the absolute "
                     f"path of cache into {config}; exporting without it"]


def test_a_new_runs_absolute_paths_are_taken_as_written(run_ckpt: Path, tiny_root: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = _old_run(run_ckpt, tmp_path / "start", root=str(tiny_root), cache=str(tmp_path / "gone"))
    monkeypatch.chdir(tmp_path)
    log = _log()
    run = TrainingRun.of_checkpoint(ckpt, log)
    assert run.config.data is not None and run.config.data.root == tiny_root and not log.warnings
    cfg = with_run_defaults(ExportConfig(), run, log)
    assert (cfg.data_root, cfg.caches) == (str(tiny_root), (str(tmp_path / "gone"),)) and not log.warnings


def test_paths_export_does_not_read_are_not_warned_about(run_ckpt: Path, folders: tuple[Path, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An older run's relative pool folder and source checkpoint, found only in the current folder, drew a warning
    that they were "taken in the current folder", though export, qad and eval never open them (review 3 L5)."""
    start, here = folders
    ckpt = _old_run(run_ckpt, start)
    config = ckpt.parent.parent / RUN_CONFIG
    cfg = yaml.safe_load(config.read_text())
    cfg["data"]["unlabeled"] = ["./pool", "noisy"]
    cfg["source_checkpoint"] = "src/best"
    config.write_text(yaml.safe_dump(cfg))
    for made in (here / "pool", here / "src" / "best"):
        made.mkdir(parents=True)
    monkeypatch.chdir(here)
    log = _log()
    run = TrainingRun.of_checkpoint(ckpt, log)
    assert not log.warnings
    assert run.config.data is not None and run.config.data.root == start / "data"  # the paths it reads: resolved
    assert run.config.data.unlabeled == ["./pool", "noisy"] and run.config.source_checkpoint == Path("src/best")
