"""FLOP counts checked against counts by hand from the open_clip JSON configs' dimensions.

Convention (torch's FlopCounterMode): 2 FLOPs per multiply-add, matrix products and
convolutions only (norms, softmax, activations, pooling and residual adds are not counted).

ViT (open_clip ``VisionTransformer``), width w, L layers, patch p, image HxW, mlp ratio r,
n = (H/p)(W/p) + 1 tokens (class token), output dim E:
    patch conv   2 * (H/p)(W/p) * (3 p^2) * w
    per layer    2 n w (3w)        q, k, v projections
               + 2 n^2 w           Q K^T (summed over heads: heads * n^2 * head_dim)
               + 2 n^2 w           attention x V
               + 2 n w^2           output projection
               + 2 * 2 n w (r w)   MLP up and down
    proj         2 w E             (pooled class token only)

ResNet (open_clip ``ModifiedResNet``), width w, image S, a conv k x k Cin -> Cout at HxW
output costs 2 Cin Cout k^2 H W:
    stem         3x3 s2 3 -> w/2 at S/2; 3x3 w/2 -> w/2 and w/2 -> w at S/2; avgpool 2 -> S/4
    stage i      planes P = w 2^i, stride 1 for i = 0 else 2, blocks[i] Bottlenecks:
                 1x1 Cin -> P and 3x3 P -> P at the input size, avgpool(stride),
                 1x1 P -> 4P at the output size; first block: downsample avgpool + 1x1 Cin -> 4P
    attnpool     n = (S/32)^2 + 1 tokens of E0 = 32 w: q, k, v 3 * 2 n E0^2, QK^T and x V 2 * 2 n^2 E0,
                 c_proj 2 n E0 E
"""
from __future__ import annotations

import json

import torch

from distill.teacher.clip import _CONFIG_DIR, register_model_configs
from distill.utils.flops import count_flops


def _vit_hand(cfg: dict) -> int:
    v, E = cfg["vision_cfg"], cfg["embed_dim"]
    w, L, p, S = v["width"], v["layers"], v["patch_size"], v["image_size"]
    r = v.get("mlp_ratio", 4.0)
    g = S // p
    n = g * g + 1
    patch = 2 * g * g * 3 * p * p * w
    layer = 2 * n * w * 3 * w + 2 * n * n * w * 2 + 2 * n * w * w + 2 * 2 * n * w * int(r * w)
    return patch + L * layer + 2 * w * E


def _resnet_hand(cfg: dict) -> int:
    v, E = cfg["vision_cfg"], cfg["embed_dim"]
    w, S, blocks = v["width"], v["image_size"], v["layers"]

    def conv(cin, cout, k, hw):
        return 2 * cin * cout * k * k * hw * hw

    hw = S // 2
    total = conv(3, w // 2, 3, hw) + conv(w // 2, w // 2, 3, hw) + conv(w // 2, w, 3, hw)
    hw //= 2
    cin = w
    for i, nb in enumerate(blocks):
        P, stride = w * 2 ** i, 1 if i == 0 else 2
        for b in range(nb):
            s = stride if b == 0 else 1
            out = hw // s
            total += conv(cin, P, 1, hw) + conv(P, P, 3, hw) + conv(P, 4 * P, 1, out)
            if b == 0:  # stride > 1 or channel change: avgpool + 1x1
                total += conv(cin, 4 * P, 1, out)
            cin, hw = 4 * P, out
    n, E0 = (S // 32) ** 2 + 1, 32 * w
    return total + 3 * 2 * n * E0 * E0 + 2 * 2 * n * n * E0 + 2 * n * E0 * E


def _tower(name: str):
    import open_clip

    register_model_configs()
    cfg = json.loads((_CONFIG_DIR / f"{name}.json").read_text())
    torch.manual_seed(0)
    return cfg, open_clip.create_model(name, pretrained=None).visual


def test_vit_flops_match_hand_count():
    """Fails on the old counter: eval + no_grad MHA fast path hid q/k/v and attention (~1/3)."""
    cfg, visual = _tower("distill-demo-vit")
    s = cfg["vision_cfg"]["image_size"]
    assert count_flops(visual, (s, s)) == _vit_hand(cfg)


def test_resnet_flops_match_hand_count():
    """ModifiedResNet's attention pool uses SDPA, which on CPU torch's registry did not count."""
    cfg, visual = _tower("distill-demo-rn")
    s = cfg["vision_cfg"]["image_size"]
    assert count_flops(visual, (s, s)) == _resnet_hand(cfg)


def test_count_leaves_mode_and_fastpath_alone():
    _, visual = _tower("distill-demo-vit")
    visual.train()
    count_flops(visual, (32, 32))
    assert visual.training
    assert torch.backends.mha.get_fastpath_enabled()
