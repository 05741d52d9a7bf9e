# Usage: python benchmarks/cpu_bf16_speed.py ARCH SIZE BATCH  (prints step time ratios vs fp32, one process, interleaved)
import sys
import time

import timm
import torch
import torch.nn.functional as F

arch, size, bs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
m = timm.create_model(arch, num_classes=10)
m.train()
x = torch.rand(bs, 3, size, size)
y = torch.randint(0, 10, (bs,))
class FP32Conv:
    def __enter__(self):
        self.orig = torch.nn.Conv2d._conv_forward
        def f(mod, inp, w, b):
            with torch.autocast("cpu", enabled=False):
                return self.orig(mod, inp.float(), w, b)
        torch.nn.Conv2d._conv_forward = f
    def __exit__(self, *a):
        torch.nn.Conv2d._conv_forward = self.orig
def step(mode):
    m.zero_grad()
    if mode == "fp32":
        out = m(x)
    elif mode == "bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(x)
    else:
        with FP32Conv(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(x)
    F.cross_entropy(out.float(), y).backward()
modes = ["fp32", "bf16", "bf16_convfp32"]
for md in modes:
    step(md)
    step(md)
t = {md: [] for md in modes}
for r in range(5):
    for md in modes:
        s = time.perf_counter()
        step(md)
        t[md].append(time.perf_counter() - s)
med = {md: sorted(v)[2] for md, v in t.items()}
print(arch, size, bs, {md: f"{med[md]/med['fp32']:.2f}x" for md in modes}, f"fp32 {med['fp32']*1000:.0f} ms")
