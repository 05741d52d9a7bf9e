"""Helpers of the teacher-cache tests: a small noisy image tree, the random-weight teacher, cache equality.

One small tree (30 PNGs, 3 domains x 2 classes) and the random-weight ``distill-demo-vit``
teacher (32 px). Builds use one torch thread, as torchrun ranks do.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from distill.records import CACHE_MANIFEST, TEXT_EMBEDDINGS
from distill.teacher.cache import CacheOptions
from distill.teacher.clip import Teacher
from distill.teacher.prompts import DEFAULT_TEMPLATES

REPO = Path(__file__).resolve().parents[3]
PACS_MINI = REPO.parent / "shared/data/pacs_mini"
# The reference build; the CLI runs use the same settings.
SETTINGS = CacheOptions(views=2, seed=0, batch_size=4, shard_size=3, dtype="float16")
CLI_SETTINGS = ["--arch", "distill-demo-vit", "--pretrained", "none", "--views", "2", "--seed", "0",
                "--batch-size", "4", "--shard-size", "3", "--dtype", "float16",
                "--device", "cpu"]  # like the in-process reference: CPU results are bitwise (GPU: tests/gpu)


def env(**extra: str) -> dict[str, str]:
    """The environment of a `python -m distill` subprocess: one thread, this checkout first."""
    out = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    out["PYTHONPATH"] = os.pathsep.join([str(REPO), out.get("PYTHONPATH", "")])
    return out


def make_tree(root: Path, seed: int = 0) -> Path:
    """30 noise PNGs of varied sizes and aspect ratios: 3 domains x 2 classes x 5."""
    rng = np.random.default_rng(seed)
    for d in ("art", "photo", "sketch"):
        for c in ("cat", "dog"):
            (root / d / c).mkdir(parents=True)
            for i in range(5):
                h, w = (int(v) for v in rng.integers(24, 64, 2))
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / d / c / f"{i}.png")
    return root


def demo_teacher(classes: list[str]) -> Teacher:
    torch.manual_seed(0)  # what `--pretrained none` does
    return Teacher("distill-demo-vit", None, classes, DEFAULT_TEMPLATES)


def assert_same_cache(a: Path, b: Path) -> None:
    """Bit-identical shards and text embeddings; manifests equal but for the creation time."""
    ma, mb = (json.loads((p / CACHE_MANIFEST).read_text()) for p in (a, b))
    for m in (ma, mb):
        m.pop("created"), m["dataset"].pop("root")
    assert ma == mb
    for shard in ma["shards"]:
        ta, tb = load_file(str(a / shard["file"])), load_file(str(b / shard["file"]))
        assert ta.keys() == tb.keys()
        for k in ta:
            assert ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]), (shard["file"], k)
        assert (a / shard["file"]).read_bytes() == (b / shard["file"]).read_bytes()
    assert torch.equal(load_file(str(a / TEXT_EMBEDDINGS))["text_embeddings"],
                       load_file(str(b / TEXT_EMBEDDINGS))["text_embeddings"])
