"""Cache identity across devices and precisions.

A cache built on a GPU must train on a CPU and the other way round: float fields of the identity
(logit scale, mean/std) match within a tolerance (a CUDA ``exp`` differs in the last digit), while
a real difference is still refused, naming the field. The teacher's inference precision is part
of the identity; caches written before it was recorded were fp32.
"""
from __future__ import annotations

import pytest
import torch

from distill.data import DomainFolder
from distill.errors import DistillError
from distill.teacher import Teacher
from distill.teacher.cache import (
    CacheMismatchError,
    TeacherCache,
    build_cache,
    check_manifest,
    expected_identity,
    identity_diffs,
)
from distill.teacher.cache.adversarial import LAYOUT as ADVERSARIAL_LAYOUT
from tests.shapes import make_shapes_root

MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


def _manifest(logit_scale: float, mean=MEAN, precision: str | None = "fp32") -> dict:
    teacher = {"arch": "ViT-B-32", "pretrained": "laion2b_s34b_b79k", "checkpoint_sha256": None,
               "logit_scale": logit_scale, "open_clip_version": "3.3.0", "torch_version": "2.11.0"}
    if precision is not None:
        teacher["precision"] = precision
    return {"teacher": teacher, "preprocess": {"size": [224, 224], "mean": list(mean), "std": STD,
                                               "interpolation": "bicubic", "resize_mode": "shortest", "crop": "center"}}


def _expect(logit_scale: float, mean=MEAN, precision: str = "fp32") -> dict:
    m = _manifest(logit_scale, mean, precision)
    return expected_identity(m["teacher"], m["preprocess"])


def test_last_digit_float_differences_are_the_same_identity():
    # measured on an H100: the GPU-built cache said 14.285715, the CPU run expected 14.285714
    check_manifest(_manifest(14.285714), _expect(14.285715))
    check_manifest(_manifest(14.285715), _expect(14.285714))
    check_manifest(_manifest(100.0, mean=[0.48145466, 0.4578275, 0.40821073]),
                   _expect(100.00001, mean=[0.4814547, 0.45782751, 0.40821073]))


def test_real_float_differences_are_refused_naming_the_field():
    with pytest.raises(CacheMismatchError) as e:
        check_manifest(_manifest(14.3), _expect(14.2))
    assert [f.split(":")[0] for f in e.value.fields] == ["teacher.logit_scale"]
    assert "14.3 vs 14.2" in str(e.value)
    with pytest.raises(CacheMismatchError, match=r"preprocess\.mean"):
        check_manifest(_manifest(14.2), _expect(14.2, mean=[0.485, 0.456, 0.406]))


def test_precision_is_identity_and_old_caches_were_fp32():
    check_manifest(_manifest(14.2, precision=None), _expect(14.2, precision="fp32"))  # written before the field
    with pytest.raises(CacheMismatchError) as e:
        check_manifest(_manifest(14.2, precision="bf16"), _expect(14.2, precision="fp32"))
    assert e.value.fields == ['teacher.precision: "bf16" vs "fp32"']
    with pytest.raises(CacheMismatchError, match="teacher.precision"):
        check_manifest(_manifest(14.2, precision=None), _expect(14.2, precision="bf16"))


def test_pretrain_fraction_is_identity_and_old_caches_had_no_pool():
    """A plan or manifest written before pools existed had none (0.0): it still resumes / matches at 0."""
    old_plan, plan = {"dataset": {"test_fraction": 0.3}}, {"dataset": {"test_fraction": 0.3, "pretrain_fraction": 0.0}}
    assert identity_diffs(old_plan, plan) == []
    pooled = {"dataset": {"test_fraction": 0.3, "pretrain_fraction": 0.3}}
    assert identity_diffs(old_plan, pooled) == ["dataset.pretrain_fraction: 0.0 vs 0.3"]
    assert identity_diffs(plan, pooled) == ["dataset.pretrain_fraction: 0.0 vs 0.3"]


def test_one_check_serves_every_layout_and_plans():
    """identity_diffs is the one comparison: the cache's layout (nested), a companion's (flat), or plan vs plan."""
    cache = {**_manifest(14.2), "dataset": {"fingerprint": "abc", "domains": ["a"]}}
    want = expected_identity(_manifest(14.2)["teacher"], dataset_fingerprint="abd")
    assert [f.split(":")[0] for f in identity_diffs(cache, want, {"teacher": ("teacher",),
                                                                  "dataset_fingerprint": ("dataset", "fingerprint")})] \
        == ["dataset.fingerprint"]
    adversarial = {"teacher": {**_manifest(14.2)["teacher"], "arch": "RN50"}, "dataset_fingerprint": "abc"}
    assert identity_diffs(adversarial, expected_identity(_manifest(14.2)["teacher"], dataset_fingerprint="abc"),
                          ADVERSARIAL_LAYOUT) == ['teacher.arch: "RN50" vs "ViT-B-32"']
    assert identity_diffs({"views": {"count": 2}, "seed": 1}, {"views": {"count": 3}}) == ["views.count: 2 vs 3"]
    with pytest.raises(ValueError, match="unknown expect key"):
        identity_diffs(cache, {"colour": "red"}, ADVERSARIAL_LAYOUT)


def test_bf16_teacher_cache_records_its_precision_and_is_refused_by_an_fp32_run(tmp_path):
    root = make_shapes_root(tmp_path / "data", ["red"], per_class=2)
    ds = DomainFolder(root, test_fraction=0.5)
    torch.manual_seed(0)
    bf16 = Teacher("distill-demo-vit", None, ds.classes, ["a photo of a {}."], precision="bf16")
    out = build_cache(ds, bf16, tmp_path / "c", num_workers=0, progress=False)
    cache = TeacherCache.open(out, expect=expected_identity(bf16.identity()))
    assert cache.manifest.teacher.precision == "bf16"
    assert torch.isfinite(cache.rows["logits"].float()).all()

    torch.manual_seed(0)
    fp32 = Teacher("distill-demo-vit", None, ds.classes, ["a photo of a {}."])
    assert fp32.identity()["logit_scale"] == bf16.identity()["logit_scale"]  # the same weights otherwise
    with pytest.raises(CacheMismatchError) as e:
        TeacherCache.open(out, expect=expected_identity(fp32.identity()))
    assert e.value.fields == ['teacher.precision: "bf16" vs "fp32"']
    with pytest.raises(DistillError, match="teacher.precision"):  # resuming/rebuilding at another precision
        build_cache(ds, fp32, out, num_workers=0, progress=False)
    with pytest.raises(DistillError, match="teacher precision fp16 needs a CUDA GPU"):
        Teacher("distill-demo-vit", None, ds.classes, ["a photo of a {}."], precision="fp16")
