"""Session fixtures: a run + export + bench records for the report, and run folders to group."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from distill.bench.edge_runner import SCHEMA, write_jsonl
from distill.bench.run import bench_model
from distill.cli import main
from distill.config import TrainConfig
from distill.export import ExportConfig, export_checkpoint
from distill.records import RUN_CONFIG, BenchRecord, ExportedModel, ExportReport, RunSummary
from distill.report.write import write_report

_spec = importlib.util.spec_from_file_location("export_synthetic", Path(__file__).parents[1] / "export" / "synthetic.py")
synthetic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(synthetic)


@pytest.fixture(scope="session")
def report_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """WORK/{data, run, export, bench.jsonl}: what `distill report WORK` should find."""
    work = tmp_path_factory.mktemp("report")
    root = synthetic.make_tree(work / "data", per_class=12)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ckpt = synthetic.make_run_dir(root, work / "run", steps=15)
    finally:
        torch.set_num_threads(threads)
    # summary.json and config.yaml as distill train writes them (accuracies as fractions)
    write_summary(work / "run", strategy="erm", acc={"clean": 0.9, "dark": 0.8, "noisy": 0.6},
                  zero_shot={"clean": 0.5, "dark": 0.4, "noisy": 0.3}, teacher={"arch": "ViT-test", "pretrained": "none"})
    write_config(work / "run", strategy={"name": "erm"}, seed=0, root=root, source=("clean", "dark"), target=("noisy",))
    export_checkpoint(ckpt, work / "export", ExportConfig(
        precisions=("fp32", "fp16", "int8"), data_root=str(root), int8_flavour="both", exporter="torchscript",
        eval_count=10, calib_count=16, latency_iters=2, threads=1), log=lambda s: None)
    recs = bench_model(work / "export", "ort-cpu", (1, 4), threads=1, warmup=1, iters=5, profile=True)
    recs += bench_model(ckpt, "torch", (1, 4), threads=1, warmup=1, iters=3)
    write_jsonl(recs, work / "bench" / "bench.jsonl")
    return work


TEACHER = {"arch": "ViT-test", "pretrained": "/models/teachers/open_clip_model.safetensors", "sha256": "ab" * 32,
           "templates": ["a photo of a {}."]}


def write_summary(run_dir: Path, *, strategy: str, acc: dict[str, float], options: dict[str, Any] | None = None,
                  source: tuple[str, ...] = ("clean", "dark"), target: tuple[str, ...] = ("noisy",),
                  adapted: bool = False, zero_shot: dict[str, float] | None = None, student: str = "test_resnet",
                  teacher: dict[str, Any] | None = None) -> Path:
    """RUN_DIR/summary.json as ``distill train`` / ``distill adapt`` write it (accuracies as fractions)."""
    return RunSummary(strategy=strategy, strategy_options=options or {}, student=student,
                      teacher=teacher or TEACHER, source_domains=list(source), target_domains=list(target),
                      trained_on=list(target) if adapted else list(source), best_epoch=1,
                      selected_on="source validation accuracy", test_acc=acc,
                      teacher_zero_shot=zero_shot if zero_shot is not None else {"clean": 0.5, "dark": 0.4, "noisy": 0.3},
                      params=1000, flops=100000, checkpoint=str(run_dir / "checkpoints" / "best"),
                      train_seconds_this_session=1.0).write(run_dir)


def write_config(run_dir: Path, *, strategy: dict[str, Any], seed: int, root: str | Path = "/data",
                 source: tuple[str, ...] = ("clean", "dark"), target: tuple[str, ...] = ("noisy",),
                 adapted_from: str | None = None) -> Path:
    """RUN_DIR/config.yaml: the resolved TrainConfig a run was started with."""
    raw = {"data": {"root": str(root), "source": list(source), "target": list(target)}, "strategy": strategy,
           "run": {"out": str(run_dir), "seed": seed}}
    if adapted_from:
        raw["source_checkpoint"] = adapted_from
    path = run_dir / RUN_CONFIG
    path.write_text(yaml.safe_dump(TrainConfig.model_validate(raw).model_dump(mode="json"), sort_keys=False))
    return path


def write_run(run_dir: Path, *, strategy: str, acc: dict[str, float], seed: int, options: dict[str, Any] | None = None,
              source: tuple[str, ...] = ("clean", "dark"), target: tuple[str, ...] = ("noisy",),
              adapted_from: str | None = None, zero_shot: dict[str, float] | None = None,
              student: str = "test_resnet") -> Path:
    """RUN_DIR/summary.json + config.yaml as ``distill train`` / ``distill adapt`` write them (fractions)."""
    run_dir.mkdir(parents=True)
    write_summary(run_dir, strategy=strategy, acc=acc, options=options, source=source, target=target,
                  adapted=adapted_from is not None, zero_shot=zero_shot, student=student)
    write_config(run_dir, strategy={"name": strategy, **(options or {})}, seed=seed, source=source, target=target,
                 adapted_from=adapted_from)
    return run_dir


@pytest.fixture(scope="session")
def grouped_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs to group: kd (T=4) x 3 seeds, kd (T=2) x 1, erm x 2 seeds, an sfda run adapted from erm (partial zero-shot)."""
    work = tmp_path_factory.mktemp("grouped")
    for seed, (c, d, n) in enumerate([(0.90, 0.80, 0.60), (0.92, 0.82, 0.64), (0.91, 0.81, 0.62)]):
        write_run(work / f"kd-T4-s{seed}", strategy="kd", acc={"clean": c, "dark": d, "noisy": n}, seed=seed,
                  options={"temperature": 4.0, "alpha": 0.9})
    write_run(work / "kd-T2-s0", strategy="kd", acc={"clean": 0.88, "dark": 0.79, "noisy": 0.70}, seed=0,
              options={"temperature": 2.0, "alpha": 0.9})
    for seed, n in enumerate((0.50, 0.54)):
        write_run(work / f"erm-s{seed}", strategy="erm", acc={"clean": 0.95, "dark": 0.85, "noisy": n}, seed=seed)
    write_run(work / "sfda-s0", strategy="sfda", acc={"noisy": 0.75}, seed=0, options={"beta": 0.3},
              adapted_from=str(work / "erm-s0" / "checkpoints" / "best"), zero_shot={"noisy": 0.30})
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
            acc = {d: (40.0 + 5 * k + 3 * seed + i) / 100 for i, d in enumerate(STRESS_DOMAINS)}
            run = write_run(work / "runs" / f"customkd-{k}-s{seed}", strategy="custom_feature_kd", acc=acc, seed=seed,
                            options=opts, source=src, target=tgt, student="mobilenetv3_small_050",
                            zero_shot={d: (30.0 + i) / 100 for i, d in enumerate(STRESS_DOMAINS)})
            if seed:
                continue
            ex = work / "exports" / f"customkd-{k}"
            ex.mkdir(parents=True)
            models = []
            for j, (prec, flav) in enumerate([("fp32", None), ("int8", "ort-cpu"), ("int8", "tensorrt")]):
                sha = f"{k}{j}" * 32
                fname = f"model.{prec}{'-' + flav if flav else ''}.onnx"
                models.append(ExportedModel(
                    file=fname, bytes=1000, sha256=sha, precision=prec, runtime="onnxruntime", flavour=flav,
                    target_runtime=flav, accuracy={d: acc[d] - 0.004 * j for d in acc},
                    drops_pts={d: 0.4 * j for d in acc}, fallback=_fallback(prec, flav, acc),
                    drops_p={d: 0.0123 * j for d in acc} if prec == "int8" else None,
                    disagreement_pts={d: 0.6 * j for d in acc} if prec == "int8" else None,
                    latency_check={"ratio_vs_fp32": 1.3, "slower_than_fp32": True},
                    near_ties=({"images": 3000, "move_median": 0.11, "move_p95": 0.4, "near_tie_pct": 36.04,
                                "disagreement_pct": 7.6, "flipped_margin_max": 0.55}
                               if (k, flav) == (0, "ort-cpu") else None),
                    # ort-cpu files: customkd-0's 7-bit weights run alike on any x86, customkd-1's 8-bit ones do not;
                    # customkd-2's export predates the check (no key)
                    x86_without_vnni=({0: {"exact": True, "layers_at_risk": 0, "examples": []},
                                       1: {"exact": False, "layers_at_risk": 12, "examples": ["/conv_stem/Conv"]}}[k]
                                      if flav == "ort-cpu" and k < 2 else None)))
                for batch in (1, 32):
                    lat = (0.183 + 0.05 * j + 0.02 * k) * batch ** 0.8
                    records.append(BenchRecord(**{
                                    "schema": SCHEMA, "model": str(ex / fname), "model_name": fname,
                                    "model_sha256": sha, "model_meta": {"precision": prec}, "runtime": "ort-cpu",
                                    "batch": batch, "input_shape": [batch, 3, 32, 32], "threads": 4, "warmup": 10,
                                    "iters": 100, "throughput_ips": batch * 1000 / lat,
                                    "latency_ms": {"mean": lat * 1.1, "std": lat * 0.2, "min": lat * 0.9, "p50": lat,
                                                   "p90": lat * 1.6, "p99": lat * 2.9, "max": lat * 3.1},
                                    "timestamp": "2026-01-01T00:00:00+0000",
                                    "device": {"cpu": {"model": "Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz",
                                                       "usable_cores": 4,
                                                       "flags": ["avx2", "avx512f", "avx512_vnni", "avx512_bf16",
                                                                 "amx_tile", "amx_int8", "amx_bf16", "fma", "f16c"]},
                                               "platform": "Linux-6.8.0-1015-aws-x86_64-with-glibc2.39"},
                                    "versions": {"onnxruntime": "1.32.0", "torch": "2.13.0"}}))
            ExportReport(**{
                "format": "distill.export/1", "created": "2026-01-01T00:00:00", "status": "ok",
                "student": "mobilenetv3_small_050", "class_names": ["top", "jacket", "shoe", "bag"],
                "input": {"shape": [1, 3, 224, 224]}, "preprocess": {}, "checkpoint": str(run / "checkpoints" / "best"),
                "models": models,
                "provenance": {"strategy": "custom_feature_kd", "run": str(run), "checkpoint_sha256": "cd" * 32,
                               "teacher": {"arch": "ViT-B-16", "pretrained": "laion2b_s34b_b88k"}},
                "data": {"root": "/data/clothing-six-domains-v2", "fingerprint": "ef" * 32, "eval_count": {d: 500 for d in acc},
                         "calib_domains": list(src), "target_domains": list(tgt)},
                "versions": {"python": "3.11.7", "onnxruntime": "1.32.0", "onnx": "1.23.2", "torch": "2.13.0"}}).write(ex)
    for record in records:
        record.append_to(work / "bench.jsonl")
    return work


def _fallback(prec: str, flav: str | None, acc: dict) -> dict:
    """A triggered fallback as the current export writes it (label-free disagreement, long layer names:
    the demo's real report overflowed its INT8 card at 800 px with these)."""
    if prec != "int8" or flav != "ort-cpu":
        return {"triggered": False}
    kept = ["/backbone/conv_stem/Conv", "/backbone/blocks/blocks.2/blocks.2.1/conv_dw/Conv",
            "/backbone/blocks/blocks.0/blocks.0.0/se/conv_expand/Conv", "/backbone/conv_head/Conv"]
    return {"triggered": True, "satisfied": True, "max_drop_pts": 1.0, "kept_float": kept, "float_outputs": kept[-1:],
            "before": {"disagreement_pts": {d: 2.73 for d in acc}, "worst_disagreement_pts": 2.73,
                       "drops_pts": {d: 0.33 for d in acc}, "worst_drop_pts": 0.33},
            "steps": [{"tried": k, "accepted": True} for k in kept]}


@pytest.fixture(scope="session")
def report(report_inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("html") / "report.html"
    assert main(["report", str(report_inputs), "--out", str(out), "--title", "test report"]) == 0
    return out


@pytest.fixture(scope="session")
def full_report(report_inputs: Path, grouped_runs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Everything at once: a real run + export + bench records, and grouped seeds / options / an adapted run."""
    out = tmp_path_factory.mktemp("full") / "report.html"
    write_report([report_inputs, grouped_runs], out, "full report")
    return out


@pytest.fixture(scope="session")
def stress_report(stress_inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stress_html") / "report.html"
    write_report([stress_inputs], out, "six long-named domains")
    return out
