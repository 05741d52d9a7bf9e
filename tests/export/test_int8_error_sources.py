"""benchmarks/int8_error_sources.py: int8's error split into the weights' and the activations'."""
from __future__ import annotations

import torch
from test_qad import _calibrated, _images

from distill.export.fq_state import activation_fake_quants, fake_quants
from distill.student.model import load_student


def test_error_sources_quantizes_weights_or_activations_and_nothing_else(run_ckpt, tiny_root):
    """benchmarks/int8_error_sources.py: "weights only" leaves every activation in float, "activations only" every
    weight (and its bias), and each changes the logits."""
    from tests.test_benchmarks import _script

    bench = _script("int8_error_sources")
    student = load_student(run_ckpt)
    x = torch.from_numpy(_images(tiny_root, student.spec))
    model = _calibrated(student, "ort-cpu", x.numpy())
    every = fake_quants(model)
    activations = {id(fq) for fq in activation_fake_quants(model)}
    on = {}
    with torch.no_grad():
        for way in bench.WAYS:
            bench.set_way(model, way)
            on[way] = {id(fq) for fq in every if fq.fake_quant_enabled[0]}
            on[way + " logits"] = model(x)
        model.apply(torch.ao.quantization.disable_fake_quant)
        float_logits = model(x)
    assert on["int8"] == {id(fq) for fq in every} and on["activations only"] == activations
    assert on["weights only"] == on["int8"] - activations and on["weights only"] and activations
    for way in bench.WAYS:
        assert not torch.allclose(on[way + " logits"], float_logits)
    assert not torch.allclose(on["weights only logits"], on["activations only logits"])
