"""Session fixtures: a small ONNX model, a run + export + bench records for the report, and run folders to group."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

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
    # summary.json as distill train writes it: accuracies in percent
    summary = json.loads((work / "run" / "summary.json").read_text())
    for key in ("test_acc", "teacher_zero_shot"):
        summary[key] = {d: 100.0 * v for d, v in summary[key].items()}
    (work / "run" / "summary.json").write_text(json.dumps(summary))
    export_checkpoint(ckpt, work / "export", ExportConfig(
        precisions=("fp32", "fp16", "int8"), data_root=str(root), int8_flavour="both", exporter="torchscript",
        eval_count=10, calib_count=16, latency_iters=2, max_drop=100.0, threads=1), log=lambda s: None)
    recs = bench_model(work / "export", "ort-cpu", (1, 4), threads=1, warmup=1, iters=5, profile=True)
    recs += bench_model(ckpt, "torch", (1, 4), threads=1, warmup=1, iters=3)
    write_jsonl(recs, work / "bench" / "bench.jsonl")
    return work


def write_run(run_dir: Path, *, strategy: str, acc: dict[str, float], seed: int, options: dict[str, Any] | None = None,
              source: tuple[str, ...] = ("clean", "dark"), target: tuple[str, ...] = ("noisy",),
              adapted_from: str | None = None, zero_shot: dict[str, float] | None = None) -> Path:
    """RUN_DIR/summary.json + config.yaml as ``distill train`` / ``distill adapt`` write them (percentages)."""
    run_dir.mkdir(parents=True)
    summary = {"strategy": strategy, "strategy_options": options or {}, "student": "test_resnet",
               "teacher": {"arch": "ViT-test", "pretrained": "/models/teachers/open_clip_model.safetensors",
                           "sha256": "ab" * 32, "templates": ["a photo of a {}."]},
               "source_domains": list(source), "target_domains": list(target),
               "trained_on": list(target) if adapted_from else list(source), "test_acc": acc,
               "teacher_zero_shot": zero_shot if zero_shot is not None else {"clean": 50.0, "dark": 40.0, "noisy": 30.0},
               "params": 1000, "flops": 100000}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    cfg = {"strategy": {"name": strategy, **(options or {})}, "run": {"out": str(run_dir), "seed": seed}}
    if adapted_from:
        cfg["source_checkpoint"] = adapted_from
    (run_dir / "config.yaml").write_text(json.dumps(cfg))  # JSON is YAML
    return run_dir


@pytest.fixture(scope="session")
def grouped_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs to group: kd (T=4) x 3 seeds, kd (T=2) x 1, erm x 2 seeds, an sfda run adapted from erm (partial zero-shot)."""
    work = tmp_path_factory.mktemp("grouped")
    for seed, (c, d, n) in enumerate([(90.0, 80.0, 60.0), (92.0, 82.0, 64.0), (91.0, 81.0, 62.0)]):
        write_run(work / f"kd-T4-s{seed}", strategy="kd", acc={"clean": c, "dark": d, "noisy": n}, seed=seed,
                  options={"temperature": 4.0, "alpha": 0.9})
    write_run(work / "kd-T2-s0", strategy="kd", acc={"clean": 88.0, "dark": 79.0, "noisy": 70.0}, seed=0,
              options={"temperature": 2.0, "alpha": 0.9})
    for seed, n in enumerate((50.0, 54.0)):
        write_run(work / f"erm-s{seed}", strategy="erm", acc={"clean": 95.0, "dark": 85.0, "noisy": n}, seed=seed)
    write_run(work / "sfda-s0", strategy="sfda", acc={"noisy": 75.0}, seed=0, options={"beta": 0.3},
              adapted_from=str(work / "erm-s0" / "checkpoints" / "best"), zero_shot={"noisy": 30.0})
    return work
