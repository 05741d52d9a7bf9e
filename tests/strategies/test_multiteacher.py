"""Multi-teacher ``kd`` and ``fm`` (``strategy.teachers``): the ensemble soft target on hand numbers, weights
[1, 0] as the first teacher bit for bit, one-line start-up errors, and a training run on two caches that
records the combination in summary.json."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from distill.cli import main as cli
from distill.errors import DistillError
from distill.strategies import Batch, StrategyContext, create_strategy
from distill.strategies._teachers import TeacherEnsemble
from distill.student.model import Student, default_spec
from tests.shapes import make_shapes_root

LN3 = math.log(3)
CLASSES = ["a", "b"]
# student [0, 0] and [0, 2 ln 3] -> softmax [1/2, 1/2] and [1/10, 9/10]
STUDENT = torch.tensor([[0.0, 0.0], [0.0, 2 * LN3]])
# teacher 1: [9/10, 1/10] and [1/2, 1/2]; teacher 2: [1/2, 1/2] and [1/10, 9/10] (at T = 1)
TEACHER_1 = torch.tensor([[2 * LN3, 0.0], [0.0, 0.0]])
TEACHER_2 = torch.tensor([[0.0, 0.0], [0.0, 2 * LN3]])
# equal weights: targets [0.7, 0.3] and [0.3, 0.7]; KL to the student's, batch mean
KL_MEAN = (0.7 * math.log(0.7 / 0.5) + 0.3 * math.log(0.3 / 0.5) + 0.3 * math.log(0.3 / 0.1)
           + 0.7 * math.log(0.7 / 0.9)) / 2
# weights [3, 1] -> [3/4, 1/4]: targets [0.8, 0.2] and [0.4, 0.6]
KL_31 = (0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5) + 0.4 * math.log(0.4 / 0.1)
         + 0.6 * math.log(0.6 / 0.9)) / 2


def _strategy(name: str, options: dict | None, monkeypatch, num_teachers: int = 2, logits: torch.Tensor = STUDENT):
    student = Student(default_spec("test_resnet", CLASSES, 16))
    strategy = create_strategy(name, student, options, StrategyContext(2, CLASSES, num_teachers=num_teachers))
    monkeypatch.setattr(student, "forward", lambda x: logits)
    return strategy


def _batch(*teachers: torch.Tensor, labels=(0, 1)) -> Batch:
    n = len(teachers[0])
    return Batch(torch.zeros(n, 3, 16, 16), torch.zeros(n, 3, 16, 16), labels=torch.tensor(labels),
                 teacher_logits=teachers[0], teacher_logits_all=list(teachers))


@pytest.mark.parametrize("name, options", [("kd", {"temperature": 1.0, "alpha": 1.0}), ("fm", {})])
def test_mean_probs_is_the_mean_of_the_teachers_softmax(name, options, monkeypatch):
    assert KL_MEAN == pytest.approx(0.11797, abs=1e-5)  # (0.082283 + 0.153664) / 2, by hand
    key = "kd" if name == "kd" else "match"
    equal = _strategy(name, {**options, "teachers": {"combine": "mean_probs"}}, monkeypatch)
    assert float(equal(_batch(TEACHER_1, TEACHER_2))[key]) == pytest.approx(KL_MEAN, rel=1e-5)
    weighted = _strategy(name, {**options, "teachers": {"combine": "mean_probs", "weights": [3, 1]}}, monkeypatch)
    assert float(weighted(_batch(TEACHER_1, TEACHER_2))[key]) == pytest.approx(KL_31, rel=1e-5)
    # the default still reads the first cache alone: KL([.9, .1] || [.5, .5]), KL([.5, .5] || [.1, .9])
    first = _strategy(name, options, monkeypatch)
    kl_first = (0.9 * math.log(1.8) + 0.1 * math.log(0.2) + 0.5 * math.log(5) + 0.5 * math.log(5 / 9)) / 2
    assert float(first(_batch(TEACHER_1, TEACHER_2))[key]) == pytest.approx(kl_first, rel=1e-5)


def test_the_target_is_the_weighted_mean_at_the_temperature_in_fp32():
    torch.manual_seed(0)
    t = [torch.randn(4, 5).to(torch.bfloat16) * 30 for _ in range(3)]
    batch = Batch(torch.zeros(4, 3, 8, 8), torch.zeros(4, 3, 8, 8), teacher_logits=t[0], teacher_logits_all=t)
    target = TeacherEnsemble(combine="mean_probs", weights=(1.0, 2.0, 1.0)).target(batch, 4.0)
    by_hand = sum(w * F.softmax(x.float() / 4.0, dim=-1) for w, x in zip([0.25, 0.5, 0.25], t))
    assert target.dtype == torch.float32 and torch.allclose(target, by_hand, atol=1e-7)
    assert torch.allclose(target.sum(-1), torch.ones(4))


@pytest.mark.parametrize("name, options", [("kd", {"temperature": 4.0}), ("fm", {"temperature": 2.0, "alpha": 0.5})])
def test_weights_one_zero_is_the_first_teacher_bit_for_bit(name, options, monkeypatch):
    torch.manual_seed(1)
    logits = torch.randn(6, 2) * 5
    t1, t2 = torch.randn(6, 2) * 40, torch.randn(6, 2) * 40
    batch = _batch(t1, t2, labels=(0, 1, 1, 0, -1, 1))
    first = _strategy(name, options, monkeypatch, logits=logits)(batch)
    ones = _strategy(name, {**options, "teachers": {"combine": "mean_probs", "weights": [1, 0]}}, monkeypatch,
                     logits=logits)(batch)
    assert torch.equal(first["loss"], ones["loss"])
    other = _strategy(name, {**options, "teachers": {"combine": "mean_probs", "weights": [0, 1]}}, monkeypatch,
                      logits=logits)(batch)
    assert not torch.equal(first["loss"], other["loss"])  # the second teacher does count when weighted


@pytest.mark.parametrize("name", ["kd", "fm"])
@pytest.mark.parametrize("teachers, num, match", [
    ({"combine": "mean_probs"}, 1, r"^strategy\.teachers\.combine: mean_probs combines several teachers"),
    ({"combine": "mean_probs", "weights": [1, 1, 1]}, 2, r"^strategy\.teachers\.weights: 3 weight\(s\) for 2 caches"),
    ({"combine": "mean_probs", "weights": [0, 0]}, 2, r"^strategy\.teachers\.weights: all zero"),
    ({"weights": [1, 0]}, 2, r"^strategy\.teachers\.weights: weights combine several teachers"),
    ({"combine": "mean_probs", "weights": [1, -1]}, 2, r"^strategy\.teachers\.weights\.1: "),
    ({"combine": "vote"}, 2, r"^strategy\.teachers\.combine: "),
])
def test_bad_combinations_are_one_line_errors_naming_the_key(name, teachers, num, match, monkeypatch):
    with pytest.raises(DistillError, match=match) as e:
        _strategy(name, {"teachers": teachers}, monkeypatch, num_teachers=num)
    assert "\n" not in str(e.value)


def test_kd_online_has_no_caches_to_combine():
    with pytest.raises(DistillError, match=r"unknown key 'strategy\.teachers'"):
        create_strategy("kd_online", Student(default_spec("test_resnet", CLASSES, 16)),
                        {"teachers": {"combine": "mean_probs"}}, StrategyContext(2, CLASSES, num_teachers=2))


# ---------------------------------------------------------------------------- through a training run
@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_shapes_root(tmp_path_factory.mktemp("multiteacher_data"), ["red", "green"], per_class=6)


@pytest.fixture(scope="module")
def caches(root, tmp_path_factory) -> list[Path]:
    from distill.data import DomainFolder
    from distill.teacher import Teacher
    from distill.teacher.cache import CacheOptions, build_cache

    base, out = tmp_path_factory.mktemp("multiteacher_caches"), []
    for seed in (0, 1):  # random-weights demo teachers: seeds 0 and 1 are two different teachers
        torch.manual_seed(seed)
        ds = DomainFolder(root, test_fraction=0.3)
        teacher = Teacher("distill-demo-vit", None, ds.classes, ["a photo of a {}."])
        out.append(build_cache(ds, teacher, base / f"t{seed}", CacheOptions(views=2, seed=3, shard_size=32),
                               num_workers=0, progress=False))
    return out


def _recipe(root: Path, caches: list[Path], out: Path, teachers: dict | None) -> dict:
    strategy = {"name": "kd", "temperature": 2.0, **({"teachers": teachers} if teachers else {})}
    return {"data": {"root": str(root), "source": ["red"], "test_fraction": 0.3},
            "student": {"arch": "test_resnet", "input_size": 16}, "strategy": strategy,
            "cache": [str(c) for c in caches],
            "optim": {"epochs": 1, "batch_size": 8, "lr": 0.01, "warmup_epochs": 0},
            "run": {"out": str(out), "workers": 0, "progress": False, "seed": 1, "device": "cpu"}}


def test_kd_trains_on_two_caches_and_records_the_combination(root, caches, tmp_path, monkeypatch):
    from distill.config import load_train_config
    from distill.train import build, train

    calls = []
    real_target = TeacherEnsemble.target

    def spy(self, batch, temperature):
        calls.append(len(batch.teacher_logits_all))
        return real_target(self, batch, temperature)

    monkeypatch.setattr(TeacherEnsemble, "target", spy)
    teachers = {"combine": "mean_probs", "weights": [3, 1]}
    summary = train(load_train_config(None, base=_recipe(root, caches, tmp_path / "run", teachers)))
    assert calls and set(calls) == {2}, "every step combines both caches"
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["strategy_options"] == {"temperature": 2.0, "teachers": teachers}
    identities = [json.loads((c / "manifest.json").read_text())["teacher"] for c in caches]
    assert written["teachers"] == {"combine": "mean_probs", "caches": [
        {"cache": str(caches[0]), "teacher": identities[0], "weight": 0.75},
        {"cache": str(caches[1]), "teacher": identities[1], "weight": 0.25}]}
    assert summary.teachers is not None and summary.teachers.caches[1].weight == 0.25
    best = json.loads((tmp_path / "run" / "checkpoints" / "best" / "student.json").read_text())
    assert best["provenance"]["teachers"] == written["teachers"]
    # the default reads the first cache alone and records no combination (summaries unchanged)
    setup = build(load_train_config(None, base=_recipe(root, caches, tmp_path / "plain", None)))
    assert "teachers" not in setup.provenance


def test_a_combination_the_caches_cannot_serve_stops_train_in_one_line(root, caches, tmp_path, capsys):
    cfg = _recipe(root, caches[:1], tmp_path / "run", None)
    (tmp_path / "kd.yaml").write_text(yaml.safe_dump(cfg))
    assert cli(["train", "-c", str(tmp_path / "kd.yaml"), "--set", "strategy.teachers.combine=mean_probs"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "strategy.teachers.combine: mean_probs combines several teachers" in err
    assert "has 1 teacher cache(s)" in err
