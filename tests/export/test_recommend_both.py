"""`distill export --int8-flavour both`: one recommendation for two runtimes (QA F4). With the ort-cpu int8 timed slower
than fp32 on this CPU and the tensorrt int8 within budget, the export's last line said only "ship int8 (tensorrt)": a
CPU user was told to ship int8. The reason now also names the other runtime's choice."""
from __future__ import annotations

from distill.export.recommend import Fp16Facts, Int8Facts, recommend


def _cpu(ratio: float) -> Int8Facts:
    return Int8Facts("ort-cpu", "onnxruntime-cpu", ratio, True, 0.0, 1.0, {}, ratio_high=ratio, timed="batch 1, 1 thread")


TRT = Int8Facts("tensorrt", "tensorrt", 4.9, False, 0.0, 1.0, {})


def test_a_tensorrt_int8_beside_a_slow_cpu_int8_says_fp32_for_the_cpu() -> None:
    rec = recommend([_cpu(1.31), TRT], Fp16Facts(0.0), 1.0)
    assert (rec.precision, rec.flavour) == ("int8", "tensorrt")  # the record's choice is unchanged
    assert "; for onnxruntime-cpu: ship fp32 (int8 (ort-cpu) is 1.31x fp32 latency" in rec.reason, rec.reason


def test_a_paying_cpu_int8_beside_a_tensorrt_int8_names_the_tensorrt_file_too() -> None:
    rec = recommend([_cpu(0.5), TRT], Fp16Facts(0.0), 1.0)
    assert (rec.precision, rec.flavour, rec.speedup_measured) == ("int8", "ort-cpu", True)
    assert rec.reason.endswith("; for tensorrt: int8 (tensorrt), its speed-up not measured here (time it on the device)")


def test_one_flavour_alone_names_no_other_runtime() -> None:
    for facts in ([_cpu(0.5)], [TRT]):
        assert "; for " not in recommend(facts, Fp16Facts(0.0), 1.0).reason
