"""The top-level keys of export.json and qad.json as the release before fix-A (``20c7450``) read them: its records
forbid any other key (``extra="forbid"``), so a file a newer distill writes must keep to them to stay readable there
(a Jetson with a pinned wheel reading a host's export). Vendored as plain pydantic models of those names."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, create_model

EXPORT_KEYS = ("format created status checkpoint student class_names input preprocess provenance run_summary config "
               "versions models warnings data exporter reference tensorrt recommendation files elapsed_s").split()
QAD_KEYS = ("checkpoint checkpoint_sha256 student flavour library teacher config calibration_images test_images ptq "
            "qad qad_file tuned_checkpoint qdq_check torch_vs_onnx losses weights_changed_pct elapsed_s target_pts "
            "within_target accuracy holdout_images ship ship_reason ptq_file holdout_pairs ptq_origin kept_float "
            "float_outputs").split()


def _model(name: str, keys: list[str]) -> type[BaseModel]:
    fields: dict[str, Any] = {k: (Any, None) for k in keys}
    return create_model(name, __config__=ConfigDict(extra="forbid", protected_namespaces=()), **fields)


OldExportReport = _model("OldExportReport", EXPORT_KEYS)
OldQADRecord = _model("OldQADRecord", QAD_KEYS)

#: summary.json's keys as the release before fix-M (``20c7450``) read them (its RunSummary forbids others; review 4 M1)
SUMMARY_KEYS = ("strategy strategy_options student teacher source_domains target_domains trained_on best_epoch "
                "selected_on selected_value teacher_agreement val_acc source_val_acc test_acc source_acc target_acc "
                "teacher_zero_shot params flops teacher_flops checkpoint train_seconds_this_session nonfinite_steps "
                "skipped_images robust unlabeled withheld_classes ema_decay").split()
OldRunSummary = _model("OldRunSummary", SUMMARY_KEYS)
