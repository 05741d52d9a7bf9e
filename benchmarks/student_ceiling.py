"""The student's own train step on in-memory tensors: the ceiling a training run is measured against.

Forward + cross-entropy + backward + AdamW step on one fixed batch already on the device, NCHW
and channels_last, under bf16 autocast (or fp32): no data loading, no teacher, no logging.
``distill train`` at >= 0.8x of the channels_last figure (epoch boundaries included) is "fed".

    python benchmarks/student_ceiling.py mobilenetv3_large_100 --size 224 --batch 256
"""
from __future__ import annotations

import argparse
import time

import timm
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("arch", help="timm model name(s), comma-separated")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--steps", type=int, default=25, help="timed steps")
    p.add_argument("--warmup", type=int, default=8, help="untimed steps first (cudnn autotuning)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--formats", default="nchw,cl", help="memory formats to time: nchw, cl (channels_last)")
    p.add_argument("--cudnn-benchmark", default="on", help="on, off or off,on: cuDNN's autotuner (distill train "
                                                           "turns it on when run.deterministic is false)")
    a = p.parse_args()
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for arch, cl, bench in [(arch, fmt == "cl", mode == "on") for arch in a.arch.split(",")
                            for fmt in a.formats.split(",") for mode in a.cudnn_benchmark.split(",")]:
        torch.backends.cudnn.benchmark = bench
        fmt = torch.channels_last if cl else torch.contiguous_format
        m = timm.create_model(arch, num_classes=a.classes).to(dev, memory_format=fmt)
        opt = torch.optim.AdamW(m.parameters(), 1e-3, fused=True if dev.type == "cuda" else None)  # as distill train
        x = torch.randn(a.batch, 3, a.size, a.size, device=dev).contiguous(memory_format=fmt)
        y = torch.randint(0, a.classes, (a.batch,), device=dev)
        amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16")

        def step() -> None:
            with amp:
                loss = torch.nn.functional.cross_entropy(m(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(a.warmup):
            step()
        sync()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            step()
        sync()
        dt = (time.perf_counter() - t0) / a.steps
        print(f"CEILING {arch} {a.size}px {a.precision} batch {a.batch} channels_last={cl} "
              f"cudnn_benchmark={bench}: "
              f"{a.batch / dt:.0f} img/s ({dt * 1000:.1f} ms/step) on {a.device}")


if __name__ == "__main__":
    main()
