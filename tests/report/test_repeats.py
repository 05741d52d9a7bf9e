"""Repeats of a seed in the report (QA K F1): a rerun into another run.out, or a copied run folder, is the same seed
run twice, not a second seed: n counts distinct seeds, and no significance test is run on repeats."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from distill.cli import main
from distill.records import RUN_SUMMARY, RunSummary
from distill.report.runs import group_runs, label_runs, read_run
from distill.report.write import collect

from .conftest import write_run

FM = {"clean": 0.953, "noisy": 0.440}
KD = {"clean": 0.360, "noisy": 0.345}


def _run(folder: Path, strategy: str, acc: dict[str, float], seed: int = 0, written: float = 1_000_000.0) -> Path:
    """A run trained on clean, tested on noisy; its summary.json written at ``written`` (seconds since the epoch)."""
    write_run(folder, strategy=strategy, acc=acc, seed=seed, source=("clean",), target=("noisy",))
    os.utime(folder / RUN_SUMMARY, (written, written))
    return folder


def test_qa_case_reruns_with_one_seed_are_one_seed_and_not_tested(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The QA's exact case: fm run twice with one seed (runs/fm20, runs/fm20b), kd likewise (runs/mid, runs/midref).
    Before: two rows of n = 2, std 0, and `Welch p = < 0.001 -> real` from one seed a side."""
    runs = tmp_path / "runs"
    _run(runs / "fm20", "fm", FM, written=1_000_000)
    _run(runs / "fm20b", "fm", FM, written=1_000_100)  # the rerun: newer
    _run(runs / "mid", "kd", KD, written=1_000_200)
    _run(runs / "midref", "kd", KD, written=1_000_300)
    out = tmp_path / "rdup" / "r.html"
    assert main(["report", str(runs / "fm20"), str(runs / "fm20b"), str(runs / "mid"), str(runs / "midref"),
                 "--out", str(out)]) == 0
    md = out.with_suffix(".md").read_text()
    assert "| test_resnet (fm) | 1 | 44.0 | 95.3* | 44.0 |" in md, md
    assert "| test_resnet (kd) | 1 | 34.5 | 36.0* | 34.5 |" in md, md
    assert "Welch p" not in md and "-> real" not in md
    html = out.read_text()
    assert "Welch p" not in html and "-&gt; real" not in html
    # one warning line, naming each repeat left out and the run counted in its place
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1, warnings
    [w] = warnings
    assert w.startswith("warning: 2 run(s) repeat the seed of another run of the same configuration")
    assert f"seed 0 of test_resnet (fm) counted once, from {runs / 'fm20b'} ({runs / 'fm20'} repeats it, left out; "\
           f"the later summary.json counts, by its modification time (no finish time recorded))" in w
    assert f"seed 0 of test_resnet (kd) counted once, from {runs / 'midref'} ({runs / 'mid'} repeats it, left out; "\
           f"the later summary.json counts, by its modification time (no finish time recorded))" in w
    assert "not deterministic" not in w  # identical results
    # and a note by the table, in both files
    assert f"- seed 0 of test_resnet (fm) counted once, from {runs / 'fm20b'} ({runs / 'fm20'} repeats it" in md
    assert "Repeats of a seed, counted once:" in html and f"{runs / 'mid'} repeats it, left out" in html


def test_a_copied_folder_is_not_another_seed_and_distinct_seeds_are_still_tested(tmp_path: Path) -> None:
    """Two seeds of fm plus a copy of seed 0's folder: n = 2, not 3; two rows of two distinct seeds each are still
    compared by Welch's test, as before."""
    _run(tmp_path / "fm-s0", "fm", {"clean": 0.95, "noisy": 0.44}, seed=0, written=1_000_000)
    _run(tmp_path / "fm-s1", "fm", {"clean": 0.95, "noisy": 0.48}, seed=1, written=1_000_100)
    shutil.copytree(tmp_path / "fm-s0", tmp_path / "fm-s0-copy")
    os.utime(tmp_path / "fm-s0-copy" / RUN_SUMMARY, (1_000_000, 1_000_000))  # cp -p: the same time, so by path
    _run(tmp_path / "kd-s0", "kd", {"clean": 0.36, "noisy": 0.34}, seed=0)
    _run(tmp_path / "kd-s1", "kd", {"clean": 0.36, "noisy": 0.36}, seed=1)
    data = collect([tmp_path])
    fm = next(g for g in data.groups if g.label == "test_resnet (fm)")
    assert fm.n == 2 and fm.seeds == [0, 1] and fm.target_per_seed == pytest.approx([0.44, 0.48])
    assert [r.dir for r in fm.runs] == [str(tmp_path / "fm-s0"), str(tmp_path / "fm-s1")]  # first by path on a tie
    assert [r.dir for r in fm.repeats] == [str(tmp_path / "fm-s0-copy")]
    assert len(data.runs) == 5  # the copy is still a run (an export of it still finds its label); it is not a seed
    [w] = data.warnings
    assert w.startswith("1 run(s) repeat the seed") and str(tmp_path / "fm-s0-copy") in w
    report = tmp_path / "out" / "r.html"
    assert main(["report", str(tmp_path / "fm-s0"), str(tmp_path / "fm-s1"), str(tmp_path / "fm-s0-copy"),
                 str(tmp_path / "kd-s0"), str(tmp_path / "kd-s1"), "--out", str(report)]) == 0
    md = report.with_suffix(".md").read_text()
    assert "| test_resnet (fm) | 2 | 46.0 ± 2.8 (2) [44.0–48.0] |" in md
    assert "- test_resnet (fm) vs test_resnet (kd): +11.0 points, 2 SE = 4.5, Welch p = 0.069 -> within noise" in md


def test_repeats_that_disagree_are_not_averaged_the_newer_counts(tmp_path: Path) -> None:
    """Same seed, different results (training not deterministic, e.g. on a GPU): the newer summary.json counts alone
    (a real run, not a blend of two), and the warning gives both target means."""
    _run(tmp_path / "a", "fm", {"clean": 0.95, "noisy": 0.440}, written=1_000_100)  # newer, though first by path
    _run(tmp_path / "b", "fm", {"clean": 0.95, "noisy": 0.452}, written=1_000_000)
    for run in ("a", "b"):  # each in one process, as recorded: only the training itself can differ
        _launch(tmp_path / run, 1)
    data = collect([tmp_path])
    [g] = data.groups
    assert g.n == 1 and g.target_mean == pytest.approx(0.44) and g.target_std is None and g.target_spread is None
    assert [r.dir for r in g.repeats] == [str(tmp_path / "b")]
    [w] = data.warnings
    assert f"from {tmp_path / 'a'} ({tmp_path / 'b'} repeats it, left out; the later summary.json counts, by its " \
           "modification time (no finish time recorded); target mean 44.0 % vs 45.2 %: training is not " \
           "deterministic)" in w


def _launch(run: Path, world_size: int, nnodes: int = 1) -> None:
    """RUN/launch.json as ``distill train`` writes it (RunLaunch: the run's number of ranks; nodes only over 1)."""
    (run / "launch.json").write_text(json.dumps({"world_size": world_size, **({"nnodes": nnodes} if nnodes > 1 else {})}))


def test_a_2_rank_run_and_1_process_runs_of_one_seed_are_two_rows_not_repeats(tmp_path: Path) -> None:
    """QA I finding 2: a torchrun run on 2 ranks (33.3 %, newest) and two 1-process runs of the same seed (23.8 %
    each) were one row showing the 2-rank figure, with "training is not deterministic". The ranks train another
    run (the batch per rank; a CPU's per-rank BatchNorm statistics): two rows, labelled by them; the 1-process runs
    are each other's repeat, with identical results."""
    _run(tmp_path / "kd", "kd", {"clean": 0.9, "noisy": 0.238}, written=1_000_000)
    _run(tmp_path / "kd_int", "kd", {"clean": 0.9, "noisy": 0.238}, written=1_000_100)
    _run(tmp_path / "kd_ddp", "kd", {"clean": 0.9, "noisy": 0.333}, written=1_000_200)
    for run, world in (("kd", 1), ("kd_int", 1), ("kd_ddp", 2)):
        _launch(tmp_path / run, world)
    data = collect([tmp_path])
    by_label = {g.label: g for g in data.groups}
    assert sorted(by_label) == ["test_resnet (kd; 1 process)", "test_resnet (kd; 2 torchrun ranks)"], by_label
    one, two = by_label["test_resnet (kd; 1 process)"], by_label["test_resnet (kd; 2 torchrun ranks)"]
    assert one.target_mean == pytest.approx(0.238) and [r.dir for r in one.repeats] == [str(tmp_path / "kd")]
    assert two.target_mean == pytest.approx(0.333) and two.repeats == []
    [w] = data.warnings
    assert "not deterministic" not in w and str(tmp_path / "kd_ddp") not in w, w


def test_differing_repeats_that_do_not_record_their_ranks_name_the_ranks_as_a_cause(tmp_path: Path) -> None:
    """Runs from before launch.json may have run on other numbers of ranks: that is said, not non-determinism
    alone."""
    _run(tmp_path / "a", "kd", {"clean": 0.9, "noisy": 0.238}, written=1_000_000)
    _run(tmp_path / "b", "kd", {"clean": 0.9, "noisy": 0.333}, written=1_000_100)
    [w] = collect([tmp_path]).warnings
    assert "target mean 33.3 % vs 23.8 %: training is not deterministic, or the two ran on different numbers of " \
           "torchrun ranks or nodes (a run without launch.json does not record them))" in w, w


def test_runs_that_record_no_seed_each_count(tmp_path: Path) -> None:
    """Without config.yaml a run's seed is unknown: it cannot be told from another seed, so it is not left out."""
    base = read_run(_run(tmp_path / "a", "fm", FM))
    runs = [replace(base, seed=None), replace(base, dir="b", seed=None)]
    label_runs(runs)
    [g] = group_runs(runs)
    assert g.n == 2 and g.repeats == []


def _finished(run: Path, at: str) -> Path:
    """Record in RUN/summary.json that the run finished at ``at`` (as distill train now does)."""
    RunSummary.read(run).model_copy(update={"finished_at": at}).write(run)
    return run


@pytest.mark.parametrize("keep_times", [False, True], ids=["cp -r", "cp -p"])
def test_a_backup_copied_after_the_rerun_does_not_outrank_it(tmp_path: Path, keep_times: bool) -> None:
    """Review 3 M2: run a (40 %), then its rerun b (47 %), then a backup of a. Ordered on summary.json's mtime, a
    `cp -r` backup was the newest and counted (a stale 40 %); `cp -p` tied with a. The finish time recorded inside
    summary.json travels with the copy: b counts, and the warning says by which rule."""
    a = _finished(_run(tmp_path / "a", "fm", {"clean": 0.95, "noisy": 0.40}), "2026-12-01T10:00:00+00:00")
    b = _finished(_run(tmp_path / "b", "fm", {"clean": 0.95, "noisy": 0.47}), "2026-12-02T10:00:00+00:00")
    os.utime(a / RUN_SUMMARY, (1_000_000, 1_000_000))
    os.utime(b / RUN_SUMMARY, (1_000_100, 1_000_100))
    shutil.copytree(a, tmp_path / "a-backup", copy_function=shutil.copy2 if keep_times else shutil.copy)
    data = collect([tmp_path])
    [g] = data.groups
    assert [r.dir for r in g.runs] == [str(b)] and g.target_mean == pytest.approx(0.47)
    assert sorted(r.dir for r in g.repeats) == [str(a), str(tmp_path / "a-backup")]
    [w] = data.warnings
    assert f"({a} repeats it, left out; the later finish time counts (the run's finished_at); target mean " in w


def test_a_summary_without_a_finish_time_still_reads_and_orders_by_mtime(tmp_path: Path) -> None:
    """Summaries written before finished_at read as before (mtime, then path); a new summary has it."""
    old = read_run(_run(tmp_path / "old", "fm", FM, written=1_000_000))
    assert old.summary.finished_at is None and old.by_mtime and old.written == 1_000_000
    new = read_run(_finished(_run(tmp_path / "new", "fm", FM), "2026-12-06T01:02:03.456789+00:00"))
    assert not new.by_mtime and new.written == pytest.approx(1796518923.456789)


def test_a_run_without_launch_json_is_labelled_ranks_not_recorded(tmp_path: Path) -> None:
    """Review 5 #3: a run from before launch.json groups as one process but its label must not state that it
    ran as one (it may have run under torchrun): "ranks not recorded"."""
    _run(tmp_path / "old", "kd", {"clean": 0.9, "noisy": 0.238}, written=1_000_000)
    _run(tmp_path / "new2", "kd", {"clean": 0.9, "noisy": 0.333}, written=1_000_100)
    _launch(tmp_path / "new2", 2)
    labels = sorted(g.label for g in collect([tmp_path]).groups)
    assert labels == ["test_resnet (kd; 2 torchrun ranks)", "test_resnet (kd; ranks not recorded)"], labels


def test_4_ranks_on_1_node_and_on_2_nodes_are_two_rows_not_repeats(tmp_path: Path) -> None:
    """4 ranks on one node and 4 ranks on 2 nodes (2x2), one seed and config: the same batch per rank, but the
    gradients reduce in another order (float sums), so results may differ. Before, one row with the other as a
    repeat, its difference put down to "training is not deterministic"; now two rows, labelled by their nodes."""
    _run(tmp_path / "one_node", "kd", {"clean": 0.9, "noisy": 0.333}, written=1_000_000)
    _run(tmp_path / "two_nodes", "kd", {"clean": 0.9, "noisy": 0.338}, written=1_000_100)
    _launch(tmp_path / "one_node", 4)
    _launch(tmp_path / "two_nodes", 4, nnodes=2)
    data = collect([tmp_path])
    by_label = {g.label: g for g in data.groups}
    assert sorted(by_label) == ["test_resnet (kd; 4 torchrun ranks on 1 node)",
                                "test_resnet (kd; 4 torchrun ranks on 2 nodes)"], by_label
    assert by_label["test_resnet (kd; 4 torchrun ranks on 2 nodes)"].target_mean == pytest.approx(0.338)
    assert all(g.repeats == [] for g in data.groups) and data.warnings == [], data.warnings
