"""A view-policy cache: rows replay exactly (teacher, pixel store, trainer decode path), partners stay in
their (domain, split), crop-only caches are unchanged, and a version-1 cache still opens."""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from torchvision.transforms.functional import pil_to_tensor

from distill.data.images import load_rgb
from distill.data.view_policy import LAM, MIX_MODE, PARAMS_LAYOUT, PolicyRender, preset, render_view
from distill.errors import DistillError
from distill.records import CACHE_MANIFEST
from distill.teacher.cache import CacheOptions, PixelOptions, PixelStore, TeacherCache, build_cache
from distill.teacher.cache.format import MIX_KEYS, save_shard
from distill.teacher.cache.inputs import split_preprocess, teacher_input
from distill.train.data import TrainImages, all_view_items
from distill.utils.io import sha256_file
from tests.teacher.cache.common import SETTINGS, assert_same_cache

VIEWS = 4
# one image per teacher batch, so a replayed forward sees the very batch the build ran
FM = CacheOptions(views=VIEWS, seed=3, batch_size=VIEWS, shard_size=4, dtype="float32", policy=preset("fm"))
STORES = ((32, 32), (24, 24))  # the teacher's size (no resize) and a smaller student
# sha256 of the reference build's (view_params, sample_index, view) bytes, computed with the code before
# view policies existed (commit 16f08e6): a crop-only cache keeps its rows
REFERENCE_ROWS_SHA256 = "ad31bea9674f3214fe964edd2b6fec8948266bfbeed754b5f636a6ebb15d9352"


@pytest.fixture(scope="module")
def fm_cache(dataset, teacher, tmp_path_factory) -> TeacherCache:
    out = build_cache(dataset, teacher, tmp_path_factory.mktemp("fm") / "cache", FM,
                      pixels=PixelOptions(STORES, "bicubic"), num_workers=0, progress=False)
    return TeacherCache.open(out)


def test_policy_cache_records_its_policy_and_mixes(fm_cache):
    m = fm_cache.manifest
    assert m.format_version == 2 and m.views.params_layout == list(PARAMS_LAYOUT)
    assert fm_cache.view_policy == preset("fm") and m.shapes["view_params"] == [len(fm_cache), 22]
    rows = fm_cache.rows
    assert rows["view_params"].shape == (len(fm_cache), 22)
    v0 = rows["view"] == 0
    assert (rows["mix_partner"][v0] == -1).all() and (rows["view_params"][v0][:, LAM] == 1).all()
    mixed = rows["mix_partner"] >= 0
    assert mixed.any() and set(rows["view_params"][mixed][:, MIX_MODE].tolist()) == {1.0, 2.0}
    assert fm_cache.summary()["policy"]["name"] == "fm"
    got = fm_cache.lookup(rows["sample_index"], rows["view"].long())
    assert torch.equal(got["mix_partner"], rows["mix_partner"])
    assert got["mix_lam"].dtype == torch.float32
    assert torch.equal(got["mix_lam"], torch.where(mixed, rows["view_params"][:, LAM], torch.ones(len(mixed))))


def test_every_partner_has_the_samples_domain_and_split(fm_cache):
    rows = fm_cache.rows
    mixed = (rows["mix_partner"] >= 0).nonzero().squeeze(1)
    partner = fm_cache.lookup(rows["mix_partner"][mixed], rows["mix_view"][mixed].long())
    assert torch.equal(partner["domain"], rows["domain"][mixed].long())
    split_of = dict(zip(rows["sample_index"].tolist(), rows["split"].tolist()))
    assert [split_of[p] for p in rows["mix_partner"][mixed].tolist()] == rows["split"][mixed].tolist()
    assert (rows["mix_partner"][mixed] != rows["sample_index"][mixed]).all()


def _views(dataset, cache: TeacherCache, index: int, teacher) -> torch.Tensor:
    """The teacher's uint8 input for all views of ``index``, rebuilt from the cache rows alone."""
    info = teacher.preprocess_info
    rows = cache.lookup(torch.full((VIEWS,), index), torch.arange(VIEWS))
    img = load_rgb(dataset.path(dataset.samples[index]))
    xs = [pil_to_tensor(split_preprocess(teacher.preprocess, info)[0](img))]  # view 0: open_clip's eval transform
    for v in range(1, VIEWS):
        p = int(rows["mix_partner"][v])
        other = load_rgb(dataset.path(dataset.samples[p])) if p >= 0 else None
        pvec = cache.lookup(rows["mix_partner"][v:v + 1], rows["mix_view"][v:v + 1])["view_params"][0] if p >= 0 \
            else None
        xs.append(render_view(img, rows["view_params"][v], info.size, info.interpolation, other, pvec))
    return torch.stack(xs)


def test_a_float32_row_is_the_teacher_on_the_replayed_view(dataset, teacher, fm_cache):
    info = teacher.preprocess_info
    mean, std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in (info.mean, info.std))
    mixed_samples = fm_cache.rows["sample_index"][fm_cache.rows["mix_partner"] >= 0].unique()
    assert len(mixed_samples)
    for index in mixed_samples[:4].tolist():
        with torch.inference_mode():
            emb, logits = teacher(teacher_input(_views(dataset, fm_cache, index, teacher), mean, std))
        rows = fm_cache.lookup(torch.full((VIEWS,), index), torch.arange(VIEWS))
        assert torch.equal(rows["logits"], logits) and torch.equal(rows["image_emb"], emb)


@pytest.mark.parametrize("size", STORES)
def test_pixel_store_equals_the_trainers_decode_path(dataset, fm_cache, size):
    store = PixelStore.open(fm_cache.path, fm_cache.manifest, size, "bicubic")
    samples = [s for s in dataset.samples]
    items = all_view_items(samples, {d: i for i, d in enumerate(dataset.domains)}, VIEWS, fm_cache)
    assert items.partner is not None and (items.partner >= 0).any()
    render = PolicyRender.for_manifest(fm_cache.manifest)
    decoded = TrainImages(dataset, items, size, "bicubic", fm_cache.view_config, fm_cache.view_seed, uint8=True,
                          render=render)
    stored = TrainImages(dataset, items, size, "bicubic", fm_cache.view_config, fm_cache.view_seed, uint8=True,
                         render=render, pixels=store)
    for i in range(len(items)):
        a, b = decoded[i][0], stored[i][0]
        assert a.shape == (3, *size) and torch.equal(a, b), (items.sample[i], items.view[i], items.partner[i])


def test_pixel_store_refuses_another_policy(fm_cache):
    m = fm_cache.manifest
    other = m.model_copy(update={"views": m.views.model_copy(update={"policy": preset("fm", mixup=0.0).to_dict()})})
    with pytest.raises(DistillError, match="does not match its cache"):
        PixelStore.open(fm_cache.path, other, STORES[0], "bicubic")


def test_crop_only_rows_are_unchanged(dataset, teacher, reference, tmp_path):
    h = hashlib.sha256()
    for f in sorted(reference.glob("shard-*.safetensors")):
        t = load_file(str(f))
        for k in ("view_params", "sample_index", "view"):
            h.update(t[k].numpy().tobytes())
        assert (t["mix_partner"] == -1).all() and (t["mix_view"] == -1).all()
    assert h.hexdigest() == REFERENCE_ROWS_SHA256
    manifest = json.loads((reference / CACHE_MANIFEST).read_text())
    assert set(manifest["views"]) == {"count", "seed", "augment"} and manifest["shapes"]["view_params"][1] == 5
    # the crops preset is the crop-only cache, byte for byte
    crops = CacheOptions(**{**SETTINGS.__dict__, "policy": preset("crops", SETTINGS.augment)})
    out = build_cache(dataset, teacher, tmp_path / "crops", crops, num_workers=0, progress=False)
    assert_same_cache(reference, out)


def test_a_version_1_cache_opens(reference, tmp_path):
    old = tmp_path / "v1"
    shutil.copytree(reference, old)
    manifest = json.loads((old / CACHE_MANIFEST).read_text())
    manifest["format_version"] = 1
    for shard in manifest["shards"]:
        file = old / shard["file"]
        tensors = {k: v for k, v in load_file(str(file)).items() if k not in MIX_KEYS}
        save_shard(file, tensors, {"skipped": "[]"})
        shard["sha256"], shard["bytes"] = sha256_file(file), file.stat().st_size
    (old / CACHE_MANIFEST).write_text(json.dumps(manifest))
    cache, ref = TeacherCache.open(old), TeacherCache.open(reference)
    idx, view = ref.rows["sample_index"], ref.rows["view"].long()
    got, want = cache.lookup(idx, view), ref.lookup(idx, view)
    assert got.keys() == want.keys()
    for k in got:
        assert torch.equal(got[k], want[k]), k
    assert (got["mix_partner"] == -1).all() and (got["mix_lam"] == 1).all() and got["view_params"].shape[1] == 5
    assert cache.view_policy is None and cache.params_layout == PARAMS_LAYOUT[:5]
