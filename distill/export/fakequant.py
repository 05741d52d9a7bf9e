"""A student fake-quantized the way an int8 flavour runs it (torch.ao FX), and its QDQ ONNX.

The fake-quant model mirrors :mod:`distill.export.quantize`'s onnxruntime recipe per flavour:

- weights: int8, symmetric, per output channel, integers in [-127, 127] (scale = max |w| / 127),
  what ``quantize_static(per_channel=True, WeightSymmetric=True)`` computes for both flavours; in [-64, 64]
  (scale = max |w| / 64) with ``reduce_range`` (:data:`distill.export.qdq_graph.REDUCED_WEIGHTS`);
- activations: ``ort-cpu`` uint8 asymmetric per tensor (0..255, a zero point);
  ``tensorrt`` int8 symmetric per tensor (zero point 0);
- BatchNorm folded into the convolutions first (onnxruntime's ``quant_pre_process`` folds it too,
  so the weights quantized here are the folded weights the int8 graph holds);
- ``ort-cpu``: each Conv/Linear bias rounded to the int32 grid of scale = input scale x weight scale
  (:class:`Int32Bias`), the bias :func:`export_qdq` writes; without it torch and onnxruntime differ by
  a fraction of a step in every biased output, which ~50 layers amplify into different top-1 classes;
- ``mean`` (global pooling in squeeze-excite) computed from its fake-quantized input, its output getting a range
  of its own at the next conv's input: what onnxruntime's QLinearGlobalAveragePool computes in the PTQ file
  (the mean is written as GlobalAveragePool there, :mod:`distill.export.int8_graph`, and in the file
  :func:`export_qdq` writes). A mean re-quantized on its input's coarse grid (torch.ao's default, "shared
  qparams") made onnxruntime's fused kernels disagree with its own float Q/DQ graph.

:func:`export_qdq` writes the fake-quant graph with torch's ONNX exporter, which turns each
fake-quant into QuantizeLinear/DequantizeLinear with the *trained* scales and zero points, then
stores each weight as its int8 tensor feeding a DequantizeLinear (as onnxruntime's PTQ does) and,
for ``ort-cpu``, each Conv/Gemm bias as int32 with scale = input scale x weight scale (what
onnxruntime's QLinearConv fusion expects). See docs/qad.md for why torch.ao.
"""
from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path
from typing import Iterable, Iterator

import onnx
import torch
from timm.layers import BatchNormAct2d
from torch import nn
from torch.ao.quantization import (
    FakeQuantize,
    MinMaxObserver,
    PerChannelMinMaxObserver,
    QConfig,
    QConfigMapping,
)
from torch.ao.quantization.backend_config import BackendConfig, get_native_backend_config, get_tensorrt_backend_config
from torch.ao.quantization.quantize_fx import fuse_fx, prepare_qat_fx
from torch.nn.utils import parametrize

from distill.errors import DistillError
from distill.export.fq_state import fake_quants, module_name, set_observers
from distill.export.onnx import INPUT_NAME, check, torch_notices_quiet
from distill.export.qdq_graph import REDUCED_WEIGHTS, tidy_qdq
from distill.export.quantize import Int8Flavour
from distill.export.relu6 import with_relu6_fusion
from distill.export.se_gate import gates_as_clamps, unfold, with_gate_fusion
from distill.student.model import Student

WEIGHT_QMIN, WEIGHT_QMAX = -127, 127  # onnxruntime's symmetric int8 weights (and TensorRT's rule)


def qconfig_for(flavour: Int8Flavour) -> QConfig:
    """The torch.ao QConfig matching ``flavour``'s onnxruntime QDQ recipe (see module doc)."""
    lo, hi = REDUCED_WEIGHTS if flavour.reduce_range else (WEIGHT_QMIN, WEIGHT_QMAX)
    weight = FakeQuantize.with_args(observer=PerChannelMinMaxObserver, quant_min=lo, quant_max=hi,
                                    dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
    if flavour.activation_type == "QUInt8" and not flavour.activation_symmetric:
        act = FakeQuantize.with_args(observer=MinMaxObserver, quant_min=0, quant_max=255,
                                     dtype=torch.quint8, qscheme=torch.per_tensor_affine, reduce_range=False)
    elif flavour.activation_type == "QInt8" and flavour.activation_symmetric:
        act = FakeQuantize.with_args(observer=MinMaxObserver, quant_min=-128, quant_max=127,
                                     dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, reduce_range=False)
    else:
        raise DistillError(f"int8 flavour '{flavour.name}': no fake-quant recipe for {flavour.activation_type} "
                           f"activations (symmetric={flavour.activation_symmetric})")
    return QConfig(activation=act, weight=weight)


def qconfig_mapping_for(flavour: Int8Flavour) -> QConfigMapping:
    """Every op fake-quantized as ``qconfig_for(flavour)`` says, except ``mean``: no shared range of its own; the
    next op's input range quantizes it, as QLinearGlobalAveragePool's output range does in the file (module doc)."""
    return (QConfigMapping().set_global(qconfig_for(flavour))
            .set_object_type("mean", None).set_object_type(torch.mean, None))


def backend_config_for(flavour: Int8Flavour) -> BackendConfig:
    """torch.ao's pattern table: which ops get fake-quant and with which dtypes. The native (fbgemm)
    table allows only uint8 activations, so symmetric int8 activations use torch's TensorRT table. Both get
    Conv(+BN)+ReLU6 fusion (:mod:`distill.export.relu6`), which torch.ao lacks and onnxruntime's PTQ does."""
    table = get_tensorrt_backend_config() if flavour.activation_symmetric else get_native_backend_config()
    # Conv(+BN)+ReLU6 fused as Conv(+BN)+ReLU (efficientnet_lite, mobilenetv2); a folded SE gate too (mobilenetv3)
    return with_gate_fusion(with_relu6_fusion(table))


class _Logits(nn.Module):
    """The student's inference path, [B, 3, H, W] -> logits [B, C], as one traceable module."""

    def __init__(self, student: Student):
        super().__init__()
        self.student = student

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student.classify(self.student.features(x))


def _plain_batchnorms(model: nn.Module) -> nn.Module:
    """timm's ``BatchNormAct2d`` (BN + drop + act in one module) as ``Sequential(BatchNorm2d, [drop], [act])``, in
    place, so torch.ao sees a plain BatchNorm2d after the conv and folds it (as onnxruntime folds the
    ONNX BatchNormalization into the Conv before quantizing)."""
    for name, child in list(model.named_children()):
        if isinstance(child, BatchNormAct2d):
            bn = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            bn.load_state_dict(child.state_dict())
            rest = [m for m in (child.drop, child.act) if not isinstance(m, nn.Identity)]  # conv-bn-relu must be
            setattr(model, name, nn.Sequential(bn, *rest))  # adjacent for torch.ao to fuse the ReLU into the conv
        else:
            _plain_batchnorms(child)
    return model


def _without_identities(model: nn.Module) -> torch.fx.GraphModule:
    """``model`` traced by torch.fx with every ``nn.Identity`` call taken out. timm puts placeholders between a
    BatchNorm and its ReLU (resnet's ``drop_block``): they hide Conv+BN+ReLU from torch.ao's fusion, so the ReLU
    shared the conv output's range (negatives included) and ran in float between Q/DQ pairs in onnxruntime,
    whose PTQ drops Identity nodes first (``quant_pre_process``) and fuses the ReLU."""
    traced = torch.fx.symbolic_trace(model)
    for node in list(traced.graph.nodes):
        if node.op == "call_module" and isinstance(traced.get_submodule(node.target), nn.Identity):
            node.replace_all_uses_with(node.args[0])
            traced.graph.erase_node(node)
    traced.recompile()
    traced.delete_all_unused_submodules()
    return traced


def _untraceable(student: Student, e: Exception) -> DistillError:
    return DistillError(f"student '{student.spec.arch}': torch.fx cannot trace it for fake-quant "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
                        "QAD supports FX-traceable CNN students")


def conv_bn_pairs(student: Student) -> dict[str, str]:
    """Conv module name -> the BatchNorm module name folded into it (names in ``student``), from an FX trace."""
    try:
        traced = torch.fx.symbolic_trace(_plain_batchnorms(_Logits(copy.deepcopy(student).cpu().eval())))
    except Exception as e:  # torch.fx raises TraceError and many others from deep inside a model
        raise _untraceable(student, e) from None
    modules = dict(traced.named_modules())
    pairs = {}
    for node in traced.graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], nn.BatchNorm2d):
            src = node.args[0]
            if (isinstance(src, torch.fx.Node) and src.op == "call_module" and len(src.users) == 1
                    and isinstance(modules[src.target], nn.Conv2d)):
                bn = module_name(node).removeprefix("student.")
                # a BatchNormAct2d became Sequential(bn, ...): its BN is the module itself in the student
                pairs[module_name(src).removeprefix("student.")] = bn[:-2] if bn.endswith(".0") and \
                    isinstance(student.get_submodule(bn[:-2]), BatchNormAct2d) else bn
    return pairs


def fake_quant_model(student: Student, flavour: Int8Flavour, keep_float: Iterable[str] = (),
                     float_outputs: Iterable[str] = ()) -> torch.fx.GraphModule:
    """A copy of ``student`` with BatchNorm folded and fake-quant inserted (observers on, fake-quant on).

    BatchNorm is folded into the conv weights before fake-quant (its statistics are frozen from the
    start, the QAT practice of freezing BN, here from step 0 because the int8 graph holds folded weights).
    ``keep_float``: conv / linear module names of ``student`` left out of the int8 recipe (:func:`keep_in_float`),
    as the export's float fallback left them (:func:`distill.export.kept_float.kept_modules`); a name that is no such
    module is an error. ``float_outputs``: those of them whose output the export keeps float too (its activation
    runs in float, :mod:`distill.export.float_outputs`).

    Raises:
        DistillError: the student cannot be traced by torch.fx (data-dependent control flow).
    """
    model = _plain_batchnorms(_Logits(copy.deepcopy(student).cpu().float().eval())).eval()
    h, w = student.spec.input_size
    example = (torch.randn(2, 3, h, w),)
    try:
        with torch_notices_quiet():
            traced = _without_identities(model)
            gates_as_clamps(traced)  # squeeze-excite's hard-sigmoid gate folded into its conv, as the export does
            folded = fuse_fx(traced)  # eval mode: BN folded into the preceding conv
            prepared = prepare_qat_fx(folded.train(), qconfig_mapping_for(flavour), example,
                                      backend_config=backend_config_for(flavour))
    except Exception as e:  # torch.fx raises TraceError and many others from deep inside a model
        raise _untraceable(student, e) from None
    keep_in_float(prepared, keep_float, ort_requantizes=flavour.name == "ort-cpu", float_outputs=float_outputs,
                  reduce_range=flavour.reduce_range)
    if flavour.extra_options.get("QuantizeBias", True):
        quantize_biases_int32(prepared)  # a kept layer's float weights (identity fake-quant) keep a float bias
    return prepared


def ort_requantized_weight(reduce_range: bool = False) -> FakeQuantize:
    """The weight grid of a "float" layer between int8 layers on ONNX Runtime CPU: int8 per tensor, asymmetric over
    [min(w, 0), max(w, 0)], as onnxruntime quantizes it at load and the export writes it (:mod:`.ort_weights`);
    ``reduce_range``: on [-64, 64], as the export writes it then."""
    lo, hi = REDUCED_WEIGHTS if reduce_range else (-128, 127)
    return FakeQuantize(observer=MinMaxObserver, quant_min=lo, quant_max=hi, dtype=torch.qint8,
                        qscheme=torch.per_tensor_affine, reduce_range=False)


def keep_in_float(model: torch.fx.GraphModule, names: Iterable[str], ort_requantizes: bool = False,
                  float_outputs: Iterable[str] = (), reduce_range: bool = False) -> None:
    """Leave the conv / linear modules ``names`` (the student's names) of the fake-quant ``model`` out of the int8
    recipe, in place, as onnxruntime's ``nodes_to_exclude`` leaves the export's fallback layers: no per-channel
    weight fake-quant, and float input and output where no int8 op is on the other side (an activation fake-quant
    between the graph's input or output and kept layers only becomes the identity: the first conv reads the float
    image, a kept head writes float logits). A kept layer between int8 layers still reads and writes quantized
    activations, as in the export's file.

    ``ort_requantizes`` (ort-cpu): a kept layer between int8 layers (its input and its one consumer fake-quantized)
    gets :func:`ort_requantized_weight` (``reduce_range``: its 7-bit grid), as the export's file (:mod:`.ort_weights`);
    other kept weights stay float.

    ``float_outputs`` (some of ``names``): the fake-quant after each of these layers becomes the identity, its
    activation reads the float output and only the activation's output is quantized, as in the export's file when
    its fallback kept the layer with its output float (:mod:`.float_outputs`); their weights stay float.

    Raises:
        DistillError: a name is not a fake-quantized conv or linear layer of ``model``, or a ``float_outputs`` name
            is not among ``names``.
    """
    kept = {f"student.{n}" for n in names}
    outputs = {f"student.{n}" for n in float_outputs}
    if outputs - kept:
        raise DistillError(f"keep in float: float output of '{sorted(outputs - kept)[0].removeprefix('student.')}', "
                           "a layer not kept in float")
    modules = dict(model.named_modules())
    for name in sorted(kept):
        if not isinstance(getattr(modules.get(name), "weight_fake_quant", None), FakeQuantize):
            raise DistillError(f"keep in float: '{name.removeprefix('student.')}' is not a conv or linear layer of "
                               "the fake-quant student")

    def floating(node: torch.fx.Node) -> bool:  # a float end: the graph's input or output, or a kept layer
        return node.op in ("placeholder", "output") or (node.op == "call_module" and node.target in kept)

    for node in model.graph.nodes:
        if (node.op == "call_module" and isinstance(model.get_submodule(str(node.target)), FakeQuantize)
                and isinstance(node.args[0], torch.fx.Node) and floating(node.args[0])
                and all(floating(user) for user in node.users)):
            model.add_submodule(str(node.target), nn.Identity())

    def fake_quantized(node: object) -> bool:
        return (isinstance(node, torch.fx.Node) and node.op == "call_module"
                and isinstance(model.get_submodule(str(node.target)), FakeQuantize))

    for node in model.graph.nodes:
        if node.op == "call_module" and node.target in outputs:
            for user in node.users:
                if fake_quantized(user):
                    model.add_submodule(str(user.target), nn.Identity())

    for node in model.graph.nodes:
        if node.op == "call_module" and node.target in kept:
            # onnxruntime's rule: a quantized input, and an output whose one consumer is quantized
            between_int8 = fake_quantized(node.args[0]) and len(node.users) == 1 and fake_quantized(next(iter(node.users)))
            modules[str(node.target)].weight_fake_quant = (ort_requantized_weight(reduce_range)
                                                           if ort_requantizes and between_int8 else nn.Identity())


class Int32Bias(nn.Module):
    """A Conv/Linear bias as the int8 graph holds it (a ``torch.nn.utils.parametrize`` parametrization):
    ``rint(b / s)`` as int32, ``s = float32(input scale x weight scale)``, dequantized in float32, exactly as
    :func:`distill.export.qdq_graph.quantize_biases` writes it and onnxruntime reads it; the gradient
    passes straight through to the float bias."""

    def __init__(self, inputs: FakeQuantize, weights: FakeQuantize):
        super().__init__()
        self._scales = (inputs, weights)  # a tuple: references to modules of the graph, not submodules

    def forward(self, bias: torch.Tensor) -> torch.Tensor:
        inputs, weights = self._scales
        scale = torch.broadcast_to((inputs.scale.double() * weights.scale.double()).float().reshape(-1), bias.shape)
        q = torch.clamp(torch.round(bias.double() / scale.double()), -2**31, 2**31 - 1)
        return bias + (q.float() * scale - bias).detach()


def quantize_biases_int32(model: torch.fx.GraphModule) -> int:
    """Give every fake-quant Conv/Linear whose input is fake-quantized an :class:`Int32Bias`; returns how many."""
    count = 0
    for node in model.graph.nodes:
        if node.op != "call_module" or not node.args or not isinstance(node.args[0], torch.fx.Node):
            continue
        mod, src = model.get_submodule(module_name(node)), node.args[0]
        weight_fq = getattr(mod, "weight_fake_quant", None)
        if getattr(mod, "bias", None) is None or not isinstance(weight_fq, FakeQuantize):
            continue
        fq = model.get_submodule(module_name(src)) if src.op == "call_module" else None
        if isinstance(fq, FakeQuantize):  # (modules shared under two names are listed once by named_modules)
            parametrize.register_parametrization(mod, "bias", Int32Bias(fq, weight_fq))
            count += 1
    return count


@contextlib.contextmanager
def plain_biases(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with plain float bias parameters (the trained values, no :class:`Int32Bias`) inside the block,
    in place, and the :class:`Int32Bias` back after it (the same bias parameters: an optimizer's still hold)."""
    removed: list[tuple[nn.Module, nn.Module]] = []
    for m in list(model.modules()):
        if parametrize.is_parametrized(m, "bias"):
            # torch types a module's attributes Tensor | Module; is_parametrized says this is a ParametrizationList
            removed.append((m, m.parametrizations.bias[0]))  # type: ignore[union-attr, index, arg-type]
            parametrize.remove_parametrizations(m, "bias", leave_parametrized=False)
    try:
        yield model
    finally:
        for m, p in removed:
            parametrize.register_parametrization(m, "bias", p)


@torch.no_grad()
def tuned_student(model: nn.Module, student: Student, pairs: dict[str, str]) -> Student:
    """A copy of ``student`` holding ``model``'s trained float weights (fake-quant off: its fp32 twin).

    A folded conv's weight goes back to the conv and its bias to the BatchNorm, which becomes the
    identity (mean 0, var 1 - eps, scale 1): same module names, so ``save_student`` / ``load_student`` work.
    A conv ``model`` folded a squeeze-excite gate into (:mod:`distill.export.se_gate`) gets its weight and bias
    with the fold taken out.
    """
    out = copy.deepcopy(student).cpu().float().eval()
    gates = {n.removeprefix("student.") for n, m in model.named_modules() if getattr(m, "folded_gate", False)}
    own = dict(out.named_parameters())
    with plain_biases(model):
        params = list(model.named_parameters())
    for name, param in params:
        key = name.removeprefix("student.")
        conv = key.rsplit(".", 1)[0]
        if conv in pairs:
            bn, layer = out.get_submodule(pairs[conv]), out.get_submodule(conv)
            assert isinstance(bn, nn.BatchNorm2d) and isinstance(layer, nn.Conv2d)  # invariant: as conv_bn_pairs found
            if key.endswith(".weight"):
                layer.weight.copy_(param)
            else:
                bn.bias.copy_(param)
                bn.weight.fill_(1.0)
                # invariant: fake_quant_model folded this BN into its conv, which needs its running statistics
                assert bn.running_mean is not None and bn.running_var is not None
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                if layer.bias is not None:
                    layer.bias.zero_()
        elif key in own:
            own[key].copy_(unfold(key, param) if conv in gates else param)
        else:
            raise DistillError(f"QAD: trained parameter '{name}' has no place in the student '{student.spec.arch}'")
    return out


@contextlib.contextmanager
def _onnx_weight_range(model: nn.Module) -> Iterator[None]:
    """ONNX's exporter accepts only (-128, 127) int8 fake-quant; weights quantized to [-127, 127] (or [-64, 64],
    reduce_range) with frozen scales give the same integers either way, so widen the clamp while exporting."""
    changed = []
    for fq in fake_quants(model):
        if fq.dtype == torch.qint8 and (fq.quant_min, fq.quant_max) != (-128, 127):
            changed.append((fq, fq.quant_min, fq.quant_max))
            fq.quant_min, fq.activation_post_process.quant_min = -128, -128
            fq.quant_max, fq.activation_post_process.quant_max = 127, 127
    try:
        yield
    finally:
        for fq, lo, hi in changed:
            fq.quant_min, fq.activation_post_process.quant_min = lo, lo
            fq.quant_max, fq.activation_post_process.quant_max = hi, hi


def export_qdq(model: nn.Module, path: str | Path, input_size: tuple[int, int], flavour: Int8Flavour,
               opset: int = 18) -> Path:
    """Write the fake-quant ``model`` (observers frozen) as a QDQ ONNX with int8 weight initializers.

    Args:
        model: from :func:`fake_quant_model`, trained and calibrated.
        path: the ``.onnx`` to write.
        input_size: (H, W).
        flavour: decides whether Conv/Gemm biases become int32 (``QuantizeBias``, ort-cpu) or stay float.
        opset: >= 13 (per-axis QuantizeLinear).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    set_observers(model, False)
    h, w = input_size
    # plain_biases: tidy_qdq's quantize_biases writes the int32 bias Int32Bias computes, from the float bias
    with plain_biases(model), _onnx_weight_range(model), torch_notices_quiet(), torch.no_grad(), \
            contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(model, (torch.randn(2, 3, h, w),), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=["logits"],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, "logits": {0: "batch"}}, do_constant_folding=True)
    proto = onnx.load(str(path))
    tidy_qdq(proto, quantize_bias=flavour.extra_options.get("QuantizeBias", True))
    onnx.save(proto, str(path))
    check(path)
    return path
