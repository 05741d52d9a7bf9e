"""distill qad's no-harm rule: QAD's int8 file ships only below PTQ's (plain, or an export's: --export) mean
disagreement with fp32 on hold-out images that are neither calibration nor test images."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from distill.cli import main
from distill.data.folder import DomainFolder
from distill.errors import DistillError
from distill.export.qad import qad
from distill.export.qad_config import QADConfig, QADRecord
from distill.records import ExportReport
from distill.report.decision import decide


def _damaging(real_train):
    """``train_qad`` that perturbs every parameter by its std after training: a QAD that harms (injected)."""
    def train(*args, **kwargs):
        model, losses, moved = real_train(*args, **kwargs)
        torch.manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(p.std() * torch.randn_like(p))
        return model, losses, moved
    return train


def test_no_harm_ships_qad_only_below_ptqs_mean_holdout_disagreement():
    from distill.export.qad_ship import no_harm
    from distill.records import Disagreement

    def arm(**holdout: float) -> Disagreement:
        return Disagreement(calibration={}, test={}, holdout=holdout)

    assert no_harm(arm(a=2.0, b=2.0), arm(a=1.0, b=2.0), 100)[0] == "qad"
    assert no_harm(arm(a=2.0, b=2.0), arm(a=2.0, b=2.0), 100)[0] == "ptq"  # a tie: QAD changed nothing measurable
    assert no_harm(arm(a=1.0, b=2.0), arm(a=2.0, b=2.0), 100)[0] == "ptq"
    ship, reason = no_harm(arm(a=0.0, b=4.0), arm(a=3.0, b=0.0), 100)  # the mean over domains decides: 1.5 < 2
    assert ship == "qad" and "QAD 1.50 < PTQ 2.00" in reason and "100 hold-out images (2 domains)" in reason


def test_the_rule_says_whether_its_pick_is_more_than_chance():
    from distill.export.qad_ship import holdout_pairs, no_harm
    from distill.records import Disagreement

    ptq = np.array([True, True, False, False, True, False])
    qad = np.array([False, True, True, False, False, False])
    pairs = holdout_pairs(ptq, qad)  # images 0 and 4 only PTQ flips, image 2 only QAD
    assert (pairs.only_ptq, pairs.only_qad) == (2, 1) and pairs.p == 1.0 and not pairs.significant
    lopsided = holdout_pairs(np.r_[np.ones(12, bool), np.zeros(88, bool)], np.zeros(100, bool))
    assert (lopsided.only_ptq, lopsided.only_qad) == (12, 0)
    assert lopsided.p == pytest.approx(2 * 0.5 ** 12, abs=1e-4) and lopsided.significant
    arm = Disagreement(calibration={}, test={}, holdout={"a": 12.0}), Disagreement(calibration={}, test={},
                                                                                   holdout={"a": 0.0})
    ship, reason = no_harm(*arm, 100, lopsided)
    assert ship == "qad" and "only PTQ flips 12 image(s), only QAD 0: McNemar p = 0.00049, more than chance" in reason
    assert "within chance, the two files are as good" in no_harm(*arm, 100, pairs)[1]


def test_the_holdout_is_train_images_that_are_neither_calibration_nor_test_images(tiny_root):
    from distill.export.config import ExportConfig
    from distill.export.data import calibration_samples, holdout_samples

    folder = DomainFolder(tiny_root, test_fraction=0.3, split_seed=0)
    cfg = ExportConfig(precisions=("fp32", "int8"), data_root=str(tiny_root), calib_count=32)
    domains = ["clean", "dark"]
    calib = {s.index for picks in calibration_samples(cfg, folder, domains).values() for s in picks}
    test = {s.index for s in folder.select(domains, "test")}
    train = {s.index for s in folder.select(domains, "train")}
    held = holdout_samples(cfg, folder, domains, 40)
    assert len(held) == 40 and {s.domain for s in held} == set(domains)
    assert {s.index for s in held} <= train and not {s.index for s in held} & (calib | test)
    everything = holdout_samples(cfg, folder, domains, 10_000)  # "or what is available": every train image left
    assert {s.index for s in everything} == train - calib


def test_the_holdout_is_picked_without_a_sample_object_per_train_image(tmp_path, monkeypatch):
    """10^7 images: the hold-out picks from the train split's index columns, as the list it replaced would, but
    makes a Sample only for the picks (the list made one per train image: GBs and a minute at that scale)."""
    from distill.data.sample_table import SampleColumns
    from distill.export.config import ExportConfig
    from distill.export.data import calibration_samples, holdout_samples
    from distill.export.images import pick

    for d in ("a", "b"):
        for c in ("x", "y"):
            (tmp_path / d / c).mkdir(parents=True)
            for i in range(3000):  # never decoded: picking reads the listing only
                (tmp_path / d / c / f"{i}.png").touch()
    folder = DomainFolder(tmp_path, test_fraction=0.3, split_seed=0)
    cfg = ExportConfig(precisions=("fp32", "int8"), data_root=str(tmp_path), calib_count=32)
    calib = calibration_samples(cfg, folder, ["a", "b"])
    expected = []
    for i, d in enumerate(["a", "b"]):
        taken = {s.index for s in calib[d]}
        expected += pick([s for s in folder.select([d], "train") if s.index not in taken], 9 - i, cfg.seed)
    made = [0]
    real = SampleColumns.sample

    def counted(self, p):
        made[0] += 1
        return real(self, p)

    monkeypatch.setattr(SampleColumns, "sample", counted)
    held = holdout_samples(cfg, folder, ["a", "b"], 17, calib)
    assert held == expected and len(held) == 17
    assert made[0] < 100, f"{made[0]} Sample objects made for a hold-out of 17 among ~8,000 train images"


def test_no_holdout_image_left_is_one_line(run_ckpt, tiny_root, tmp_path):
    with pytest.raises(DistillError, match="no train-split image is left for the hold-out") as e:
        qad(QADConfig(checkpoint=str(run_ckpt), out_dir=str(tmp_path / "q"), calib_count=10_000, epochs=1,
                      eval_count=4), log=lambda s: None)
    assert "\n" not in str(e.value) and not (tmp_path / "q").exists()  # bad input leaves no folder behind
    assert "(calib_count=10000) took every one" in str(e.value) and "e.g. to 60" in str(e.value), str(e.value)


def test_qad_worse_than_ptq_on_the_holdout_ships_ptqs_int8(run_ckpt, tmp_path, monkeypatch, capsys):
    """Training that damages the student (injected): the rule ships plain PTQ's int8, written beside the QAD file,
    and the CLI names it; the hold-out images are none of the calibration or test images."""
    import distill.export.qad as qad_module

    real_data, real_holdout = qad_module.load_export_data, qad_module.load_holdout_images
    seen = {}

    def spy_data(*args, **kwargs):
        seen["data"] = real_data(*args, **kwargs)
        return seen["data"]

    def spy_holdout(*args, **kwargs):
        seen["holdout"] = real_holdout(*args, **kwargs)
        return seen["holdout"]

    monkeypatch.setattr(qad_module, "train_qad", _damaging(qad_module.train_qad))
    monkeypatch.setattr(qad_module, "load_export_data", spy_data)
    monkeypatch.setattr(qad_module, "load_holdout_images", spy_holdout)
    out = tmp_path / "qad"
    assert main(["qad", str(run_ckpt), "--out", str(out), "--epochs", "1", "--calib-count", "32",
                 "--eval-count", "8", "--holdout-count", "40", "--quiet"]) == 0
    record = QADRecord.read(out)
    assert record.ship == "ptq" and record.ptq_file == "model.int8-ort-cpu.ptq.onnx" == record.ship_file
    assert record.holdout_images == 40 and set(record.qad.holdout) == set(record.ptq.holdout) == {"clean", "dark"}
    assert record.qad.mean_holdout > record.ptq.mean_holdout and "QAD did not help" in record.ship_reason
    # the paired count is of the same hold-out images: its net equals the per-domain figures' (20 images a domain)
    pairs = record.holdout_pairs
    net = sum(record.qad.holdout[d] - record.ptq.holdout[d] for d in record.qad.holdout) * 20 / 100
    assert pairs is not None and pairs.only_qad - pairs.only_ptq == pytest.approx(net)
    assert f"McNemar p = {pairs.p:.2g}" in record.ship_reason
    assert f"int8 file: {out}/model.int8-ort-cpu.ptq.onnx (PTQ int8)" in capsys.readouterr().out
    session = ort.InferenceSession(str(out / record.ptq_file), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["distill.int8_flavour"] == "ort-cpu" and '"qad": false' in meta["distill.quantization"]
    assert (out / record.qad_file).is_file()  # the QAD file stays, for comparison
    # the images the rule decided on: none is a calibration (trained-on) or test (reported-on) image
    held, data = seen["holdout"], seen["data"]
    assert len(held) == 40 and set(held.domain_names) == {"clean", "dark"}
    others = {img.tobytes() for img in [*data.calib_images.images, *data.eval_images.images]}
    assert not any(img.tobytes() in others for img in held.images)


def test_qad_better_than_ptq_on_the_holdout_ships_the_qad_file(run_ckpt, tmp_path, monkeypatch, capsys):
    """A damaged PTQ baseline (injected: its fp32 graph's weights perturbed before quantizing): QAD ships, and a
    PTQ file an earlier run left in the folder is removed, so the folder holds one int8 file to ship."""
    import distill.export.qad as qad_module

    real_ptq = qad_module.plain_ptq

    def damaged_ptq(fp32_path, work, calib, flavour):
        proto = onnx.load(str(fp32_path))
        rng = np.random.default_rng(0)
        for t in proto.graph.initializer:
            w = numpy_helper.to_array(t)
            if w.dtype == np.float32 and w.ndim >= 2:
                t.CopyFrom(numpy_helper.from_array(w + w.std() * rng.standard_normal(w.shape).astype(np.float32),
                                                   t.name))
        damaged = Path(work) / "damaged.onnx"
        onnx.save(proto, str(damaged))
        return real_ptq(damaged, work, calib, flavour)

    monkeypatch.setattr(qad_module, "plain_ptq", damaged_ptq)
    out = tmp_path / "qad"
    out.mkdir()
    (out / "model.int8-ort-cpu.ptq.onnx").write_bytes(b"stale")
    # `--out qad/`, as the README writes it: the lines name the files without a doubled slash
    assert main(["qad", str(run_ckpt), "--out", f"{out}/", "--epochs", "1", "--calib-count", "32",
                 "--eval-count", "8", "--holdout-count", "40", "--quiet"]) == 0
    record = QADRecord.read(out)
    assert record.ship == "qad" and record.ptq_file is None and record.ship_file == record.qad_file
    assert record.qad.mean_holdout < record.ptq.mean_holdout and "QAD" in record.ship_reason
    assert not (out / "model.int8-ort-cpu.ptq.onnx").exists()
    printed = capsys.readouterr().out
    assert f"int8 file: {out}/model.int8-ort-cpu.onnx (QAD int8)" in printed and "//" not in printed


def test_a_qad_json_from_before_the_rule_still_reads(tmp_path):
    """qad.json files written before the no-harm rule have no hold-out figures and no decision: they read, with
    no decision recorded, and their int8 file (the QAD one) is the one to ship."""
    import json

    raw = {"checkpoint": "run/checkpoints/best", "student": "test_resnet", "flavour": "ort-cpu", "library": "torch.ao",
           "teacher": "fp32", "config": {"seed": 0, "epochs": 3}, "calibration_images": 32, "test_images": 24,
           "ptq": {"calibration": {"clean": 3.0}, "test": {"clean": 4.0}},
           "qad": {"calibration": {"clean": 1.0}, "test": {"clean": 2.0}},
           "qad_file": "model.int8-ort-cpu.onnx", "tuned_checkpoint": "checkpoint", "qdq_check": {},
           "torch_vs_onnx": {}, "losses": [0.1], "elapsed_s": 9.0, "within_target": False}
    (tmp_path / "qad.json").write_text(json.dumps(raw))
    record = QADRecord.read(tmp_path)
    assert record.ship is None and record.ship_reason == "" and record.holdout_images == 0
    assert record.qad.holdout == {} and record.qad.mean_holdout is None
    assert record.ship_file == "model.int8-ort-cpu.onnx"


def test_qad_against_an_exports_int8_compares_with_and_ships_that_file(run_ckpt, export_dir, tmp_path, monkeypatch,
                                                                       capsys):
    """--export: the PTQ arm is the export's int8 file (its calibration and float fallback), not a plain PTQ made
    here; when QAD does not beat it (injected damage), a byte copy of the export's file ships, with its stamp."""
    import distill.export.qad as qad_module

    def no_plain_ptq(*args, **kwargs):
        raise AssertionError("plain PTQ was made although --export names the arm")

    monkeypatch.setattr(qad_module, "plain_ptq", no_plain_ptq)
    monkeypatch.setattr(qad_module, "train_qad", _damaging(qad_module.train_qad))
    out = tmp_path / "qad"
    assert main(["qad", str(run_ckpt), "--out", str(out), "--export", str(export_dir), "--flavour", "ort-cpu",
                 "--epochs", "1", "--eval-count", "8", "--holdout-count", "40", "--quiet"]) == 0  # the export's 64
    record = QADRecord.read(out)
    exported = export_dir / "model.int8-ort-cpu.onnx"
    assert record.ptq_origin.startswith("the export's int8") and str(exported) in record.ptq_origin
    assert record.ship == "ptq" and (out / record.ship_file).read_bytes() == exported.read_bytes()
    printed = capsys.readouterr().out
    assert f"int8 file: {out}/model.int8-ort-cpu.ptq.onnx (PTQ int8)" in printed
    # the export it ran against and the checkpoint, for `distill report` run from any folder: absolute, and relative
    # to the qad folder (a tree of results moved whole still joins)
    assert record.config["export_dir"] == str(export_dir.resolve())
    # inside config, an open dict: the release before reads the file (its records forbid unknown keys)
    from tests.records.old_release import OldQADRecord

    raw = json.loads((out / "qad.json").read_text())
    OldQADRecord.model_validate(raw)
    assert record.relative_paths == {"checkpoint": os.path.relpath(run_ckpt.absolute(), out.absolute()),
                                     "export_dir": os.path.relpath(export_dir.absolute(), out.absolute())}
    assert raw["config"]["relative"] == record.relative_paths
    # the checkpoint resolved and its weights' sha256, as export.json has them: the report pairs the two by it
    assert record.checkpoint == str(run_ckpt.resolve())
    assert record.checkpoint_sha256 == ExportReport.read(export_dir).provenance["checkpoint_sha256"]
    # and the one decision of the report: the export's precision, this folder's int8 file
    rec = ExportReport.read(export_dir).recommendation  # the fixture's precision depends on its timed latency
    decision = decide(rec, record, out, export_dir) if rec is not None else None
    assert decision is not None and f"{export_dir}: {decision.text()}\n" in printed
    if rec.precision == "int8" and rec.flavour != "ort-cpu":  # an int8 of another flavour: no ort-cpu file named
        assert decision.int8 is None
    else:
        assert f"{out}/model.int8-ort-cpu.ptq.onnx (PTQ int8; no-harm rule: " in printed


def test_export_arm_refusals_are_one_line(run_ckpt, export_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    other = tmp_path / "other_ckpt"
    shutil.copytree(run_ckpt, other)  # another checkpoint folder: other weights (the same weights would be accepted)
    weights = load_file(other / "model.safetensors")
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in weights.items()}, other / "model.safetensors")
    cases = [
        (run_ckpt, tmp_path / "nothing", "no export.json here"),
        (other, export_dir, r"exported from .* \(weights sha256 [0-9a-f]{12}, not this checkpoint's\), not "),
    ]
    partial = tmp_path / "partial"
    shutil.copytree(export_dir, partial)
    (partial / "model.int8-ort-cpu.onnx").unlink()
    cases.append((run_ckpt, partial, "no int8 file of flavour ort-cpu"))
    for ckpt, exp, message in cases:
        with pytest.raises(DistillError, match=message) as e:
            qad(QADConfig(checkpoint=str(ckpt), out_dir=str(tmp_path / "q"), export_dir=str(exp), epochs=1,
                          calib_count=16, eval_count=4, flavour="ort-cpu"), log=lambda s: None)
        assert "\n" not in str(e.value)


def test_the_holdout_benchmark_rebuilds_the_runs_arms_and_refuses_other_figures(run_ckpt, tmp_path):
    """benchmarks/qad_holdout.py rebuilds a run's data, fp32 reference and plain-PTQ arm from its qad.json: scored
    again, the run's own hold-out gives qad.json's figures; a qad.json whose figures are not the files' is refused."""
    from tests.test_benchmarks import _script

    bench = _script("qad_holdout")
    out = tmp_path / "qad"
    qad(QADConfig(checkpoint=str(run_ckpt), out_dir=str(out), epochs=1, calib_count=32, eval_count=8,
                  holdout_count=40), log=lambda s: None)
    verdict, rows = bench.study(out, [8, 10 ** 6], draws=20, seed=0)
    record = QADRecord.read(out)
    pool = DomainFolder(record.config["data_root"] or _run_data(run_ckpt), test_fraction=0.3, split_seed=0)
    left = len(pool.select(["clean", "dark"], "train")) - 32
    assert verdict.startswith(f"| qad | {record.student} | 2 | 40, {record.ship} | {left}: ")
    assert [r.split(" | ")[1] for r in rows] == ["8", str(left)]  # the size over the pool is the whole pool
    tampered = record.model_copy(update={"ptq": record.ptq.model_copy(
        update={"holdout": {d: v + 5.0 for d, v in record.ptq.holdout.items()}})})
    tampered.write(out)
    with pytest.raises(SystemExit, match="the rebuilt ptq arm disagrees .* not the run's data or files"):
        bench.study(out, [8], draws=2, seed=0)


def _run_data(run_ckpt: Path) -> str:
    import yaml

    return yaml.safe_load((run_ckpt.parents[1] / "config.yaml").read_text())["data"]["root"]


def test_the_export_of_a_checkpoint_is_found_from_any_folder(run_ckpt, tiny_root, tmp_path, monkeypatch):
    """Bug: export.json stored the checkpoint as typed (relative to the cwd), so `distill qad CKPT --export EX` run
    from another folder refused the export of the very same checkpoint. The path is stored resolved now, and the
    weights' sha256 (provenance.checkpoint_sha256) decides which checkpoint an export is of."""
    from distill.export import ExportConfig, export_checkpoint
    from distill.export.kept_float import export_int8
    from distill.export.quantize import FLAVOURS

    here, there = tmp_path / "a", tmp_path / "b" / "c"
    here.mkdir()
    there.mkdir(parents=True)
    monkeypatch.chdir(here)
    rel = Path(os.path.relpath(run_ckpt, here))
    report = export_checkpoint(rel, "ex", ExportConfig(
        precisions=("fp32", "int8"), data_root=str(tiny_root), int8_flavour="ort-cpu", exporter="torchscript",
        calib_count=16, eval_count=4, latency_iters=1, threads=1), log=lambda s: None)
    assert report.checkpoint == str(run_ckpt.resolve()) == ExportReport.read(here / "ex").checkpoint
    assert report.provenance["checkpoint"] == str(run_ckpt.resolve())
    monkeypatch.chdir(there)  # the same checkpoint and export, typed from another folder
    found = export_int8(Path(os.path.relpath(here / "ex", there)), Path(os.path.relpath(run_ckpt, there)),
                        FLAVOURS["ort-cpu"])
    assert found.path.name == "model.int8-ort-cpu.onnx"
    # an export.json from before: the path as typed and no sha256 still works from the folder it was typed in
    old = tmp_path / "old"
    shutil.copytree(here / "ex", old)
    raw = json.loads((old / "export.json").read_text())
    raw["checkpoint"] = str(rel)
    del raw["provenance"]["checkpoint_sha256"]
    (old / "export.json").write_text(json.dumps(raw))
    monkeypatch.chdir(here)
    assert export_int8(old, rel, FLAVOURS["ort-cpu"]).path == old / "model.int8-ort-cpu.onnx"
