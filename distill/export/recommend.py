"""What to ship: int8, fp16 or fp32, decided from the facts an export measured (pure; no I/O).

The export measures, per precision: int8's latency vs its fp32 parent, interleaved on the
exporting CPU (and whether that CPU is the int8 flavour's target runtime), int8's worst
per-domain top-1 disagreement with fp32 on the calibration images vs ``--max-drop``, the op types
the int8 model still runs in float (onnxruntime's optimized graph), and fp16's top-1 agreement
with PyTorch. :func:`recommend` turns them into one choice and a one-line reason:

1. int8 whose speed-up was measured on its target runtime (``ratio <= PAYS_BELOW``) and whose
   disagreement is within the budget;
2. else int8 for a runtime this machine cannot time (tensorrt flavour), within budget — without
   claiming a speed-up;
   with both flavours exported, the reason also names the other runtime's choice (int8 (tensorrt) beside a paying
   ort-cpu int8; fp32 for onnxruntime-cpu beside a tensorrt int8 when ort-cpu's int8 did not pay);
3. else fp16 when it was exported and agrees with PyTorch within the budget;
4. else fp32.
Every branch fills the record's typed measurement fields (``speedup_measured``, ``latency_ratio``, ``float_op_types``,
``measured_flavour``) from what was measured, also when no int8 ships, so that a program reads the decision from them
and not from the English ``reason``.
When int8 is within budget but not faster and float islands remain (hardswish's HardSigmoid; squeeze-excite's
mean and hard-sigmoid gate are rewritten to run in int8 before quantizing, :mod:`distill.export.int8_graph`; a
Sigmoid gate is left as onnxruntime quantizes it), the reason names them and the families measured to gain from int8
(:data:`INT8_FASTER_FAMILIES`, figures from benchmarks/RESULTS.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distill.bench.edge_runner import threads_text
from distill.records.ship import ExportedModel, ShipRecommendation

PAYS_BELOW = 0.9  # int8/fp32 p50 at or below this is a speed-up worth shipping (shared-machine noise is ~5%)

# measured int8/fp32 p50 ratios on ONNX Runtime CPU, ort-cpu flavour (7-bit weights), 64 px, batch 1 and 32, on both
# x86 kinds (benchmarks/RESULTS.md, "int8 speed on both x86 CPU kinds": an AVX-512 VNNI EPYC with its own kernels and
# with AVX-512/VNNI hidden from CPUID, onnxruntime's AVX2 kernels; 2026-12-05). Each range spans both kinds.
INT8_FASTER_FAMILIES: dict[str, str] = {
    "resnet18": "0.24-0.48x",
    "efficientnet_lite0": "0.48-0.60x",
    "mobilenetv4_conv_small": "0.52-0.67x",
}
FAMILIES_MEASURED = "fp32 latency on x86 with and without VNNI, 64 px"
RESULTS_SOURCE = "benchmarks/RESULTS.md"


@dataclass(frozen=True)
class Int8Facts:
    """One int8 flavour as the export measured it."""

    flavour: str | None  # None: an entry without one (:attr:`ExportedModel.int8_flavour`; only a hand-made export.json)
    target_runtime: str
    ratio_vs_fp32: float | None  # p50 int8 / p50 fp32 on this CPU; None if not measured
    representative: bool  # this CPU's runtime is the flavour's target runtime
    worst_disagreement_pts: float
    max_drop_pts: float
    float_op_types: dict[str, int] = field(default_factory=dict)  # op types still run in float, as run
    ratio_high: float | None = None  # the 95 % interval's top of the int8/fp32 ratio (None: an older export.json)
    timed: str = ""  # "batch 1, 2 threads (--threads)": what the ratio holds for

    @property
    def within_budget(self) -> bool:
        return self.worst_disagreement_pts <= self.max_drop_pts

    @property
    def pays(self) -> bool:
        """Timed faster on its target runtime: the interval's top (the ratio itself for an older record) at or
        below :data:`PAYS_BELOW`, so that a rerun on the same machine does not flip the decision on noise."""
        bound = self.ratio_high if self.ratio_high is not None else self.ratio_vs_fp32
        return self.representative and bound is not None and bound <= PAYS_BELOW

    def ratio_text(self) -> str:
        """"0.78x fp32 latency (p50s; per-round ratio's 95 % interval up to 0.82; batch 1, 1 thread)": the ratio of
        the two medians, and the top of the interval the decision uses (of the median of per-round ratios)."""
        extra = ([f"p50s; per-round ratio's 95 % interval up to {self.ratio_high:.2f}"]
                 if self.ratio_high is not None else [])
        extra += [self.timed] if self.timed else []
        return f"{self.ratio_vs_fp32:.2f}x fp32 latency" + (f" ({'; '.join(extra)})" if extra else "")


@dataclass(frozen=True)
class Fp16Facts:
    """fp16 as the export measured it: top-1 disagreement with PyTorch fp32 on the eval images, in points."""

    disagreement_pts: float


HEAD_POOL_OPS = ("ReduceMean", "GlobalAveragePool")  # one of them is the classifier's pooling, in every family


def architecture_islands(float_op_types: dict[str, int]) -> dict[str, int]:
    """The float islands that come from the student's blocks (hardswish, SE), not the head's one global pooling."""
    return {k: v for k, v in float_op_types.items() if not (k in HEAD_POOL_OPS and v == 1)}


def _families(families: dict[str, str], student: str | None) -> str:
    return "; ".join(f"{k} {v}" for k, v in families.items() if k != student)


def _why_not_int8(facts: list[Int8Facts], families: dict[str, str], student: str | None) -> str:
    """Why no int8 flavour was chosen: over budget and/or not faster, naming the float islands and the
    families that gain."""
    if not facts:
        return "no int8 exported"
    parts = []
    for f in facts:
        clauses = []
        if not f.within_budget:
            clauses.append(f"disagrees with fp32 on {f.worst_disagreement_pts:.2f} pts of the calibration images "
                           f"> --max-drop {f.max_drop_pts:g}")
        if f.ratio_vs_fp32 is not None and f.representative:
            if f.pays:
                clauses.append(f"although {f.ratio_text()} on this CPU")
            else:
                text = f"is {f.ratio_text()} on this CPU (> {PAYS_BELOW}: no speed-up shown)"
                islands = ", ".join(f"{k} x{v}" for k, v in sorted(architecture_islands(f.float_op_types).items()))
                if islands:
                    text += (f"; ops still run in float: {islands} — int8 pays for ReLU/SE-free families: "
                             + _families(families, student) + f" {FAMILIES_MEASURED} ({RESULTS_SOURCE})")
                clauses.append(text)
        elif f.within_budget:
            clauses.append("latency not measured on its target runtime")
        parts.append(f"int8 ({f.flavour}) " + ", ".join(clauses))
    return "; ".join(parts)


def recommend(int8: list[Int8Facts], fp16: Fp16Facts | None, max_drop: float, student: str | None = None,
              families: dict[str, str] | None = None) -> ShipRecommendation:
    """The precision to ship and why (see the module docstring for the order)."""
    families = INT8_FASTER_FAMILIES if families is None else families
    paying = sorted((f for f in int8 if f.pays and f.within_budget), key=lambda f: f.ratio_vs_fp32 or 1.0)
    untimed = [f for f in int8 if not f.representative and f.within_budget]
    if paying:
        f = paying[0]
        other = (f"; for {untimed[0].target_runtime}: int8 ({untimed[0].flavour}), its speed-up not measured here "
                 "(time it on the device)") if untimed else ""  # --int8-flavour both: the other target's choice
        return ShipRecommendation(
            precision="int8", flavour=f.flavour, speedup_measured=True, latency_ratio=f.ratio_vs_fp32,
            float_op_types=f.float_op_types, measured_flavour=f.flavour,
            reason=f"int8 ({f.flavour}) is {f.ratio_text()} on {f.target_runtime} here and "
                   f"disagrees with fp32 on {f.worst_disagreement_pts:.2f} pts <= --max-drop {f.max_drop_pts:g}{other}")
    if untimed:
        f = untimed[0]
        here = [g for g in int8 if g.representative]  # --int8-flavour both: timed here, and not shipped (not paying)
        other = f"; for {here[0].target_runtime}: ship fp32 ({_why_not_int8(here, families, student)})" if here else ""
        return ShipRecommendation(
            precision="int8", flavour=f.flavour, speedup_measured=False, latency_ratio=None,
            float_op_types=f.float_op_types, measured_flavour=f.flavour,
            reason=f"int8 ({f.flavour}) disagrees with fp32 on {f.worst_disagreement_pts:.2f} pts <= --max-drop "
                   f"{f.max_drop_pts:g}; its speed-up on {f.target_runtime} was not measured (this CPU is not the "
                   f"target): time it on the device (distill bench), else ship fp16{other}")
    why = _why_not_int8(int8, families, student)
    measured = _measured(int8)  # what int8 was measured at, though not shipped: typed, not only in the reason
    if fp16 is not None and fp16.disagreement_pts <= max_drop:
        return ShipRecommendation(
            precision="fp16", reason=f"{why}; fp16 disagrees with PyTorch on "
            f"{fp16.disagreement_pts:.2f} pts (GPU/NPU targets; on ONNX Runtime CPU fp32 is as fast)",
            faster_families=_int8_families(int8, families, student), **measured)
    return ShipRecommendation(precision="fp32", reason=why, faster_families=_int8_families(int8, families, student),
                              **measured)


def _measured(int8: list[Int8Facts]) -> dict[str, Any]:
    """The measurement fields of a recommendation that ships no int8: of the int8 flavour timed on its target runtime
    (this CPU's, ort-cpu), else of the first one exported (its float ops; no ratio); none without int8."""
    f = next((g for g in int8 if g.representative and g.ratio_vs_fp32 is not None), int8[0] if int8 else None)
    if f is None:
        return {"speedup_measured": False}
    timed = f.representative and f.ratio_vs_fp32 is not None
    return {"speedup_measured": timed, "latency_ratio": f.ratio_vs_fp32 if timed else None,
            "float_op_types": f.float_op_types, "measured_flavour": f.flavour}


def _int8_families(int8: list[Int8Facts], families: dict[str, str], student: str | None) -> list[str]:
    """The families to suggest: only where int8 was within budget but slower with float islands left."""
    slow_arch = any(f.within_budget and f.representative and f.ratio_vs_fp32 is not None and not f.pays
                    and architecture_islands(f.float_op_types) for f in int8)
    return [k for k in families if k != student] if slow_arch else []


# ------------------------------------------------------------------ facts from export.json entries
def int8_facts(model: ExportedModel, max_drop: float) -> Int8Facts:
    """The facts of one int8 entry of export.json (extra keys written by :mod:`distill.export.int8_step`)."""
    x: dict[str, Any] = model.model_extra or {}
    lc = x.get("latency_check") or {}
    dis = x.get("disagreement_pts") or {}
    fb = x.get("fallback") or {}
    return Int8Facts(flavour=model.int8_flavour, target_runtime=str(x.get("target_runtime")),
                     ratio_vs_fp32=lc.get("ratio_vs_fp32"), representative=bool(lc.get("representative", False)),
                     worst_disagreement_pts=max(dis.values(), default=0.0),
                     max_drop_pts=float(fb.get("max_drop_pts", max_drop)),
                     float_op_types=dict(x.get("float_op_types") or {}),
                     ratio_high=(lc.get("ratio_ci95") or [None, None])[1], timed=_timed(lc))


def _timed(latency_check: dict[str, Any]) -> str:
    """"batch 1, 2 threads (onnxruntime's default)" of an export's latency check, its threads in the words of the
    export's log line (:func:`~distill.bench.edge_runner.threads_text`, brief); "" for an older record without the
    interval."""
    if "ratio_ci95" not in latency_check:
        return ""
    return f"batch {latency_check.get('batch')}, {threads_text(latency_check, brief=True)}"


def recommend_for(models: list[ExportedModel], max_drop: float, student: str | None = None) -> ShipRecommendation:
    """:func:`recommend` on an export's entries (``max_drop``: the export's --max-drop, in points)."""
    int8 = [int8_facts(m, max_drop) for m in models if m.precision == "int8"]
    fp16 = next((Fp16Facts(100.0 * (1.0 - m.parity["top1_agreement"])) for m in models
                 if m.precision == "fp16" and m.parity and "top1_agreement" in m.parity), None)
    return recommend(int8, fp16, max_drop, student)
