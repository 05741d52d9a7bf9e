"""Conv (+ BatchNorm) + ReLU6 fused for fake-quant, as onnxruntime's PTQ quantizes it.

torch.ao's pattern tables fuse Conv(+BN)+ReLU into one module whose output fake-quant sits after the ReLU, but
not ReLU6 (efficientnet_lite, mobilenetv2): it stays a separate op that *shares* the conv output's range. That
range includes the conv's negative outputs, so about half of uint8's 256 steps go to values ReLU6 zeroes, and the
exported graph has a Quantize/Dequantize pair between each Conv and its Clip. onnxruntime cannot fuse
Conv + Clip into one QLinearConv across that pair and runs every Clip in float between two more Q/DQ nodes
(efficientnet_lite0: 33 Clip islands, QAD's file 1.24x the PTQ file's latency; benchmarks/qad_placement.py).

onnxruntime's PTQ instead quantizes the Clip's output (a range inside [0, 6], zero point 0) and drops the
Clip, which that range already enforces. :func:`with_relu6_fusion` adds the same fusion to a torch.ao backend
config: Conv(+BN)+ReLU6 becomes :class:`ConvReLU62d` (BN folded, eval-mode fusion as for ReLU), trained as
:class:`QATConvReLU62d` with one output fake-quant after the ReLU6; the exported graph is DQ -> Conv -> Clip
-> Q, which onnxruntime fuses into a QLinearConv.
"""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn
from torch.ao.nn import intrinsic as nni
from torch.ao.nn.intrinsic import qat as nniqat
from torch.ao.nn.quantized import reference as nnqr
from torch.ao.quantization.backend_config import BackendConfig, BackendPatternConfig, ObservationType

# torch 2.13: BackendConfig's setters use this submodule without importing it (a fresh process that has not
# imported quantize_fx fails in get_native_backend_config); loaded here so this module works on its own
from torch.ao.quantization.backend_config import utils as _pattern_utils  # noqa: F401, E402
from torch.nn.utils.fusion import fuse_conv_bn_eval


class ConvReLU62d(nni._FusedModule):
    """Conv2d then ReLU6, one float module (what the fusion pass makes of the pattern)."""

    def __init__(self, conv: nn.Conv2d, relu6: nn.Module):
        super().__init__(conv, relu6)


class QATConvReLU62d(nniqat.ConvReLU2d):
    """:class:`ConvReLU62d` with fake-quant weights (torch.ao's ``ConvReLU2d`` QAT module, ReLU6 for ReLU)."""

    _FLOAT_MODULE = ConvReLU62d
    _FLOAT_RELU_MODULE = nn.ReLU6

    def forward(self, input: Tensor) -> Tensor:
        return F.relu6(self._conv_forward(input, self.weight_fake_quant(self.weight), self.bias))


def _fuse_conv_relu6(is_qat: bool, conv: nn.Conv2d, relu6: nn.Module) -> ConvReLU62d:
    return ConvReLU62d(conv, relu6)


def _fuse_conv_bn_relu6(is_qat: bool, conv: nn.Conv2d, bn: nn.BatchNorm2d, relu6: nn.Module) -> ConvReLU62d:
    # folded with the running statistics: the fake-quant model folds BN from step 0 (see fake_quant_model)
    return ConvReLU62d(fuse_conv_bn_eval(conv.eval(), bn.eval()), relu6)


def with_conv_fusion(config: BackendConfig, patterns: dict[tuple, Callable], fused: type, qat: type) -> BackendConfig:
    """``config`` (in place) with each of ``patterns`` (conv first) fused by its fuser into ``fused``, trained as
    ``qat`` with one output fake-quant, like Conv(+BN)+ReLU, using the dtypes of ``config``'s Conv2d."""
    conv = next(c for c in config.configs if c.pattern is nn.Conv2d)
    dtypes, observed = conv.dtype_configs, ObservationType.OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT
    for pattern, fuser in patterns.items():
        config.set_backend_pattern_config(BackendPatternConfig(pattern).set_dtype_configs(dtypes)
                                          .set_fuser_method(fuser).set_fused_module(fused))
    for module, qat_module in ((fused, qat), (qat, None)):
        entry = (BackendPatternConfig(module).set_observation_type(observed).set_dtype_configs(dtypes)
                 .set_root_module(nn.Conv2d).set_reference_quantized_module(nnqr.Conv2d))
        config.set_backend_pattern_config(entry.set_qat_module(qat_module) if qat_module is not None else entry)
    return config


def with_relu6_fusion(config: BackendConfig) -> BackendConfig:
    """``config`` (in place) with Conv(+BN)+ReLU6 fused like Conv(+BN)+ReLU, using the dtypes of its Conv2d."""
    return with_conv_fusion(config, {(nn.Conv2d, nn.ReLU6): _fuse_conv_relu6,
                                     (nn.Conv2d, nn.BatchNorm2d, nn.ReLU6): _fuse_conv_bn_relu6},
                            ConvReLU62d, QATConvReLU62d)
