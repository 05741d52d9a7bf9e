"""Where int8's disagreement with fp32 comes from: weights or activations (torch fake-quant, whole test split).

    PYTHONPATH=. .venv/bin/python benchmarks/int8_error_sources.py QAD_ARM_DIR [QAD_ARM_DIR ...]

QAD_ARM_DIR: a ``benchmarks/qad_arms.py --out OUT/NAME`` folder (``TAG/qad.json`` per run). For each run, the
student as ``distill qad`` starts from it (before training): fake-quantized for ort-cpu with the layers qad.json
kept in float left float, activation ranges calibrated (MinMax) on the same calibration images. Then its top-1
disagreement with the fp32 student on every test image of every domain, three ways: everything int8 as the file
runs it; only the weights (and int32 biases) quantized, activations float; only the activations quantized,
weights float. Disagreement is the mean over domains, in points. A weight-dominated error is what learning the
rounding (AdaRound) would address; an activation-dominated one, the ranges (what ``--ranges learned`` trains).

``--per-tensor N``: also, per run, each activation quantizer's share (weights float, on ``--images`` test images):
the disagreement with only it on, and with every activation on but it; prints the N whose removal lowers the
activations-only disagreement most, named by the layer that writes the tensor. When errors are spread over many
tensors and flip the same near-tie images, removing any one changes little.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from int8_students import cpu_flags  # noqa: E402
from qad_arms import file_flavour, fmt, test_split  # noqa: E402

from distill.export.data import load_export_data  # noqa: E402
from distill.export.evaluate import predict_torch  # noqa: E402
from distill.export.fakequant import fake_quant_model  # noqa: E402
from distill.export.fq_state import activation_fake_quants, calibrate_ranges, fake_quants  # noqa: E402
from distill.export.images import ImageSet  # noqa: E402
from distill.export.log import ExportLog  # noqa: E402
from distill.export.qad import export_config  # noqa: E402
from distill.export.qad_config import QADConfig, QADRecord  # noqa: E402
from distill.export.quantize import Int8Flavour  # noqa: E402
from distill.export.training_run import TrainingRun, provenance  # noqa: E402
from distill.student.model import load_student  # noqa: E402

WAYS = ("int8", "weights only", "activations only")
# not a file onnxruntime runs: every activation quantized per channel (its own uint8 range per channel), weights as
# "int8". The bound of what equalizing channel ranges (cross-layer scaling into the weights) could give
PER_CHANNEL = "int8, activations per channel"


def calibration_images(record: QADRecord) -> ImageSet:
    """The calibration images ``distill qad`` trained on for ``record`` (same config, same picks)."""
    cfg = QADConfig.model_validate(record.qad_config)
    checkpoint, quiet = Path(cfg.checkpoint), ExportLog(lambda m: None)
    student, run = load_student(checkpoint), TrainingRun.of_checkpoint(checkpoint, quiet)
    sources = list(provenance(checkpoint, student, run).get("source_domains") or [])
    calib = load_export_data(export_config(cfg, run, quiet), student.spec, sources, quiet).calib_images
    assert calib is not None
    return calib


def set_way(model: torch.nn.Module, way: str) -> None:
    """Turn fake-quant on for what ``way`` (one of :data:`WAYS`) quantizes and off for the rest."""
    activations = {id(fq) for fq in activation_fake_quants(model)}
    for fq in fake_quants(model):
        off = (way == "weights only" and id(fq) in activations) or (way == "activations only" and id(fq) not in activations)
        fq.disable_fake_quant() if off else fq.enable_fake_quant()


def disagreement(record: QADRecord, flavour: Int8Flavour, calib: ImageSet, test: ImageSet, per_channel: bool = False
                 ) -> dict[str, float]:
    """Mean-over-domains top-1 disagreement with fp32 (points) of each way of quantizing (``per_channel``: and
    :data:`PER_CHANNEL`)."""
    student = load_student(Path(record.config["checkpoint"]))
    fp32 = predict_torch(student, test).argmax(1)
    model = fake_quant_model(student, flavour, record.kept_float, record.float_outputs)
    calibrate_ranges(model, (torch.from_numpy(x) for x in calib.batches(64)))
    out = {}
    for way in WAYS:
        set_way(model, way)
        flips = predict_torch(model, test).argmax(1) != fp32
        out[way] = float(np.mean([100.0 * flips[test.domains == d].mean() for d in test.domain_names]))
    if per_channel:
        model = fake_quant_model(student, flavour, record.kept_float, record.float_outputs)
        per_channel_activations(model)
        calibrate_ranges(model, (torch.from_numpy(x) for x in calib.batches(64)))
        flips = predict_torch(model, test).argmax(1) != fp32
        out[PER_CHANNEL] = float(np.mean([100.0 * flips[test.domains == d].mean() for d in test.domain_names]))
    return out


def per_channel_activations(model: torch.nn.Module) -> None:
    """Replace every activation fake-quant of ``model`` by a uint8 one with a range per channel (axis 1)."""
    from torch.ao.quantization import FakeQuantize, PerChannelMinMaxObserver

    acts = {id(fq) for fq in activation_fake_quants(model)}
    for name, module in list(model.named_modules()):
        if id(module) in acts:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, FakeQuantize(
                observer=PerChannelMinMaxObserver, ch_axis=1, quant_min=0, quant_max=255, dtype=torch.quint8,
                qscheme=torch.per_channel_affine))


def per_tensor(record: QADRecord, flavour: Int8Flavour, calib: ImageSet, test: ImageSet, count: int, top: int
               ) -> list[str]:
    """Lines: the ``top`` activation quantizers whose removal lowers the activations-only disagreement most."""
    student = load_student(Path(record.config["checkpoint"]))
    images = test.subset(np.random.default_rng(0).permutation(len(test))[:count])
    fp32 = predict_torch(student, images).argmax(1)
    model = fake_quant_model(student, flavour, record.kept_float, record.float_outputs)
    calibrate_ranges(model, (torch.from_numpy(x) for x in calib.batches(64)))
    set_way(model, "activations only")
    acts = activation_fake_quants(model)
    names = {id(m): name for name, m in model.named_modules()}
    # the layer (or function) whose output each activation fake-quant reads, by the fake-quant's module name
    src = {n.target: getattr(n.args[0], "target", n.args[0]) for n in model.graph.nodes if n.op == "call_module"}

    def flips() -> float:
        return 100.0 * float((predict_torch(model, images).argmax(1) != fp32).mean())

    every = flips()
    rows = []
    for fq in acts:
        for other in acts:
            other.disable_fake_quant()
        fq.enable_fake_quant()
        alone = flips()
        for other in acts:
            other.enable_fake_quant()
        fq.disable_fake_quant()
        rows.append((every - flips(), alone, names[id(fq)], float(fq.scale.flatten()[0])))
        fq.enable_fake_quant()
    rows.sort(key=lambda r: -r[0])
    return [f"activations only {every:.2f} pts on {len(images)} images, {len(acts)} activation tensors"] + [
        f"  without {str(src.get(name, name)).removeprefix('student.')} ({name}, scale {scale:.4f}): "
        f"{gain:.2f} pts lower; alone {alone:.2f}" for gain, alone, name, scale in rows[:top]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("arm_dirs", nargs="+", type=Path, help="qad_arms.py OUT/NAME folders (TAG/qad.json)")
    ap.add_argument("--per-tensor", type=int, default=0, metavar="N", help="also list the N tensors that matter most")
    ap.add_argument("--images", type=int, default=768, help="test images for --per-tensor")
    ap.add_argument("--per-channel", action="store_true", help=f"also '{PER_CHANNEL}' (a bound, not a runnable file)")
    args = ap.parse_args()
    tensors = []
    rows = []
    for arm_dir in args.arm_dirs:
        for qad_json in sorted(arm_dir.glob(f"*/{QADRecord.FILE}")):
            record = QADRecord.read(qad_json.parent)
            calib, test = calibration_images(record), test_split(record)
            flavour = file_flavour(record, qad_json.parent)  # the weight range that run's file has
            got = disagreement(record, flavour, calib, test, args.per_channel)
            if args.per_tensor:
                tensors.append((qad_json.parent.name, per_tensor(record, flavour, calib, test, args.images,
                                                                          args.per_tensor)))
            rows.append((qad_json.parent.name, got))
            print(f"{rows[-1][0]}: " + ", ".join(f"{k} {v:.2f}" for k, v in got.items()), file=sys.stderr, flush=True)
    model, flags = cpu_flags()
    print(f"{model}; SIMD flags: {' '.join(flags)}; torch {torch.__version__} fake-quant (ort-cpu), whole test split\n")
    ways = (*WAYS, PER_CHANNEL) if args.per_channel else WAYS
    print("| run | " + " | ".join(f"{w} (pts)" for w in ways) + " |\n|---|" + "---:|" * len(ways))
    for tag, got in rows:
        print(f"| {tag} | " + " | ".join(f"{got[w]:.2f}" for w in ways) + " |")
    print("\n| student | runs | " + " | ".join(f"{w} (pts)" for w in ways) + " |\n|---|---:|" + "---|" * len(ways))
    for student in dict.fromkeys(tag.rsplit("-e", 1)[0] for tag, _ in rows):
        mine = [got for tag, got in rows if tag.rsplit("-e", 1)[0] == student]
        print(f"| {student} | {len(mine)} | " + " | ".join(fmt([g[w] for g in mine]) for w in ways) + " |")
    for tag, lines in tensors:
        print(f"\n{tag}: " + "\n".join(lines))


if __name__ == "__main__":
    main()
