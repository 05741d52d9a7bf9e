"""``distill bench``: latency of checkpoints, ONNX files, engines or whole export folders.

MODEL may be:

- an ``.onnx`` file (runtimes ``ort-cpu`` default, ``ort-cuda``, ``ort-trt``);
- a TensorRT engine ``.engine`` / ``.plan`` (runtime ``tensorrt``);
- a student checkpoint folder (``student.json``; runtime ``torch``);
- an export folder (``export.json``): every model it lists;
- a ``distill qad`` folder (``qad.json``): its int8 files (QAD's, and PTQ's when the no-harm rule wrote it).

A folder holding both a checkpoint and an export (an export written into the checkpoint folder, which ``distill
export`` refuses since session 26) needs ``--runtime``: ``torch`` times the checkpoint, an ONNX Runtime the export.

Timing, statistics, memory and device info are the edge runner's (one implementation).
"""
from __future__ import annotations

import os
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from distill.bench.edge_runner import (
    ENGINE_SUFFIXES,
    RUNTIMES,
    RuntimeUnavailable,
    bench_file,
    bench_files,
    bench_runner,
    check_batches,
    check_timing_args,
    flavour_warning,
    format_record,
    rss_mb,
    sha256_file,
    threads_warning,
)
from distill.bench.torch_runner import TorchRunner
from distill.errors import DistillError, DistillWarning
from distill.records import EXPORT_REPORT, QAD_REPORT, STUDENT_SPEC, STUDENT_WEIGHTS, ExportReport, QADRecord
from distill.spelling import option


def resolve_models(model: str | Path, runtime: str | None) -> list[tuple[Path, str]]:
    """(path, runtime) pairs to run for MODEL and ``--runtime`` (None: chosen from the file type)."""
    path = Path(model)
    if not path.exists():
        raise DistillError(f"{path}: not found (expected an .onnx file, a TensorRT engine, a checkpoint folder "
                           f"with {STUDENT_SPEC}, an export folder with {EXPORT_REPORT}, or a qad folder with {QAD_REPORT})")
    if runtime is not None and runtime not in RUNTIMES:
        raise DistillError(f"{option('runtime')}: unknown runtime '{runtime}' (have: {', '.join(RUNTIMES)})")
    if path.is_dir():
        exported, checkpoint = ExportReport.exists_in(path), (path / STUDENT_SPEC).is_file()
        if exported and checkpoint and runtime is None:  # an export written into a checkpoint folder (before session 26)
            raise DistillError(f"{path}: holds both a checkpoint ({STUDENT_SPEC}) and an export ({EXPORT_REPORT}): pass "
                               f"{option('runtime', 'torch')} to time the checkpoint, or {option('runtime', 'ort-cpu')} "
                               "(ort-cuda, ort-trt) to time the export's ONNX files (or move the export into a folder of "
                               "its own)")
        if exported and not (checkpoint and runtime == "torch"):
            files = exported_files(path)
            rt = runtime or "ort-cpu"
            if rt in ("torch", "tensorrt"):
                raise DistillError(f"{option('runtime', rt)} cannot run an export folder's ONNX files: use ort-cpu, ort-cuda "
                                   "or ort-trt (or pass a checkpoint folder / an engine)")
            return [(f, rt) for f in files]
        if checkpoint:
            if runtime not in (None, "torch"):
                raise DistillError(f"{path} is a checkpoint folder: it runs with {option('runtime', 'torch')} (export it for "
                                   f"'{runtime}': distill export {shlex.quote(str(path))} --out DIR)")
            return [(path, "torch")]
        if QADRecord.exists_in(path):
            rt = runtime or "ort-cpu"
            if rt in ("torch", "tensorrt"):
                raise DistillError(f"{option('runtime', rt)} cannot run a qad folder's ONNX files: use ort-cpu, ort-cuda or "
                                   "ort-trt (or pass its checkpoint folder / an engine)")
            return [(f, rt) for f in qad_files(path)]
        raise DistillError(f"{path}: folder has none of {EXPORT_REPORT} (an export), {QAD_REPORT} (distill qad) "
                           f"or {STUDENT_SPEC} (a checkpoint): pass .onnx files, an engine or one of those folders")
    if path.suffix in ENGINE_SUFFIXES:
        if runtime not in (None, "tensorrt"):
            raise DistillError(f"{path} is a TensorRT engine: it runs with {option('runtime', 'tensorrt')}")
        return [(path, "tensorrt")]
    if path.suffix == ".onnx":
        if runtime == "torch":
            raise DistillError(f"{path}: {option('runtime', 'torch')} runs a checkpoint folder, not an ONNX file")
        return [(path, runtime or "ort-cpu")]
    raise DistillError(f"{path}: unknown model type '{path.suffix}' (want .onnx, {', '.join(ENGINE_SUFFIXES)}, "
                       "or a folder)")


def exported_files(folder: Path) -> list[Path]:
    """The model files an export folder's export.json lists, each checked to be there with the sha256 recorded
    (a file replaced since, e.g. by an interrupted re-export, would be timed under another model's name)."""
    record = ExportReport.path_in(folder)
    models = ExportReport.read(folder).models
    if not models:
        raise DistillError(f"{record}: lists no model file")
    for m in models:
        file = folder / m.file
        if not file.is_file():
            raise DistillError(f"{file}: listed in {record} but missing; export into {folder} again")
        if sha256_file(file) != m.sha256:
            raise DistillError(f"{file}: not the file {record} describes (its sha256 differs from the recorded "
                               f"{m.sha256[:12]}…); export into {folder} again")
    return [folder / m.file for m in models]


def qad_files(folder: Path) -> list[Path]:
    """The int8 files a ``distill qad`` folder's qad.json names: QAD's, then PTQ's when the no-harm rule wrote it
    (fp32 is the export's: bench it with them, ``distill bench EXPORT/model.fp32.onnx QAD_DIR/*.onnx --interleave``)."""
    record_path = QADRecord.path_in(folder)
    record = QADRecord.read(record_path)
    files = [folder / name for name in dict.fromkeys(n for n in (record.qad_file, record.ptq_file) if n)]
    for file in files:
        if not file.is_file():
            raise DistillError(f"{file}: named in {record_path} but missing; run distill qad into {folder} again")
    return files


@dataclass(frozen=True)
class TorchOptions:
    """How ``--runtime torch`` runs a checkpoint (see :mod:`distill.bench.torch_runner`)."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 | fp16 (CUDA)
    compile: str = "none"  # none | default | reduce-overhead | max-autotune
    memory_format: str = "auto"  # auto (channels_last on CUDA) | channels_last | contiguous

    def is_default(self) -> bool:
        return self == TorchOptions()


def bench_model(model: str | Path | Sequence[str | Path], runtime: str | None = None, batches: tuple[int, ...] = (1,),
                threads: int | None = None, warmup: int = 10, iters: int = 50, profile: bool = False,
                topk: int = 10, log: Callable[[str], None] | None = None,
                torch_options: TorchOptions | None = None, interleave: bool = False,
                sink: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """Benchmark MODEL (or several) at each batch size; one record per (model file, runtime, batch).

    ``torch_options`` (device, precision, compile mode, memory format) apply to ``--runtime torch``
    only; torch records add ``precision``, ``memory_format``, ``compile`` and ``compile_s`` (the first
    call at that batch size: compilation and warm-up, timed apart from the timed runs).

    ``interleave``: time every file round-robin (:func:`~distill.bench.edge_runner.bench_files`), so background
    load on a shared machine hits them alike and their latency ratios are fair (an export folder's fp32 vs int8);
    the memory figures are then the whole pass's. ONNX files and engines on one runtime only.

    ``sink``: called with each model file's records as soon as they are measured (``distill bench --out`` appends
    them there, so an interrupt keeps the models that finished).

    Raises:
        DistillError: bad MODEL/runtime, or a runtime unavailable here (message names what to install).
    """
    try:
        check_timing_args(warmup, iters, topk, option)
    except ValueError as e:
        raise DistillError(str(e)) from None
    if threads is not None and threads < 1:  # as `distill export --threads`; leave it out for the runtime's choice
        raise DistillError(f"{option('threads')} must be >= 1, or left out for the runtime's choice (got {threads})")
    records: list[dict[str, Any]] = []
    opts = torch_options or TorchOptions()
    models = [model] if isinstance(model, (str, os.PathLike)) else list(model)
    pairs = [pair for m in models for pair in resolve_models(m, runtime)]
    if not opts.is_default() and any(rt != "torch" for _, rt in pairs):
        raise DistillError(f"{option('device')}, {option('precision')}, {option('compile')} and {option('memory_format')} "
                           f"apply to {option('runtime', 'torch')} only (an ONNX model's precision is fixed at export)")
    oversubscribed = [note for rt in dict.fromkeys(rt for _, rt in pairs) if (note := threads_warning(threads, rt, option))]
    if oversubscribed:  # `distill bench` prints it as one warning: line
        warnings.warn(oversubscribed[0], DistillWarning, stacklevel=2)
    named = {Path(m) for m in models if Path(m).is_file()}  # a folder's files are all timed: no warning for each
    for path, rt in pairs:  # an int8 file made for another runtime (model.int8-ort-cpu.onnx on ort-trt), named by hand
        if path not in named:
            continue
        try:
            mismatch = flavour_warning(path, rt)
        except RuntimeUnavailable as e:
            raise DistillError(str(e)) from None
        if mismatch:
            warnings.warn(mismatch, DistillWarning, stacklevel=2)
    if profile and log and "tensorrt" in {rt for _, rt in pairs}:
        log(f"warning: {option('profile')}: runtime tensorrt has no op profiler here, its records get no top_ops "
            "(per-layer times: trtexec --loadEngine=ENGINE --dumpProfile)")
    # every file's batches before the first one's timing (one after another or round-robin), naming the option as
    # the caller spells it (the runners' own checks say --batch)
    try:
        for path, rt in pairs:
            check_batches([path], rt, batches, option)  # torch: any batch
    except RuntimeUnavailable as e:
        raise DistillError(str(e)) from None
    if interleave:
        records = _bench_interleaved(pairs, batches, threads, warmup, iters, profile, topk, log)
        if sink:
            sink(records)
        return records
    for path, rt in pairs:
        try:
            if rt == "torch":
                recs = _bench_torch(path, batches, threads, warmup, iters, profile, topk, opts)
            else:
                recs = bench_file(path, rt, batches, threads, warmup, iters, profile, topk)
        except RuntimeUnavailable as e:
            raise DistillError(str(e)) from None
        if log:
            for r in recs:
                log(format_record(r))
        if sink:
            sink(recs)
        records += recs
    return records


def _bench_interleaved(pairs: list[tuple[Path, str]], batches: tuple[int, ...], threads: int | None, warmup: int,
                       iters: int, profile: bool, topk: int, log: Callable[[str], None] | None) -> list[dict[str, Any]]:
    runtimes = sorted({rt for _, rt in pairs})
    if "torch" in runtimes or len(runtimes) > 1:
        raise DistillError(f"{option('interleave')} times ONNX files or engines on one runtime together; got runtime(s) "
                           f"{', '.join(runtimes)} for {', '.join(str(p) for p, _ in pairs)}")
    try:
        records = bench_files([p for p, _ in pairs], runtimes[0], batches, threads, warmup, iters, profile, topk)
    except RuntimeUnavailable as e:
        raise DistillError(str(e)) from None
    if log:
        for r in records:
            log(format_record(r))
    return records


def _bench_torch(path: Path, batches: tuple[int, ...], threads: int | None, warmup: int, iters: int,
                 profile: bool, topk: int, opts: TorchOptions) -> list[dict[str, Any]]:
    from distill.utils.runtime import torch_threads  # lazy: torch only for --runtime torch

    with torch_threads(None):  # the runner's --threads holds while it runs, and is put back after it, on error too
        return _time_torch(path, batches, threads, warmup, iters, profile, topk, opts)


def _time_torch(path: Path, batches: tuple[int, ...], threads: int | None, warmup: int, iters: int,
                profile: bool, topk: int, opts: TorchOptions) -> list[dict[str, Any]]:
    import torch  # lazy: torch only for --runtime torch (benchmarking an ONNX file must not need it)

    before = rss_mb()
    runner = TorchRunner(path, threads=threads, device=opts.device, precision=opts.precision, compile=opts.compile,
                         memory_format=opts.memory_format)
    recs = []
    for b in batches:  # one batch size at a time: its first call (compile, warm-up) is timed apart
        first = runner.warm(int(b))
        for r in bench_runner(runner, (b,), warmup, iters, profile=False, topk=topk, model_path=path,
                              rss_before_load_mb=before, extra_versions={"torch": torch.__version__},
                              gpu_peak_mb=runner.gpu_peak_mb):
            r.update(runner.options)
            r["compile_s"] = round(first, 4)
            recs.append(r)
    weights = path / STUDENT_WEIGHTS
    for r in recs:
        r["model_sha256"] = sha256_file(weights) if weights.is_file() else None
        if profile:
            r["top_ops"] = None
            r["note"] = f"{option('profile')} reports onnxruntime op times; not available for runtime torch"
    return recs

