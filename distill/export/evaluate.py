"""Run an exported model and a PyTorch student on the same images; compare and score them.

Logits [N, C] are written into one array per model (:func:`distill.export.images.disk_backed`: memory-mapped from
the images' spill folder when large: 4 kB an image at 1,000 classes), and what compares two of them runs over
chunks of rows (:data:`CHUNK_BYTES` of float64 each), so no [N, C] temporary (a float64 copy, an argsort) grows
with the test split.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnxruntime as ort
import torch

from distill.errors import DistillError
from distill.export.images import ImageSet, disk_backed
from distill.report.stats import mcnemar

CHUNK_BYTES = 8 << 20  # rows of [N, C] logits compared at a time: this many bytes as float64 (1,024 rows at C = 1,000)


def ort_session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
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
    """Logits [N, C] float32 of an ONNX model (first output) on ``images`` (:func:`_stack`)."""
    sess = ort_session(path_or_session) if isinstance(path_or_session, (str, Path)) else path_or_session
    name = sess.get_inputs()[0].name
    return _stack((sess.run(None, {name: x})[0] for x in images.batches(batch_size)), images)


def predict_torch(student: Any, images: ImageSet, batch_size: int = 64) -> np.ndarray:
    """Logits [N, C] float32 of a PyTorch student (CPU, fp32, eval mode) on ``images`` (:func:`_stack`)."""
    student = student.cpu().float().eval()
    with torch.no_grad():
        return _stack((student(torch.from_numpy(x)).numpy() for x in images.batches(batch_size)), images)


def _stack(batches: Iterator[np.ndarray], images: ImageSet) -> np.ndarray:
    """Batches of logits [b, C] written into one [N, C] float32 array as they come: in RAM, or memory-mapped from
    ``images.spill_dir`` when large (:func:`disk_backed`); [0, 0] for no images."""
    out: np.ndarray | None = None
    at = 0
    for b in batches:
        if out is None:
            out = disk_backed((len(images), b.shape[1]), np.float32, images.spill_dir, f"{len(images):,} images' logits")
        out[at:at + len(b)] = b
        at += len(b)
    return out if out is not None else np.zeros((0, 0), np.float32)


def row_chunks(*arrays: np.ndarray) -> Iterator[tuple[np.ndarray, ...]]:
    """The same rows of each of ``arrays`` [N, C] at a time, as float64 (:data:`CHUNK_BYTES` each)."""
    rows = max(1, CHUNK_BYTES // (8 * max(1, arrays[0].shape[1])))
    for s in range(0, len(arrays[0]), rows):
        yield tuple(np.asarray(a[s:s + rows], dtype=np.float64) for a in arrays)


def parity(reference: np.ndarray, other: np.ndarray) -> dict[str, Any]:
    """How far ``other`` logits are from ``reference`` logits [N, C] of the same images."""
    if reference.shape != other.shape:
        raise DistillError(f"parity: logits shapes differ {reference.shape} vs {other.shape}")
    if not reference.size:
        return {"n": int(reference.shape[0]), "max_abs_logit_diff": 0.0, "mean_abs_logit_diff": 0.0,
                "max_abs_logit": 0.0, "top1_agreement": 1.0}
    max_diff = total = 0.0
    agree = 0
    for r, o in row_chunks(reference, other):
        diff = np.abs(r - o)
        max_diff, total = max(max_diff, float(diff.max())), total + float(diff.sum())
        agree += int((r.argmax(1) == o.argmax(1)).sum())
    return {
        "n": int(reference.shape[0]),
        "max_abs_logit_diff": max_diff,
        "mean_abs_logit_diff": total / reference.size,
        "max_abs_logit": abs_max(reference),
        "top1_agreement": agree / reference.shape[0],
    }


def abs_max(logits: np.ndarray) -> float:
    """max |logit| (0 for none), a chunk of rows at a time."""
    return max((float(np.abs(r).max()) for r, in row_chunks(logits)), default=0.0) if logits.size else 0.0


def fp32_tolerance(reference: np.ndarray, rtol: float) -> float:
    """Allowed max |Δlogit| for an fp32 export: ``rtol`` x max(1, max |logit|)."""
    return float(rtol * max(1.0, abs_max(reference)))


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
