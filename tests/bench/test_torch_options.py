"""`distill bench CKPT --runtime torch`: precision, memory format and compile mode, with compile time apart.

A real ``torch.compile`` of even the tiny test_resnet takes ~110 s on this 2-core CPU (inductor's
C++ build), so the compile path is tested with ``torch.compile`` replaced by a recorder that
sleeps on the first call: the record must carry that one-off cost in ``compile_s`` and keep it
out of the timed latencies. The real compile runs in tests/gpu (on CUDA, with CUDA graphs).
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from distill.bench.run import TorchOptions, bench_model
from distill.bench.torch_runner import TorchRunner
from distill.cli import main
from distill.student.model import Student, default_spec, save_student


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_student(Student(default_spec("test_resnet", ["a", "b", "c"], 16)), tmp_path_factory.mktemp("ck") / "c")


def _bench(ckpt, **opts):
    return bench_model(ckpt, "torch", (1, 2), threads=1, warmup=1, iters=3, torch_options=TorchOptions(**opts))


def test_fp32_and_bf16_records_carry_the_new_fields(ckpt):
    for precision in ("fp32", "bf16"):
        recs = _bench(ckpt, device="cpu", precision=precision)
        assert [r["batch"] for r in recs] == [1, 2]
        for r in recs:
            assert (r["precision"], r["memory_format"], r["compile"]) == (precision, "contiguous", "none")
            assert r["model_meta"]["precision"] == precision and r["compile_s"] > 0
            assert r["providers"] == [f"torch {torch.__version__} cpu"]


def test_bf16_runner_really_runs_bf16_channels_last(ckpt):
    r = TorchRunner(ckpt, device="cpu", precision="bf16", memory_format="channels_last")
    conv = next(p for p in r.model.parameters() if p.dim() == 4)
    assert conv.dtype == torch.bfloat16 and conv.is_contiguous(memory_format=torch.channels_last)
    y = r.run(torch.randn(r.input_shape(2)).numpy())
    assert y.dtype == torch.bfloat16 and y.shape == (2, 3) and torch.isfinite(y.float()).all()


def test_compile_path_times_the_first_call_apart(ckpt, monkeypatch):
    calls = []

    def fake_compile(model, mode=None, dynamic=None):
        calls.append((mode, dynamic))
        state = {"first": True}

        def compiled(x):
            if state["first"]:  # what inductor does once per shape
                state["first"] = False
                time.sleep(0.3)
            return model(x)

        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    recs = _bench(ckpt, device="cpu", compile="default")
    assert calls == [(None, False)]  # mode "default" is torch's default; one compile per shape (dynamic=False)
    assert recs[0]["compile"] == "default" and recs[0]["compile_s"] >= 0.3
    assert recs[0]["latency_ms"]["max"] < 300, "the compile call leaked into the timed runs"
    _bench(ckpt, device="cpu", compile="max-autotune")
    assert calls[-1] == ("max-autotune", False)


@pytest.mark.parametrize("flags, needle", [
    (["--precision", "fp16", "--device", "cpu"], "--precision fp16 needs a CUDA GPU"),
    (["--compile", "reduce-overhead", "--device", "cpu"], "reduce-overhead captures CUDA graphs"),
])
def test_cpu_refusals_are_one_line(ckpt, capsys, flags, needle):
    assert main(["bench", str(ckpt), "--runtime", "torch", *flags]) == 1
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err


def test_torch_flags_refused_for_onnx(small_onnx, capsys):
    assert main(["bench", str(small_onnx), "--precision", "bf16"]) == 1
    assert "apply to --runtime torch only" in capsys.readouterr().err
