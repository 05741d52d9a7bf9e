"""One int8 flavour of an export: quantize, keep sensitive layers float if needed, write, time it.

The decision to keep layers in float is label-free: the int8 model's top-1 predictions are
compared with the fp32 ONNX's on the *calibration* images, per domain; when some domain
disagrees on more than ``max_drop`` points, :mod:`distill.export.fallback` ranks the layers and
keeps the most sensitive ones in float. Test accuracy and its drop vs fp32 are measured and
reported, never decided on. The latency of int8 vs its fp32 parent (and of the fallback) is
measured interleaved on this CPU, and a slower int8 is flagged.
"""
from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from distill.bench.compare import compare_latency
from distill.bench.edge_runner import cpu_info, threads_text
from distill.export.context import ExportContext, Fp32Reference, mean_accuracy
from distill.export.evaluate import disagreement_by_domain, drop_p_values, drops_in_points, parity, predict_onnx
from distill.export.fallback import greedy_fallback, rank_layers
from distill.export.float_outputs import fallback_candidates
from distill.export.margins import near_ties
from distill.export.quantize import Int8Flavour, float_ops_as_run, quantize, saturation_risk, tensorrt_qdq_problems
from distill.records import ExportedModel

RANKING = ("KL(fp32 || int8) of softmax outputs on calibration images, one candidate in float at a time (a layer, "
           "or a layer with its output and activation)")


def int8_file(flavour: str) -> str:
    """The shipped file of one int8 flavour, in the export folder."""
    return f"model.int8-{flavour}.onnx"


@dataclass(frozen=True)
class Calibration:
    """The prepared fp32 graph and its activation ranges, shared by every flavour and fallback variant."""

    prepared: Path
    ranges: Path  # onnxruntime's calibration cache, written by quantize.calibrate


@dataclass
class _Scores:
    """An int8 file scored on the eval images (test accuracy: reported, never decided on)."""

    logits: np.ndarray
    accuracy: dict[str, float] | None
    drops_pts: dict[str, float]
    drops_p: dict[str, float]  # McNemar's p of each domain's drop (paired: the same test images); {} unlabelled


class Int8Step:
    """Export one int8 flavour; :meth:`run` returns its export.json entry."""

    def __init__(self, ctx: ExportContext, reference: Fp32Reference, flavour: Int8Flavour,
                 calibration: Calibration):
        if ctx.data.calib_images is None:
            raise ValueError("int8 export without calibration images")  # ExportConfig.check_data prevents it
        self.ctx, self.reference, self.flavour, self.calibration = ctx, reference, flavour, calibration
        self.cfg, self.log = ctx.cfg, ctx.log
        self.calib_images = ctx.data.calib_images
        self._variant = itertools.count()
        self._fp32_calib_logits: np.ndarray | None = None

    # ------------------------------------------------------------------ measures
    def quantize_excluding(self, nodes: list[str]) -> Path:
        """A quantized variant with ``nodes`` kept in float (a quantization pass, no calibration)."""
        out = self.ctx.work_dir / f"int8-{self.flavour.name}-{next(self._variant)}.onnx"
        return quantize(self.calibration.prepared, out, self.flavour, self.calibration.ranges,
                          self.cfg.calib_method, nodes)

    def disagreement(self, path: Path) -> dict[str, float]:
        """Per-domain top-1 disagreement with fp32 on the calibration images, in points (label-free)."""
        if self._fp32_calib_logits is None:
            self._fp32_calib_logits = predict_onnx(self.reference.path, self.calib_images)
        return disagreement_by_domain(self._fp32_calib_logits, predict_onnx(path, self.calib_images), self.calib_images)

    def _score(self, path: Path) -> _Scores:
        logits = predict_onnx(path, self.ctx.data.eval_images)
        accuracy = self.ctx.accuracy(logits)
        fp32 = self.reference.accuracy
        ref = self.reference.logits
        drops = drops_in_points(fp32, accuracy) if accuracy and fp32 else {}
        p = drop_p_values(ref, logits, self.ctx.data.eval_images) if drops and ref is not None else {}
        return _Scores(logits, accuracy, drops, p)

    # ------------------------------------------------------------------ the step
    def run(self) -> ExportedModel:
        name = self.flavour.name
        plain = self.quantize_excluding([])
        scores = self._score(plain)
        disagree = self.disagreement(plain)
        worst_disagreement = max(disagree.values()) if disagree else 0.0
        self.log(f"int8 ({name}): top-1 disagreement with fp32 on calibration images per domain (pts): "
                 + ", ".join(f"{d} {v:.2f}" for d, v in disagree.items()))
        if scores.drops_pts:
            p = scores.drops_p
            self.log(f"int8 ({name}): test accuracy drop vs fp32 per domain (pts, reported only; McNemar p on the "
                     "same test images): " + ", ".join(f"{d} {v:+.2f}" + (f" (p {p[d]:.2g})" if d in p else "")
                                                      for d, v in scores.drops_pts.items()))
        fallback: dict[str, Any] = {
            "triggered": False, "max_drop_pts": self.cfg.max_drop, "kept_float": [],
            "criterion": f"top-1 disagreement with fp32 ONNX on the {len(self.calib_images)} calibration images, "
                         "per domain (label-free; test accuracy is reported, never decided on)",
            "before": {"disagreement_pts": disagree, "worst_disagreement_pts": worst_disagreement,
                       "accuracy": scores.accuracy, "drops_pts": scores.drops_pts,
                       "worst_drop_pts": max(scores.drops_pts.values()) if scores.drops_pts else 0.0}}
        final = plain
        if worst_disagreement > self.cfg.max_drop and self.cfg.max_fallback_layers == 0:
            fallback["disabled"] = True  # ranking every layer would be wasted: none may be kept in float
            self.log.warn(f"int8 ({name}): worst disagreement {worst_disagreement:.2f} pts > --max-drop "
                          f"{self.cfg.max_drop} and the fallback is off (--max-fallback-layers 0) — consider fp16")
        elif worst_disagreement > self.cfg.max_drop:
            final, scores = self._fall_back(plain, disagree, worst_disagreement, fallback, scores)
        return self._ship(plain, final, scores, fallback)

    def _fall_back(self, plain: Path, disagree: dict[str, float], worst: float, fallback: dict[str, Any],
                   scores: _Scores) -> tuple[Path, _Scores]:
        """Rank layer sensitivity, keep layers float greedily; record it all in ``fallback``."""
        name, cfg = self.flavour.name, self.cfg
        self.log(f"int8 ({name}): worst disagreement {worst:.2f} pts > --max-drop {cfg.max_drop}: "
                 "ranking layer sensitivity")
        candidates = fallback_candidates(onnx.load(str(self.calibration.prepared)), cfg.fallback_outputs)
        # spread over the calibration set, which is ordered by domain (sources, then targets)
        count = len(self.calib_images)
        picked = np.unique(np.linspace(0, count - 1, min(cfg.sensitivity_count, count)).astype(int))
        probe = self.calib_images.subset(np.isin(np.arange(count), picked))
        ranked = rank_layers(self.quantize_excluding, candidates, probe, predict_onnx(self.reference.path, probe),
                             predict_onnx(plain, probe), log=self.log)
        result, chosen = greedy_fallback(self.quantize_excluding, ranked, self.disagreement, disagree, cfg.max_drop,
                                         cfg.max_fallback_layers, log=self.log)
        final = plain
        if chosen is not None:
            final, scores = chosen, self._score(chosen)
        after = result.disagreement_pts
        fallback.update({
            "triggered": True, "satisfied": result.satisfied, "kept_float": result.kept_float,
            "float_outputs": result.float_outputs, "excluded": result.excluded,
            "kept_float_op_types": [next(c["op_type"] for c in ranked if c["node"] == n) for n in result.kept_float],
            "sensitivity": ranked, "steps": result.steps, "ranking_images": len(probe), "ranking": RANKING,
            "after": {"disagreement_pts": after, "worst_disagreement_pts": max(after.values()) if after else None,
                      "accuracy": scores.accuracy, "drops_pts": scores.drops_pts,
                      "worst_drop_pts": max(scores.drops_pts.values()) if scores.drops_pts else None}})
        # the file holds what onnxruntime would run them as (distill/export/ort_weights.py): say so
        ort = ("; those between int8 layers have per-tensor int8 weights (what onnxruntime makes of a float layer "
               "there)") if name == "ort-cpu" and result.kept_float else ""
        if not result.satisfied:
            self.log.warn(f"int8 ({name}): still {max(after.values()):.2f} pts of top-1 disagreement with fp32 on "
                          f"{max(after, key=after.__getitem__)} with {len(result.kept_float)} layer(s) in float "
                          f"(--max-fallback-layers {cfg.max_fallback_layers}){ort}; kept the best variant — consider "
                          "fp16")
        else:
            outputs = f" (with its output and activation: {', '.join(result.float_outputs)})" if result.float_outputs else ""
            self.log(f"int8 ({name}): kept {len(result.kept_float)} layer(s) in float: {', '.join(result.kept_float)}"
                     + outputs + ort)
        return final, scores

    def _ship(self, plain: Path, final: Path, scores: _Scores, fallback: dict[str, Any]) -> ExportedModel:
        """Copy the chosen variant to ``out_dir``, stamp it, check it, and describe it."""
        flavour, cfg, data = self.flavour, self.cfg, self.ctx.data
        dst = self.ctx.out_dir / int8_file(flavour.name)
        shutil.copyfile(final, dst)
        quantization = {**flavour.describe(),
                        "calibration": {"method": cfg.calib_method, "images": len(self.calib_images),
                                        "domains": data.info["calib_domains"],
                                        "target_domains": data.info["target_domains"]},
                        "kept_float": fallback["kept_float"], "float_outputs": fallback.get("float_outputs", [])}
        self.ctx.stamp(dst, "int8", self.reference.outputs,
                       {"int8_flavour": flavour.name, "target_runtime": flavour.target_runtime,
                        "quantization": quantization}, detail=f"int8, {flavour.name} flavour")
        decided_on = fallback.get("after", fallback["before"])["disagreement_pts"]
        ties = near_ties(self.reference.logits if self.reference.logits is not None else self.reference.torch_logits,
                         scores.logits)
        if ties is not None and max(decided_on.values(), default=0.0) > cfg.max_drop:
            self.log(f"int8 ({flavour.name}): {ties.explain()}")
        entry: dict[str, Any] = {
            **self.ctx.file_entry(dst), "precision": "int8", "flavour": flavour.name,
            "target_runtime": flavour.target_runtime, "runtime": "ort-cpu", "quantization": quantization,
            "parity": parity(self.reference.torch_logits, scores.logits), "accuracy": scores.accuracy,
            "mean_accuracy": mean_accuracy(scores.accuracy), "drops_pts": scores.drops_pts,
            "drops_p": scores.drops_p,
            "disagreement_pts": decided_on, "within_max_drop": max(decided_on.values(), default=0.0) <= cfg.max_drop,
            "fallback": fallback, "near_ties": ties.to_dict() if ties is not None else None,
        }
        if flavour.name == "tensorrt":
            problems = tensorrt_qdq_problems(dst, fallback["kept_float"])
            entry["tensorrt_qdq_check"] = {"ok": not problems, "problems": problems[:20]}
            if problems:
                self.log.warn(f"int8 (tensorrt): {len(problems)} QDQ placement problem(s), e.g. {problems[0]}")
        if flavour.name == "ort-cpu":
            risky = saturation_risk(dst)
            entry["x86_without_vnni"] = {"exact": not risky, "layers_at_risk": len(risky), "examples": risky[:5]}
            if risky:
                self.log.warn(f"int8 (ort-cpu): {len(risky)} layer(s) have 8-bit weights: x86 CPUs without VNNI (AVX2; "
                              "AVX-512 before Cascade Lake) saturate their u8 x s8 products and run another model "
                              "than this check measured; --reduce-range (the default) writes 7-bit weights every x86 CPU runs alike")
        entry["float_op_types"] = float_ops_as_run(dst, self.ctx.work_dir)
        entry["latency_check"] = self._latency_check(plain, final)
        return ExportedModel(**entry)

    def _latency_check(self, plain: Path, final: Path) -> dict[str, Any]:
        """int8 vs fp32 parent (and the cost of the fallback), interleaved on this machine's CPU."""
        flavour, cfg = self.flavour, self.cfg
        models: dict[str, str | Path] = {"fp32": self.reference.path, "int8": plain}
        if final != plain:
            models["int8_fallback"] = final
        res = compare_latency(models, batch=cfg.latency_batch, threads=cfg.threads, iters=cfg.latency_iters)
        p50 = {k: s["p50"] for k, s in res["stats"].items()}
        shipped = "int8_fallback" if final != plain else "int8"
        ratio = p50[shipped] / p50["fp32"]
        representative = flavour.target_runtime == "onnxruntime-cpu"
        # threads as asked (None: onnxruntime's default) and, as the bench records them, the threads the sessions used
        check = {"runtime": "ort-cpu", "cpu": cpu_info(), "batch": cfg.latency_batch, "threads": cfg.threads,
                 "threads_used": res["threads_used"], "threads_basis": res["threads_basis"],
                 "iters": cfg.latency_iters, "p50_ms": p50, "ratio_vs_fp32": ratio, "slower_than_fp32": ratio >= 1.0,
                 "ratio_ci95": res["ratio_ci95"][shipped], "representative": representative}
        if final != plain:
            check["fallback_cost_ratio"] = p50["int8_fallback"] / p50["int8"]
        low, high = check["ratio_ci95"]
        timing = (f"p50 {p50[shipped]:.2f} vs {p50['fp32']:.2f} ms, batch {cfg.latency_batch}, {threads_text(check)}, "
                  f"95 % interval of the ratio {low:.2f}-{high:.2f} over {cfg.latency_iters} runs")
        if not representative:
            check["note"] = (f"{flavour.name}-flavour int8 targets {flavour.target_runtime}; onnxruntime CPU runs "
                             "symmetric int8 activations slowly, so this CPU ratio says nothing about the device: "
                             "measure with distill bench / edge_runner.py there")
            self.log(f"int8 ({flavour.name}): {ratio:.2f}x fp32 on this CPU ({threads_text(check)}; not representative: "
                     f"target is {flavour.target_runtime})")
        elif ratio >= 1.0:
            self.log.warn(f"int8 ({flavour.name}) is {ratio:.2f}x the fp32 latency on this CPU ({timing}): it is not "
                          "faster here — ship fp32, or measure on the target device")
        else:
            self.log(f"int8 ({flavour.name}): {ratio:.2f}x fp32 latency on this CPU ({timing})")
        return check
