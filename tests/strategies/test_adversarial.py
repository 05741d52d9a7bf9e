"""Adversarial distillation: attacks stay in the ε-ball (pixel space) and raise the divergence they target;
cached adversarial views replay exactly and reach training through the trainer."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from distill.errors import DistillError
from distill.strategies import Batch, StrategyContext, create_strategy
from distill.teacher.cache import AdversarialOptions
from tests.shapes import CLASSES, make_shapes_root

EPS = 8 / 255
ADV = AdversarialOptions(views=2, epsilon=EPS, steps=4, seed=5, domains=["red"])


@pytest.fixture(scope="module")
def teacher():
    from distill.teacher import Teacher

    torch.manual_seed(0)
    return Teacher("distill-demo-vit", None, CLASSES, ["a photo of a {}."])


@pytest.fixture(scope="module")
def data(tmp_path_factory, teacher):
    """(root, cache with adversarial views of the 'red' train split)."""
    from distill.data import DomainFolder
    from distill.teacher.cache import CacheOptions, build_adversarial_views, build_cache

    root = make_shapes_root(tmp_path_factory.mktemp("adv_data"), ["red", "green"], per_class=8)
    ds = DomainFolder(root, test_fraction=0.3)
    cache = build_cache(ds, teacher, tmp_path_factory.mktemp("adv_cache") / "c",
                        CacheOptions(views=2, seed=3, shard_size=16), num_workers=0, progress=False)
    build_adversarial_views(ds, teacher, cache, ADV, shard_size=8, progress=False)
    return root, cache


def _teacher_input(teacher):
    from distill.train import teacher_input_fn

    return teacher_input_fn(teacher, torch.device("cpu"))


def _adv_kd(teacher, **options):
    from distill.student.model import Student, default_spec

    torch.manual_seed(1)
    student = Student(default_spec("test_resnet", CLASSES, 16))
    ctx = StrategyContext(num_classes=3, class_names=CLASSES, teacher=teacher, teacher_input=_teacher_input(teacher))
    strategy = create_strategy("adv_kd", student, {"epsilon": EPS, "step_size": 2 / 255, "steps": 5, **options}, ctx)
    pixels = torch.rand(8, 3, 16, 16)
    mean, std = torch.tensor(student.spec.mean).view(1, 3, 1, 1), torch.tensor(student.spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        t_clean = strategy.teacher_logits(pixels)
    batch = Batch(pixels=pixels, images=(pixels - mean) / std, labels=torch.arange(8) % 3, teacher_logits=t_clean)
    return strategy.train(), batch


# ---------------------------------------------------------------------------- adv_kd
@pytest.mark.parametrize("options", [{}, {"attack": "teacher_clean"}, {"jitter": 0.1}])
def test_adv_kd_attack_stays_in_the_ball_and_raises_the_divergence(teacher, options):
    strategy, batch = _adv_kd(teacher, temperature=1.0, **options)
    x_adv = strategy.attack(batch)
    assert (x_adv - batch.pixels).abs().max() <= EPS + 1e-6, "left the L-inf ball (pixel space)"
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert strategy.student.training, "the attack must restore the student's train mode"
    assert all(p.grad is None for p in strategy.parameters()), "the attack leaked gradients into parameters"
    reference = batch.teacher_logits if options.get("attack") == "teacher_clean" else None

    def target(px):  # what the attack maximises: with jitter, the divergence averaged over random translations
        if not options.get("jitter"):
            return strategy.divergence(px, reference)
        torch.manual_seed(123)  # the same 8 translations for every input compared
        return torch.stack([strategy.divergence(strategy._jitter(px), reference) for _ in range(8)]).mean(0)

    with torch.no_grad():
        strategy.student.eval()
        clean, adv = target(batch.pixels), target(x_adv)
        g = torch.Generator().manual_seed(0)
        rand = target((batch.pixels + EPS * torch.randn(batch.pixels.shape, generator=g).sign()).clamp(0, 1))
    # two random-weights models disagree little and evenly, so the absolute numbers are small; what matters
    # is that PGD moves the divergence far more than random ±eps noise does, and on (almost) every image
    assert (adv - clean).mean() > 5 * (rand - clean).abs().mean(), (clean, rand, adv)
    assert (adv > clean).float().mean() >= 0.75, "most images should be pushed to a larger divergence"


def test_adv_kd_loss_uses_the_online_teacher_on_adversarial_inputs(teacher, monkeypatch):
    strategy, batch = _adv_kd(teacher, steps=1)
    calls = []
    real = strategy.teacher_logits

    def spy(px):
        calls.append(px.detach().clone())
        return real(px)

    monkeypatch.setattr(strategy, "teacher_logits", spy)
    out = strategy(batch)
    assert {"kd", "kd_adv", "ce"} <= set(out) and out["kd_adv"] > 0
    assert len(calls) == 2, "one attack step + the final target: the teacher never sees the clean batch"
    assert not torch.equal(calls[-1], batch.pixels)
    with pytest.raises(DistillError, match="teacher"):
        create_strategy("adv_kd", strategy.student, None, StrategyContext(3, CLASSES))


# ---------------------------------------------------------------------------- cached adversarial views
def test_cached_adversarial_views_within_eps_exact_replay_and_stronger_than_noise(data, teacher):
    from distill.data import DomainFolder
    from distill.data.images import load_rgb
    from distill.teacher.cache import AdversarialViews, build_adversarial_views
    from distill.teacher.cache.adversarial import clean_pixels

    root, cache = data
    ds = DomainFolder(root, test_fraction=0.3)
    adv = AdversarialViews.open(cache)
    m = adv.manifest
    red = ds.select(["red"], "train")
    assert m.views == 2 and m.steps == 4 and m.seed == 5 and m.epsilon == pytest.approx(EPS)
    assert m.rows == 2 * len(red) and m.split == "train" and m.domains == ["red"]
    on_disk = json.loads((cache / "adversarial" / "manifest.json").read_text())
    assert m.to_dict() == on_disk and list(m.to_dict()) == list(on_disk), "the record is the file, key order too"

    info = teacher.preprocess_info
    idx = torch.tensor([s.index for s in red]).repeat_interleave(2)
    views = torch.arange(2).repeat(len(red))
    rows = adv.lookup(idx, views)
    clean = torch.stack([clean_pixels(load_rgb(ds.path(s)), info) for s in red]).repeat_interleave(2, 0)
    diff = (rows["pixels"].float() - clean * 255).abs()
    assert diff.max() <= 8, "a stored view is more than floor(eps*255) 8-bit levels from the clean view"
    assert diff.max() >= 7, "the attack should use (almost) its whole budget"
    assert not torch.equal(rows["pixels"][0::2], rows["pixels"][1::2]), "the K views should differ"

    mean, std = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)
    with torch.no_grad():
        _, replay = teacher((rows["pixels"].float() / 255 - mean) / std)
        _, t_clean = teacher((clean - mean) / std)
        g = torch.Generator().manual_seed(0)
        noisy = (clean + EPS * torch.randn(clean.shape, generator=g).sign()).clamp(0, 1)
        _, t_noise = teacher((noisy - mean) / std)
    assert torch.allclose(rows["logits"], replay, atol=2e-2), "stored logits are not the teacher's on the stored pixels"

    def kl(t):
        p = t_clean.softmax(-1)
        return (p * (p.log() - t.log_softmax(-1))).sum(-1)

    assert kl(rows["logits"]).mean() > 2 * kl(t_noise).mean(), "PGD views should move the teacher more than noise"

    # idempotent; a different plan is refused naming the field; unbuilt samples are named
    assert build_adversarial_views(ds, teacher, cache, ADV, shard_size=8, progress=False) == adv.path
    with pytest.raises(DistillError, match="steps"):
        build_adversarial_views(ds, teacher, cache, dataclasses.replace(ADV, steps=3), shard_size=8, progress=False)
    green = ds.select(["green"], "train")[0].index
    with pytest.raises(DistillError, match=f"sample {green}"):
        adv.lookup(torch.tensor([green]), torch.tensor([0]))


def test_trainer_mixes_cached_adversarial_views(data, tmp_path):
    from distill.config import load_train_config
    from distill.teacher.cache import AdversarialViews
    from distill.train import Trainer, build, train

    root, cache = data
    cfg = {"data": {"root": str(root), "source": ["red"], "test_fraction": 0.3}, "cache": str(cache),
           "student": {"arch": "test_resnet", "input_size": 16},
           "strategy": {"name": "adv_cached", "target": "adversarial"},
           "optim": {"epochs": 1, "batch_size": 8}, "run": {"out": str(tmp_path / "run"), "workers": 0,
                                                            "progress": False}}
    trainer = Trainer(build(load_train_config(None, base=cfg)))
    pixels, labels, domain, index, view = next(iter(trainer.loader(0, 0)))
    batch = trainer.make_batch(pixels, labels, domain, index, view)
    assert batch.extras["adv_pixels"].shape == batch.pixels.shape == (8, 3, 16, 16), "views at the student's size"
    adv = AdversarialViews.open(cache)
    rows = adv.lookup(index, adv.choose(index, 0, trainer.setup.cfg.run.seed))  # the run's draw
    # batch tensors are on the run's device (cuda on a GPU machine), the lookup on the CPU
    assert torch.equal(batch.extras["adv_teacher_logits"].cpu(), rows["logits"])
    assert not torch.equal(batch.extras["adv_teacher_logits"], batch.teacher_logits)
    mixed, t_logits, mask = trainer.strategy.mix(batch)
    assert mask.any() and (~mask).any(), "adv_fraction 0.5 should mix both kinds in a batch of 8"
    assert mixed.device == t_logits.device == mask.device == batch.images.device
    assert torch.equal(t_logits[mask], batch.extras["adv_teacher_logits"][mask])
    assert torch.equal(mixed[~mask], batch.images[~mask])

    summary = train(load_train_config(None, base=cfg))
    assert summary.strategy == "adv_cached"
    import json

    prov = json.loads((tmp_path / "run" / "checkpoints" / "best" / "student.json").read_text())["provenance"]
    assert prov["adversarial_views"]["steps"] == 4

    # a cache without adversarial views (other source domain) is refused with what to do
    cfg_green = {**cfg, "data": {**cfg["data"], "source": ["green"]}, "run": {**cfg["run"], "out": str(tmp_path / "g")}}
    with pytest.raises(DistillError, match="no adversarial view"):
        train(load_train_config(None, base=cfg_green))


def test_adv_cached_clean_target_is_the_teacher_on_the_same_crop(data, tmp_path):
    """An adversarial row shows view 0's crop, perturbed; with target: clean its KD target must be the
    teacher on view 0, also for items that drew an augmented view (before: the augmented view's logits)."""
    from distill.config import load_train_config
    from distill.teacher.cache import TeacherCache
    from distill.train import Trainer, build

    root, cache = data
    cfg = {"data": {"root": str(root), "source": ["red"], "test_fraction": 0.3}, "cache": str(cache),
           "student": {"arch": "test_resnet", "input_size": 16},
           "strategy": {"name": "adv_cached", "target": "clean", "adv_fraction": 1.0},
           "optim": {"epochs": 1, "batch_size": 8}, "run": {"out": str(tmp_path / "run"), "workers": 0,
                                                            "progress": False}}
    trainer = Trainer(build(load_train_config(None, base=cfg)))
    views = torch.cat([v for *_, v in trainer.loader(0, 0)])
    assert (views > 0).any(), "the test needs items that drew an augmented view"
    c = TeacherCache.open(cache)
    for pixels, labels, domain, index, view in trainer.loader(0, 0):
        batch = trainer.make_batch(pixels, labels, domain, index, view)
        _, t_logits, mask = trainer.strategy.mix(batch)
        assert mask.all()
        view0 = c.lookup(index, torch.zeros_like(index))["logits"]
        assert torch.equal(t_logits, view0)
        aug = view > 0
        if aug.any():
            assert not torch.equal(t_logits[aug], batch.teacher_logits[aug])


def test_adv_kd_through_the_trainer(data, tmp_path):
    from distill.config import load_train_config
    from distill.train import train

    root, cache = data
    cfg = {"data": {"root": str(root), "source": ["red"], "test_fraction": 0.3}, "cache": str(cache),
           "teacher": {"arch": "distill-demo-vit", "pretrained": None, "templates": ["a photo of a {}."]},
           "student": {"arch": "test_resnet", "input_size": 16}, "strategy": {"name": "adv_kd", "steps": 1},
           "optim": {"epochs": 1, "batch_size": 8}, "run": {"out": str(tmp_path / "run"), "workers": 0,
                                                            "progress": False}}
    summary = train(load_train_config(None, base=cfg))
    assert summary.strategy == "adv_kd" and set(summary.test_acc) == {"red", "green"}


def test_cache_build_cli_adds_adversarial_views(data, tmp_path, capsys):
    """`distill cache build --adv-views K` on a new cache, and on a complete one (adds them)."""
    import json

    from distill.cli import main as cli

    root, _ = data
    args = ["cache", "build", "--data", str(root), "--out", str(tmp_path / "c"), "--arch", "distill-demo-vit",
            "--pretrained", "none", "--templates-file", str(tmp_path / "t.txt"), "--workers", "0", "--no-progress"]
    (tmp_path / "t.txt").write_text("a photo of a {}.\n")
    assert cli(args) == 0 and not (tmp_path / "c" / "adversarial").exists()
    adv = ["--adv-views", "1", "--adv-steps", "2", "--adv-eps", "4/255", "--adv-domains", "green", "--adv-seed", "7"]
    assert cli(args + adv) == 0
    out = capsys.readouterr().out
    assert "adversarial views:" in out
    m = json.loads((tmp_path / "c" / "adversarial" / "manifest.json").read_text())
    assert (m["views"], m["steps"], m["seed"], m["domains"], m["split"]) == (1, 2, 7, ["green"], "train")
    assert m["epsilon"] == pytest.approx(4 / 255) and m["epsilon_levels"] == 4
    assert cli(args + adv) == 0  # complete: nothing to do
    assert cli(args + ["--adv-views", "1", "--adv-steps", "3", "--adv-domains", "green"]) == 1
    assert "different plan" in capsys.readouterr().err

    # `cache inspect` shows them, with the teacher's accuracy on the perturbed images next to clean
    assert cli(["cache", "inspect", str(tmp_path / "c"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)["adversarial"]
    assert s["complete"] and (s["views"], s["steps"], s["domains"], s["rows"]) == (1, 2, ["green"], m["rows"])
    from distill.teacher.cache import AdversarialViews, TeacherCache

    cache = TeacherCache.open(tmp_path / "c")
    views = AdversarialViews.open(tmp_path / "c")
    label_of = {int(i): int(y) for i, y, v in zip(cache.rows["sample_index"], cache.rows["label"], cache.rows["view"])
                if v == 0}
    want = sum(int(p) == label_of[int(i)] for i, p in zip(views.rows["sample_index"],
                                                          views.rows["logits"].float().argmax(1))) / m["rows"]
    assert s["teacher_accuracy_adversarial"] == pytest.approx(want)
    clean_pred = {int(i): int(p) for i, p, v in zip(cache.rows["sample_index"], cache.rows["logits"].float().argmax(1),
                                                    cache.rows["view"]) if v == 0}
    want_clean = sum(clean_pred[int(i)] == label_of[int(i)] for i in views.rows["sample_index"]) / m["rows"]
    assert s["teacher_accuracy_clean"] == pytest.approx(want_clean)  # the same images, unperturbed
    assert cli(["cache", "inspect", str(tmp_path / "c")]) == 0
    text = capsys.readouterr().out
    assert f"adversarial views: {m['rows']} rows" in text and "PGD-2 eps 4/255" in text


@pytest.mark.parametrize("target", ["clean", "adversarial"])
def test_adv_cached_kd_target_on_adversarial_views(target):
    """target=clean: every image, adversarial or not, is matched to the teacher's clean answer (ARD-style);
    target=adversarial: the adversarial ones to the teacher's answer on the perturbed pixels."""
    from distill.student.model import Student, default_spec

    torch.manual_seed(0)
    student = Student(default_spec("test_resnet", CLASSES, 16))
    ctx = StrategyContext(len(CLASSES), CLASSES)
    s = create_strategy("adv_cached", student, {"adv_fraction": 0.5, "target": target}, ctx)
    B = 64
    # clean_t: the teacher on each item's own (possibly augmented) view; view0_t: on the clean crop the
    # adversarial view was crafted from; adv_t: on the adversarial pixels
    clean_t, view0_t, adv_t = (torch.randn(B, len(CLASSES)) for _ in range(3))
    batch = Batch(torch.rand(B, 3, 16, 16), torch.rand(B, 3, 16, 16), torch.randint(0, 3, (B,)),
                  teacher_logits=clean_t, extras={"adv_pixels": torch.randint(0, 256, (B, 3, 16, 16)).float() / 255,
                                                  "adv_teacher_logits": adv_t, "adv_clean_teacher_logits": view0_t})
    images, logits, mask = s.mix(batch)
    assert 0 < int(mask.sum()) < B  # both kinds of rows in the batch
    assert torch.equal(images[~mask], batch.images[~mask]) and not torch.equal(images[mask], batch.images[mask])
    assert torch.equal(logits[~mask], clean_t[~mask])
    assert torch.equal(logits[mask], (view0_t if target == "clean" else adv_t)[mask])
    with pytest.raises(DistillError, match="strategy.target"):
        create_strategy("adv_cached", student, {"target": "label"}, ctx)
