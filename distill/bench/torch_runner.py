"""A student checkpoint run by PyTorch, with the edge runner's interface (``input_shape``, ``run``).

GPU inference options (``distill bench CKPT --runtime torch``):

- ``precision``: ``fp32``, ``bf16`` or ``fp16`` weights and activations (the model is cast, as a
  deployment would; no per-op autocast). fp16 needs CUDA (refused on a CPU in one line: it is
  emulated there; bf16 runs on CPUs).
- ``memory_format``: ``channels_last`` (NHWC; tensor-core convolutions) or ``contiguous``;
  ``auto`` is channels_last on CUDA and contiguous on a CPU.
- ``compile``: ``none`` (eager), or a ``torch.compile`` mode: ``default``, ``reduce-overhead``
  (CUDA graphs: removes the per-kernel launch cost that dominates batch-1 latency) or
  ``max-autotune``. Each batch size is compiled once (``dynamic=False``); the first call's time,
  compilation and warm-up included, is reported as ``compile_s`` and never enters the timed runs.

Each timed run includes the host-to-device copy of the fp32 input, as the ONNX Runtime runners'
do, so records of all runtimes stay comparable.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import DistillError
from distill.spelling import option

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


class TorchRunner:
    """PyTorch inference of a checkpoint folder at a chosen device, precision, layout and compile mode.

    Args:
        checkpoint: folder with ``model.safetensors`` + ``student.json``.
        threads: ``torch.set_num_threads`` (None: torch's default); :func:`distill.bench.run.bench_model` puts the
            count back after timing.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` (:func:`distill.utils.runtime.resolve_device`).
        precision: ``fp32`` | ``bf16`` | ``fp16``.
        compile: one of :data:`COMPILE_MODES`.
        memory_format: one of :data:`MEMORY_FORMATS`.

    Raises:
        DistillError: unknown option, CUDA asked for but missing, fp16 on a CPU.
    """

    runtime = "torch"

    def __init__(self, checkpoint: str | Path, threads: int | None = None, device: str | None = "auto",
                 precision: str = "fp32", compile: str = "none", memory_format: str = "auto"):
        # lazy: torch and the student model only when a checkpoint is benchmarked; `distill bench x.onnx`
        # (and the CLI's start-up, which registers this command) must not import torch
        import torch

        from distill.student.model import load_student
        from distill.utils.runtime import check_precision, resolve_device

        if compile not in COMPILE_MODES:
            raise DistillError(f"{option('compile', repr(compile))}: use one of {', '.join(COMPILE_MODES)}")
        if memory_format not in MEMORY_FORMATS:
            raise DistillError(f"{option('memory_format', repr(memory_format))}: use one of {', '.join(MEMORY_FORMATS)}")
        self.torch = torch
        self.path = Path(checkpoint)
        dev = resolve_device(device, what=option("device"))
        self.dtype = check_precision(precision, dev, what=option("precision"))
        self.device = str(dev)
        self._cuda = dev.type == "cuda"
        if compile == "reduce-overhead" and not self._cuda:
            raise DistillError(f"{option('compile', 'reduce-overhead')} captures CUDA graphs: it needs a CUDA device "
                               "(use default or max-autotune on a CPU)")
        self.threads = threads
        if threads:
            torch.set_num_threads(int(threads))
        # what the run uses: the record's threads_used (threads stays as asked: None for torch's default)
        self.threads_used = torch.get_num_threads()
        self.threads_basis = "--threads" if threads else "torch's default (torch.get_num_threads())"
        channels_last = memory_format == "channels_last" or (memory_format == "auto" and self._cuda)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.precision, self.compile_mode = precision, compile
        if self._cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
        model = load_student(self.path).to(dev).eval().to(self.dtype)
        # torch's stubs: Module.to(memory_format=...) is documented and works, but no overload declares it
        model = model.to(memory_format=self.memory_format)  # type: ignore[call-overload]
        self.model = model
        self.fn = model if compile == "none" else torch.compile(model, mode=None if compile == "default" else compile,
                                                               dynamic=False)
        spec = model.spec
        self.providers = [f"torch {torch.__version__} {self.device}"]
        self.meta: dict[str, Any] = {"arch": spec.arch, "precision": precision, "num_classes": spec.num_classes,
                                     "provenance": spec.provenance}
        self.options = {"precision": precision, "memory_format": "channels_last" if channels_last else "contiguous",
                        "compile": compile}
        self._chw = (3, *spec.input_size)
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()

    def input_shape(self, batch: int) -> list[int]:
        return [batch, *self._chw]

    def _forward(self, x: np.ndarray) -> Any:
        t = self.torch.from_numpy(x).to(self.device).to(self.dtype, memory_format=self.memory_format)
        y = self.fn(t)
        if self._cuda:
            self.torch.cuda.synchronize()
        return y

    def run(self, x: np.ndarray) -> Any:
        with self.torch.no_grad():  # no_grad, not inference_mode: CUDA-graph capture wants ordinary tensors
            return self._forward(x)

    def warm(self, batch: int) -> float:
        """Seconds of the first call at ``batch`` (compilation, CUDA-graph capture, cuDNN autotuning)."""
        x = np.zeros(self.input_shape(batch), np.float32)
        t0 = time.perf_counter()
        with self.torch.no_grad():
            self._forward(x)
            if self.compile_mode == "reduce-overhead":
                self._forward(x)  # cudagraph trees record on the 2nd call: part of the one-off cost too
        return time.perf_counter() - t0

    def gpu_peak_mb(self) -> float | None:
        return self.torch.cuda.max_memory_allocated() / 2**20 if self._cuda else None

    def profiled(self) -> None:
        return None  # --profile reports onnxruntime's op times; for torch use torch.profiler directly

    def top_ops(self, k: int = 10) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        pass
