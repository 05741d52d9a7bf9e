"""FLOPs of candidate students against the demo teacher and a real CLIP image tower (issue 3's <= 5% goal).

Prints, per (timm model, input size), the FLOPs of one forward pass of the student as distill
builds it (``Student``: backbone + head, no projector) and its ratio to the demo teacher's image
tower (``distill-demo-rn`` at 32 px) and to open_clip ViT-B-32's at 224 px (random weights; FLOPs
do not depend on them). FLOPs are counted by ``torch.utils.flop_counter`` (2 per multiply-add),
as ``distill train`` counts them.

Usage:
    .venv/bin/python benchmarks/student_flops.py [--students mobilenetv3_small_050:32,lcnet_035:32,...]
"""
from __future__ import annotations

import argparse

import torch

from distill.student.model import Student, default_spec
from distill.teacher import Teacher
from distill.teacher.bootstrap.presets import DEMO_ARCH
from distill.utils.flops import count_flops, count_params

DEFAULT = ("mobilenetv3_small_050:32,mobilenetv3_small_050:24,mobilenetv3_small_050:16,lcnet_035:32,"
           "lcnet_050:32,test_convnext:32,test_vit:32,test_efficientnet:32,test_resnet:32")


def image_tower_flops(arch: str) -> int:
    """FLOPs of an open_clip model's image tower on one image at its own input size."""
    teacher = Teacher(arch, None, ["a", "b"], ["a photo of a {}."])
    return count_flops(teacher.model.visual, teacher.preprocess_info.size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", default=DEFAULT, help="comma-separated timm_name:input_px")
    args = ap.parse_args()
    torch.set_num_threads(1)
    demo, clip = image_tower_flops(DEMO_ARCH), image_tower_flops("ViT-B-32")
    print(f"teachers: {DEMO_ARCH} {demo / 1e6:.2f} MFLOPs (32 px); ViT-B-32 {clip / 1e9:.2f} GFLOPs (224 px)")
    print("| student | px | MFLOPs | params | vs demo teacher | vs ViT-B-32 |\n|---|---:|---:|---:|---:|---:|")
    classes = [str(i) for i in range(10)]
    for item in args.students.split(","):
        name, px = item.rsplit(":", 1)
        student = Student(default_spec(name, classes, int(px)))
        f = count_flops(student, (int(px), int(px)))
        print(f"| {name} | {px} | {f / 1e6:.2f} | {count_params(student) / 1e6:.3f}M | {100 * f / demo:.1f}% | "
              f"{100 * f / clip:.3f}% |", flush=True)
    print(f"<= 5% of the demo teacher means <= {0.05 * demo / 1e6:.2f} MFLOPs")


if __name__ == "__main__":
    main()
