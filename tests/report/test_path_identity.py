"""Review 4 H1 / M3: config.yaml's path keys are compared by what they name where the run recorded it. Seeds of one
configuration run from a copied data folder, a moved cache or another machine are one row; sfda seeds that each
adapt their own seed's source run (of one configuration) are one row; paths are compared only where nothing was
recorded (older runs)."""
from __future__ import annotations

from pathlib import Path

import pytest

from distill.records import STUDENT_WEIGHTS, RunData
from distill.report.write import collect

from .conftest import write_run
from .test_sweeps import _edit, _kd

_CACHE = {"path": "/home/a/cache", ".": {"teacher": {"arch": "RN50"}, "views": 8}}


def _data(run: Path, fingerprint: str = "aa" * 32, cache_path: str = "/home/a/cache") -> Path:
    RunData(fingerprint=fingerprint, rule={"classes": ["0", "1"], "split_seed": 0}, images={"noisy": 10},
            caches=[{**_CACHE, "path": cache_path}]).write(run)
    return run


def test_seeds_on_a_copied_data_folder_and_moved_cache_are_one_row(tmp_path: Path) -> None:
    """The reviewer's repro: seed 0 on /home/a/data, seed 1 on /scratch/b/data (a copy: the same data.json
    fingerprint), each with its own cache path of one meaning: one row of n = 2 (before: two rows of n = 1)."""
    _data(_kd(tmp_path / "s0", 0.60, seed=0, data__root="/home/a/data", cache="/home/a/cache"))
    _data(_kd(tmp_path / "s1", 0.64, seed=1, data__root="/scratch/b/data", cache="/scratch/b/cache"),
          cache_path="/scratch/b/cache")
    data = collect([tmp_path])
    assert [(g.label, g.seeds) for g in data.groups] == [("test_resnet (kd)", [0, 1])]


def test_different_data_under_one_root_is_another_configuration(tmp_path: Path) -> None:
    """The converse: data.json's fingerprints differ: two rows, labelled by the data's identity, not one averaged."""
    _data(_kd(tmp_path / "s0", 0.60, seed=0), fingerprint="aa" * 32)
    _data(_kd(tmp_path / "s1", 0.64, seed=1), fingerprint="bb" * 32)
    groups = collect([tmp_path]).groups
    assert len(groups) == 2 and all("data.root=data " in g.label for g in groups), [g.label for g in groups]


def test_runs_without_data_json_still_compare_paths(tmp_path: Path) -> None:
    _kd(tmp_path / "s0", 0.60, seed=0, data__root="/home/a/data")
    _kd(tmp_path / "s1", 0.64, seed=1, data__root="/scratch/b/data")
    assert len(collect([tmp_path]).groups) == 2


def _erm(folder: Path, seed: int, **sets: object) -> Path:
    run = _edit(write_run(folder, strategy="erm", acc={"clean": 0.9, "noisy": 0.5}, seed=seed), **sets)
    (run / "checkpoints" / "best").mkdir(parents=True)
    (run / "checkpoints" / "best" / STUDENT_WEIGHTS).write_bytes(bytes([seed]) * 64)
    return run


def test_sfda_seeds_adapting_their_own_seeds_source_run_are_one_row(tmp_path: Path) -> None:
    """M3: sfda seed s adapts runs/erm-s{s}/checkpoints/best (one erm configuration, two seeds): one row of n = 2,
    keyed on the source run's configuration less its seed (before: one row per seed)."""
    for s in (0, 1):
        _erm(tmp_path / "src" / f"erm-s{s}", s)
        write_run(tmp_path / "ad" / f"sfda-s{s}", strategy="sfda", acc={"noisy": 0.7 + s / 100}, seed=s,
                  adapted_from=str(tmp_path / "src" / f"erm-s{s}" / "checkpoints" / "best"))
    groups = [g for g in collect([tmp_path / "ad"]).groups]
    assert [(g.label, g.seeds) for g in groups] == [("test_resnet (sfda)", [0, 1])]


def test_sfda_from_source_runs_of_different_configurations_are_two_rows(tmp_path: Path) -> None:
    """Source runs differing in lr (another configuration): two rows, as before."""
    for s, lr in ((0, 1e-3), (1, 1e-2)):
        _erm(tmp_path / "src" / f"erm-s{s}", s, optim__lr=lr)
        write_run(tmp_path / "ad" / f"sfda-s{s}", strategy="sfda", acc={"noisy": 0.7 + s / 100}, seed=s,
                  adapted_from=str(tmp_path / "src" / f"erm-s{s}" / "checkpoints" / "best"))
    groups = collect([tmp_path / "ad"]).groups
    assert len(groups) == 2 and all("source_checkpoint=run config " in g.label for g in groups), \
        [g.label for g in groups]


@pytest.mark.parametrize("same", [True, False])
def test_a_source_checkpoint_outside_a_run_is_keyed_on_its_weights(tmp_path: Path, same: bool) -> None:
    """A checkpoint folder copied to two places (no run folder around it): one configuration by its weights' sha256;
    other weights: two."""
    for s in (0, 1):
        ckpt = tmp_path / f"ckpt{s}"
        ckpt.mkdir()
        (ckpt / STUDENT_WEIGHTS).write_bytes(b"w" * 64 if same else bytes([s]) * 64)
        write_run(tmp_path / "ad" / f"sfda-s{s}", strategy="sfda", acc={"noisy": 0.7}, seed=s, adapted_from=str(ckpt))
    assert len(collect([tmp_path / "ad"]).groups) == (1 if same else 2)


def test_teacher_weights_at_two_paths_with_one_recorded_sha256_are_one_row(tmp_path: Path) -> None:
    """teacher.pretrained at /home/a/... and /scratch/b/... of one file (summary.json's teacher checkpoint_sha256):
    one row of n = 2."""
    from distill.records import RunSummary, TeacherIdentity

    for s, root in ((0, "/home/a"), (1, "/scratch/b")):
        run = _kd(tmp_path / f"s{s}", 0.6, seed=s, teacher={"arch": "RN50", "pretrained": f"{root}/teacher.safetensors"})
        RunSummary.read(run).model_copy(update={"teacher": TeacherIdentity(
            arch="RN50", pretrained=f"{root}/teacher.safetensors", checkpoint_sha256="cc" * 32)}).write(run)
    assert [g.seeds for g in collect([tmp_path]).groups] == [[0, 1]]


def test_an_older_seed_without_data_json_joins_the_newer_seeds_on_that_same_folder(tmp_path: Path) -> None:
    """Seed 0 from before data.json, seeds 1 and 2 with it, all on /data: one row (the old run by its path, which
    only one recorded identity matches); at another path it stays apart."""
    _kd(tmp_path / "s0", 0.60, seed=0)
    _data(_kd(tmp_path / "s1", 0.62, seed=1))
    _data(_kd(tmp_path / "s2", 0.64, seed=2))
    _kd(tmp_path / "other", 0.5, seed=0, data__root="/other")
    assert sorted(g.seeds for g in collect([tmp_path]).groups) == [[0], [0, 1, 2]]
