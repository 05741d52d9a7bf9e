"""Session fixtures: a small ONNX model, and a run + export + bench records for the report."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("export_synthetic", Path(__file__).parents[1] / "export" / "synthetic.py")
synthetic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(synthetic)


@pytest.fixture(scope="session")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An fp32 test_resnet (random weights, 32 px) with distill metadata."""
    from distill.export.onnx import build_metadata, export_onnx, stamp
    from distill.student.model import Student, default_spec

    spec = default_spec("test_resnet", ["a", "b", "c"], input_size=32)
    path = tmp_path_factory.mktemp("onnx") / "small.fp32.onnx"
    info = export_onnx(Student(spec).eval(), path, exporter="torchscript")
    stamp(path, build_metadata(spec, "fp32", {"strategy": "test"}, info["outputs"]))
    return path


@pytest.fixture(scope="session")
def report_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """WORK/{data, run, export, bench.jsonl}: what `distill report WORK` should find."""
    import torch

    from distill.bench.edge_runner import write_jsonl
    from distill.bench.run import bench_model
    from distill.export import ExportConfig, export_checkpoint

    work = tmp_path_factory.mktemp("report")
    root = synthetic.make_tree(work / "data", per_class=12)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ckpt = synthetic.make_run_dir(root, work / "run", steps=15)
    finally:
        torch.set_num_threads(threads)
    export_checkpoint(ckpt, work / "export", ExportConfig(
        precisions=("fp32", "fp16", "int8"), data_root=str(root), int8_flavour="both", exporter="torchscript",
        eval_count=10, calib_count=16, latency_iters=2, threads=1), log=lambda s: None)
    recs = bench_model(work / "export", "ort-cpu", (1, 4), threads=1, warmup=1, iters=5, profile=True)
    recs += bench_model(ckpt, "torch", (1, 4), threads=1, warmup=1, iters=3)
    write_jsonl(recs, work / "bench" / "bench.jsonl")
    return work
