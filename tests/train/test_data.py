"""Epoch items, the all-(image, view) dataset and the per-epoch batch plan the persistent loader iterates."""
from __future__ import annotations

import numpy as np
import torch
import yaml
from safetensors.torch import load_file

from distill.config import load_train_config
from distill.data.folder import DomainFolder, Sample
from distill.data.view_policy import preset
from distill.teacher.cache import CacheOptions, PixelOptions, TeacherCache, build_cache
from distill.teacher.clip import Teacher
from distill.train import train
from distill.train.data import (
    EpochBatches,
    Item,
    ItemTable,
    TrainImages,
    all_view_items,
    epoch_items,
    epoch_keys,
    label_table,
    pool_items,
    pool_keys,
)


def _samples(n: int, first_index: int = 5) -> list[Sample]:
    return [Sample(first_index + 2 * i, f"d/c/{i}.png", "d", "c", 0, "train", 1) for i in range(n)]


def test_the_batch_plan_splits_each_global_batch_over_ranks():
    samples = _samples(12)
    items = epoch_items(samples, {"d": 0}, views=3, seed=4, epoch=1)
    pairs = all_view_items(samples, {"d": 0}, views=3)
    per_rank = []
    for rank in range(2):
        plan = EpochBatches(samples, views=3)
        plan.plan(items, range(1, 3), batch_size=4, rank=rank, world=2)
        assert len(plan) == 2 and all(len(b) == 2 for b in plan)
        per_rank.append(list(plan))
    for step in range(2):  # steps 1 and 2 of the epoch: items 4..7 and 8..11, rank 0 first
        keys = per_rank[0][step] + per_rank[1][step]
        want = items[(step + 1) * 4:(step + 2) * 4]
        assert [(pairs.sample[k], pairs.view[k]) for k in keys] == [(i.sample.index, i.view) for i in want]


def test_replanning_refills_the_same_sampler_object():
    samples = _samples(4)
    plan = EpochBatches(samples, views=1)
    sampler_view = plan  # the DataLoader keeps this object for the whole run
    for epoch in range(2):
        plan.plan(epoch_items(samples, {"d": 0}, 1, 0, epoch), range(0, 2), 2, 0, 1)
        assert sampler_view.batches is plan.batches and len(list(sampler_view)) == 2


def test_training_replays_the_cached_views(tiny_root, tiny_cache):
    ds = DomainFolder(tiny_root, test_fraction=0.3)
    cache = TeacherCache.open(tiny_cache)
    samples = ds.select(["red"], "train")
    domain_index = {d: i for i, d in enumerate(ds.domains)}
    items = epoch_items(samples, domain_index, 2, 3, epoch=0, cache=cache)
    assert {it.view for it in items} == {0, 1}, "both views should be drawn over an epoch"
    for it in items:
        row = cache.lookup(torch.tensor([it.sample.index]), torch.tensor([it.view]))
        assert np.allclose(row["view_params"][0].numpy(), it.params)
    # the order and views are a pure function of (seed, epoch)
    again = epoch_items(samples, domain_index, 2, 3, epoch=0, cache=cache)
    assert [(i.sample.index, i.view) for i in items] == [(i.sample.index, i.view) for i in again]
    other = epoch_items(samples, domain_index, 2, 3, epoch=1, cache=cache)
    assert [(i.sample.index, i.view) for i in items] != [(i.sample.index, i.view) for i in other]
    # the loader's dataset carries the same cached params for every (image, view)
    pairs = all_view_items(samples, domain_index, 2, cache)
    by_key = {(int(pairs.sample[k]), int(pairs.view[k])): pairs.params_at(k) for k in range(len(pairs))}
    assert all(by_key[(it.sample.index, it.view)] == it.params for it in items)


def test_pool_items_are_pure_cycle_whole_and_leave_the_labelled_order_alone():
    pool = _samples(5, first_index=100)
    items = pool_items(pool, {"d": 0}, views=2, seed=4, epoch=1, count=12)
    again = pool_items(pool, {"d": 0}, views=2, seed=4, epoch=1, count=12)
    assert [(i.sample.index, i.view) for i in items] == [(i.sample.index, i.view) for i in again]
    order = [i.sample.index for i in items]
    # cycles: each of the first two runs of 5 holds the whole pool once; the third is cut at 12
    assert sorted(order[:5]) == sorted(order[5:10]) == [x.index for x in pool] and len(order) == 12
    assert order[:5] != order[5:10]  # each cycle in its own order
    assert order != [i.sample.index for i in pool_items(pool, {"d": 0}, 2, 4, epoch=2, count=12)]
    labelled = _samples(8)
    assert [i.sample.index for i in epoch_items(labelled, {"d": 0}, 2, 4, 1)] == \
        [i.sample.index for i in epoch_items(labelled, {"d": 0}, 2, 4, 1)]
    assert pool_items([], {"d": 0}, 2, 4, 1, 12) == [] and pool_items(pool, {"d": 0}, 2, 4, 1, 0) == []


def test_the_batch_plan_appends_each_steps_pool_items_and_splits_both_over_ranks():
    samples, pool = _samples(8), _samples(6, first_index=100)
    items = epoch_items(samples, {"d": 0}, views=2, seed=4, epoch=0)
    extra = pool_items(pool, {"d": 0}, views=2, seed=4, epoch=0, count=8)
    pairs = all_view_items(samples + pool, {"d": 0}, views=2)
    keys = []
    for rank in range(2):
        plan = EpochBatches(samples + pool, views=2)
        plan.plan(items, range(0, 2), batch_size=4, rank=rank, world=2, pool=extra, pool_size=4)
        assert all(len(b) == 4 for b in plan)  # 2 labelled + 2 pool rows per rank
        keys.append(list(plan))
    for step in range(2):
        got = [(pairs.sample[k], pairs.view[k]) for k in keys[0][step][:2] + keys[1][step][:2]]
        assert got == [(i.sample.index, i.view) for i in items[step * 4:(step + 1) * 4]]
        got = [(pairs.sample[k], pairs.view[k]) for k in keys[0][step][2:] + keys[1][step][2:]]
        assert got == [(i.sample.index, i.view) for i in extra[step * 4:(step + 1) * 4]]


def test_the_label_table_knows_only_the_labelled_samples():
    labelled = [Sample(1, "d/c/a.png", "d", "c", 2, "train", 1), Sample(3, "d/c/b.png", "d", "c", 0, "train", 1)]
    assert label_table(5, labelled).tolist() == [-1, 2, -1, 0, -1]
    assert label_table(3, []).tolist() == [-1, -1, -1]


def test_a_policy_cache_trains_the_same_from_its_pixel_store_as_decoding(tiny_root, tmp_path, capsys):
    """kd on an fm cache (student 16 px, teacher 32 px): the decode path renders each mixed view with its
    partner exactly as the pixel store stored it, so both runs end with bit-identical weights."""
    ds = DomainFolder(tiny_root, test_fraction=0.3)
    torch.manual_seed(0)
    teacher = Teacher("distill-demo-vit", None, ds.classes, ["a photo of a {}."])
    options = CacheOptions(views=3, seed=3, shard_size=16, policy=preset("fm", mixup=1.0))
    plain = build_cache(ds, teacher, tmp_path / "c", options, num_workers=0, progress=False)
    with_px = build_cache(ds, teacher, tmp_path / "c_px", options, pixels=PixelOptions(((16, 16),), "bilinear"),
                          num_workers=0, progress=False)
    cache = TeacherCache.open(plain)
    items = epoch_items(ds.select(["red", "green"], "train"), {d: i for i, d in enumerate(ds.domains)}, 3, 3,
                        epoch=0, cache=cache)
    mixed = [it for it in items if it.partner >= 0]
    assert mixed and all(len(it.params) == 22 and len(it.partner_params) == 22 for it in mixed)
    lines, weights = [], []
    for name, c in (("decode", plain), ("store", with_px)):
        cfg = {"data": {"root": str(tiny_root), "source": ["red", "green"], "test_fraction": 0.3},
               "student": {"arch": "test_resnet", "input_size": 16}, "strategy": {"name": "kd"},
               "optim": {"epochs": 1, "batch_size": 8, "lr": 0.01, "warmup_epochs": 0.5},
               "run": {"out": str(tmp_path / name), "workers": 0, "progress": False, "seed": 1, "device": "cpu"},
               "cache": str(c)}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        train(load_train_config(tmp_path / f"{name}.yaml"))
        lines.append(next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("input: ")))
        weights.append(load_file(str(tmp_path / name / "checkpoints" / "best" / "model.safetensors")))
    assert "decoding images" in lines[0] and lines[1].startswith("input: cached pixels 16x16 bilinear")
    a, b = weights
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_keys_are_the_epoch_items_without_objects():
    """epoch_keys / pool_keys: the same draws as epoch_items / pool_items, as int64 keys of the table."""
    samples, pool = _samples(9), _samples(4, first_index=100)
    plan = EpochBatches(samples + pool, views=3)
    for epoch in range(3):
        assert np.array_equal(epoch_keys(len(samples), 3, 4, epoch),
                              plan.keys(epoch_items(samples, {"d": 0}, 3, 4, epoch)))
        assert np.array_equal(pool_keys(len(pool), 3, 4, epoch, 10, offset=len(samples)),
                              plan.keys(pool_items(pool, {"d": 0}, 3, 4, epoch, 10)))
    assert epoch_keys(5, 1, 0, 0).dtype == np.int64 and len(pool_keys(0, 2, 0, 0, 5)) == 0


def test_the_loader_dataset_is_columns_not_one_object_per_item(tiny_root, tiny_cache):
    """all_view_items: numpy columns (no Python object per (image, view)), holding what the old Items held."""
    ds = DomainFolder(tiny_root, test_fraction=0.3)
    cache = TeacherCache.open(tiny_cache)
    samples = ds.select(["red", "green"], "train")
    table = all_view_items(samples, {d: i for i, d in enumerate(ds.domains)}, 2, cache)
    assert isinstance(table, ItemTable) and len(table) == 2 * len(samples)
    for col in (table.sample, table.label, table.domain, table.view, table.params):
        assert isinstance(col, np.ndarray) and col.dtype != object
    rows = cache.lookup(torch.from_numpy(table.sample), torch.from_numpy(table.view))
    assert np.array_equal(table.params, rows["view_params"].numpy())
    assert [(int(s), int(v)) for s, v in zip(table.sample, table.view)] == \
        [(x.index, v) for x in samples for v in range(2)]
    assert table.label.tolist() == [x.label for x in samples for _ in range(2)]
    # a list of Items and the table give a dataset with the same rows
    items = [Item(ds.sample_at(int(s)), int(d), int(v), table.params_at(k)) for k, (s, d, v) in
             enumerate(zip(table.sample, table.domain, table.view))]
    a = TrainImages(ds, items, (16, 16), "bilinear", cache.view_config, cache.view_seed, uint8=True)
    b = TrainImages(ds, table, (16, 16), "bilinear", cache.view_config, cache.view_seed, uint8=True)
    for k in (0, 1, len(table) - 1):
        xa, xb = a[k], b[k]
        assert torch.equal(xa[0], xb[0]) and xa[1:] == xb[1:]
