"""distill.robust: PGD stays in the ε-ball and raises the loss; corruptions; `distill eval --json`;
the train config's robust section."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from distill.cli import main as cli
from distill.errors import DistillError
from distill.robust import (CORRUPTIONS, RobustEvaluator, RobustSettings, corrupt, format_eps, parse_eps,
                            pgd)
from distill.student.model import Student, default_spec, save_student
from distill.student.transforms import Normalizer
from tests.shapes import CLASSES, make_shapes_root


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_shapes_root(tmp_path_factory.mktemp("robust_data"), ["red", "green"], per_class=8)


@pytest.fixture(scope="module")
def checkpoint(root, tmp_path_factory) -> Path:
    """A test_resnet trained 40 Adam steps on the train split (its answers depend on the image, so an
    attack has something to flip; an untrained one predicts one class whatever the input)."""
    from PIL import Image

    from distill.data import DomainFolder

    torch.manual_seed(0)
    student = Student(default_spec("test_resnet", CLASSES, 16))
    ds = DomainFolder(root, test_fraction=0.3)
    tf = student.preprocess()
    train = ds.select(["red", "green"], "train")
    x = torch.stack([tf(Image.open(ds.path(s)).convert("RGB")) for s in train])
    y = torch.tensor([s.label for s in train])
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    student.train()
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(student(x), y).backward()
        opt.step()
    return save_student(student.eval(), tmp_path_factory.mktemp("ckpt") / "best")


def test_parse_and_format_eps():
    assert parse_eps("2/255") == pytest.approx(2 / 255) and parse_eps("0.01") == 0.01 and parse_eps(0.5) == 0.5
    assert format_eps(8 / 255) == "8/255" and format_eps(0.01) == "0.01"
    with pytest.raises(DistillError, match="2/255"):
        parse_eps("two")
    with pytest.raises(DistillError, match=r"\[0, 1\]"):
        parse_eps("8")


def test_pgd_stays_in_the_ball_and_raises_the_loss():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    norm = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    x = torch.rand(16, 3, 8, 8)
    y = torch.randint(0, 4, (16,))

    def loss(px):
        return F.cross_entropy(model(norm(px)), y, reduction="none")

    eps = 4 / 255
    for random_start in (True, False):
        xa = pgd(x, loss, eps, eps / 4, 10, random_start=random_start)
        assert (xa - x).abs().max() <= eps + 1e-6, "left the L-inf ball"
        assert xa.min() >= 0 and xa.max() <= 1, "left the image range"
        assert loss(xa).mean() > loss(x).mean() + 1e-3, "PGD did not raise the loss"
        assert not any(p.grad is not None for p in model.parameters()), "the attack leaked gradients into the model"
    # untouched at eps 0; clamped at the image range (a white image cannot get whiter)
    assert torch.equal(pgd(x, loss, 0.0, 0.01, 5), x)
    white = torch.ones(2, 3, 8, 8)
    assert pgd(white, lambda px: F.cross_entropy(model(norm(px)), y[:2], reduction="none"), eps, eps, 3).max() <= 1


def test_corruptions_are_deterministic_bounded_and_change_the_image():
    x = torch.rand(4, 3, 20, 20)  # not a multiple of 16: jpeg pads and crops
    for name in CORRUPTIONS:
        a, b = corrupt(x, name, 3, seed=1), corrupt(x, name, 3, seed=1)
        assert a.shape == x.shape and torch.equal(a, b), name
        assert a.min() >= 0 and a.max() <= 1, name
        assert (a - x).abs().mean() > 1e-3, f"{name} left the image unchanged"
        mild, hard = [(corrupt(x, name, s, seed=1) - x).abs().mean() for s in (1, 5)]
        assert hard >= mild - 1e-4, f"{name}: severity 5 should corrupt at least as much as severity 1"
    with pytest.raises(DistillError, match="unknown corruption"):
        corrupt(x, "fog")


def test_robust_evaluator_per_domain(root, checkpoint):
    from distill.data import DomainFolder
    from distill.student.model import load_student

    ds = DomainFolder(root, test_fraction=0.3)
    student = load_student(checkpoint)
    settings = RobustSettings(pgd_eps=(8 / 255, 64 / 255), pgd_steps=3, corruptions=("gaussian_noise", "contrast"))
    ev = RobustEvaluator(ds, ["red", "green"], student.spec, settings)
    res = ev(student)
    assert set(res) == {"red", "green"}
    for d, r in res.items():
        assert r["n"] == len(ds.select([d], "test"))
        x, y = ev._data[d]  # clean accuracy recomputed from the model on the evaluator's images
        with torch.no_grad():
            acc = 100.0 * float((student(ev.normalize(x)).argmax(-1) == y).float().mean())
        assert r["clean"] == pytest.approx(acc)
    # the attack bites: PGD-3 at 64/255 flips images this (untrained) model gets right (a no-op attack
    # or a wrong gradient sign would leave it at clean accuracy; "pgd <= clean" alone holds by construction)
    assert sum(r["pgd"]["64/255"] for r in res.values()) < sum(r["clean"] for r in res.values())
    assert sum(r["clean"] for r in res.values()) > 0
    for d, r in res.items():
        assert set(r["corruptions"]) == {"gaussian_noise", "contrast"}
        assert r["corruption_mean"] == pytest.approx(sum(r["corruptions"].values()) / 2)
    assert not student.training, "evaluation must leave the model in eval mode it was given"


def test_distill_eval_json(root, checkpoint, capsys):
    rc = cli(["eval", str(checkpoint), "--data", str(root), "--domains", "green", "--pgd-eps", "2/255,8/255",
              "--pgd-steps", "2", "--corruptions", "jpeg,gaussian_blur", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    report = json.loads(out)
    assert list(report["domains"]) == ["green"]
    g = report["domains"]["green"]
    assert set(g["pgd"]) == {"2/255", "8/255"} and set(g["corruptions"]) == {"jpeg", "gaussian_blur"}
    assert report["settings"]["pgd_steps"] == 2 and report["settings"]["pgd_eps"] == ["2/255", "8/255"]
    # clean only, as a table
    assert cli(["eval", str(checkpoint), "--data", str(root), "--pgd-eps", "0", "--corruptions", "none"]) == 0
    table = capsys.readouterr().out
    assert "clean" in table and "pgd" not in table.split("\n")[1]


def test_distill_eval_errors_are_one_line(root, checkpoint, capsys):
    assert cli(["eval", str(checkpoint), "--data", str(root), "--corruptions", "fog"]) == 2
    assert "unknown corruption 'fog'" in capsys.readouterr().err
    assert cli(["eval", str(root), "--data", str(root)]) == 2
    assert "not a student checkpoint" in capsys.readouterr().err


def test_train_robust_section(root, tmp_path):
    """The optional `robust` config section evaluates the best checkpoint after training."""
    from distill.config import load_train_config
    from distill.train import run_training

    cfg = {"data": {"root": str(root), "source": ["red"]}, "student": {"arch": "test_resnet", "input_size": 16},
           "strategy": {"name": "erm"}, "optim": {"epochs": 1, "batch_size": 8},
           "run": {"out": str(tmp_path / "run"), "workers": 0, "progress": False},
           "robust": {"pgd_eps": ["4/255"], "pgd_steps": 2, "corruptions": ["contrast"], "max_images": 4}}
    summary = run_training(load_train_config(None, base=cfg))
    rob = summary["robust"]
    assert set(rob["domains"]) == {"red", "green"} and rob["settings"]["pgd_eps"] == ["4/255"]
    assert all(r["n"] == 4 for r in rob["domains"].values())
    assert json.loads((tmp_path / "run" / "robust.json").read_text())["domains"] == rob["domains"]
    with pytest.raises(DistillError, match="robust.pgd_eps"):
        load_train_config(None, base={**cfg, "robust": {"pgd_eps": ["big"]}})
