"""``distill bench`` as a Python function (:func:`distill.api.bench`): the same options, defaults and records.

The flags of ``distill bench`` are its keywords, ``-`` as ``_`` (``--memory-format`` -> ``memory_format``); ``--batch``
also takes an int or a list. Without ``out`` nothing is written (the command prints the JSON lines instead); the
records come back typed either way. Nothing heavy is imported until it runs (numpy, onnxruntime; torch for a
checkpoint).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from distill.errors import DistillError
from distill.validation import checked_keywords

if TYPE_CHECKING:
    from distill.records import BenchRecord


@checked_keywords(paths=("out",), path_lists=("models",))
def bench(models: str | Path | Sequence[str | Path], *, runtime: str | None = None,
          batch: int | str | Sequence[int] = 1, threads: int | None = None, warmup: int = 10, iters: int = 50,
          out: str | Path | None = None, profile: bool = False, topk: int = 10, interleave: bool = False,
          device: str = "auto", precision: str = "fp32", compile: str = "none", memory_format: str = "auto",
          ) -> list[BenchRecord]:
    """Time models as ``distill bench MODEL ... [--flags]`` does: one record per (model file, runtime, batch).

    Args:
        models: an ``.onnx`` file, a TensorRT engine, a checkpoint folder (torch), an export folder (every file its
            export.json lists) or a ``distill qad`` folder (its int8 files); or a list of them.
        runtime: ort-cpu | ort-cuda | ort-trt | tensorrt | torch (None: from the model type).
        batch: batch size(s): ``8``, ``[1, 8]`` or ``"1,8"`` (``--batch``).
        threads: intra-op threads (None: the runtime's choice).
        warmup, iters: untimed and timed runs per batch.
        out: append the records to this ``.jsonl`` file, a new one or one of bench records (``--out``; checked before
            anything is timed; each model's records are written as soon as measured, so an interrupt keeps the models
            that finished). None: write nothing.
        profile, topk: add onnxruntime's ``topk`` ops by time to each record.
        interleave: time the models round-robin, so a shared machine's load hits them alike (fair ratios).
        device, precision, compile, memory_format: how ``runtime="torch"`` runs a checkpoint.

    Returns:
        The :class:`~distill.records.BenchRecord` of every file and batch, as written to ``out`` (read them back
        with ``BenchRecord.read_lines(out)``; :func:`distill.api.report` takes the file). Each record's line goes to
        stderr as the command prints it.
    """
    # lazy: numpy and the runtimes load only when something is timed
    from distill.bench.edge_runner import check_bench_out, parse_batches, with_model_relative, write_jsonl
    from distill.bench.run import TorchOptions, bench_model
    from distill.records import BenchRecord

    sizes = _batches(batch, parse_batches)
    if out is not None:
        try:
            check_bench_out(out, "out")  # before timing anything, as the command does
        except ValueError as e:
            raise DistillError(str(e)) from None
    written: list[dict[str, Any]] = []

    def sink(records: list[dict[str, Any]]) -> None:
        if out is not None:
            write_jsonl(records, out)
            records = [with_model_relative(r, out) for r in records]
        written.extend(records)

    bench_model([models] if isinstance(models, (str, os.PathLike)) else list(models), runtime, sizes, threads, warmup, iters,
                profile, topk, log=lambda line: print(line, file=sys.stderr),
                torch_options=TorchOptions(device, precision, compile, memory_format), interleave=interleave,
                sink=sink)
    return [BenchRecord.from_dict(r, f"bench record of {r.get('model')}") for r in written]


def _batches(batch: Any, parse: Any) -> tuple[int, ...]:
    """``batch`` as batch sizes: an int, a list of ints or ``"1,8"`` (as ``--batch``); else one line saying so."""
    bad = DistillError(f"bench: batch must be a positive int, a list of them or a string such as '1,8', got "
                       f"{batch!r:.80}")
    if isinstance(batch, bool) or not isinstance(batch, (int, str, list, tuple)):
        raise bad
    items = [batch] if isinstance(batch, (int, str)) else list(batch)
    if any(isinstance(b, bool) or not isinstance(b, (int, str)) for b in items):
        raise bad
    try:
        return tuple(parse(",".join(str(b) for b in items), "bench: batch"))
    except ValueError as e:
        raise (DistillError(str(e)) if "more than once" in str(e) else bad) from None
