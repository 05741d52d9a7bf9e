"""A ``distill qad --export`` result belongs to the export it ran against, not to every export of its checkpoint
(QA finding 7): its no-harm rule compared QAD with that export's int8 file only."""
from __future__ import annotations

import os
from pathlib import Path

from distill.report.decision import decision_for
from distill.report.write import collect

from .conftest import write_run
from .test_ship_decision import FP32, _export, _qad


def _two_exports(root: Path, export_dir: str | None) -> tuple[Path, Path]:
    """ROOT/{run, a, b, a/qad}: two exports of one checkpoint, a QAD inside ``a`` made with --export EXPORT_DIR."""
    run = write_run(root / "run", strategy="kd", acc={"clean": 0.9, "dark": 0.8, "noisy": 0.6}, seed=0)
    ckpt = run / "checkpoints" / "best"
    a, b = _export(root / "a", ckpt, FP32), _export(root / "b", ckpt, FP32)
    record = _qad(a / "qad", ckpt, "qad")
    if export_dir is not None:
        record.model_copy(update={"config": {**record.config, "export_dir": export_dir},
                                  "ptq_origin": f"the export's int8, {export_dir}/model.int8-ort-cpu.onnx"}
                          ).write(a / "qad")
    return a, b


def _decisions(root: Path) -> dict[str, str]:
    data = collect([root])
    return {Path(ex.dir).name: decision_for(data, ex).text() for ex in data.exports}


def test_a_qad_made_against_one_export_is_not_attached_to_another_export_of_its_checkpoint(tmp_path: Path) -> None:
    a, b = _two_exports(tmp_path, str(tmp_path / "a"))
    got = _decisions(tmp_path)
    assert "qad/model.int8-ort-cpu.onnx (QAD int8; no-harm rule:" in got["a"]
    assert "QAD" not in got["b"] and "qad/" not in got["b"]


def test_a_relative_export_path_from_another_cwd_still_names_its_export(tmp_path: Path) -> None:
    rel = os.path.join(tmp_path.name, "b")  # as typed from tmp_path's parent: the QAD ran against b, though in a/
    _two_exports(tmp_path, rel)
    got = _decisions(tmp_path)
    assert "QAD int8" in got["b"] and "QAD" not in got["a"]


def test_a_qad_against_plain_ptq_attaches_to_each_export_of_its_checkpoint_and_says_so(tmp_path: Path) -> None:
    _two_exports(tmp_path, None)
    got = _decisions(tmp_path)
    # both exports of the checkpoint: the one inside a's folder wins for a; b has one candidate, the same
    for name in ("a", "b"):
        assert "(QAD int8; compared with plain PTQ, not this export's int8; no-harm rule:" in got[name]
