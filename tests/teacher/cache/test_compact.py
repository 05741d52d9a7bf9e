"""Compact rows (top-k / recomputed / no embeddings), the mapped reader and its verify-once record."""
from __future__ import annotations

import json
import math
import os
import pickle
import shutil

import pytest
import torch

from distill.cli import main as cli
from distill.errors import DistillError
from distill.records import CACHE_MANIFEST, CacheRowLayout
from distill.strategies import get_strategy
from distill.teacher.cache import CacheOptions, TeacherCache, build_cache, mapped, shard_name
from distill.teacher.cache.compact import check_strategy_layout, compact_outputs, dense_logits, make_layout
from tests.teacher.cache.common import SETTINGS


def test_topk_roundtrip_keeps_the_top_k_and_the_rest_s_mass():
    """TinyViT's soft label: the top K probabilities exact, the rest's mass spread evenly over the other classes."""
    torch.manual_seed(0)
    z = torch.randn(16, 1000) * 3
    layout = CacheRowLayout(logits="topk", topk=100)
    stored = compact_outputs(layout, torch.zeros(16, 8), z, torch.float32)
    assert stored["logits_topk_index"].dtype == torch.int16 and "logits" not in stored and "image_emb" in stored
    dense = dense_logits(layout, stored, torch.zeros(1000, 8))
    p, q = z.softmax(1), dense.softmax(1)
    top = z.topk(100, 1).indices
    assert torch.allclose(q.gather(1, top), p.gather(1, top), atol=1e-6)
    rest = 1 - p.gather(1, top).sum(1, keepdim=True)
    assert torch.allclose(q.scatter(1, top, 0.0).sum(1, keepdim=True), rest, atol=1e-5)
    tinyvit = rest / 900  # (1 - sum(top-k probs)) / (C - K) on every other class
    assert torch.allclose(q.scatter(1, top, 0.0), tinyvit.expand(16, 1000).scatter(1, top, 0.0), atol=1e-6)
    assert torch.equal(dense.argmax(1), z.argmax(1))


def test_layout_options_are_checked():
    assert make_layout() is None  # a default build's plan stays as it was
    for kwargs, needle in (({"logits": "topk"}, "--topk K"), ({"logits": "topk", "topk": 3, "num_classes": 3},
                           "1 <= K < classes (3)"), ({"logits": "none", "embeddings": False}, "--no-embeddings"),
                           ({"logits": "full", "topk": 5}, "only for --logits topk"), ({"logits": "x"}, "one of")):
        with pytest.raises(DistillError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            make_layout(**kwargs)


@pytest.fixture(scope="module")
def compact(dataset, teacher, tmp_path_factory):
    """The reference's data and teacher as top-1 logits without embeddings, and as recomputed fp32 logits."""
    base = tmp_path_factory.mktemp("compact")
    topk = build_cache(dataset, teacher, base / "topk", CacheOptions(**{**vars(SETTINGS), "logits": "topk", "topk": 1,
                                                                      "embeddings": False}),
                       num_workers=0, progress=False)
    none = build_cache(dataset, teacher, base / "none", CacheOptions(**{**vars(SETTINGS), "logits": "none",
                                                                      "dtype": "float32"}),
                       num_workers=0, progress=False)
    return topk, none


def test_compact_caches_give_dense_logits_through_one_lookup(reference, compact):
    topk, none = (TeacherCache.open(p) for p in compact)
    ref = TeacherCache.open(reference)
    si, view = ref.rows["sample_index"], ref.rows["view"].long()
    want = ref.lookup(si, view)
    got = topk.lookup(si, view)
    assert "image_emb" not in got and got["logits"].shape == (60, 2)
    assert torch.equal(got["logits"], want["logits"])  # top-1 of 2 classes + the rest: every logit, fp16 as stored
    got = none.lookup(si, view)
    # fp32 embeddings, rounded, are the reference's fp16 ones; the recomputed logits match its fp16 logits
    assert torch.equal(got["image_emb"].half().float(), want["image_emb"])
    assert torch.allclose(got["logits"], want["logits"], atol=2e-2, rtol=1e-3)
    assert torch.equal(got["view_params"], want["view_params"]) and torch.equal(got["label"], want["label"])
    m = json.loads((compact[1] / CACHE_MANIFEST).read_text())
    assert m["format_version"] == 3 and m["layout"]["logits"] == "none" and "logits" not in m["shapes"]
    assert m["layout"]["logit_scale"] == pytest.approx(float(json.loads(
        (reference / CACHE_MANIFEST).read_text())["teacher"]["logit_scale"]), abs=1e-5)
    assert json.loads((reference / CACHE_MANIFEST).read_text()).get("layout") is None
    assert topk.zero_shot_accuracy() == ref.zero_shot_accuracy()
    assert topk.bytes_per_row() < ref.bytes_per_row()


def test_a_strategy_needing_embeddings_refuses_a_cache_without_them(compact):
    topk = TeacherCache.open(compact[0])
    for name in ("customkd", "rise"):  # both match the teacher's embedding
        with pytest.raises(DistillError) as e:
            check_strategy_layout(name, get_strategy(name).needs, topk.layout, topk.path)
        assert "\n" not in str(e.value) and "--no-embeddings" in str(e.value) and str(topk.path) in str(e.value)
    check_strategy_layout("kd", get_strategy("kd").needs, topk.layout, topk.path)  # logits only: fine


def test_inspect_prints_bytes_per_row(compact, reference, capsys):
    assert cli(["cache", "inspect", str(compact[0])]) == 0
    out = capsys.readouterr().out
    assert "no image_emb, top-1 logits" in out
    per_row = TeacherCache.open(compact[0]).bytes_per_row()
    assert f"row size  {per_row:.0f} B per row" in out
    assert cli(["cache", "inspect", str(reference)]) == 0
    assert "B per row" in capsys.readouterr().out


# ---------------------------------------------------------------------- mapped reader
def test_open_reads_no_shard_twice_and_catches_a_later_change(reference, tmp_path, monkeypatch):
    """The builder records the shards it hashed; an open hashes only a file whose (size, mtime, inode) moved."""
    hashed = []
    real = mapped._hash
    monkeypatch.setattr(mapped, "_hash", lambda p: hashed.append(p.name) or real(p))
    TeacherCache.open(reference)
    assert hashed == []  # recorded at build time
    cache = tmp_path / "c"
    shutil.copytree(reference, cache)  # a copy: other inodes, hashed once in its new place
    TeacherCache.open(cache)
    assert sorted(hashed) == [shard_name(k) for k in range(10)]
    hashed.clear()
    TeacherCache.open(cache)
    assert hashed == []
    shard = cache / shard_name(4)
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x01
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 1))  # a new version, whatever the clock
    with pytest.raises(DistillError, match="shard-00004.safetensors: sha256 .* rebuild"):
        TeacherCache.open(cache)
    assert hashed == [shard_name(4)]


def test_truncated_shard_is_one_line(reference, tmp_path):
    cache = tmp_path / "c"
    shutil.copytree(reference, cache)
    shard = cache / shard_name(2)
    shard.write_bytes(shard.read_bytes()[:40])
    for verify in (True, False):
        with pytest.raises(DistillError) as e:
            TeacherCache.open(cache, verify=verify)
        msg = str(e.value)
        assert "\n" not in msg and str(shard) in msg and "rebuild" in msg


def test_rows_are_mapped_and_pickling_drops_the_maps(reference):
    cache = TeacherCache.open(reference)
    assert set(cache.index) == {"sample_index", "view", "domain", "label", "split"}
    clone = pickle.loads(pickle.dumps(cache))
    assert all(m is None for m in clone._maps) and len(pickle.dumps(cache)) < 20_000
    si, v = cache.index["sample_index"], cache.index["view"].long()
    a, b = cache.lookup(si, v), clone.lookup(si, v)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert math.isclose(cache.bytes_per_row(), sum(s.bytes for s in cache.manifest.shards) / 60, rel_tol=1e-3)


def test_lookup_without_outputs_gathers_the_view_columns_only(reference, monkeypatch):
    cache = TeacherCache.open(reference)
    si, v = cache.index["sample_index"], cache.index["view"].long()
    full = cache.lookup(si, v)
    asked = []
    real = cache._gather_stored
    monkeypatch.setattr(cache, "_gather_stored", lambda names, row: asked.append(list(names)) or real(names, row))
    light = cache.lookup(si, v, outputs=False)
    assert asked == [["view_params", "mix_partner", "mix_view"]] and "logits" not in light
    assert all(torch.equal(light[k], full[k]) for k in light)
