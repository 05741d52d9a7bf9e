"""distill qad's start-up: one scan of the data folder for the export images, the hold-out and the cached teacher
rows, and the same picks as scanning afresh for each (as QAD did before: three scans, minutes each at 10^7 images)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import distill.data.folder as folder_module
import distill.export.qad as qad_module
from distill.cli.qad import FLAGS as QAD_FLAGS
from distill.data.folder import DomainFolder
from distill.errors import DistillError
from distill.export.config import ExportConfig
from distill.export.data import calibration_samples, exclude_cache_skipped, holdout_samples
from distill.export.images import load_images
from distill.export.qad import qad
from distill.export.qad_config import QADConfig
from distill.spelling import option_names
from distill.teacher.cache import TeacherCache


def test_qad_scans_the_data_folder_once_and_picks_what_fresh_scans_pick(run_ckpt: Path, tiny_cache: Path,
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    scans: list[str] = []
    real_list = folder_module.list_images

    def counting_list(root):
        scans.append(str(root))
        return real_list(root)

    seen: dict = {}
    real_data, real_holdout, real_train = qad_module.load_export_data, qad_module.load_holdout_images, qad_module.train_qad

    def spy_data(cfg, spec, *args, **kwargs):
        seen["cfg"], seen["spec"] = cfg, spec
        seen["data"] = real_data(cfg, spec, *args, **kwargs)
        return seen["data"]

    def spy_holdout(*args, **kwargs):
        seen["holdout"] = real_holdout(*args, **kwargs)
        return seen["holdout"]

    def spy_train(cfg, student, flavour, calib, teacher_logits, device, say, keep):
        seen["teacher"] = teacher_logits.cpu()
        return real_train(cfg, student, flavour, calib, teacher_logits, device, say, keep)

    hashed: list[object] = []
    real_fingerprint = DomainFolder.fingerprint

    def counting_fingerprint(self, domains=None):
        hashed.append(domains)
        return real_fingerprint(self, domains)

    monkeypatch.setattr(DomainFolder, "fingerprint", counting_fingerprint)
    monkeypatch.setattr(folder_module, "list_images", counting_list)
    monkeypatch.setattr(qad_module, "load_export_data", spy_data)
    monkeypatch.setattr(qad_module, "load_holdout_images", spy_holdout)
    monkeypatch.setattr(qad_module, "train_qad", spy_train)
    record = qad(QADConfig(checkpoint=str(run_ckpt), out_dir=str(tmp_path / "q"), cache=str(tiny_cache), epochs=1,
                           calib_count=16, eval_count=4, holdout_count=24), log=lambda s: None)
    qad_scans, qad_hashes = list(scans), len(hashed)
    assert record.teacher == "fp32+cache" and record.holdout_images == 24

    # what the old start-up computed: a fresh scan (cache-skipped images left out) for each pick
    cfg, spec, data = seen["cfg"], seen["spec"], seen["data"]
    domains = [*data.info["calib_domains"], *data.info["target_domains"]]
    assert domains == ["clean", "dark"]

    def fresh() -> DomainFolder:
        folder = DomainFolder(cfg.data_root, cfg.split_rule())
        exclude_cache_skipped(folder, cfg.caches or ())
        return folder

    folder = fresh()
    expected = load_images(folder, holdout_samples(cfg, folder, domains, 24), spec)
    held = seen["holdout"]
    assert np.array_equal(held.images, expected.images) and np.array_equal(held.labels, expected.labels)
    assert held.domains.tolist() == expected.domains.tolist()

    folder = fresh()
    picks = calibration_samples(cfg, folder, domains)
    index = torch.tensor([s.index for d in domains for s in picks[d]], dtype=torch.long)
    cache = TeacherCache.open(tiny_cache)
    order = {c: i for i, c in enumerate(cache.manifest.classes)}
    rows = cache.lookup(index, torch.zeros_like(index))["logits"].float()[:, [order[c] for c in spec.class_names]]
    assert torch.equal(seen["teacher"], rows)

    # and one scan did it all (the old start-up: load_export_data, the hold-out and the cache rows each scanned)
    assert qad_scans == [cfg.data_root], qad_scans
    # and one pass hashing every file: the cache covers every domain, so the export's fingerprint is the cache's check
    assert set(cache.manifest.dataset.domains) == set(folder.domains) and qad_hashes == 1


def test_qad_with_an_export_calibrates_as_the_export_did(run_ckpt: Path, export_dir: Path) -> None:
    """--export: the PTQ file QAD must beat was calibrated on the export's domains (the fixture's: the run's sources
    + 'noisy' as a target); QAD's images come from the same domains unless it is told otherwise."""
    from distill.export.kept_float import export_int8
    from distill.export.log import ExportLog
    from distill.export.quantize import FLAVOURS
    from distill.export.training_run import TrainingRun

    lines: list[str] = []
    say = ExportLog(lines.append)
    run = TrainingRun.of_checkpoint(run_ckpt, say)
    exported = export_int8(export_dir, run_ckpt, FLAVOURS["ort-cpu"])
    cfg = QADConfig(checkpoint=str(run_ckpt), out_dir="unused", export_dir=str(export_dir))
    ecfg = qad_module.export_config(cfg, run, say, exported)
    assert ecfg.calib_domains == ("clean", "dark") and ecfg.target_domains == ("noisy",)
    assert any("as the export's" in line for line in lines)
    # the same domains told again (in another order) are the export's
    told = qad_module.export_config(cfg.model_copy(update={"calib_domains": ("dark", "clean"),
                                                           "target_domains": ("noisy",)}), run, say, exported)
    assert told.calib_domains == ("clean", "dark") and told.target_domains == ("noisy",)
    # without --export: the run's defaults (this run has no unlabeled pool: no target domain)
    assert qad_module.export_config(cfg, run, say).target_domains == ()


def test_qad_with_an_export_picks_the_exports_calibration_images_and_holds_none_out(
        run_ckpt: Path, export_dir: Path) -> None:
    """--export: the hold-out that decides PTQ vs QAD must not hold an image the export's int8 file (the PTQ arm) was
    calibrated on. QAD takes the export's calibration count and seed (it used to take its own: 256 images, seed 0,
    and held out images the export had calibrated on), and refuses other values in one line naming both."""
    from distill.export.kept_float import export_int8
    from distill.export.log import ExportLog
    from distill.export.quantize import FLAVOURS
    from distill.export.training_run import TrainingRun
    from distill.records import ExportReport

    say = ExportLog(lambda s: None)
    run = TrainingRun.of_checkpoint(run_ckpt, say)
    exported = export_int8(export_dir, run_ckpt, FLAVOURS["ort-cpu"])
    cfg = QADConfig(checkpoint=str(run_ckpt), out_dir="unused", export_dir=str(export_dir))
    ecfg = qad_module.export_config(cfg, run, say, exported)
    report = ExportReport.read(export_dir)
    assert (ecfg.calib_count, ecfg.seed) == (report.config["calib_count"], report.config["seed"]) == (64, 0)

    # the export's picks, made again from its own settings, are QAD's picks; the hold-out holds none of them
    folder = DomainFolder(ecfg.data_root, ecfg.split_rule())
    domains = [*report.data["calib_domains"], *report.data["target_domains"]]
    theirs = calibration_samples(ExportConfig.from_options(report.config), folder, domains)
    assert {d: len(v) for d, v in theirs.items()} == report.data["calib_per_domain"]
    ours = calibration_samples(ecfg, folder, domains)
    assert {d: [s.index for s in v] for d, v in ours.items()} == {d: [s.index for s in v] for d, v in theirs.items()}
    held = holdout_samples(ecfg, folder, domains, 1000, ours)
    assert held and not {s.index for s in held} & {s.index for v in theirs.values() for s in v}

    for key, value, flag in [("calib_count", 16, "--calib-count 16"), ("seed", 3, "--seed 3"),
                             ("target_domains", (), "--target-domains (none)"),
                             ("calib_domains", ("clean",), "--calib-domains clean")]:
        with pytest.raises(DistillError) as e, option_names(QAD_FLAGS):  # as `distill qad` runs it
            qad_module.export_config(cfg.model_copy(update={key: value}), run, say, exported)
        message = str(e.value)
        assert flag in message and "differs from the export's" in message and "\n" not in message, message
        assert "export.json" in message
    with pytest.raises(DistillError, match="calib_count=16 differs from the export's"):  # from Python: the keyword
        qad_module.export_config(cfg.model_copy(update={"calib_count": 16}), run, say, exported)
    # the same values given explicitly are fine; a calibration domain among the targets is no target (as export.json)
    same = cfg.model_copy(update={"calib_count": 64, "seed": 0, "target_domains": ("noisy", "clean")})
    ecfg = qad_module.export_config(same, run, say, exported)
    assert (ecfg.calib_count, ecfg.target_domains) == (64, ("noisy",))
