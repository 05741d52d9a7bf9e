"""metrics.csv per epoch: train loss (mean step loss), learning rate (the last step's) and top-5 accuracy."""
from __future__ import annotations

import csv
import math
from typing import Callable

import pytest
import torch

from distill.config import load_train_config
from distill.evaluate import DomainEvaluator, TopK
from distill.train.summary import metrics_row
from distill.utils.runtime import Dist


def test_train_loss_and_lr_per_epoch(tiny_root, tiny_cache, tmp_path, monkeypatch):
    from distill.train import train
    from distill.train.logger import RunLog

    seen: list[tuple[int, float, float]] = []  # (epoch, loss, lr) of every step, as the logger receives them
    step = RunLog.step

    def spy(self, step_in_epoch, global_step, out, labels, lr, skipped=False):
        seen.append((self.steps.epoch, float(out["loss"].detach()), lr))
        return step(self, step_in_epoch, global_step, out, labels, lr, skipped=skipped)

    monkeypatch.setattr(RunLog, "step", spy)
    cfg = {"data": {"root": str(tiny_root), "source": ["red", "green"], "test_fraction": 0.3},
           "cache": str(tiny_cache), "student": {"arch": "test_resnet", "input_size": 16}, "strategy": {"name": "kd"},
           "optim": {"epochs": 2, "batch_size": 8, "lr": 0.01, "warmup_epochs": 0.5},
           "run": {"out": str(tmp_path / "run"), "workers": 0, "progress": False, "device": "cpu"}}
    train(load_train_config(None, base=cfg))
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert len(rows) == 2
    for epoch, row in enumerate(rows):
        losses = [loss for e, loss, _ in seen if e == epoch]
        assert float(row["train_loss"]) == pytest.approx(sum(losses) / len(losses), rel=1e-5)
        assert float(row["lr"]) == [lr for e, _, lr in seen if e == epoch][-1]
    assert float(rows[1]["lr"]) < float(rows[0]["lr"])  # the cosine schedule's decay, as recorded
    # 3 classes: top-5 is undefined and written as nan, not as a perfect 1.0
    for key in ("source_top5", "target_top5", "source_val_top5"):
        assert all(math.isnan(float(r[key])) for r in rows), key


class _Positions(torch.utils.data.Dataset):
    """Position i -> (image [1, 1, 1] holding i, label i): the split the evaluator streams."""

    def __init__(self, labels: torch.Tensor):
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return torch.full((1, 1, 1), float(i)), int(self.labels[i])


def _evaluator(logits: torch.Tensor, labels: torch.Tensor) -> tuple[DomainEvaluator, Callable]:
    ev = DomainEvaluator.__new__(DomainEvaluator)
    ev.domains, ev.split, ev.batch_size, ev.workers, ev.dist = ["d"], "test", 2, 0, Dist()  # batches of 2
    ev._spans, ev._images = {"d": (0, len(labels))}, _Positions(labels)  # one domain: every position
    return ev, lambda x: logits[x.view(-1).long()]


def test_top5_by_hand():
    # 6 classes, 4 images: label's rank 1, 3, 5 and 6 -> top-1 1/4, top-5 3/4
    order = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])  # class 0 scores highest ... class 5 lowest
    logits = order.repeat(4, 1)
    ev, predict = _evaluator(logits, torch.tensor([0, 2, 4, 5]))
    assert ev.accuracy(predict) == {"d": TopK(0.25, 0.75)}
    assert ev(predict) == {"d": 0.25}  # __call__: top-1, as ever
    ev3, predict3 = _evaluator(torch.eye(3)[[0, 1, 1]], torch.tensor([0, 1, 2]))  # 3 classes: no top-5
    acc = ev3.accuracy(predict3)["d"]
    assert acc.top1 == pytest.approx(2 / 3) and math.isnan(acc.top5)


def test_metrics_row_top5_means():
    row = metrics_row(0, {"a": TopK(0.5, 0.9), "b": TopK(0.25, 0.7)}, {"a": TopK(0.6, 1.0)}, ["a"], ["b"],
                      {"train_loss": 1.5, "lr": 0.01})
    assert row["source_acc"] == 0.5 and row["target_acc"] == 0.25 and row["source_val_acc"] == 0.6
    assert row["source_top5"] == 0.9 and row["target_top5"] == 0.7 and row["source_val_top5"] == 1.0
    assert row["train_loss"] == 1.5 and row["lr"] == 0.01
    assert "source_top5" not in metrics_row(0, {"a": 0.5}, {}, ["a"], [])  # plain top-1 numbers: no top-5 columns
