"""``distill export``: checkpoint -> ONNX fp32/fp16/int8 (+ TensorRT) with checks, and export.json.

Every file written is checked before it is listed:

- fp32: ORT vs PyTorch logits on real test images; max |Δlogit| over ``fp32_rtol`` x
  max(1, max |logit|) raises :class:`DistillError` (export.json is still written, with the
  failure, so it can be inspected).
- fp16 and int8: top-1 agreement with PyTorch, max |Δlogit|, per-domain accuracy and the drop
  vs the fp32 ONNX in points.
- int8: when the int8 model's top-1 predictions disagree with fp32's on more than ``max_drop``
  points of some domain's calibration images (label-free: no test label, no target label
  decides), the most sensitive layers are kept in float (see :mod:`distill.export.fallback`).
  Test accuracy and its drop vs fp32 are measured and reported, never decided on. The latency of int8 vs its fp32 parent (and
  of the fallback) is measured interleaved at export time and a slower int8 is flagged.
"""
from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from distill.errors import DistillError
from distill.export import quantize as q
from distill.export.evaluate import (accuracy_by_domain, disagreement_by_domain, drops_in_points, fp32_tolerance,
                                     parity, predict_onnx, predict_torch)
from distill.export.fallback import greedy_fallback, rank_layers
from distill.export.fp16 import convert_fp16
from distill.export.images import ImageCalibrationReader, ImageSet, load_images, pick, pick_per_domain, random_images
from distill.export.onnx import INPUT_NAME, build_metadata, export_onnx, preprocess_metadata, stamp
from distill.export.tensorrt import build_engine, tensorrt_available, write_build_script
from distill.student.model import Student, load_student
from distill.utils.io import atomic_write_json, read_json, sha256_file

PRECISIONS = ("fp32", "fp16", "int8")
EXPORT_FORMAT = "distill.export/1"


@dataclass
class ExportConfig:
    """What to export and how to check it (the CLI flags of ``distill export``).

    Attributes:
        precisions: any of fp32, fp16, int8 (fp32 is always written: it is the parent of the others).
        data_root: ``ROOT/DOMAIN/CLASS/image`` data for parity, accuracy and calibration.
        eval_domains: domains whose test split is evaluated (default: all under ROOT).
        calib_domains: labeled domains whose train split calibrates int8 (default: the run's
            source domains when known, else all).
        target_domains: domains where the model will run; their train images are added to the
            calibration set, unlabeled.
        calib_method: minmax | entropy | percentile.
        calib_count: calibration images in total, spread evenly over the calibration domains.
        eval_count: at most this many test images per domain (None: all).
        int8_flavour: ort-cpu | tensorrt | both.
        max_drop: largest accepted int8 top-1 disagreement with the fp32 ONNX on any domain's
            calibration images, in points (label-free; bounds the accuracy drop). Test accuracy is
            reported, never used to decide.
        max_fallback_layers: at most this many layers kept in float by the fallback.
        sensitivity_count: calibration images used to rank layer sensitivity.
        fp32_rtol: fp32 parity tolerance, relative to max(1, max |logit|).
        latency_batch, latency_iters, threads: the export-time int8 vs fp32 latency check.
        trt_batches: (min, opt, max) batch of the TensorRT optimization profile.
        build_engines: build TensorRT engines here when ``import tensorrt`` works.
        reduce_range: 7-bit weights in the ort-cpu flavour (avoids u8 x s8 saturation on x86
            CPUs without VNNI, at some accuracy cost).
        test_fraction, split_seed, val_fraction, class_map: the dataset split and class names (must
            match training's; default: the run's ``config.yaml``, else 0.3 / 0 / 0.1 / ROOT/classnames.yaml).
        caches: teacher caches whose ``skipped`` lists name undecodable images to leave out
            (default: the run's); other undecodable images are skipped as they are met. All
            are listed once, in one warning and in export.json's ``data.skipped``.

    When the checkpoint sits in a training run (``RUN_DIR/checkpoints/best`` with
    ``RUN_DIR/config.yaml``), ``data_root``, the split, the class map and the source domains
    default to the run's.
    """

    precisions: tuple[str, ...] = ("fp32",)
    data_root: str | None = None
    eval_domains: tuple[str, ...] | None = None
    calib_domains: tuple[str, ...] | None = None
    target_domains: tuple[str, ...] = ()
    calib_method: str = "minmax"
    calib_count: int = 256
    eval_count: int | None = 500
    int8_flavour: str = "ort-cpu"
    max_drop: float = 1.0
    max_fallback_layers: int = 10
    sensitivity_count: int = 128
    opset: int = 18
    exporter: str = "dynamo"
    with_embedding: bool = False
    fp32_rtol: float = 1e-3
    latency_batch: int = 1
    latency_iters: int = 20
    threads: int | None = None
    trt_batches: tuple[int, int, int] = (1, 8, 32)
    trt_workspace_mib: int = 1024
    build_engines: bool = True
    reduce_range: bool = False
    test_fraction: float | None = None
    split_seed: int | None = None
    val_fraction: float | None = None
    class_map: str | None = None
    caches: tuple[str, ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self.precisions = tuple(dict.fromkeys(p.strip().lower() for p in self.precisions if p.strip()))
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions:
            raise DistillError(f"--precision: unknown precision(s) {', '.join(bad) or '(none)'}; "
                               f"choose from {', '.join(PRECISIONS)}")
        if self.calib_method not in q.CALIBRATION_METHODS:
            raise DistillError(f"--calib-method must be one of {', '.join(q.CALIBRATION_METHODS)}; got '{self.calib_method}'")
        q.flavours_for(self.int8_flavour)
        if self.calib_count < 1:
            raise DistillError(f"--calib-count must be >= 1, got {self.calib_count}")
        if len(self.trt_batches) != 3 or not 1 <= self.trt_batches[0] <= self.trt_batches[1] <= self.trt_batches[2]:
            raise DistillError(f"TensorRT batches must be min <= opt <= max (>= 1), got {self.trt_batches}")

    def check_data(self) -> None:
        if "int8" in self.precisions and not self.data_root:
            raise DistillError("--precision int8 needs calibration images: pass --data ROOT (or export a checkpoint "
                               "inside its training run, whose config.yaml names the data)")


# --------------------------------------------------------------------------- helpers
def find_run_summary(checkpoint: Path) -> Path | None:
    """``RUN_DIR/summary.json`` for ``RUN_DIR/checkpoints/best`` (the folder and 2 parents)."""
    for parent in [checkpoint, *list(checkpoint.resolve().parents)[:2]]:
        if (parent / "summary.json").is_file():
            return parent / "summary.json"
    return None


def run_config(checkpoint: Path) -> dict[str, Any]:
    """The training run's resolved ``config.yaml`` (empty when there is none or it is unreadable)."""
    summary = find_run_summary(checkpoint)
    for parent in [checkpoint, *list(checkpoint.resolve().parents)[:2]]:
        cfg_path = parent / "config.yaml"
        if cfg_path.is_file() and (summary is None or summary.parent == parent):
            import yaml

            try:
                cfg = yaml.safe_load(cfg_path.read_text()) or {}
            except yaml.YAMLError:
                return {}
            return cfg if isinstance(cfg, dict) else {}
    return {}


def with_run_defaults(cfg: ExportConfig, checkpoint: Path, say: Callable[[str], None]) -> ExportConfig:
    """Fill the data root, split, class map and calibration domains the config leaves unset from the run's
    config.yaml: a training run calibrates on its source domains; a source-free adaptation run (it has a
    ``source_checkpoint``) on its target domains, the images it was adapted to and will run on."""
    full = run_config(checkpoint)
    run = full.get("data") if isinstance(full.get("data"), dict) else {}  # the data section
    updates: dict[str, Any] = {}
    if cfg.data_root is None and run.get("root"):
        updates["data_root"] = str(run["root"])
        say(f"data: {run['root']} (from the run's config.yaml)")
    for key, default in (("test_fraction", 0.3), ("split_seed", 0), ("val_fraction", 0.1), ("class_map", None)):
        if getattr(cfg, key) is None:
            updates[key] = run.get(key, default)
    if cfg.caches is None:
        caches = full.get("cache")
        updates["caches"] = tuple(str(c) for c in (caches if isinstance(caches, list) else [caches] if caches else []))
    if cfg.calib_domains is None and "data_root" in updates:
        if full.get("source_checkpoint") and run.get("target"):
            updates["calib_domains"] = tuple(run["target"])
            say(f"int8 calibration on the adapted-to domains {', '.join(run['target'])} (source-free run)")
        elif run.get("source"):
            updates["calib_domains"] = tuple(run["source"])
    return replace(cfg, **updates) if updates else cfg


def gather_provenance(checkpoint: Path, student: Student) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Provenance for metadata (student.json's, plus the run summary's teacher/strategy/domains)."""
    prov: dict[str, Any] = dict(student.spec.provenance)
    summary_path = find_run_summary(checkpoint)
    summary = None
    if summary_path is not None:
        try:
            summary = read_json(summary_path)
        except DistillError:
            summary = None
    if isinstance(summary, dict):
        for k in ("strategy", "teacher", "source_domains", "target_domains"):
            if k in summary and k not in prov:
                prov[k] = summary[k]
        prov.setdefault("run", str(summary_path.parent))
    weights = checkpoint / "model.safetensors"
    prov["checkpoint"] = str(checkpoint)
    if weights.is_file():
        prov["checkpoint_sha256"] = sha256_file(weights)
    return prov, summary


def _relabel(images: ImageSet, folder_classes: list[str], student_classes: list[str], root: str) -> ImageSet:
    """Map dataset label ids to the student's class order (names must match)."""
    index = {c: i for i, c in enumerate(student_classes)}
    missing = [c for c in folder_classes if c not in index]
    if missing:
        raise DistillError(f"{root}: class(es) {missing[:5]} are not among the student's {len(student_classes)} "
                           f"classes {student_classes[:5]}...; evaluate on the data the student was trained for")
    table = np.asarray([index[c] for c in folder_classes], dtype=np.int64)
    images.labels = table[images.labels] if len(images) else images.labels
    return images


def _file_entry(path: Path, out_dir: Path) -> dict[str, Any]:
    return {"file": path.relative_to(out_dir).as_posix(), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _mean(d: dict[str, float]) -> float | None:
    vals = [v for v in d.values() if not math.isnan(v)]
    return float(np.mean(vals)) if vals else None


class _Log:
    def __init__(self, sink: Callable[[str], None]):
        self.sink, self.warnings = sink, []

    def __call__(self, msg: str) -> None:
        self.sink(msg)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        self.sink(f"warning: {msg}")


# --------------------------------------------------------------------------- the pipeline
def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, config: ExportConfig | None = None,
                      log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Export a student checkpoint folder to ``out_dir`` and write ``out_dir/export.json``.

    Args:
        checkpoint: ``RUN_DIR/checkpoints/best`` (``model.safetensors`` + ``student.json``).
        out_dir: output folder (created).
        config: see :class:`ExportConfig`.
        log: progress sink (default: stderr).

    Returns:
        The export.json content.

    Raises:
        DistillError: unreadable checkpoint, bad arguments, or fp32 parity failure.
    """
    cfg = config or ExportConfig()
    say = _Log(log or (lambda s: print(s, file=sys.stderr)))
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if checkpoint.is_file():  # .../model.safetensors
        checkpoint = checkpoint.parent
    if not checkpoint.exists():
        raise DistillError(f"{checkpoint}: checkpoint not found (expected RUN_DIR/checkpoints/best with "
                           "model.safetensors and student.json)")
    student = load_student(checkpoint)
    spec = student.spec
    cfg = with_run_defaults(cfg, checkpoint, say)
    cfg.check_data()
    provenance, summary = gather_provenance(checkpoint, student)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    report: dict[str, Any] = {
        "format": EXPORT_FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "status": "running",
        "checkpoint": str(checkpoint), "student": spec.arch, "class_names": list(spec.class_names),
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, *spec.input_size], "dtype": "float32"},
        "preprocess": preprocess_metadata(spec),
        "provenance": provenance, "run_summary": summary, "config": _jsonable(asdict(cfg)),
        "versions": _versions(), "models": [], "warnings": say.warnings,
    }
    meta_prov = {k: provenance[k] for k in ("teacher", "strategy", "run", "checkpoint", "checkpoint_sha256")
                 if k in provenance}

    with tempfile.TemporaryDirectory(prefix=".work-", dir=out_dir) as work_str:
        work = Path(work_str)
        # ---------------------------------------------------------------- data
        eval_images, calib_images, data_info = _load_data(cfg, spec, provenance, say)
        report["data"] = data_info

        # ---------------------------------------------------------------- fp32
        say(f"exporting {spec.arch} to ONNX (opset {cfg.opset}, {cfg.exporter} exporter)")
        fp32_path = out_dir / "model.fp32.onnx"
        info = export_onnx(student, fp32_path, opset=cfg.opset, with_embedding=cfg.with_embedding, exporter=cfg.exporter)
        if info["fallback_reason"]:
            say.warn(f"dynamo exporter failed ({info['fallback_reason']}); used the torchscript exporter")
        report["exporter"] = info
        outputs = info["outputs"]
        stamp(fp32_path, build_metadata(spec, "fp32", meta_prov, outputs), doc=f"distill student {spec.arch} (fp32)")
        torch_logits = predict_torch(student, eval_images)
        labeled = data_info["labeled"]
        report["reference"] = {"runtime": f"torch {_versions().get('torch')} cpu fp32",
                               "accuracy": accuracy_by_domain(torch_logits, eval_images) if labeled else None}
        fp32_logits = predict_onnx(fp32_path, eval_images)
        par = parity(torch_logits, fp32_logits)
        par["tolerance"] = fp32_tolerance(torch_logits, cfg.fp32_rtol)
        par["passed"] = par["max_abs_logit_diff"] <= par["tolerance"]
        fp32_acc = accuracy_by_domain(fp32_logits, eval_images) if labeled else None
        report["models"].append({**_file_entry(fp32_path, out_dir), "precision": "fp32", "runtime": "ort-cpu",
                                 "parity": par, "accuracy": fp32_acc,
                                 "mean_accuracy": _mean(fp32_acc) if fp32_acc else None})
        say(f"fp32: max |Δlogit| {par['max_abs_logit_diff']:.2e} (tolerance {par['tolerance']:.1e}), "
            f"top-1 agreement {par['top1_agreement']:.4f} on {par['n']} images")
        if not par["passed"]:
            report["status"] = "failed"
            atomic_write_json(out_dir / "export.json", report)
            raise DistillError(f"{fp32_path}: fp32 ONNX differs from PyTorch by {par['max_abs_logit_diff']:.3g} "
                               f"(> {par['tolerance']:.1g}) in max |logit|; see {out_dir / 'export.json'}")

        # ---------------------------------------------------------------- fp16
        if "fp16" in cfg.precisions:
            fp16_path = convert_fp16(fp32_path, out_dir / "model.fp16.onnx")
            stamp(fp16_path, build_metadata(spec, "fp16", meta_prov, outputs), doc=f"distill student {spec.arch} (fp16)")
            logits = predict_onnx(fp16_path, eval_images)
            acc = accuracy_by_domain(logits, eval_images) if labeled else None
            entry = {**_file_entry(fp16_path, out_dir), "precision": "fp16", "runtime": "ort-cpu",
                     "parity": parity(torch_logits, logits), "accuracy": acc, "mean_accuracy": _mean(acc) if acc else None,
                     "drops_pts": drops_in_points(fp32_acc, acc) if acc else None,
                     "note": "evaluated with onnxruntime CPU, which inserts fp32 casts around ops lacking fp16 "
                             "kernels; GPU/TensorRT fp16 numbers can differ slightly"}
            report["models"].append(entry)
            say(f"fp16: top-1 agreement {entry['parity']['top1_agreement']:.4f}, max |Δlogit| "
                f"{entry['parity']['max_abs_logit_diff']:.2e}")

        # ---------------------------------------------------------------- int8
        if "int8" in cfg.precisions:
            prepared = q.prepare(fp32_path, work / "prepared.onnx")
            say(f"int8: calibrating on {len(calib_images)} images ({cfg.calib_method})")
            cache = q.calibrate(prepared, ImageCalibrationReader(calib_images, INPUT_NAME), cfg.calib_method,
                                work / f"calibration-{cfg.calib_method}.json")
            for flavour in q.flavours_for(cfg.int8_flavour):
                if cfg.reduce_range and flavour.name == "ort-cpu":
                    flavour = replace(flavour, reduce_range=True)
                entry = _int8(cfg, flavour, prepared, cache, work, out_dir, fp32_path, spec, meta_prov,
                              outputs, eval_images, calib_images, torch_logits, fp32_acc, labeled, data_info, say)
                report["models"].append(entry)

        # ---------------------------------------------------------------- TensorRT
        report["tensorrt"] = _tensorrt(cfg, out_dir, report["models"], spec, say)

    trt = report["tensorrt"]
    report["files"] = ([m["file"] for m in report["models"]] + [trt["build_script"]]
                       + ([e["engine"] for e in trt["engines"]] + ["timing.cache"] if trt["built_here"] else [])
                       + ["export.json"])
    report["status"] = "ok"
    report["elapsed_s"] = round(time.time() - t_start, 1)
    atomic_write_json(out_dir / "export.json", report)
    say(f"wrote {out_dir / 'export.json'}")
    return report


def _load_data(cfg: ExportConfig, spec: Any, provenance: dict[str, Any], say: _Log
               ) -> tuple[ImageSet, ImageSet | None, dict[str, Any]]:
    if not cfg.data_root:
        say.warn("no --data: fp32/fp16 parity is checked on 32 random-noise images and no accuracy is measured")
        return random_images(spec, 32, cfg.seed), None, {"root": None, "labeled": False, "eval_count": {"random": 32}}
    from distill.data.folder import DomainFolder

    folder = DomainFolder(cfg.data_root, class_map=cfg.class_map, test_fraction=cfg.test_fraction,
                          split_seed=cfg.split_seed, val_fraction=cfg.val_fraction)
    skipped = _exclude_cache_skipped(folder, cfg.caches or ())
    eval_domains = list(cfg.eval_domains or folder.domains)
    folder.check_domains(eval_domains)
    eval_images = load_images(folder, pick_per_domain(folder, eval_domains, "test", cfg.eval_count, cfg.seed), spec)
    if len(eval_images) == 0:
        raise DistillError(f"{cfg.data_root}: no decodable test-split images in {eval_domains}")
    _relabel(eval_images, folder.classes, list(spec.class_names), cfg.data_root)
    skipped += eval_images.skipped
    known_sources = [d for d in provenance.get("source_domains", []) or [] if d in folder.domains]
    calib_domains = list(cfg.calib_domains or known_sources or folder.domains)
    target_domains = [d for d in cfg.target_domains if d not in calib_domains]
    folder.check_domains(calib_domains + target_domains)
    calib_images = None
    calib_per_domain: dict[str, int] = {}
    if "int8" in cfg.precisions:
        domains = calib_domains + target_domains
        samples = []
        for i, d in enumerate(domains):  # an even share per domain (target domains included)
            share = cfg.calib_count // len(domains) + (1 if i < cfg.calib_count % len(domains) else 0)
            picked = pick(folder.select([d], "train"), max(1, share), cfg.seed)
            calib_per_domain[d] = len(picked)
            samples.extend(picked)
        calib_images = load_images(folder, samples, spec)
        if len(calib_images) == 0:
            raise DistillError(f"{cfg.data_root}: no train-split images to calibrate with in {calib_domains + target_domains}")
        skipped += calib_images.skipped
    if skipped:
        say.warn(f"{len(skipped)} undecodable image(s) skipped: {', '.join(skipped)}")
    info = {
        "root": str(cfg.data_root), "labeled": True, "fingerprint": folder.fingerprint(),
        "test_fraction": cfg.test_fraction, "split_seed": cfg.split_seed, "val_fraction": cfg.val_fraction,
        "skipped": skipped,
        "eval_domains": eval_domains, "eval_split": "test",
        "eval_count": {d: int((eval_images.domains == d).sum()) for d in eval_domains},
        "calib_domains": calib_domains, "target_domains": target_domains, "calib_split": "train",
        "calib_count": len(calib_images) if calib_images is not None else 0, "calib_per_domain": calib_per_domain,
        "calib_method": cfg.calib_method,
    }
    return eval_images, calib_images, info


def _exclude_cache_skipped(folder: Any, caches: tuple[str, ...]) -> list[str]:
    """Leave out the images the run's caches skipped at build time; returns their paths."""
    from distill.records import CACHE_MANIFEST as MANIFEST

    out: list[str] = []
    for c in caches:
        path = Path(c) / MANIFEST
        if path.is_file():
            m = read_json(path)
            new = folder.exclude((k["path"], k["reason"]) for k in m.get("skipped", []))
            out += [str(folder.root / p) for p, _ in new]
    return out


def _int8(cfg: ExportConfig, flavour: q.Int8Flavour, prepared: Path, cache: Path, work: Path,
          out_dir: Path, fp32_path: Path, spec: Any, meta_prov: dict[str, Any], outputs: list[str],
          eval_images: ImageSet, calib_images: ImageSet, torch_logits: np.ndarray,
          fp32_acc: dict[str, float] | None, labeled: bool, data_info: dict[str, Any], say: _Log) -> dict[str, Any]:
    """Quantize for one flavour, check accuracy, fall back if needed, check latency, write the file."""
    counter = iter(range(10**6))

    def quantize_excluding(nodes: list[str]) -> Path:
        return q.quantize(prepared, work / f"int8-{flavour.name}-{next(counter)}.onnx", flavour, cache,
                          cfg.calib_method, nodes)

    plain = quantize_excluding([])
    logits = predict_onnx(plain, eval_images)
    acc = accuracy_by_domain(logits, eval_images) if labeled else None
    drops = drops_in_points(fp32_acc, acc) if acc and fp32_acc else {}  # reported only
    worst = max(drops.values()) if drops else 0.0
    # the decision: label-free agreement with fp32 on the calibration images
    fp32_calib = predict_onnx(fp32_path, calib_images)

    def measure(path: Path) -> dict[str, float]:
        return disagreement_by_domain(fp32_calib, predict_onnx(path, calib_images), calib_images)

    disagree = measure(plain)
    worst_dis = max(disagree.values()) if disagree else 0.0
    say(f"int8 ({flavour.name}): top-1 disagreement with fp32 on calibration images per domain (pts): "
        + ", ".join(f"{d} {v:.2f}" for d, v in disagree.items()))
    if drops:
        say(f"int8 ({flavour.name}): test accuracy drop vs fp32 per domain (pts, reported only): "
            + ", ".join(f"{d} {v:+.2f}" for d, v in drops.items()))
    fallback: dict[str, Any] = {
        "triggered": False, "max_drop_pts": cfg.max_drop, "kept_float": [],
        "criterion": f"top-1 disagreement with fp32 ONNX on the {len(calib_images)} calibration images, per domain "
                     "(label-free; test accuracy is reported, never decided on)",
        "before": {"disagreement_pts": disagree, "worst_disagreement_pts": worst_dis,
                   "accuracy": acc, "drops_pts": drops, "worst_drop_pts": worst}}
    final = plain
    if worst_dis > cfg.max_drop:
        say(f"int8 ({flavour.name}): worst disagreement {worst_dis:.2f} pts > --max-drop {cfg.max_drop}: "
            "ranking layer sensitivity")
        candidates = q.compute_nodes(prepared)
        # spread over the calibration set, which is ordered by domain (sources, then targets)
        pick_idx = np.unique(np.linspace(0, len(calib_images) - 1, min(cfg.sensitivity_count, len(calib_images))).astype(int))
        probe = calib_images.subset(np.isin(np.arange(len(calib_images)), pick_idx))
        ranked = rank_layers(quantize_excluding, candidates, probe, predict_onnx(fp32_path, probe),
                             predict_onnx(plain, probe), log=say)
        res, chosen = greedy_fallback(quantize_excluding, ranked, measure, disagree, cfg.max_drop,
                                      cfg.max_fallback_layers, log=say)
        if chosen is not None:
            final = chosen
            logits = predict_onnx(final, eval_images)
            acc = accuracy_by_domain(logits, eval_images) if labeled else None
            drops = drops_in_points(fp32_acc, acc) if acc and fp32_acc else {}
        dis = res.disagreement_pts
        fallback.update({"triggered": True, "satisfied": res.satisfied, "kept_float": res.kept_float,
                         "kept_float_op_types": [c["op_type"] for c in ranked if c["node"] in res.kept_float],
                         "sensitivity": ranked, "steps": res.steps, "ranking_images": len(probe),
                         "ranking": "KL(fp32 || int8) of softmax outputs on calibration images, one layer in float at a time",
                         "after": {"disagreement_pts": dis, "worst_disagreement_pts": max(dis.values()) if dis else None,
                                   "accuracy": acc, "drops_pts": drops,
                                   "worst_drop_pts": max(drops.values()) if drops else None}})
        if not res.satisfied:
            say.warn(f"int8 ({flavour.name}): still {max(dis.values()):.2f} pts of top-1 disagreement with fp32 on "
                     f"{max(dis, key=dis.get)} with {len(res.kept_float)} layer(s) in float "
                     f"(--max-fallback-layers {cfg.max_fallback_layers}); kept the best variant — consider fp16")
        else:
            say(f"int8 ({flavour.name}): kept {len(res.kept_float)} layer(s) in float: {', '.join(res.kept_float)}")

    dst = out_dir / f"model.int8-{flavour.name}.onnx"
    shutil.copyfile(final, dst)
    quant = {**flavour.describe(), "calibration": {"method": cfg.calib_method, "images": len(calib_images),
                                                   "domains": data_info["calib_domains"],
                                                   "target_domains": data_info["target_domains"]},
             "kept_float": fallback["kept_float"]}
    stamp(dst, build_metadata(spec, "int8", meta_prov, outputs,
                              {"int8_flavour": flavour.name, "target_runtime": flavour.target_runtime,
                               "quantization": quant}),
          doc=f"distill student {spec.arch} (int8, {flavour.name} flavour)")
    entry: dict[str, Any] = {
        **_file_entry(dst, out_dir), "precision": "int8", "flavour": flavour.name,
        "target_runtime": flavour.target_runtime, "runtime": "ort-cpu", "quantization": quant,
        "parity": parity(torch_logits, logits), "accuracy": acc, "mean_accuracy": _mean(acc) if acc else None,
        "drops_pts": drops, "disagreement_pts": fallback.get("after", fallback["before"])["disagreement_pts"],
        "within_max_drop": max(fallback.get("after", fallback["before"])["disagreement_pts"].values(), default=0.0)
        <= cfg.max_drop,
        "fallback": fallback,
    }
    if flavour.name == "tensorrt":
        problems = q.tensorrt_qdq_problems(dst, fallback["kept_float"])
        entry["tensorrt_qdq_check"] = {"ok": not problems, "problems": problems[:20]}
        if problems:
            say.warn(f"int8 (tensorrt): {len(problems)} QDQ placement problem(s), e.g. {problems[0]}")
    entry["latency_check"] = _latency_check(cfg, flavour, fp32_path, plain, final, say)
    return entry


def _latency_check(cfg: ExportConfig, flavour: q.Int8Flavour, fp32_path: Path, plain: Path, final: Path,
                   say: _Log) -> dict[str, Any]:
    """int8 vs fp32 parent (and the cost of the fallback), interleaved on this machine's CPU."""
    from distill.bench.compare import compare_latency
    from distill.bench.edge_runner import cpu_info

    models = {"fp32": fp32_path, "int8": plain}
    if final != plain:
        models["int8_fallback"] = final
    res = compare_latency(models, batch=cfg.latency_batch, threads=cfg.threads, iters=cfg.latency_iters)
    p50 = {k: s["p50"] for k, s in res["stats"].items()}
    shipped = "int8_fallback" if final != plain else "int8"
    ratio = p50[shipped] / p50["fp32"]
    representative = flavour.target_runtime == "onnxruntime-cpu"
    check = {"runtime": "ort-cpu", "cpu": cpu_info(), "batch": cfg.latency_batch, "threads": cfg.threads,
             "iters": cfg.latency_iters, "p50_ms": p50, "ratio_vs_fp32": ratio, "slower_than_fp32": ratio >= 1.0,
             "representative": representative}
    if final != plain:
        check["fallback_cost_ratio"] = p50["int8_fallback"] / p50["int8"]
    if representative:
        if ratio >= 1.0:
            say.warn(f"int8 ({flavour.name}) is {ratio:.2f}x the fp32 latency on this CPU (p50 {p50[shipped]:.2f} vs "
                     f"{p50['fp32']:.2f} ms, batch {cfg.latency_batch}): it is not faster here — ship fp32, or "
                     "measure on the target device")
        else:
            say(f"int8 ({flavour.name}): {ratio:.2f}x fp32 latency on this CPU (p50 {p50[shipped]:.2f} vs "
                f"{p50['fp32']:.2f} ms, batch {cfg.latency_batch})")
    else:
        check["note"] = (f"{flavour.name}-flavour int8 targets {flavour.target_runtime}; onnxruntime CPU runs "
                         "symmetric int8 activations slowly, so this CPU ratio says nothing about the device: "
                         "measure with distill bench / edge_runner.py there")
        say(f"int8 ({flavour.name}): {ratio:.2f}x fp32 on this CPU (not representative: target is "
            f"{flavour.target_runtime})")
    return check


def _tensorrt(cfg: ExportConfig, out_dir: Path, models: list[dict[str, Any]], spec: Any, say: _Log) -> dict[str, Any]:
    """build_engine.sh for the device, and engines here if TensorRT is importable."""
    chw = (3, *spec.input_size)
    engines = []
    if "fp32" in cfg.precisions:
        engines.append({"onnx": "model.fp32.onnx", "engine": "model.fp32.engine", "precision": "fp32"})
    if "fp16" in cfg.precisions:
        engines.append({"onnx": "model.fp32.onnx", "engine": "model.fp16.engine", "precision": "fp16"})
    if any(m.get("flavour") == "tensorrt" for m in models):
        engines.append({"onnx": "model.int8-tensorrt.onnx", "engine": "model.int8.engine", "precision": "int8"})
    script = write_build_script(out_dir, engines, INPUT_NAME, chw, cfg.trt_batches, cfg.trt_workspace_mib)
    out: dict[str, Any] = {"build_script": script.name, "engines": engines, "batches": list(cfg.trt_batches),
                           "built_here": False}
    if "int8" in cfg.precisions and not any(m.get("flavour") == "tensorrt" for m in models):
        out["note"] = "no TensorRT int8 engine: export with --int8-flavour tensorrt (or both) for one"
    if cfg.build_engines and tensorrt_available():
        import tensorrt as trt

        for e in engines:
            say(f"building TensorRT engine {e['engine']} ({e['precision']})")
            build_engine(out_dir / e["onnx"], out_dir / e["engine"], e["precision"], INPUT_NAME, chw,
                         cfg.trt_batches, out_dir / "timing.cache", cfg.trt_workspace_mib)
        out.update({"built_here": True, "tensorrt_version": trt.__version__,
                    "note": "engines run only on this GPU model with this TensorRT version"})
    else:
        say(f"TensorRT not importable here: wrote {script} — run it on the target device")
    return out


def _versions() -> dict[str, str]:
    from distill.bench.edge_runner import library_versions

    return library_versions()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
