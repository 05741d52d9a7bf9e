"""The training header counts steps in the singular when there is one ("1 step/epoch", not "1 steps") (QA I, 10)."""
from __future__ import annotations

from distill.config import load_train_config
from distill.data import DomainFolder
from distill.train import train
from tests.shapes import make_shapes_root


def test_one_step_per_epoch_is_singular(tmp_path, capsys):
    root = make_shapes_root(tmp_path / "data", ["red", "green"], per_class=3)
    n = len(DomainFolder(root).select(["red"], "train"))
    cfg = load_train_config(None, base={
        "data": {"root": str(root), "source": ["red"]}, "cache": None, "strategy": {"name": "erm"},
        "student": {"arch": "test_resnet", "input_size": 16}, "optim": {"epochs": 1, "batch_size": n},
        "run": {"out": str(tmp_path / "run"), "workers": 0, "progress": False, "device": "cpu"}})
    capsys.readouterr()
    assert train(cfg) is not None
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("training "))
    assert f"({n} images, 1 step/epoch)" in header, header
