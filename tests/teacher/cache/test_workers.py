"""How many decode workers a cache build starts when --workers is not given: none for a pass of one batch (a tiny
set: one worker would decode that whole batch alone, after its own start-up, with nothing to overlap), cores - 1
otherwise; a number given is used as given."""
from __future__ import annotations

import multiprocessing.process

import pytest

from distill.teacher.cache import CacheOptions, PixelOptions, build_cache


@pytest.fixture
def started(monkeypatch) -> list[object]:
    """The processes started (DataLoader workers: a build starts no other)."""
    out: list[object] = []
    start = multiprocessing.process.BaseProcess.start

    def counted(self):
        out.append(self)
        return start(self)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", counted)
    return out


def test_a_one_batch_build_decodes_in_process(dataset, teacher, tmp_path, started):
    """30 images at batch 64 (and the pixel store's pass, 30 images at its batch 64): no worker starts."""
    build_cache(dataset, teacher, tmp_path / "c", CacheOptions(views=1, batch_size=64), progress=False,
                pixels=PixelOptions(((16, 16),)))
    assert started == []


def test_a_build_of_several_batches_and_a_given_number_start_workers(dataset, teacher, tmp_path, started):
    build_cache(dataset, teacher, tmp_path / "several", CacheOptions(views=1, batch_size=8), progress=False)
    assert len(started) >= 1  # cores - 1, at least 1
    started.clear()
    build_cache(dataset, teacher, tmp_path / "given", CacheOptions(views=1, batch_size=64), num_workers=1,
                progress=False)
    assert len(started) == 1
