"""distill.export.training_run: a checkpoint inside a run takes the run's data, split and provenance."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from distill.export import ExportConfig, export_checkpoint
from distill.export.log import ExportLog
from distill.export.training_run import TrainingRun, provenance, with_run_defaults
from distill.records import RUN_CONFIG, RUN_SUMMARY
from distill.student.model import load_student


def _log() -> tuple[ExportLog, list[str]]:
    lines: list[str] = []
    return ExportLog(lines.append), lines


def test_data_defaults_from_the_run(run_ckpt: Path, tiny_root: Path, tmp_path: Path) -> None:
    """Inside a training run, the data root, split and source domains come from RUN_DIR/config.yaml."""
    rep = export_checkpoint(run_ckpt, tmp_path / "exp", ExportConfig(exporter="torchscript", eval_count=4),
                            log=lambda s: None)
    assert rep.data["root"] == str(tiny_root) and rep.data["labeled"]
    assert rep.data["calib_domains"] == ["clean", "dark"] and rep.config["test_fraction"] == 0.3
    assert set(rep.models[0].accuracy) == {"clean", "dark", "noisy"}
    assert rep.files == ["model.fp32.onnx", "build_engine.sh", "export.json"]
    assert rep.run_summary is not None and rep.run_summary.strategy == "erm"


def test_run_defaults_and_provenance(run_ckpt: Path, tiny_root: Path) -> None:
    log, lines = _log()
    run = TrainingRun.of_checkpoint(run_ckpt, log)
    assert run.folder == run_ckpt.parent.parent and run.summary is not None and not log.warnings
    cfg = with_run_defaults(ExportConfig(split_seed=0), run, log)  # another value: refused (test_run_split.py)
    assert (cfg.data_root, cfg.test_fraction, cfg.split_seed, cfg.val_fraction, cfg.pretrain_fraction) == \
        (str(tiny_root), 0.3, 0, 0.1, 0.0)
    assert cfg.calib_domains == ("clean", "dark") and cfg.caches == ()
    assert lines == [f"data: {tiny_root} (from the run's {RUN_CONFIG})"]
    prov = provenance(run_ckpt, load_student(run_ckpt), run)
    assert prov["source_domains"] == ["clean", "dark"] and prov["target_domains"] == ["noisy"]  # from the summary
    assert prov["teacher"] == {"arch": "none (test)"}  # student.json's wins
    assert prov["checkpoint"] == str(run_ckpt) and len(prov["checkpoint_sha256"]) == 64


def test_source_free_run_calibrates_on_its_targets(run_ckpt: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(run_ckpt.parent.parent, run_dir)
    config = json.loads((run_dir / RUN_CONFIG).read_text())
    (run_dir / RUN_CONFIG).write_text(json.dumps({**config, "source_checkpoint": "elsewhere/best"}))
    log, lines = _log()
    cfg = with_run_defaults(ExportConfig(), TrainingRun.of_checkpoint(run_dir / "checkpoints" / "best", log), log)
    assert cfg.calib_domains == ("noisy",) and "source-free run" in lines[-1]


def test_outside_a_run_training_defaults_apply(run_ckpt: Path, tmp_path: Path) -> None:
    lone = tmp_path / "lone"
    shutil.copytree(run_ckpt, lone)
    log, lines = _log()
    run = TrainingRun.of_checkpoint(lone, log)
    assert run.folder is None and run.summary is None and run.config.data is None
    cfg = with_run_defaults(ExportConfig(), run, log)
    assert (cfg.data_root, cfg.test_fraction, cfg.split_seed, cfg.val_fraction, cfg.pretrain_fraction) == \
        (None, 0.3, 0, 0.1, 0.0)
    assert cfg.calib_domains is None and lines == []


def test_a_broken_summary_or_config_is_a_warning_not_a_silent_default(run_ckpt: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(run_ckpt.parent.parent, run_dir)
    (run_dir / RUN_SUMMARY).write_text(json.dumps({"strategy": "erm"}))
    (run_dir / RUN_CONFIG).write_text(json.dumps({"data": {"root": "x", "source": "clean", "test_fraction": 7}}))
    log, _ = _log()
    run = TrainingRun.of_checkpoint(run_dir / "checkpoints" / "best", log)
    assert run.summary is None and run.config.data is None
    summary_warning, config_warning = log.warnings
    assert RUN_SUMMARY in summary_warning and "without the run's summary" in summary_warning
    assert RUN_CONFIG in config_warning and "data.test_fraction" in config_warning and "7" in config_warning


def _pool_run(run_ckpt: Path, tmp_path: Path, unlabeled: list[str]) -> Path:
    """A copy of the run whose config trained on ``unlabeled`` pool domains too; its best checkpoint."""
    run_dir = tmp_path / "run"
    shutil.copytree(run_ckpt.parent.parent, run_dir)
    config = json.loads((run_dir / RUN_CONFIG).read_text())
    config["data"]["unlabeled"] = unlabeled
    (run_dir / RUN_CONFIG).write_text(json.dumps(config))
    return run_dir / "checkpoints" / "best"


def test_the_runs_unlabeled_pool_domains_join_the_calibration(run_ckpt: Path, tmp_path: Path) -> None:
    """A run that trained on unlabeled images of a domain is meant for it: its train images calibrate int8 by
    default (a folder entry of the pool is no domain under the root and is left out); an explicit empty list, or
    a data root the user names, keeps them out."""
    ckpt = _pool_run(run_ckpt, tmp_path, ["noisy", "./more_images"])
    log, lines = _log()
    run = TrainingRun.of_checkpoint(ckpt, log)
    cfg = with_run_defaults(ExportConfig(precisions=("fp32", "int8")), run, log)
    assert cfg.calib_domains == ("clean", "dark") and cfg.target_domains == ("noisy",)
    assert "unlabeled pool domains noisy" in lines[-1] and "--target-domains" in lines[-1]
    assert with_run_defaults(ExportConfig(target_domains=()), run, log).target_domains == ()
    assert with_run_defaults(ExportConfig(target_domains="dark"), run, log).target_domains == ("dark",)
    assert with_run_defaults(ExportConfig(data_root=str(tmp_path)), run, log).target_domains == ()


def test_an_export_of_a_pool_run_calibrates_on_the_pool(run_ckpt: Path, tmp_path: Path) -> None:
    ckpt = _pool_run(run_ckpt, tmp_path, ["noisy"])
    rep = export_checkpoint(ckpt, tmp_path / "exp", ExportConfig(
        precisions=("fp32", "int8"), exporter="torchscript", calib_count=12, eval_count=4, latency_iters=2,
        threads=1, max_fallback_layers=0), log=lambda s: None)
    assert rep.data["calib_domains"] == ["clean", "dark"] and rep.data["target_domains"] == ["noisy"]
    assert rep.data["calib_per_domain"] == {"clean": 4, "dark": 4, "noisy": 4}
    assert rep.config["target_domains"] == ["noisy"]  # export.json says what it resolved to


def test_naming_the_data_root_keeps_the_pool_domains_it_holds(run_ckpt: Path, tiny_root: Path, tmp_path: Path) -> None:
    """--data given, even the run's own root: the pool domains under it still calibrate int8 (they used to be
    dropped silently); those it lacks are dropped in one warning line naming them, the root and --target-domains."""
    ckpt = _pool_run(run_ckpt, tmp_path, ["noisy", "foggy", "./more_images"])
    log, lines = _log()
    run = TrainingRun.of_checkpoint(ckpt, log)
    int8 = ("fp32", "int8")
    cfg = with_run_defaults(ExportConfig(precisions=int8, data_root=str(tiny_root)), run, log)
    assert cfg.calib_domains == ("clean", "dark") and cfg.target_domains == ("noisy",)
    assert any("unlabeled pool domains noisy " in line for line in lines)
    (warning,) = log.warnings
    assert "foggy" in warning and "noisy" not in warning and str(tiny_root) in warning
    assert "--target-domains" in warning and "\n" not in warning
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "clean").mkdir(parents=True)
    cfg = with_run_defaults(ExportConfig(precisions=int8, data_root=str(elsewhere)), run, log)
    assert cfg.target_domains == () and "noisy, foggy" in log.warnings[-1]
    # explicit target domains win, and say nothing
    log, _ = _log()
    assert with_run_defaults(ExportConfig(precisions=int8, data_root=str(elsewhere), target_domains="clean"),
                             run, log).target_domains == ("clean",)
    assert not log.warnings


def test_export_json_names_the_run_and_checkpoint_for_other_folders(run_ckpt: Path, tmp_path: Path,
                                                                    monkeypatch) -> None:
    """student.json's provenance.run is run.out as typed where the run trained ('runs/kd'), and export.json took it:
    read from another folder, the report found no run for the export and lost its label. export.json names the run
    folder holding the checkpoint absolute, and both it and the checkpoint relative to the export folder (a tree of
    results moved whole still joins)."""
    from distill.records import STUDENT_SPEC, ExportReport

    start = tmp_path / "start"
    shutil.copytree(run_ckpt.parent.parent, start / "runs" / "kd")
    spec = start / "runs" / "kd" / "checkpoints" / "best" / STUDENT_SPEC
    raw = json.loads(spec.read_text())
    raw["provenance"]["run"] = "runs/kd"
    spec.write_text(json.dumps(raw))
    monkeypatch.chdir(start)
    export_checkpoint("runs/kd/checkpoints/best", "out/exp", ExportConfig(exporter="torchscript", eval_count=4),
                      log=lambda s: None)
    rep = ExportReport.read(start / "out" / "exp")
    assert rep.provenance["run"] == str((start / "runs" / "kd").resolve())
    # inside provenance, an open dict: the release before reads the file (its records forbid unknown keys)
    from tests.records.old_release import OldExportReport

    raw = json.loads((start / "out" / "exp" / "export.json").read_text())
    OldExportReport.model_validate(raw)
    assert rep.relative_paths == {"checkpoint": "../../runs/kd/checkpoints/best", "run": "../../runs/kd"}
    assert raw["provenance"]["relative"] == rep.relative_paths

