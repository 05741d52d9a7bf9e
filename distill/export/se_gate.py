"""Squeeze-excite's hard-sigmoid gate folded into its conv for fake-quant, as the export's int8 file computes it.

mobilenetv3's gate is ``hardsigmoid(conv_expand(.)) = clamp(conv_expand(.) / 6 + 1/2, 0, 1)``. The export rewrites
it before quantizing (:func:`distill.export.int8_graph.fold_gates_into_convs`): the 1/6 and 1/2 go into the conv's
weight and bias, the gate becomes ``Clip(0, 1)``, and onnxruntime runs it inside the QLinearConv with one range on
[0, 1] after the clip. QAD's fake-quant student computes the same (:func:`gates_as_clamps`): the conv is scaled the
same way, the gate becomes ``Hardtanh(0, 1)``, and :class:`ConvGate2d` (conv then that clamp, one output fake-quant
after it) is fused like Conv + ReLU6 (:mod:`distill.export.relu6`). Without it the gate's HardSigmoid ran in float
in QAD's file, between a Q/DQ pair on the conv's whole output range.

The tuned checkpoint keeps the student's own architecture: :func:`unfold` takes the scale back out of the weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.nn import intrinsic as nni
from torch.ao.nn.intrinsic import qat as nniqat
from torch.ao.quantization.backend_config import BackendConfig

from distill.export.fq_state import module_name
from distill.export.relu6 import with_conv_fusion

ALPHA, BETA = 1.0 / 6.0, 0.5  # torch's Hardsigmoid: clamp(x * ALPHA + BETA, 0, 1), as ONNX HardSigmoid writes it


class ConvGate2d(nni._FusedModule):
    """Conv2d then Hardtanh (the folded gate's clamp to [0, 1]), one float module (what the fusion pass makes of
    the pattern)."""

    def __init__(self, conv: nn.Conv2d, clamp: nn.Hardtanh):
        super().__init__(conv, clamp)


class QATConvGate2d(nniqat.ConvReLU2d):
    """:class:`ConvGate2d` with fake-quant weights (torch.ao's ``ConvReLU2d`` QAT module, the Hardtanh's clamp for
    the ReLU). Any Conv + Hardtanh fuses this way, as onnxruntime's PTQ absorbs any Clip into its conv's range."""

    _FLOAT_MODULE = ConvGate2d
    _FLOAT_RELU_MODULE = nn.Hardtanh
    min_val, max_val = 0.0, 1.0

    folded_gate = False  # True: a gate :func:`gates_as_clamps` folded into this conv (its weights are scaled)

    # torch's stub declares from_float a staticmethod taking cls; torch.ao calls it as this classmethod
    @classmethod
    def from_float(  # type: ignore[override]
            cls, mod: ConvGate2d, use_precomputed_fake_quant: bool = False) -> QATConvGate2d:
        qat = super().from_float(mod, use_precomputed_fake_quant)
        clamp = mod[1]
        assert isinstance(clamp, nn.Hardtanh)  # invariant: ConvGate2d is (Conv2d, Hardtanh), as _fuse builds it
        qat.min_val, qat.max_val = float(clamp.min_val), float(clamp.max_val)
        qat.folded_gate = bool(getattr(clamp, "folded_gate", False))
        return qat

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.hardtanh(self._conv_forward(input, self.weight_fake_quant(self.weight), self.bias),
                          self.min_val, self.max_val)


def _fuse(is_qat: bool, conv: nn.Conv2d, clamp: nn.Hardtanh) -> ConvGate2d:
    return ConvGate2d(conv, clamp)


def with_gate_fusion(config: BackendConfig) -> BackendConfig:
    """``config`` (in place) with Conv + Hardtanh fused like Conv + ReLU, using its Conv2d's dtypes (a Hardtanh
    module, not a class of ours: torch.ao's tracer keeps only torch.nn modules as leaves, and traces others into
    functions that no module pattern matches)."""
    return with_conv_fusion(config, {(nn.Conv2d, nn.Hardtanh): _fuse}, ConvGate2d, QATConvGate2d)


def gate_pairs(traced: torch.fx.GraphModule) -> list[tuple[str, str]]:
    """(conv, gate) module names of each ``Hardsigmoid(Conv2d(.))`` whose conv output has no other use."""
    out = []
    for node in traced.graph.nodes:
        if node.op != "call_module" or type(traced.get_submodule(module_name(node))) is not nn.Hardsigmoid:
            continue
        src = node.args[0]
        if (isinstance(src, torch.fx.Node) and src.op == "call_module" and len(src.users) == 1
                and type(traced.get_submodule(module_name(src))) is nn.Conv2d
                and traced.get_submodule(module_name(src)).bias is not None):
            out.append((module_name(src), module_name(node)))
    return out


@torch.no_grad()
def gates_as_clamps(traced: torch.fx.GraphModule) -> list[str]:
    """Fold each gate of :func:`gate_pairs` into its conv (weight x ALPHA, bias x ALPHA + BETA) and make the gate
    ``Hardtanh(0, 1)``, in place (``traced`` holds its own copy of the student); returns the convs' names."""
    convs = []
    for conv_name, gate_name in gate_pairs(traced):
        conv = traced.get_submodule(conv_name)
        # invariant: gate_pairs lists only nn.Conv2d convs with a bias
        assert isinstance(conv, nn.Conv2d) and conv.bias is not None
        conv.weight.mul_(ALPHA)
        conv.bias.mul_(ALPHA).add_(BETA)
        owner, _, attr = gate_name.rpartition(".")
        clamp = nn.Hardtanh(0.0, 1.0)
        clamp.folded_gate = True  # type: ignore[assignment]  # read by QATConvGate2d.from_float
        setattr(traced.get_submodule(owner) if owner else traced, attr, clamp)
        convs.append(conv_name)
    traced.recompile()
    return convs


def unfold(name: str, value: torch.Tensor) -> torch.Tensor:
    """A gate conv's own ``weight`` or ``bias`` (``name``'s last part) from the folded one (the fold undone)."""
    return value / ALPHA if name.endswith("weight") else (value - BETA) / ALPHA


def gate_params(model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters of the folded gate convs in a fake-quant ``model``."""
    return [p for m in model.modules() if getattr(m, "folded_gate", False) for p in m.parameters() if p.requires_grad]


def gate_lr_factor(optimizer: str) -> float:
    """The learning-rate factor under which training the folded weights (x ALPHA) moves the conv's own weights as
    training them unfolded would: SGD steps scale with the gradient (ALPHA squared), Adam's do not (ALPHA).
    Without it the gate convs took 36x SGD's steps and QAD diverged on mobilenetv3_large_100 (RESULTS.md)."""
    return ALPHA ** 2 if optimizer == "sgd" else ALPHA
