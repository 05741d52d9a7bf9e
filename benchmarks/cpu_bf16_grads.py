# Usage: python benchmarks/cpu_bf16_grads.py [STEPS]  (run it several times: the NaN is per process)
"""Probe: CPU bf16 autocast conv weight grads vs fp32 recompute, repeated."""
import sys

import timm
import torch

torch.manual_seed(0)
m = timm.create_model("test_resnet", num_classes=4)
x = torch.rand(8, 3, 16, 16)
y = torch.randint(0, 4, (8,))
convs = [(n, mod) for n, mod in m.named_modules() if isinstance(mod, torch.nn.Conv2d)]
saved = {}
def hook(mod, inp, out):
    saved[mod] = (inp[0].detach(),)
    out.register_hook(lambda g, mod=mod: saved.__setitem__(mod, saved[mod] + (g.detach(),)))
for n, mod in convs:
    mod.register_forward_hook(hook)
N = int(sys.argv[1]) if len(sys.argv) > 1 else 30
nan_steps, maxrel = 0, 0.0
for r in range(N):
    m.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    torch.nn.functional.cross_entropy(out.float(), y).backward()
    bad = [n for n, mod in convs if not torch.isfinite(mod.weight.grad).all()]
    if bad:
        nan_steps += 1
    for n, mod in convs:
        if n in bad:
            continue
        i, g = saved[mod]
        ref = torch.nn.grad.conv2d_weight(i.float(), mod.weight.shape, g.float(), stride=mod.stride, padding=mod.padding,
                                          dilation=mod.dilation, groups=mod.groups)
        rel = ((mod.weight.grad - ref).norm() / (ref.norm() + 1e-12)).item()
        maxrel = max(maxrel, rel)
    if bad:
        print("rep", r, "nonfinite in", bad[:3])
print(f"{nan_steps}/{N} steps with non-finite conv weight grads; max rel err of finite grads vs fp32 recompute: {maxrel:.3g}")
