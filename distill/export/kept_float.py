"""The ``distill export`` int8 file QAD starts from (``--export``), and the student layers it kept in float, which
QAD's fake-quant student keeps in float too.

The export's float fallback (:mod:`distill.export.fallback`) names ONNX nodes (``kept_float`` in export.json):
onnxruntime's ``nodes_to_exclude`` takes node names. QAD's fake-quant student is a torch model, so each node is
traced back to the student module that computes it:

- the dynamo exporter's nodes (``node_Conv_12``) carry their module path in the node metadata
  (``pkg.torch.onnx.name_scopes``); a Conv whose BatchNorm the exporter folded carries the BatchNorm's path, which
  :func:`distill.export.fakequant.conv_bn_pairs` leads back to its conv;
- the TorchScript exporter's node names are the scope path itself (:func:`module_of_node`).

A node traced to no conv or linear layer of the student is returned apart: QAD quantizes that layer and says so.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from torch import nn

from distill.errors import DistillError
from distill.export.log import ExportLog
from distill.export.qad_flavour import missing_flavour
from distill.export.quantize import Int8Flavour
from distill.records import EXPORT_REPORT, STUDENT_WEIGHTS, ExportReport, same_checkpoint
from distill.student.model import Student
from distill.utils.io import sha256_file

SCOPES = "pkg.torch.onnx.name_scopes"  # the dynamo exporter's module path of each node
ROOT = "student."  # the export wrapper's attribute holding the student (dynamo scopes start with it)


def module_of_node(node: str) -> str:
    """The student module a TorchScript-exported ONNX node computes, from the scope path in its name:
    ``/backbone/blocks/blocks.1/blocks.1.0/conv_pw/Conv`` -> ``backbone.blocks.1.0.conv_pw`` (each scope names
    its module from its parent's, a Sequential child as ``parent.index``); "" for a name without a scope."""
    parts = node.strip("/").split("/")[:-1]
    if not parts:
        return ""
    path = last = parts[0]
    for part in parts[1:]:
        path = path + part[len(last):] if part.startswith(last + ".") else f"{path}.{part}"
        last = part
    return path


def _scoped(onnx_files: list[Path]) -> dict[str, str]:
    """Node name -> the deepest student module in its dynamo name scopes, over ``onnx_files``."""
    out: dict[str, str] = {}
    for path in onnx_files:
        if not path.is_file():
            continue
        for node in onnx.load(str(path), load_external_data=False).graph.node:
            meta = next((m.value for m in node.metadata_props if m.key == SCOPES), None)
            if meta is None or node.name in out:
                continue
            try:
                scopes = ast.literal_eval(meta)  # a Python list literal of strings: parsed, never executed
            except (ValueError, SyntaxError):
                continue
            mine = [s for s in scopes if isinstance(s, str) and s.startswith(ROOT)]
            if mine:
                out[node.name] = mine[-1].removeprefix(ROOT)
    return out


def kept_modules(nodes: list[str], student: Student, conv_of_bn: dict[str, str],
                 onnx_files: list[Path]) -> tuple[list[str], list[str]]:
    """(student conv / linear module names the export's kept ``nodes`` compute, nodes traced to none).

    Args:
        nodes: export.json's ``kept_float`` node names.
        conv_of_bn: BatchNorm module name -> the conv it is folded into (``conv_bn_pairs`` inverted).
        onnx_files: the export's files to read dynamo scopes from (its int8 file, then its fp32 file).
    """
    scoped = _scoped(onnx_files) if nodes else {}
    layers = {n for n, m in student.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    found: list[str] = []
    missing: list[str] = []
    for node in nodes:
        name = scoped.get(node) or module_of_node(node)
        name = conv_of_bn.get(name, name)
        if name not in layers:
            missing.append(node)
        elif name not in found:
            found.append(name)
    return found, missing


@dataclass(frozen=True)
class ExportedInt8:
    """A ``distill export`` folder's int8 file of one flavour: the arm QAD must beat."""

    path: Path
    origin: str  # what it is, for the log and qad.json's ptq_origin
    kept_float: list[str]  # ONNX node names its float fallback kept in float
    fp32: Path | None  # the export's fp32 file (its nodes carry the dynamo exporter's module scopes)
    float_outputs: list[str] = field(default_factory=list)  # those of them whose output (and activation) is float
    # what the export calibrated on (export.json's data): QAD calibrates alike unless told otherwise
    data_root: str | None = None
    calib_domains: tuple[str, ...] = ()
    target_domains: tuple[str, ...] = ()
    reduce_range: bool = False  # its ort-cpu weights are 7-bit (export.json's quantization record)


@dataclass(frozen=True)
class KeptFloat:
    """The student layers QAD's fake-quant model leaves in float, as the export's file does."""

    layers: list[str] = field(default_factory=list)  # conv / linear module names
    float_outputs: list[str] = field(default_factory=list)  # those of them whose output stays float too


def exported_from(report: ExportReport, checkpoint: Path) -> bool:
    """Is ``report`` an export of ``checkpoint``? (:func:`distill.records.same_checkpoint`; the folder's weights are
    hashed only when the export.json has a sha256 to compare with.)"""
    theirs = report.provenance.get("checkpoint_sha256")
    weights = checkpoint / STUDENT_WEIGHTS
    mine = sha256_file(weights) if theirs and weights.is_file() else None
    return same_checkpoint(report.checkpoint, theirs, checkpoint, mine)


def _sha_note(report: ExportReport) -> str:
    sha = report.provenance.get("checkpoint_sha256")
    return f" (weights sha256 {str(sha)[:12]}, not this checkpoint's)" if sha else ""


def export_int8(export_dir: Path, checkpoint: Path, flavour: Int8Flavour) -> ExportedInt8:
    """The int8 file of ``flavour`` a ``distill export`` of ``checkpoint`` wrote in ``export_dir``."""
    if not ExportReport.exists_in(export_dir):
        raise DistillError(f"{export_dir}: no {EXPORT_REPORT} here (--export takes a `distill export` output folder)")
    report = ExportReport.read(export_dir)
    if not exported_from(report, checkpoint):
        raise DistillError(f"{export_dir}: exported from {report.checkpoint}{_sha_note(report)}, not {checkpoint}; "
                           "pass the export of the checkpoint QAD starts from")
    model = next((m for m in report.models if m.int8_flavour == flavour.name), None)
    if model is None or not (export_dir / model.file).is_file():
        raise missing_flavour(export_dir, flavour.name, [m.int8_flavour for m in report.models
                                                         if m.int8_flavour and (export_dir / m.file).is_file()])
    path = export_dir / model.file
    fallback = (model.model_extra or {}).get("fallback") or {}
    kept = list(fallback.get("kept_float") or [])
    fp32 = next((export_dir / m.file for m in report.models if m.precision == "fp32"), None)
    data = report.data or {}
    return ExportedInt8(path, f"the export's int8, {path} ({len(kept)} layer(s) kept in float)", kept, fp32,
                        list(fallback.get("float_outputs") or []), data.get("root"),
                        tuple(data.get("calib_domains") or ()), tuple(data.get("target_domains") or ()),
                        bool(((model.model_extra or {}).get("quantization") or {}).get("reduce_range", False)))


def kept_layers(exported: ExportedInt8, student: Student, pairs: dict[str, str], say: ExportLog) -> KeptFloat:
    """The student layers the export's int8 file keeps in float, which QAD's fake-quant student leaves out of its
    int8 recipe too (:func:`distill.export.fakequant.keep_in_float`: it starts from that
    file's quantization, fallback included), and those whose output it keeps float too; a layer it cannot trace is
    quantized, and said."""
    files = [exported.path] + ([exported.fp32] if exported.fp32 is not None else [])
    conv_of_bn = {bn: conv for conv, bn in pairs.items()}
    keep, missing = kept_modules(exported.kept_float, student, conv_of_bn, files)
    outputs, _ = kept_modules(exported.float_outputs, student, conv_of_bn, files)
    if keep:
        with_outputs = f" ({', '.join(outputs)} with its output float)" if outputs else ""
        say(f"QAD keeps in float the {len(keep)} layer(s) the export kept in float: {', '.join(keep)}{with_outputs}")
    if missing:
        say.warn(f"QAD quantizes {len(missing)} layer(s) the export kept in float: no student layer found for "
                 f"the node(s) {', '.join(missing[:5])}")
    return KeptFloat(keep, [o for o in outputs if o in keep])
