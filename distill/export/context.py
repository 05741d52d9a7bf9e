"""What every step of one export reads: the config, the student, the folders, the images, the log."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.export.config import ExportConfig
from distill.export.data import ExportData
from distill.export.evaluate import accuracy_by_domain
from distill.export.log import ExportLog
from distill.export.onnx import build_metadata, stamp
from distill.student.model import Student, StudentSpec
from distill.utils.io import sha256_file


@dataclass(frozen=True)
class ExportContext:
    """The state the export steps share (built once the work folder and the images exist).

    Attributes:
        cfg: the validated config, with the run's defaults filled in.
        student: the PyTorch student (CPU, fp32, eval mode when predicting).
        out_dir: where the shipped files go.
        work_dir: scratch folder for quantization variants (deleted at the end).
        data: eval and calibration images.
        metadata_provenance: the provenance stamped into every ONNX file (no machine path:
            :func:`~distill.export.training_run.shipped_provenance`).
        log: progress lines and warnings.
    """

    cfg: ExportConfig
    student: Student
    out_dir: Path
    work_dir: Path
    data: ExportData
    metadata_provenance: dict[str, Any]
    log: ExportLog

    @property
    def spec(self) -> StudentSpec:
        return self.student.spec

    def accuracy(self, logits: np.ndarray) -> dict[str, float] | None:
        """Per-domain test accuracy (fractions) of ``logits`` on the eval images; None without labels."""
        return accuracy_by_domain(logits, self.data.eval_images) if self.data.labeled else None

    def file_entry(self, path: Path) -> dict[str, Any]:
        """The ``file``, ``bytes`` and ``sha256`` of a shipped file (relative to ``out_dir``)."""
        return {"file": path.relative_to(self.out_dir).as_posix(), "bytes": path.stat().st_size,
                "sha256": sha256_file(path)}

    def stamp(self, path: Path, precision: str, outputs: list[str], extra: dict[str, Any] | None = None,
              detail: str | None = None) -> None:
        """Write the ``distill.*`` metadata (classes, preprocessing, provenance, precision) into ``path``."""
        stamp(path, build_metadata(self.spec, precision, self.metadata_provenance, outputs, extra),
              doc=f"distill student {self.spec.arch} ({detail or precision})")


@dataclass(frozen=True)
class Fp32Reference:
    """What the fp16 and int8 files are compared with.

    Attributes:
        path: the fp32 ONNX file (the parent of the other precisions).
        outputs: its output names.
        torch_logits: PyTorch's logits on the eval images [N, C] (parity).
        accuracy: the fp32 ONNX's per-domain accuracy (drops); None without labels.
        logits: the fp32 ONNX's logits on the eval images [N, C] (the paired test of a drop); None: not kept.
    """

    path: Path
    outputs: list[str]
    torch_logits: np.ndarray
    accuracy: dict[str, float] | None
    logits: np.ndarray | None = None


def mean_accuracy(accuracy: dict[str, float] | None) -> float | None:
    """Mean over domains (NaN domains left out); None when there is nothing to average."""
    values = [v for v in (accuracy or {}).values() if not math.isnan(v)]
    return float(np.mean(values)) if values else None
