"""Logits at scale: one array per model, on disk past SPILL_BYTES, compared a chunk of rows at a time.

`distill export --eval-count 0` scores every test image: [N, C] float32 logits per model (4 kB an image at 1,000
classes), and comparing two models made [N, C] float64 temporaries (parity's difference, the near-ties' argsort).
"""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.export import evaluate as evaluate_mod
from distill.export import images as images_mod
from distill.export.evaluate import abs_max, fp32_tolerance, parity, predict_onnx, predict_torch
from distill.export.fallback import kl_divergence
from distill.export.images import ImageSet
from distill.export.margins import near_ties


def _logits(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, classes)).astype(np.float32)
    b = (a + rng.normal(scale=0.3, size=a.shape)).astype(np.float32)
    return a, b


def _scores(a: np.ndarray, b: np.ndarray) -> tuple:
    ties = near_ties(a, b)
    assert ties is not None
    return parity(a, b), ties, kl_divergence(a, b), fp32_tolerance(a, 1e-3), abs_max(b)


def test_comparisons_in_chunks_equal_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parity, near-ties, KL and the tolerance over chunks of 7 rows equal the same over one chunk (counts, maxima
    and quantiles exactly; sums up to rounding)."""
    a, b = _logits(50, 6, seed=0)
    whole = _scores(a, b)
    monkeypatch.setattr(evaluate_mod, "CHUNK_BYTES", 7 * 6 * 8)  # 7 rows of 6 float64: 50 = 7 x 7 + 1
    chunked = _scores(a, b)
    (p1, t1, kl1, tol1, m1), (p2, t2, kl2, tol2, m2) = whole, chunked
    assert p2["mean_abs_logit_diff"] == pytest.approx(p1["mean_abs_logit_diff"], rel=1e-12)
    assert {k: v for k, v in p2.items() if k != "mean_abs_logit_diff"} == \
        {k: v for k, v in p1.items() if k != "mean_abs_logit_diff"}
    assert 0 < p1["top1_agreement"] < 1  # the noise turns some images: the count is checked, not trivially 1
    assert t2 == t1 and t1.disagreement_pct > 0
    assert kl2 == pytest.approx(kl1, rel=1e-12) and kl1 > 0
    assert (tol2, m2) == (tol1, m1)


def test_comparing_logits_holds_no_array_of_their_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The heap's peak while comparing two [N, C] logit arrays stays a fraction of one of them (before: parity's
    float64 copies and difference, and the near-ties' int64 argsort, each [N, C])."""
    monkeypatch.setattr(evaluate_mod, "CHUNK_BYTES", 256 * 50 * 8)  # 256 rows
    a, b = _logits(20_000, 50, seed=1)  # 4 MB each
    tracemalloc.start()
    try:
        _scores(a, b)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.5 * a.nbytes, f"peak {peak / 2**20:.1f} MB comparing two {a.nbytes / 2**20:.1f} MB arrays"


def _images(n: int, spill_dir: Path | None) -> ImageSet:
    rng = np.random.default_rng(2)
    return ImageSet(rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), np.zeros(n, np.int64),
                    np.asarray(["d"] * n, dtype=object), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), [], spill_dir)


class _Head(torch.nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(3 * 8 * 8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_logits_past_the_threshold_are_memory_mapped_in_the_images_folder(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Predicting past SPILL_BYTES writes the logits into a memory map in the images' spill folder, batch by batch,
    with the values the in-RAM array has (onnxruntime and PyTorch); the file is unlinked, so nothing is left."""
    head = _Head(5)
    onnx_path = tmp_path / "head.onnx"
    torch.onnx.export(head, (torch.zeros(1, 3, 8, 8),), str(onnx_path), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "b"}, "logits": {0: "b"}}, dynamo=False)
    in_ram = [predict_onnx(str(onnx_path), _images(70, None), batch_size=16),
              predict_torch(head, _images(70, None), batch_size=16)]
    assert not any(isinstance(x, np.memmap) for x in in_ram)

    spill = tmp_path / "spill"
    made: list[Path] = []
    real = images_mod.disk_backed

    def spy(shape, dtype, spill_dir, what):
        made.append(Path(spill_dir))
        return real(shape, dtype, spill_dir, what)

    monkeypatch.setattr(images_mod, "SPILL_BYTES", 0)
    monkeypatch.setattr(evaluate_mod, "disk_backed", spy)
    mapped = [predict_onnx(str(onnx_path), _images(70, spill), batch_size=16),
              predict_torch(head, _images(70, spill), batch_size=16)]
    assert made == [spill, spill]
    for m, r in zip(mapped, in_ram):
        assert isinstance(m, np.memmap) and m.shape == (70, 5) and m.dtype == np.float32
        np.testing.assert_array_equal(np.asarray(m), r)
    assert list(spill.iterdir()) == []  # unlinked at creation


def test_no_room_for_logits_is_one_line_naming_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distill.errors import DistillError

    monkeypatch.setattr(images_mod, "SPILL_BYTES", 0)

    def full(f, nbytes):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(images_mod, "_reserve", full)
    with pytest.raises(DistillError, match=rf"^{tmp_path}: cannot hold 4 images' logits .*No space left"):
        predict_torch(_Head(3), _images(4, tmp_path))
