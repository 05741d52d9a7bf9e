"""A run's numbers: the per-epoch metrics row, the printed epoch line, ``metrics.csv`` and the RunSummary.

Accuracies are fractions in every row, in ``metrics.csv`` and in ``summary.json``
(:class:`~distill.records.RunSummary`); they become percents only where printed
(:func:`distill.records.pct`, same digits as ever).
"""
from __future__ import annotations

import csv
import io
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from distill.evaluate import TopK
from distill.records import RUN_METRICS, RunSummary, pct
from distill.utils.io import atomic_write_text

# row keys
SOURCE_ACC, TARGET_ACC, SOURCE_VAL_ACC = "source_acc", "target_acc", "source_val_acc"
SOURCE_TOP5, TARGET_TOP5, SOURCE_VAL_TOP5 = "source_top5", "target_top5", "source_val_top5"  # NaN: < 5 classes
TEACHER_AGREEMENT = "teacher_agreement"  # run.select_on teacher_agreement: the student's agreement on the pool
TEST_PREFIX, VAL_PREFIX = "acc/", "val/"


def mean_or_nan(values: Sequence[float]) -> float:
    return round(float(np.mean(values)), 6) if values else float("nan")


def metrics_row(epoch: int, test: Mapping[str, float | TopK], val: Mapping[str, float | TopK], source: Sequence[str],
                target: Sequence[str], train: dict[str, float] | None = None,
                agreement: float | None = None) -> dict[str, Any]:
    """One epoch's row: test accuracy per domain, source/target means, validation per source domain + mean;
    with :class:`~distill.evaluate.TopK` values also the top-5 means (``source_top5``, ``target_top5``,
    ``source_val_top5``: NaN for fewer than 5 classes or no domain), then ``teacher_agreement`` (only when
    measured: ``run.select_on: teacher_agreement``), then ``train`` (train_loss, lr).

    Accuracies are fractions rounded to 6 decimals; a mean over no domain is NaN (printed ``n/a``).
    """
    top1 = {k: _top(v, 0) for k, v in test.items()}
    vtop1 = {k: _top(v, 0) for k, v in val.items()}
    row: dict[str, Any] = {"epoch": epoch + 1}
    row.update({f"{TEST_PREFIX}{d}": round(v, 6) for d, v in top1.items()})
    row[SOURCE_ACC] = mean_or_nan([top1[d] for d in source if d in top1])
    row[TARGET_ACC] = mean_or_nan([top1[d] for d in target if d in top1])  # no target domains: n/a
    row.update({f"{VAL_PREFIX}{d}": round(v, 6) for d, v in vtop1.items()})
    row[SOURCE_VAL_ACC] = mean_or_nan(list(vtop1.values()))
    if any(isinstance(v, TopK) for v in [*test.values(), *val.values()]):
        row[SOURCE_TOP5] = mean_or_nan([_top(test[d], 1) for d in source if d in test])
        row[TARGET_TOP5] = mean_or_nan([_top(test[d], 1) for d in target if d in test])
        row[SOURCE_VAL_TOP5] = mean_or_nan([_top(v, 1) for v in val.values()])
    if agreement is not None:
        row[TEACHER_AGREEMENT] = round(agreement, 6)
    row.update(train or {})
    return row


def top1_mean(accuracy: Mapping[str, float | TopK]) -> float:
    """The mean top-1 accuracy over the domains of ``accuracy`` (NaN for none), as ``metrics_row`` computes it."""
    return mean_or_nan([_top(v, 0) for v in accuracy.values()])


def _top(v: float | TopK, k: int) -> float:
    """Top-1 (k=0) or top-5 (k=1) of an accuracy (a plain float is top-1 only)."""
    return v[k] if isinstance(v, TopK) else (v if k == 0 else math.nan)


def by_domain(row: dict[str, Any], prefix: str) -> dict[str, float]:
    return {k[len(prefix):]: v for k, v in row.items() if k.startswith(prefix)}


def nothing_to_select_on(source_free: bool, row_key: str) -> str:
    """Why a run keeps its last epoch (what is printed after ``kept: last epoch;``). ``row_key``: the metrics row
    key the run selects on (``SOURCE_VAL_ACC`` or ``TEACHER_AGREEMENT``: ``selection.KEYS[run.select_on]``). A
    source-free run reads no label; a labelled run whose source domains have no validation image (a small domain,
    ``data.val_fraction``) has labels, but no held-out ones to select on; one selecting on teacher agreement
    measured none."""
    if source_free:
        return "no labels to select on"
    return "no validation images in the source domains" if row_key == SOURCE_VAL_ACC else \
        "no teacher agreement measured"


def epoch_line(row: dict[str, Any], improved: bool, row_key: str = SOURCE_VAL_ACC,
               source_free: bool = False) -> str:
    """The line printed after each epoch (percents); ``row_key``: the metrics row key the run selects on
    (``selection.KEYS[run.select_on]``); ``source_free``: the run reads no label (its strategy's
    ``needs.target_data``)."""
    domains = "  ".join(f"{d} {pct(v)}" for d, v in by_domain(row, TEST_PREFIX).items())
    kept = (f"  (kept: last epoch; {nothing_to_select_on(source_free, row_key)})" if math.isnan(row[row_key])
            else "  (best)" if improved else "")
    src, tgt, val = (pct(row[k]) for k in (SOURCE_ACC, TARGET_ACC, SOURCE_VAL_ACC))
    agree = f"  teacher agreement {pct(row[TEACHER_AGREEMENT])}" if TEACHER_AGREEMENT in row else ""
    if not domains:  # an epoch between run.eval_every evaluations: no test numbers, no empty column
        return f"epoch {row['epoch']}: source val {val}{agree}  |  test: not evaluated this epoch{kept}"
    return (f"epoch {row['epoch']}: source val {val}{agree}  |  test: source {src}  target {tgt}  |  "
            f"{domains}{kept}")


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """``RUN/metrics.csv``: one row per epoch, columns in order of first appearance."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for row in history:
        writer.writerow(row)
    atomic_write_text(Path(run_dir) / RUN_METRICS, buf.getvalue())


def _or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def best_holds(row: dict[str, Any], select_key: str, strategy: str, source_free: bool) -> str:
    """What ``checkpoints/best`` holds, in words (the folder's ``student.json`` provenance): a source-free run
    (sfda, shot, ...) reads no label, so its folder named ``best`` holds the last epoch."""
    if not math.isnan(row.get(select_key, math.nan)):
        return "source validation accuracy" if select_key == SOURCE_VAL_ACC else "teacher agreement on the pool"
    return f"last epoch ({strategy} selects no epoch: no labels)" if source_free else \
        "last epoch (no source validation images)"


def selected_run_summary(row: dict[str, Any], select_key: str = SOURCE_VAL_ACC, **facts: Any) -> RunSummary:
    """The RunSummary of the selected epoch's ``row``; ``select_key``: the row key the run selected on
    (``source_val_acc`` or ``teacher_agreement``); ``facts`` are the run's other fields (strategy, student,
    domains, params, checkpoint, ...).

    ``selected_on`` is ``source_val``, ``teacher_agreement`` or ``last_epoch`` (no value to select on: a
    source-free run, whose ``checkpoints/best`` holds its last epoch); ``selected_value`` the selected epoch's
    value of it (None for ``last_epoch``); ``finished_at`` now (UTC), as the run ends (a fact may set it).
    """
    value = row.get(select_key, math.nan)
    return RunSummary(
        best_epoch=row["epoch"],
        selected_on=("last_epoch" if math.isnan(value)
                     else "source_val" if select_key == SOURCE_VAL_ACC else TEACHER_AGREEMENT),
        selected_value=_or_none(value),
        teacher_agreement=row.get(TEACHER_AGREEMENT),
        val_acc=by_domain(row, VAL_PREFIX),
        source_val_acc=_or_none(row[SOURCE_VAL_ACC]),
        test_acc=by_domain(row, TEST_PREFIX),
        source_acc=_or_none(row[SOURCE_ACC]),
        target_acc=_or_none(row[TARGET_ACC]),
        **{"finished_at": datetime.now(timezone.utc).isoformat(timespec="microseconds"), **facts},
    )
