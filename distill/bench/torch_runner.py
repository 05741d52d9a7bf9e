"""A student checkpoint run by PyTorch, with the edge runner's interface (``input_shape``, ``run``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from distill.bench.edge_runner import RuntimeUnavailable


class TorchRunner:
    """Eager PyTorch inference of a checkpoint folder (fp32; CUDA when available, else CPU).

    Args:
        checkpoint: folder with ``model.safetensors`` + ``student.json``.
        threads: ``torch.set_num_threads`` (None: torch's default).
        device: ``cpu`` | ``cuda`` | None (cuda when available).
    """

    runtime = "torch"

    def __init__(self, checkpoint: str | Path, threads: int | None = None, device: str | None = None):
        import torch

        from distill.student.model import load_student

        self.torch = torch
        self.path = Path(checkpoint)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeUnavailable("runtime 'torch' on cuda needs a CUDA build of torch and a GPU")
        self.threads = threads
        if threads:
            torch.set_num_threads(int(threads))
        self.model = load_student(self.path).to(self.device).eval()
        spec = self.model.spec
        self.providers = [f"torch {torch.__version__} {self.device}"]
        self.meta: dict[str, Any] = {"arch": spec.arch, "precision": "fp32", "num_classes": spec.num_classes,
                                     "provenance": spec.provenance}
        self._chw = (3, *spec.input_size)
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def input_shape(self, batch: int) -> list[int]:
        return [batch, *self._chw]

    def run(self, x: np.ndarray) -> Any:
        with self.torch.inference_mode():
            y = self.model(self.torch.from_numpy(x).to(self.device))
            if self.device == "cuda":
                self.torch.cuda.synchronize()
        return y

    def gpu_peak_mb(self) -> float | None:
        return self.torch.cuda.max_memory_allocated() / 2**20 if self.device == "cuda" else None

    def profiled(self) -> None:
        return None  # --profile reports onnxruntime's op times; for torch use torch.profiler directly

    def top_ops(self, k: int = 10) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        pass
