"""``distill adapt`` of a real ``distill qad`` checkpoint (``QAD_DIR/checkpoint``) finds the run it came from.

qad's checkpoint names its run by name in ``provenance.run`` and by ``relative.run``, a path relative to the
checkpoint (:func:`distill.export.training_run.checkpoint_provenance`); adapting it read ``provenance.run`` as a path,
found no run, and took the warned default split rule (tests/train/test_adapt_split.py covers the rule itself).
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from distill.config import load_yaml
from distill.errors import DistillWarning
from distill.export.qad import qad
from distill.export.qad_config import QADConfig
from distill.run_split import PLACING_KEYS, RunConfigView
from distill.train.adapt import adapt_recipe


def test_adapting_a_qad_checkpoint_takes_its_runs_split_without_a_warning(run_ckpt: Path, tiny_root: Path,
                                                                           tmp_path: Path) -> None:
    run = tmp_path / "tree" / "runs" / "kd"  # the run and the qad folder apart: nothing of the run beside qad's
    shutil.copytree(run_ckpt.parents[1], run)
    out = tmp_path / "tree" / "export" / "kd" / "qad"
    record = qad(QADConfig(checkpoint=str(run / "checkpoints" / "best"), out_dir=str(out), epochs=1,
                           calib_domains="clean", calib_count=32, eval_count=4, holdout_count=8), log=lambda s: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DistillWarning)  # the run is found: nothing to warn of
        data = adapt_recipe(out / record.tuned_checkpoint, ["noisy"], tiny_root, strategy="shot",
                            source_domains=["clean"])["data"]
    view = RunConfigView.model_validate(load_yaml(run / "config.yaml"))
    assert view.data is not None
    rule = view.data.split_rule()
    assert {k: data[k] for k in PLACING_KEYS} == {k: getattr(rule, k) for k in PLACING_KEYS}
