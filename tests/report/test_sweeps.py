"""Review 3 H1: runs are one configuration only where their whole config.yaml is equal but for the seed and
bookkeeping (run.out, run.workers, ...). An lr sweep at the default seed 0, or two adaptations of different source
checkpoints, read as one seed run several times: all but the newest run were dropped as "repeats" and their
difference put down to non-determinism; with several seeds each, the settings were averaged into one row."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from distill.records import RUN_CONFIG, RUN_SUMMARY, RunData
from distill.report.write import collect

from .conftest import write_run


def _edit(run: Path, **sets: Any) -> Path:
    """Set dotted keys (``optim__lr``) of RUN/config.yaml."""
    cfg = yaml.safe_load((run / RUN_CONFIG).read_text())
    for dotted, v in sets.items():
        *parents, key = dotted.split("__")
        node = cfg
        for p in parents:
            node = node[p]
        node[key] = v
    (run / RUN_CONFIG).write_text(yaml.safe_dump(cfg, sort_keys=False))
    return run


def _kd(folder: Path, noisy: float, seed: int = 0, at: float = 1_000_000, **sets: Any) -> Path:
    run = _edit(write_run(folder, strategy="kd", acc={"clean": 0.9, "dark": 0.8, "noisy": noisy}, seed=seed), **sets)
    os.utime(run / RUN_SUMMARY, (at, at))
    return run


def test_an_lr_sweep_at_the_default_seed_is_three_rows_labelled_by_lr(tmp_path: Path) -> None:
    """The reviewer's repro: kd at lr 1e-3 / 3e-3 / 1e-2, seed 0 each. Before: one row of the newest run (52 %), the
    best setting (66 %) gone, and `training is not deterministic` for the others."""
    for i, (lr, acc) in enumerate([(1e-3, 0.61), (3e-3, 0.66), (1e-2, 0.52)]):
        _kd(tmp_path / f"kd-lr{lr:g}", acc, at=1_000_000 + i, optim__lr=lr)
    data = collect([tmp_path])
    assert [(g.label, g.n, [Path(r.dir).name for r in g.runs]) for g in data.groups] == [
        ("test_resnet (kd; optim.lr=0.003)", 1, ["kd-lr0.003"]),
        ("test_resnet (kd; optim.lr=0.001)", 1, ["kd-lr0.001"]),
        ("test_resnet (kd; optim.lr=0.01)", 1, ["kd-lr0.01"])]
    assert all(g.repeats == [] for g in data.groups) and data.warnings == []


def test_a_sweep_with_seeds_is_one_row_per_setting_not_one_average(tmp_path: Path) -> None:
    """Two lr values x two seeds: two rows of n = 2, not one row averaging the settings as if they were seeds."""
    for lr, accs in ((1e-3, (0.60, 0.62)), (1e-2, (0.50, 0.52))):
        for seed, acc in enumerate(accs):
            _kd(tmp_path / f"lr{lr:g}-s{seed}", acc, seed=seed, optim__lr=lr)
    data = collect([tmp_path])
    assert [(g.label, g.seeds, g.target_mean) for g in data.groups] == [
        ("test_resnet (kd; optim.lr=0.001)", [0, 1], pytest.approx(0.61)),
        ("test_resnet (kd; optim.lr=0.01)", [0, 1], pytest.approx(0.51))]
    assert data.warnings == []


def test_adaptations_of_different_source_checkpoints_are_two_rows(tmp_path: Path) -> None:
    """Two sfda runs, seed 0, from the erm and the kd run's checkpoints: two rows, labelled by the checkpoint."""
    for i, (src, acc) in enumerate([("/runs/erm/checkpoints/best", 0.70), ("/runs/kd/checkpoints/best", 0.78)]):
        run = write_run(tmp_path / f"sfda-from-{src.split('/')[2]}", strategy="sfda", acc={"noisy": acc}, seed=0,
                        adapted_from=src)
        os.utime(run / RUN_SUMMARY, (2_000_000 + i, 2_000_000 + i))
    data = collect([tmp_path])
    assert [(g.label, g.n, g.target_mean) for g in data.groups] == [
        ("test_resnet (sfda; source_checkpoint=…/kd/checkpoints/best)", 1, pytest.approx(0.78)),
        ("test_resnet (sfda; source_checkpoint=…/erm/checkpoints/best)", 1, pytest.approx(0.70))]
    assert data.warnings == []


@pytest.mark.parametrize("key, a, b", [("student__input_size", 224, 160), ("run__views", 1, 4),
                                       ("data__root", "/data", "/other"), ("run__select_on", "source_val",
                                                                            "teacher_agreement"),
                                       ("optim__epochs", 10, 30), ("data__test_fraction", 0.2, 0.3)])
def test_any_setting_that_changes_a_result_makes_another_configuration(tmp_path: Path, key: str, a: Any,
                                                                       b: Any) -> None:
    _kd(tmp_path / "a", 0.60, **{key: a})
    _kd(tmp_path / "b", 0.64, at=1_000_100, **{key: b})
    data = collect([tmp_path])
    assert len(data.groups) == 2 and data.warnings == [], [g.label for g in data.groups]
    assert all(key.replace("__", ".") + "=" in g.label for g in data.groups)


def test_a_rerun_elsewhere_with_other_bookkeeping_is_still_a_repeat(tmp_path: Path) -> None:
    """The QA case stays: same config and seed, rerun into another run.out with other workers, progress, device,
    logging, and data.root spelled with a trailing slash (the same folder): one counted, the other named a repeat."""
    _kd(tmp_path / "first", 0.60, data__root="/data")
    _kd(tmp_path / "rerun", 0.60, at=1_000_100, data__root="/data/", run__workers=8, run__progress=False,
        run__device="cuda:1", run__log_every=10, run__save_every=100, run__eval_every=2)
    data = collect([tmp_path])
    [g] = data.groups
    assert g.label == "test_resnet (kd)" and [Path(r.dir).name for r in g.runs] == ["rerun"]
    assert [Path(r.dir).name for r in g.repeats] == ["first"]
    [w] = data.warnings
    assert f"seed 0 of test_resnet (kd) counted once, from {tmp_path / 'rerun'} ({tmp_path / 'first'} repeats it" in w


def test_runs_on_different_data_are_not_called_non_deterministic(tmp_path: Path) -> None:
    """Equal configs and seed, but data.json says the folders' files changed between the runs: their differing results
    are not put down to non-determinism. Since review 4 H1 data.root is compared by data.json's identity, so they are
    two configurations (two rows labelled by the data), not a seed and its repeat."""
    for name, fingerprint, acc, at in (("a", "aa" * 32, 0.60, 1_000_000), ("b", "bb" * 32, 0.64, 1_000_100)):
        RunData(fingerprint=fingerprint, rule={}, images={"noisy": 10}, caches=[]).write(_kd(tmp_path / name, acc, at=at))
    data = collect([tmp_path])
    assert data.warnings == [] and len(data.groups) == 2
    assert all("data.root=data " in g.label for g in data.groups)


def test_a_section_set_in_one_run_only_and_a_run_without_config_are_labelled_short(tmp_path: Path) -> None:
    """A robust evaluation set in one run: `robust=on` / `robust=none`, not each of its keys; a run without
    config.yaml cannot be matched to a configuration: a row of its own, so labelled."""
    _kd(tmp_path / "a", 0.60)
    _kd(tmp_path / "b", 0.62, robust={"pgd_eps": ["2/255"]})
    (_kd(tmp_path / "c", 0.64) / RUN_CONFIG).unlink()
    assert sorted(g.label for g in collect([tmp_path]).groups) == [
        "test_resnet (kd; no config.yaml)", "test_resnet (kd; robust=none)", "test_resnet (kd; robust=on)"]
