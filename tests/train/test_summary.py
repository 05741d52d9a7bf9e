"""Metrics rows hold fractions; the printed epoch line shows percents with the digits it always had."""
from __future__ import annotations

import csv
import math

import pytest

from distill.records import pct
from distill.train.summary import (
    SOURCE_VAL_ACC,
    best_holds,
    epoch_line,
    metrics_row,
    selected_run_summary,
    write_metrics,
)


@pytest.mark.parametrize("correct, total", [(23, 80), (49, 80), (98, 160), (1, 3), (0, 7), (7, 7)])
def test_printed_percent_keeps_the_digits_percent_rows_printed(correct, total):
    """Before: rows held round(100 * c / n, 4), printed with .1f. A fraction row printed as 100 * x alone
    turns 23/80's 28.75 into 28.7 (it printed 28.8); records.pct must not."""
    before = f"{round(100.0 * correct / total, 4):.1f}"
    row = metrics_row(0, {"a": correct / total}, {}, ["a"], [])
    assert pct(row["acc/a"]) == before
    assert pct(row["source_acc"]) == before


def test_rows_are_fractions_with_means_over_source_target_and_validation():
    row = metrics_row(2, {"a": 0.5, "b": 0.25, "c": 1.0}, {"a": 0.75}, ["a", "b"], ["c"])
    assert row["epoch"] == 3
    assert row["source_acc"] == pytest.approx(0.375) and row["target_acc"] == 1.0
    assert row["val/a"] == 0.75 and row["source_val_acc"] == 0.75
    empty = metrics_row(0, {"a": 0.5}, {}, ["a"], [])
    assert math.isnan(empty["target_acc"]) and math.isnan(empty["source_val_acc"])


def test_epoch_line_prints_percents_and_n_a():
    row = metrics_row(0, {"a": 0.5, "c": 0.125}, {"a": 0.75}, ["a"], ["c"])
    assert epoch_line(row, improved=True) == ("epoch 1: source val 75.0  |  test: source 50.0  target 12.5  |  "
                                              "a 50.0  c 12.5  (best)")
    no_val = metrics_row(0, {"c": 0.125}, {}, [], ["c"])
    assert epoch_line(no_val, improved=True).startswith("epoch 1: source val n/a  |  test: source n/a  target 12.5")
    assert epoch_line(no_val, improved=True, source_free=True).endswith("(kept: last epoch; no labels to select on)")
    # a labelled run whose source domains hold no validation image: it has labels, not held-out ones
    assert epoch_line(no_val, improved=True).endswith("(kept: last epoch; no validation images in the source domains)")


def test_epoch_line_of_an_epoch_without_test_evaluation_has_no_dangling_bar():
    """run.eval_every > 1: an epoch that evaluated no test split printed `target n/a  |  ` with nothing after it."""
    row = metrics_row(1, {}, {"a": 0.75}, ["a"], ["c"])
    assert epoch_line(row, improved=False) == "epoch 2: source val 75.0  |  test: not evaluated this epoch"
    no_val = metrics_row(0, {}, {}, [], ["c"])
    assert epoch_line(no_val, improved=True, source_free=True) == (
        "epoch 1: source val n/a  |  test: not evaluated this epoch  (kept: last epoch; no labels to select on)")


def test_metrics_csv_and_summary_hold_fractions(tmp_path):
    rows = [metrics_row(e, {"a": acc, "c": 0.5}, {"a": acc}, ["a"], ["c"]) for e, acc in enumerate([0.25, 0.75])]
    write_metrics(tmp_path, rows)
    read = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [float(r["acc/a"]) for r in read] == [0.25, 0.75]
    summary = selected_run_summary(rows[1], strategy="erm", student="s", source_domains=["a"], target_domains=["c"],
                                   trained_on=["a"], params=1, checkpoint="x", train_seconds_this_session=0.0)
    assert summary.test_acc == {"a": 0.75, "c": 0.5} and summary.source_val_acc == 0.75
    assert summary.selected_on == "source_val" and summary.best_epoch == 2
    assert summary.selected_value == 0.75 and summary.teacher_agreement is None
    # what checkpoints/best holds, in words (its student.json): a source-free run's is its last epoch
    no_val = metrics_row(0, {"c": 0.5}, {}, [], ["c"])
    facts = dict(strategy="sfda", student="s", source_domains=["a"], target_domains=["c"], trained_on=["c"], params=1,
                 checkpoint="x", train_seconds_this_session=0.0)
    assert selected_run_summary(no_val, **facts).selected_on == "last_epoch"
    assert best_holds(no_val, SOURCE_VAL_ACC, "sfda", source_free=True) == "last epoch (sfda selects no epoch: no labels)"
    assert best_holds(no_val, SOURCE_VAL_ACC, "erm", source_free=False) == "last epoch (no source validation images)"
    assert best_holds(rows[1], SOURCE_VAL_ACC, "erm", source_free=False) == "source validation accuracy"


def test_live_accuracy_counts_only_rows_with_a_label():
    """Pool images and withheld classes carry label -1: the live accuracy neither counts them right nor wrong."""
    import torch

    from distill.train.logger import StepLog

    log = StepLog(None, torch.device("cpu"))
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])  # predicts 0, 1, 0, 0
    log.add(0, 1, {"loss": torch.tensor(1.0), "logits": logits}, torch.tensor([0, 0, -1, -1]), 0.1)
    assert int(log.correct) == 1 and int(log.seen) == 2  # 1 of the 2 labelled rows; the -1 rows not counted


def test_the_summary_records_when_the_run_finished() -> None:
    """Review 3 M2: summary.json says when the run finished (UTC), so that `distill report` orders two runs of one
    seed on it rather than on the file's mtime, which a copy of the folder renews."""
    from datetime import datetime, timedelta, timezone

    row = metrics_row(0, {"a": 0.5, "c": 0.4}, {"a": 0.5}, ["a"], ["c"])
    s = selected_run_summary(row, strategy="erm", student="s", source_domains=["a"], target_domains=["c"],
                             trained_on=["a"], params=1, checkpoint="c", train_seconds_this_session=1.0)
    finished = datetime.fromisoformat(s.finished_at)
    assert finished.tzinfo is not None and abs(datetime.now(timezone.utc) - finished) < timedelta(minutes=1)
    assert type(s).from_dict(s.to_dict(), "summary.json").finished_at == s.finished_at
