"""Issue 12's paths on a CUDA GPU: a policy cache (fm views, mixup/cutmix pairs, pixel store) built on the
GPU, and function matching with an unlabeled pool and a text head trained there.

Skipped (with the reason) where torch sees no CUDA device; ``python -m pytest -m gpu tests/gpu`` runs them
where one is (benchmarks/gpu_check.sh does). What they hold:

- Views are rendered on the CPU (data workers) whatever the teacher's device, so a policy cache built on
  the GPU replays the same views as one built on the CPU: view parameters, mixing partners, λ and the
  stored pixels are bit-identical; only the teacher's outputs differ, within kernel rounding.
- ``fm`` with ``data.unlabeled`` and ``student.head: text`` trains on cuda in bf16 and fp16 (GradScaler)
  to finite weights, records its pool, and the GPU-trained text-head checkpoint exports with parity.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.gpu.test_gpu_pipeline import _distill, _train_cfg, _weights, _write

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA GPU (run `python -m pytest -m gpu tests/gpu` on a GPU machine)"),
]

POLICY_FLAGS = ["--arch", "distill-demo-vit", "--pretrained", "none", "--views", "3", "--seed", "5",
                "--policy", "fm", "--mixup", "1.0", "--cutmix", "1.0", "--store-pixels", "16",
                "--test-fraction", "0.25", "--batch-size", "8", "--shard-size", "8", "--workers", "2",
                "--no-progress", "--templates-file"]


def _build(work: Path, out: Path, device: str) -> Path:
    res = _distill("cache", "build", "--data", str(work / "data"), "--out", str(out), *POLICY_FLAGS,
                   str(work / "t.txt"), "--device", device)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def policy_cache(work, tmp_path_factory) -> Path:
    return _build(work, tmp_path_factory.mktemp("pc") / "cache", "auto")


def test_a_gpu_policy_cache_replays_the_cpu_views_bit_for_bit(work, policy_cache, tmp_path):
    from distill.records.names import CACHE_PIXELS_PREFIX
    from distill.teacher.cache import TeacherCache

    g, c = TeacherCache.open(policy_cache), TeacherCache.open(_build(work, tmp_path / "cpu", "cpu"))
    assert g.view_policy is not None and g.view_policy == c.view_policy
    for key in ("sample_index", "view_params", "mix_partner", "mix_view"):
        assert torch.equal(g.rows[key], c.rows[key]), key
    assert (g.rows["mix_partner"] >= 0).any(), "no mixed view drawn: the test would prove nothing"
    assert torch.allclose(g.rows["logits"].float(), c.rows["logits"].float(), atol=5e-2, rtol=1e-2)
    pixels = sorted(p.relative_to(policy_cache) for p in policy_cache.glob(CACHE_PIXELS_PREFIX + "*/*.safetensors"))
    assert pixels, "no pixel store written"
    for rel in pixels:  # the stored (final, mixed) view bytes do not depend on the teacher's device
        assert (policy_cache / rel).read_bytes() == (tmp_path / "cpu" / rel).read_bytes(), rel


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_fm_with_a_pool_and_a_text_head_trains_and_exports_on_cuda(work, policy_cache, tmp_path, precision):
    from distill.config import load_train_config
    from distill.train import Trainer, build

    cfg = _train_cfg(work, policy_cache, tmp_path / "run", optim__precision=precision, optim__epochs=2,
                     data__source=["red"], data__unlabeled=["blue"], student__head="text",
                     strategy__name="fm", run__workers=2)
    cfg["strategy"] = {"name": "fm", "temperature": 1.0, "alpha": 0.5, "feature_weight": 1.0}
    setup = build(load_train_config(None, base=cfg))
    assert setup.device.type == "cuda" and len(setup.unlabeled) > 0
    trainer = Trainer(setup)
    (tmp_path / "run").mkdir()
    summary = trainer.fit()
    assert summary.unlabeled is not None and summary.unlabeled.domains == ["blue"]
    weights = _weights(tmp_path / "run")
    assert any(k.endswith("text_head") for k in weights), sorted(weights)[:8]  # the classifier travels with it
    assert all(torch.isfinite(t.float()).all() for t in weights.values())
    if precision == "bf16":  # one export is enough: the exporter runs on the CPU either way
        res = _distill("export", str(tmp_path / "run" / "checkpoints" / "best"), "--out", str(tmp_path / "exp"),
                       "--precision", "fp32")
        assert res.returncode == 0, res.stderr[-3000:]
        exp = json.loads((tmp_path / "exp" / "export.json").read_text())
        fp32 = next(m for m in exp["models"] if m["precision"] == "fp32")
        assert fp32["parity"]["passed"], fp32["parity"]


def test_erm_with_the_same_augmentations_on_cuda(work, policy_cache, tmp_path):
    """The fair baseline on the same cache: labels λ-mixed on mixed views, cross-entropy only, on the GPU."""
    cfg = _write(tmp_path / "erm.yaml", {**_train_cfg(work, policy_cache, tmp_path / "erm", optim__epochs=1,
                                                       optim__precision="bf16"), "strategy": {"name": "erm"}})
    res = _distill("train", "-c", str(cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    assert all(torch.isfinite(t.float()).all() for t in _weights(tmp_path / "erm").values())
