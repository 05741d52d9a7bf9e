"""Run an exported model and a PyTorch student on the same images; compare and score them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from distill.errors import DistillError
from distill.export.images import ImageSet
from distill.report.stats import mcnemar


def ort_session(path: str | Path, threads: int | None = None):
    """A CPU onnxruntime session (``threads`` intra-op threads, default: onnxruntime's)."""
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise DistillError(f"{path}: onnxruntime cannot load it: {str(e).splitlines()[0]}") from None


def predict_onnx(path_or_session: Any, images: ImageSet, batch_size: int = 64) -> np.ndarray:
    """Logits [N, C] of an ONNX model (first output) on ``images``."""
    sess = ort_session(path_or_session) if isinstance(path_or_session, (str, Path)) else path_or_session
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: x})[0] for x in images.batches(batch_size)]
    return np.concatenate(outs).astype(np.float32) if outs else np.zeros((0, 0), np.float32)


def predict_torch(student: Any, images: ImageSet, batch_size: int = 64) -> np.ndarray:
    """Logits [N, C] of a PyTorch student (CPU, fp32, eval mode) on ``images``."""
    student = student.cpu().float().eval()
    outs = []
    with torch.no_grad():
        for x in images.batches(batch_size):
            outs.append(student(torch.from_numpy(x)).numpy())
    return np.concatenate(outs).astype(np.float32) if outs else np.zeros((0, 0), np.float32)


def parity(reference: np.ndarray, other: np.ndarray) -> dict[str, Any]:
    """How far ``other`` logits are from ``reference`` logits [N, C] of the same images."""
    if reference.shape != other.shape:
        raise DistillError(f"parity: logits shapes differ {reference.shape} vs {other.shape}")
    diff = np.abs(reference.astype(np.float64) - other.astype(np.float64))
    return {
        "n": int(reference.shape[0]),
        "max_abs_logit_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_logit_diff": float(diff.mean()) if diff.size else 0.0,
        "max_abs_logit": float(np.abs(reference).max()) if reference.size else 0.0,
        "top1_agreement": float((reference.argmax(1) == other.argmax(1)).mean()) if reference.size else 1.0,
    }


def fp32_tolerance(reference: np.ndarray, rtol: float) -> float:
    """Allowed max |Δlogit| for an fp32 export: ``rtol`` x max(1, max |logit|)."""
    return float(rtol * max(1.0, float(np.abs(reference).max()) if reference.size else 1.0))


def accuracy_by_domain(logits: np.ndarray, images: ImageSet) -> dict[str, float]:
    """Top-1 accuracy (fraction) per domain, in the order domains appear."""
    pred = logits.argmax(1)
    out = {}
    for d in images.domain_names:
        m = images.domains == d
        out[d] = float((pred[m] == images.labels[m]).mean()) if m.any() else float("nan")
    return out


def disagreement_by_domain(reference: np.ndarray, logits: np.ndarray, images: ImageSet) -> dict[str, float]:
    """Top-1 disagreement with ``reference`` logits per domain, in points (100 x share of images whose
    predicted class differs). Label-free; it bounds the accuracy change: |acc - acc_ref| <= disagreement."""
    diff = reference.argmax(1) != logits.argmax(1)
    return {d: 100.0 * float(diff[images.domains == d].mean()) for d in images.domain_names}


def drop_p_values(reference: np.ndarray, logits: np.ndarray, images: ImageSet) -> dict[str, float]:
    """Per domain, McNemar's exact p-value of the accuracy change from ``reference`` logits to ``logits``
    on the same labelled images (the paired test: each image is scored by both models). A drop is
    significant at p < 0.05; with a few hundred test images a 1-point drop rarely is."""
    ref_ok, ok = reference.argmax(1) == images.labels, logits.argmax(1) == images.labels
    return {d: mcnemar(ok[images.domains == d], ref_ok[images.domains == d]).p for d in images.domain_names
            if (images.domains == d).any()}


def drops_in_points(reference: dict[str, float], other: dict[str, float]) -> dict[str, float]:
    """Accuracy drop per domain in percentage points (positive = worse than reference)."""
    return {d: 100.0 * (reference[d] - other[d]) for d in reference if d in other}
