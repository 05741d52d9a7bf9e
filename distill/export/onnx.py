"""Student -> ONNX with a dynamic batch axis, and the metadata that makes the file self-describing.

The graph has one input ``input`` [B, 3, H, W] float32 (already normalized, see the
``distill.preprocess`` property) and the output ``logits`` [B, C] (plus ``embedding`` [B, D]
when asked for and the student has a projector). ``metadata_props`` carry, as JSON strings:

- ``distill.class_names``: the label of each logit;
- ``distill.head``: ``linear``, or ``text`` (open vocabulary: the classifier is the teacher's text
  embeddings of ``class_names``, a constant in the graph; ``distill export --classes`` re-targets it)
  and then ``distill.templates``, the teacher's prompt templates it was built with;
- ``distill.preprocess``: input size, mean/std, interpolation, resize/crop rule, layout;
- ``distill.provenance``: teacher, strategy, the run folder's name, the source checkpoint (relative to its run
  folder, ``checkpoints/best``, else its folder's name) and its weights' sha256: no path of the exporting machine,
  which a file shipped to a device would carry along (export.json keeps the absolute paths; files written before
  carry them here too, read alike). Nodes keep the dynamo exporter's name scopes, not its stack traces.
- ``distill.precision`` (fp32/fp16/int8) and, for int8, ``distill.int8_flavour``,
  ``distill.target_runtime`` and ``distill.quantization``.

:func:`read_metadata` gives them back as Python values (onnxruntime also exposes them as
``session.get_modelmeta().custom_metadata_map``, which is how the edge runner reads them).
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import Tensor, nn

from distill.errors import DistillError
from distill.student.model import Student, StudentSpec

INPUT_NAME = "input"
META_PREFIX = "distill."
METADATA_VERSION = "1"
_JSON_KEYS = ("class_names", "preprocess", "provenance", "outputs", "quantization", "templates")
EXPORTERS = ("dynamo", "torchscript")
STACK_TRACE = "pkg.torch.onnx.stack_trace"  # node metadata of the dynamo exporter: source file paths and lines

#: What torch says each time distill runs its ONNX exporters and fx quantization, expected and harmless in that use,
#: as (category, message, module it is attributed to): the legacy exporter's deprecation notices (its own and its
#: export-context helper's) and torch.ao.quantization's (distill runs both on purpose: the tracer is the dynamo
#: exporter's fallback and writes the QDQ graphs), fake-quant's Python branch on its observer / fake-quant flags (the
#: tracer notes it; the flags are fixed while exporting), and torch.export's own use of a deprecated pytree check.
#: Any other warning of these calls is shown. Listed from torch 2.13 on mobilenetv3_small_050, mobilenetv4_conv_small,
#: efficientnet_lite0, resnet18 and test_resnet, both exporters, both int8 flavours (nothing else was raised).
TORCH_NOTICES: tuple[tuple[type[Warning], str, str], ...] = (
    (DeprecationWarning, "You are using the legacy TorchScript-based ONNX export", r"distill\.export\."),
    (DeprecationWarning, "The feature will be removed", r"torch\.onnx\."),
    (DeprecationWarning, r"torch\.ao\.quantization is deprecated", r"(torch\.ao\.quantization|distill\.export)\."),
    (torch.jit.TracerWarning, "Converting a tensor to a Python boolean", r"torch\.ao\.quantization\.fake_quantize\Z"),
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"copyreg\Z"),
)


@contextlib.contextmanager
def torch_notices_quiet() -> Iterator[None]:
    """Inside: :data:`TORCH_NOTICES` are not shown, each matched by category, message and module; any other
    warning is."""
    with warnings.catch_warnings():
        for category, message, module in TORCH_NOTICES:
            warnings.filterwarnings("ignore", message, category, module)
        yield


class _ExportWrapper(nn.Module):
    """The student's inference path: [B, 3, H, W] -> logits [B, C] (, embedding [B, D])."""

    def __init__(self, student: Student, with_embedding: bool):
        super().__init__()
        self.student = student
        self.with_embedding = with_embedding

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        f = self.student.features(x)
        logits = self.student.classify(f)  # a text head's classifier becomes a constant of the graph
        if self.with_embedding:
            # invariant: export_onnx calls output_names first, which refuses with_embedding without a projector
            assert self.student.projector is not None
            return logits, self.student.projector(f)
        return logits


def output_names(student: Student, with_embedding: bool) -> list[str]:
    if with_embedding and student.projector is None:
        raise DistillError(f"--embedding: student '{student.spec.arch}' has no projector (embed_dim is unset)")
    return ["logits", "embedding"] if with_embedding else ["logits"]


def export_onnx(student: Student, path: str | Path, opset: int = 18, with_embedding: bool = False,
                exporter: str = "dynamo") -> dict[str, Any]:
    """Export ``student`` (eval mode, CPU, fp32) to ``path``; returns what was done.

    Args:
        student: the model.
        path: the ``.onnx`` file to write.
        opset: ONNX opset (>= 17).
        with_embedding: add the projector output ``embedding``.
        exporter: ``dynamo`` (torch.export based, torch's default) or ``torchscript``
            (the legacy tracer). When ``dynamo`` fails on a model, the tracer is tried and the
            returned ``exporter`` says so.

    Returns:
        ``{"exporter", "fallback_reason", "opset", "outputs", "input"}``.
    """
    if opset < 17:
        raise DistillError(f"opset must be >= 17 (got {opset})")
    if exporter not in EXPORTERS:
        raise DistillError(f"exporter must be one of {EXPORTERS}, got '{exporter}'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    outputs = output_names(student, with_embedding)
    model = _ExportWrapper(student.cpu().float().eval(), with_embedding).eval()
    h, w = student.spec.input_size
    example = (torch.randn(2, 3, h, w),)
    reason = None
    used = exporter
    if exporter == "dynamo":
        try:
            _export_dynamo(model, example, path, opset, outputs)
        except Exception as e:  # torch.export cannot capture every model; the tracer usually can
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            used = "torchscript"
    if used == "torchscript":
        _export_torchscript(model, example, path, opset, outputs)
    check(path)
    return {"exporter": used, "fallback_reason": reason, "opset": opset, "outputs": outputs,
            "input": {"name": INPUT_NAME, "shape": ["batch", 3, h, w], "dtype": "float32"}}


def _export_dynamo(model: nn.Module, example: tuple[Tensor], path: Path, opset: int, outputs: list[str]) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    # the dynamo exporter prints progress lines on stdout even with verbose=False
    with torch_notices_quiet(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(model, example, str(path), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=outputs, dynamic_shapes={"x": {0: batch}}, verbose=False, optimize=True,
                          external_data=False)


def _export_torchscript(model: nn.Module, example: tuple[Tensor], path: Path, opset: int, outputs: list[str]) -> None:
    axes = {INPUT_NAME: {0: "batch"}, **{o: {0: "batch"} for o in outputs}}
    with torch_notices_quiet(), torch.no_grad():
        torch.onnx.export(model, example, str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=outputs, dynamic_axes=axes, do_constant_folding=True)


def check(path: str | Path) -> None:
    """``onnx.checker`` (full check, with shape inference) or a one-line DistillError."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # ValidationError, InferenceError
        raise DistillError(f"{path}: onnx.checker failed: {str(e).splitlines()[0]}") from None


# --------------------------------------------------------------------------- metadata
def preprocess_metadata(spec: StudentSpec) -> dict[str, Any]:
    """How to turn an image into the ``input`` tensor (mirrors ``Student.preprocess()``)."""
    return {
        "input_name": INPUT_NAME, "layout": "NCHW", "color": "RGB", "dtype": "float32",
        "input_size": list(spec.input_size), "resize": f"shorter side to {min(spec.input_size)} px",
        "crop": "center", "interpolation": spec.interpolation,
        "scale": "pixel / 255", "mean": list(spec.mean), "std": list(spec.std),
        "normalize": "(pixel / 255 - mean) / std per channel",
    }


def build_metadata(spec: StudentSpec, precision: str, provenance: dict[str, Any], outputs: list[str],
                   extra: dict[str, Any] | None = None) -> dict[str, str]:
    """``metadata_props`` for one exported file (values JSON-encoded where structured)."""
    props: dict[str, Any] = {
        "version": METADATA_VERSION, "arch": spec.arch, "precision": precision, "class_names": list(spec.class_names),
        "preprocess": preprocess_metadata(spec), "provenance": provenance, "outputs": outputs,
    }
    if spec.head == "text":  # linear students' files carry exactly the keys they always had
        props["head"] = "text"
        props["templates"] = list(spec.provenance.get("templates") or [])
    props.update(extra or {})
    return {META_PREFIX + k: (json.dumps(v) if k in _JSON_KEYS else str(v)) for k, v in props.items()}


def set_metadata(model: onnx.ModelProto, props: dict[str, str], doc: str | None = None) -> onnx.ModelProto:
    """Add or replace ``props`` in ``model.metadata_props`` (other keys are kept)."""
    current = {p.key: p.value for p in model.metadata_props}
    current.update(props)
    onnx.helper.set_model_props(model, current)
    if doc:
        model.doc_string = doc
    return model


def strip_stack_traces(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the dynamo exporter's :data:`STACK_TRACE` from every node (graph, subgraphs, functions): the Python source
    files, paths of the exporting machine (its home, its virtual environment), of each node; nothing reads them."""
    def nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
        for node in graph.node:
            yield node
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    yield from nodes(sub)

    for node in [*nodes(model.graph), *(n for f in model.functions for n in f.node)]:
        kept = [p for p in node.metadata_props if p.key != STACK_TRACE]
        if len(kept) != len(node.metadata_props):
            del node.metadata_props[:]
            node.metadata_props.extend(kept)
    return model


def stamp(path: str | Path, props: dict[str, str], doc: str | None = None) -> None:
    """Write ``props`` into the ONNX file at ``path`` (in place), drop its stack traces (:func:`strip_stack_traces`:
    a file that is shipped carries no path of this machine) and re-check it."""
    model = onnx.load(str(path))
    set_metadata(strip_stack_traces(model), props, doc)
    onnx.save(model, str(path))
    check(path)


def read_metadata(model: str | Path | onnx.ModelProto) -> dict[str, Any]:
    """The ``distill.*`` metadata of an ONNX file, prefix stripped and JSON values decoded."""
    if not isinstance(model, onnx.ModelProto):
        if not Path(model).is_file():
            raise DistillError(f"{model}: ONNX file not found")
        model = onnx.load(str(model), load_external_data=False)
    out: dict[str, Any] = {}
    for p in model.metadata_props:
        if not p.key.startswith(META_PREFIX):
            continue
        key = p.key[len(META_PREFIX):]
        if key in _JSON_KEYS:
            try:
                out[key] = json.loads(p.value)
            except json.JSONDecodeError:
                out[key] = p.value
        else:
            out[key] = p.value
    return out
