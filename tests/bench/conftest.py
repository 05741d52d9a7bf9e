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
        eval_count=10, calib_count=16, latency_iters=2, threads=1), log=lambda s: None)
    recs = bench_model(work / "export", "ort-cpu", (1, 4), threads=1, warmup=1, iters=5, profile=True)
    recs += bench_model(ckpt, "torch", (1, 4), threads=1, warmup=1, iters=3)
    write_jsonl(recs, work / "bench" / "bench.jsonl")
    return work


def write_run(run_dir: Path, *, strategy: str, acc: dict[str, float], seed: int, options: dict[str, Any] | None = None,
              source: tuple[str, ...] = ("clean", "dark"), target: tuple[str, ...] = ("noisy",),
              adapted_from: str | None = None, zero_shot: dict[str, float] | None = None,
              student: str = "test_resnet") -> Path:
    """RUN_DIR/summary.json + config.yaml as ``distill train`` / ``distill adapt`` write them (percentages)."""
    run_dir.mkdir(parents=True)
    summary = {"strategy": strategy, "strategy_options": options or {}, "student": student,
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


STRESS_DOMAINS = ("womens_tops_and_blouses", "mens_outerwear_jackets", "footwear_sneakers", "accessories_bags",
                  "studio_product_shots", "street_style_photos")


@pytest.fixture(scope="session")
def stress_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-domain set with long names: 3 option sets x 2 seeds of a long-named strategy, their exports
    (fp32 + two int8 flavours) and bench records at two batch sizes: what makes labels and tables overflow."""
    work = tmp_path_factory.mktemp("stress")
    src, tgt = STRESS_DOMAINS[:4], STRESS_DOMAINS[4:]
    records = []
    for k, opts in enumerate([{"temperature": 4.0, "alpha": 0.9, "feature_weight": 0.0},
                              {"temperature": 2.0, "alpha": 0.5, "feature_weight": 1.0},
                              {"temperature": 8.0, "alpha": 0.9, "feature_weight": 0.25}]):
        for seed in (0, 1):
            acc = {d: 40.0 + 5 * k + 3 * seed + i for i, d in enumerate(STRESS_DOMAINS)}
            run = write_run(work / "runs" / f"customkd-{k}-s{seed}", strategy="custom_feature_kd", acc=acc, seed=seed,
                            options=opts, source=src, target=tgt, student="mobilenetv3_small_050",
                            zero_shot={d: 30.0 + i for i, d in enumerate(STRESS_DOMAINS)})
            if seed:
                continue
            ex = work / "exports" / f"customkd-{k}"
            ex.mkdir(parents=True)
            models = []
            for j, (prec, flav) in enumerate([("fp32", None), ("int8", "ort-cpu"), ("int8", "tensorrt")]):
                sha = f"{k}{j}" * 32
                fname = f"model.{prec}{'-' + flav if flav else ''}.onnx"
                models.append({"file": fname, "sha256": sha, "precision": prec, "flavour": flav,
                               "target_runtime": flav, "accuracy": {d: acc[d] / 100 - 0.004 * j for d in acc},
                               "drops_pts": {d: 0.4 * j for d in acc}, "fallback": _fallback(prec, flav, acc),
                               "disagreement_pts": {d: 0.6 * j for d in acc} if prec == "int8" else None,
                               "latency_check": {"ratio_vs_fp32": 1.3, "slower_than_fp32": True}})
                for batch in (1, 32):
                    lat = (0.183 + 0.05 * j + 0.02 * k) * batch ** 0.8
                    records.append({"schema": "distill.bench/1", "model": str(ex / fname), "model_name": fname,
                                    "model_sha256": sha, "model_meta": {"precision": prec}, "runtime": "ort-cpu",
                                    "batch": batch, "threads": 4, "throughput_ips": batch * 1000 / lat,
                                    "latency_ms": {"p50": lat, "p90": lat * 1.6, "p99": lat * 2.9, "min": lat * 0.9},
                                    "device": {"cpu": {"model": "Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz",
                                                       "usable_cores": 4,
                                                       "flags": ["avx2", "avx512f", "avx512_vnni", "avx512_bf16",
                                                                 "amx_tile", "amx_int8", "amx_bf16", "fma", "f16c"]},
                                               "platform": "Linux-6.8.0-1015-aws-x86_64-with-glibc2.39"},
                                    "versions": {"onnxruntime": "1.32.0", "torch": "2.13.0"}})
            (ex / "export.json").write_text(json.dumps({
                "format": "distill.export/1", "status": "ok", "student": "mobilenetv3_small_050",
                "checkpoint": str(run / "checkpoints" / "best"), "models": models,
                "provenance": {"strategy": "custom_feature_kd", "run": str(run), "checkpoint_sha256": "cd" * 32,
                               "teacher": {"arch": "ViT-B-16", "pretrained": "laion2b_s34b_b88k"}},
                "data": {"root": "/data/clothing-six-domains-v2", "fingerprint": "ef" * 32, "eval_count": {d: 500 for d in acc},
                         "calib_domains": list(src), "target_domains": list(tgt)},
                "versions": {"python": "3.11.7", "onnxruntime": "1.32.0", "onnx": "1.23.2", "torch": "2.13.0"}}))
    (work / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return work


def _fallback(prec: str, flav: str | None, acc: dict) -> dict:
    """A triggered fallback as the current export writes it (label-free disagreement, long layer names:
    the demo's real report overflowed its INT8 card at 800 px with these)."""
    if prec != "int8" or flav != "ort-cpu":
        return {"triggered": False}
    kept = ["/backbone/conv_stem/Conv", "/backbone/blocks/blocks.2/blocks.2.1/conv_dw/Conv",
            "/backbone/blocks/blocks.0/blocks.0.0/se/conv_expand/Conv"]
    return {"triggered": True, "satisfied": True, "max_drop_pts": 1.0, "kept_float": kept,
            "before": {"disagreement_pts": {d: 2.73 for d in acc}, "worst_disagreement_pts": 2.73,
                       "drops_pts": {d: 0.33 for d in acc}, "worst_drop_pts": 0.33},
            "steps": [{"tried": k, "accepted": True} for k in kept]}
