"""The one resumable shard writer: plan first, shards atomically and skipped when present, manifest last."""
from __future__ import annotations

import json
from typing import ClassVar

import pytest
import torch

from distill.errors import DistillError
from distill.records import CACHE_BUILD_PLAN, CACHE_MANIFEST, Record
from distill.teacher.cache.shards import PlanRefusals, ResumableShards
from distill.utils.io import sha256_file

REFUSALS = PlanRefusals(complete="{file}: done with another plan ({diffs})",
                        unfinished="{file}: started with another plan ({diffs}); remove {out}",
                        not_empty="{out}: not empty")


class Plan(Record):
    """A plan record, as the cache's, its adversarial views' and its pixel stores' are."""

    FILE: ClassVar[str] = CACHE_BUILD_PLAN
    views: dict[str, int]
    num_shards: int


PLAN = Plan(views={"count": 2}, num_shards=3)


def test_plan_first_then_done_or_refused_naming_fields(tmp_path):
    out = tmp_path / "a"
    shards = ResumableShards(out)
    assert shards.prepare(PLAN, REFUSALS) is False  # a new folder: build
    assert Plan.read(out / CACHE_BUILD_PLAN) == PLAN  # written through the record, read back through it
    assert shards.prepare(PLAN, REFUSALS) is False  # same plan, unfinished: resume
    with pytest.raises(DistillError, match=r"started with another plan \(views\.count: 2 vs 3\); remove .*a$"):
        shards.prepare(Plan(views={"count": 3}, num_shards=3), REFUSALS)
    shards.write_manifest({**PLAN.to_dict(), "rows": 0})
    assert shards.prepare(PLAN, REFUSALS) is True  # complete with this plan: nothing to do
    with pytest.raises(DistillError, match=r"manifest\.json: done with another plan \(num_shards: 3 vs 4\)"):
        shards.prepare(Plan(views={"count": 2}, num_shards=4), REFUSALS)


@pytest.mark.parametrize("text, says", [
    ('{"views": {"count": 2}, "num_shards": 3, "shiny": 1}', r"not a plan this distill reads: shiny: Extra inputs"),
    ('{"views": {"count": 2}}', r"not a plan this distill reads: num_shards: Field required"),
    ('{"views": {"count": 2}, "num', r"not a plan this distill reads: invalid JSON at line 1"),
])
def test_a_plan_file_its_type_does_not_read_is_refused_in_one_line_with_the_rebuild_command(tmp_path, text, says):
    """Read through the plan's record, not as a dict: a key it does not know (a plan this distill did not write)
    is not silently resumed over, and a damaged file says how to rebuild."""
    out = tmp_path / "a"
    out.mkdir()
    (out / CACHE_BUILD_PLAN).write_text(text)
    with pytest.raises(DistillError, match=r"build\.json: started with another plan \(" + says + r".*\); remove .*a$") as e:
        ResumableShards(out).prepare(PLAN, REFUSALS)
    assert "\n" not in str(e.value)


def test_a_foreign_folder_is_refused_only_when_asked(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(DistillError, match="not empty"):
        ResumableShards(tmp_path / "b").prepare(PLAN, REFUSALS)
    lenient = PlanRefusals(REFUSALS.complete, REFUSALS.unfinished)
    assert ResumableShards(tmp_path / "b").prepare(PLAN, lenient) is False


def test_pending_skips_written_shards_and_splits_over_ranks(tmp_path):
    shards = ResumableShards(tmp_path)
    shards.prepare(PLAN, REFUSALS)
    (tmp_path / ".shard-00001.safetensors.x.tmp").write_bytes(b"half")  # a killed write's leftover
    shards.write(1, {"sample_index": torch.arange(4)}, {"skipped": json.dumps([{"path": "x.png"}])})
    assert shards.pending(3) == [0, 2]
    assert ResumableShards(tmp_path, rank=1, world=2).pending(3) == []  # rank 1 owns shard 1 only: written
    assert ResumableShards(tmp_path, rank=0, world=2).pending(3) == [0, 2]
    shards.prepare(PLAN, REFUSALS)  # resuming clears leftovers of killed atomic writes
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(DistillError, match="shard-00000.safetensors: missing"):
        shards.finished(3, "{path}: missing")
    for k in (0, 2):
        shards.write(k, {"sample_index": torch.arange(k)})
    files = shards.finished(3, "{path}: missing")
    assert [(f.file, f.rows, f.skipped) for f in files] == [
        ("shard-00000.safetensors", 0, []), ("shard-00001.safetensors", 4, [{"path": "x.png"}]),
        ("shard-00002.safetensors", 2, [])]
    assert all(len(f.sha256) == 64 and f.bytes > 0 for f in files)
    assert not (tmp_path / CACHE_MANIFEST).exists()


def test_build_is_the_skeleton_plan_pending_shards_manifest_and_resumes_after_a_kill(tmp_path):
    """One skeleton for the cache, its adversarial views and its pixel stores: only the pending shards are asked
    for, the manifest is made last from every shard (hashed), and a complete artifact asks for nothing."""
    asked: list[list[int]] = []

    def make(mine):
        asked.append(list(mine))
        for k in mine:
            if k == 2 and len(asked) == 1:
                raise KeyboardInterrupt  # killed before shard 2
            yield k, {"sample_index": torch.arange(k + 1)}, None

    def manifest(files):
        return {**PLAN.to_dict(), "shards": [[f.file, f.rows, f.sha256] for f in files]}

    shards = ResumableShards(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        shards.build(PLAN, REFUSALS, make, manifest, "{path}: missing")
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == ["shard-00000.safetensors", "shard-00001.safetensors"]
    assert not (tmp_path / CACHE_MANIFEST).exists()
    assert shards.build(PLAN, REFUSALS, make, manifest, "{path}: missing") is False
    assert asked == [[0, 1, 2], [2]]  # resumed: only the shard not on disk
    listed = json.loads((tmp_path / CACHE_MANIFEST).read_text())["shards"]
    assert listed == [[f"shard-0000{k}.safetensors", k + 1, sha256_file(tmp_path / f"shard-0000{k}.safetensors")]
                      for k in range(3)]
    assert shards.build(PLAN, REFUSALS, make, manifest, "{path}: missing") is True and len(asked) == 2


def test_build_closes_the_shard_generator_when_a_write_fails(tmp_path):
    """A failed write leaves the builder's context managers (inference mode, cuDNN flags) at once, not at GC."""
    left = []

    def make(mine):
        try:
            yield 0, {"x": torch.arange(6).view(2, 3).t()}, None  # not contiguous: safetensors refuses it
        finally:
            left.append(True)

    try:
        ResumableShards(tmp_path).build(PLAN, REFUSALS, make, dict, "{path}: missing")
    except ValueError:  # the traceback still holds build's frame, and with it the generator
        assert left == [True]
    else:
        pytest.fail("the write did not fail")
