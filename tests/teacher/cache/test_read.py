"""Teacher cache reader: layout and rows, lookups, the identity check on open, changed bytes caught."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from distill.errors import DistillError
from distill.records import CACHE_MANIFEST, TEXT_EMBEDDINGS
from distill.teacher.cache import CacheMismatchError, TeacherCache, ViewConfig, expected_identity, shard_name
from distill.teacher.cache.format import SPLIT_CODES
from distill.teacher.prompts import DEFAULT_TEMPLATES


def test_layout_manifest_and_rows(reference, dataset, teacher):
    m = json.loads((reference / CACHE_MANIFEST).read_text())
    assert m["teacher"] == teacher.identity()
    assert m["templates"] == list(DEFAULT_TEMPLATES) and m["classes"] == ["cat", "dog"]
    assert m["preprocess"] == teacher.preprocess_info.to_dict()
    assert m["dataset"]["fingerprint"] == dataset.fingerprint()
    assert m["dataset"]["domains"] == ["art", "photo", "sketch"]
    assert (m["dataset"]["test_fraction"], m["dataset"]["split_seed"]) == (0.3, 0)
    assert m["views"] == {"count": 2, "seed": 0, "augment": ViewConfig().to_dict()}
    assert m["dtype"] == "float16" and m["rows"] == 60 and m["skipped"] == []
    assert m["shapes"]["image_emb"] == [60, 128] and m["shapes"]["logits"] == [60, 2]
    assert m["teacher_flops_per_image"] == teacher.image_flops() > 0
    assert m["created"] and m["distill_version"]
    assert [s["file"] for s in m["shards"]] == [shard_name(k) for k in range(10)]
    assert m["shards"][3]["samples"] == [9, 12] and m["shards"][3]["rows"] == 6

    cache = TeacherCache.open(reference)
    r = cache.rows
    assert r["image_emb"].dtype == torch.float16 and r["logits"].shape == (60, 2)
    assert (r["sample_index"].dtype, r["view"].dtype, r["domain"].dtype, r["label"].dtype, r["split"].dtype) == (
        torch.int64, torch.int16, torch.int16, torch.int16, torch.uint8)
    assert r["view_params"].shape == (60, 5) and r["view_params"].dtype == torch.float32
    key = r["sample_index"] * 2 + r["view"].long()
    assert torch.equal(key, torch.arange(60))  # sorted by (sample, view); every sample has 2 views
    for s in dataset.samples:
        row = 2 * s.index
        assert (int(r["label"][row]), cache.domains[int(r["domain"][row])], int(r["split"][row])) == (
            s.label, s.domain, SPLIT_CODES[s.split])
    assert torch.equal(cache.text_embeddings, teacher.text_embeddings.float())
    assert cache.text_embeddings.dtype == torch.float32

    # the stored rows are the teacher's outputs on view 0 (clean, open_clip's transform)
    x = torch.stack([teacher.preprocess(Image.open(dataset.path(s)).convert("RGB")) for s in dataset.samples[:4]])
    emb, logits = teacher(x)
    got = cache.lookup(torch.arange(4), torch.zeros(4, dtype=torch.long))
    assert got["image_emb"].dtype == torch.float32
    torch.testing.assert_close(got["image_emb"], emb, atol=2e-3, rtol=0)
    torch.testing.assert_close(got["logits"], logits, atol=3e-2, rtol=0)


def test_lookup_row_ids_and_accuracy(reference, dataset):
    cache = TeacherCache.open(reference)
    si, v = torch.tensor([5, 0, 29, 5]), torch.tensor([1, 0, 1, 0])
    got = cache.lookup(si, v)
    rows = si * 2 + v
    assert torch.equal(got["logits"], cache.rows["logits"][rows].float())
    assert torch.equal(got["view_params"], cache.rows["view_params"][rows])
    assert got["label"].tolist() == [dataset.samples[i].label for i in si.tolist()]
    with pytest.raises(DistillError, match="sample 3 view 2"):
        cache.lookup(torch.tensor([1, 3]), torch.tensor([0, 2]))
    with pytest.raises(DistillError, match="sample 30 view 0"):
        cache.lookup(torch.tensor([30]), torch.tensor([0]))

    test_photo = cache.row_ids(split="test", domains=["photo"], view=0)
    want = [2 * s.index for s in dataset.select(["photo"], "test")]
    assert test_photo.tolist() == want and len(want) > 0
    assert len(cache.row_ids()) == 60 and len(cache.row_ids(view=1)) == 30
    with pytest.raises(DistillError, match="domain 'clipart'"):
        cache.row_ids(domains=["clipart"])

    acc = cache.zero_shot_accuracy()
    logits, labels = cache.rows["logits"].float(), cache.rows["label"].long()
    for d, splits in dataset.summary().items():
        for split in ("train", "test"):
            ids = [2 * s.index for s in dataset.select([d], split)]
            if ids:
                want = (logits[ids].argmax(1) == labels[ids]).float().mean().item()
                assert acc[d][split] == pytest.approx(want)


def test_expectations_and_stale_manifest(reference, dataset, teacher):
    ok = expected_identity({**teacher.identity(), "torch_version": "0.0"}, teacher.preprocess_info.to_dict(),
                           dataset.classes, dataset.fingerprint(), DEFAULT_TEMPLATES)
    assert len(TeacherCache.open(reference, expect=ok)) == 60  # library versions are not compared

    stale = expected_identity({"arch": "ViT-B-32", "pretrained": "openai"},
                              {**teacher.preprocess_info.to_dict(), "mean": [0.5, 0.5, 0.5]},
                              ["cat", "dog", "horse"], "0" * 64, ["a photo of a {}."])
    with pytest.raises(CacheMismatchError) as e:
        TeacherCache.open(reference, expect=stale)
    msg = str(e.value)
    assert "\n" not in msg and str(reference / CACHE_MANIFEST) in msg
    for field in ("teacher.arch", '"distill-demo-vit" vs "ViT-B-32"', "teacher.pretrained", "preprocess.mean",
                  "classes: 2 vs 3 items", '"horse"', "dataset.fingerprint", "templates"):
        assert field in msg, field
    assert len(e.value.fields) == 6 and "preprocess.std" not in msg


def test_changed_shard_is_caught_on_open(reference, tmp_path):
    """A shard whose bytes changed after the build (bit rot, a partial copy, a hand edit) still parses as
    safetensors; its sha256, recorded in the manifest, is now checked when the cache is opened."""
    cache = tmp_path / "c"
    shutil.copytree(reference, cache)
    shard = cache / shard_name(1)
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF  # inside the last tensor's payload: the header, and so the parse, are intact
    shard.write_bytes(bytes(data))
    with pytest.raises(DistillError) as e:
        TeacherCache.open(cache)
    msg = str(e.value)
    assert "\n" not in msg and str(shard) in msg and "sha256" in msg and "rebuild" in msg
    assert len(TeacherCache.open(cache, verify=False)) == 60  # the bytes were readable: only the hash tells
    shutil.copy(reference / shard_name(1), shard)
    (cache / TEXT_EMBEDDINGS).write_bytes(
        (reference / TEXT_EMBEDDINGS).read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(DistillError, match="text_embeddings.safetensors: sha256"):
        TeacherCache.open(cache)


def test_a_skipped_image_without_sample_index_is_one_line(reference, tmp_path):
    """A manifest whose skipped image lost its sample_index (a hand edit) cannot say which row it would have been:
    one line naming the manifest and the image (was a TypeError from int(None))."""
    cache = tmp_path / "c"
    shutil.copytree(reference, cache)
    m = json.loads((cache / CACHE_MANIFEST).read_text())
    m["skipped"] = [{"path": "photo/cat/lost.png", "reason": "truncated"}]
    (cache / CACHE_MANIFEST).write_text(json.dumps(m))
    with pytest.raises(DistillError) as e:
        TeacherCache.open(cache, verify=False)
    msg = str(e.value)
    assert "\n" not in msg and str(cache / CACHE_MANIFEST) in msg and "photo/cat/lost.png" in msg
