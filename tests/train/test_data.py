"""Epoch items, the all-(image, view) dataset and the per-epoch batch plan the persistent loader iterates."""
from __future__ import annotations

import numpy as np
import torch

from distill.data.folder import DomainFolder, Sample
from distill.teacher.cache import TeacherCache
from distill.train.data import EpochBatches, all_view_items, epoch_items


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
        assert [(pairs[k].sample.index, pairs[k].view) for k in keys] == [(i.sample.index, i.view) for i in want]


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
    by_key = {(p.sample.index, p.view): p.params for p in pairs}
    assert all(by_key[(it.sample.index, it.view)] == it.params for it in items)
