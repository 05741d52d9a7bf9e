"""Every registered strategy honours the contract; a new strategy file is tested on arrival.

The fixture supplies exactly what a strategy's ``needs`` declare (as the trainer does), so a
strategy that reads something it did not declare fails here, not in a long run.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable

import pydantic.dataclasses
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from distill.errors import DistillError
from distill.strategies import (
    Batch,
    Needs,
    Strategy,
    StrategyContext,
    build_config,
    create_strategy,
    get_strategy,
    list_strategies,
)
from distill.student.model import Student, default_spec
from distill.student.transforms import Normalizer
from distill.train.build import teacher_input_fn

CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]  # the digits suite
ARCH, SIZE, BATCH = "test_resnet", 32, 8
EMBED_DIM = 128  # width of the demo teacher (distill-demo-vit); synthetic caches use the same
LOGIT_SCALE = 1 / 0.07  # a freshly initialised CLIP's; trained ones reach 100
STEPS = 30

# Each Needs flag the fixture can supply. A flag in _UNSUPPORTED skips the strategies that
# declare it, with the reason, until someone teaches make_inputs() to build it.
_SUPPORTED = {"labels", "cached_logits", "cached_features", "text_embeddings", "online_teacher",
              "source_checkpoint",  # source_checkpoint: the student handed over stands for the source-trained one
              "cached_adversarial", "target_data",  # supplied by _adversarial_and_target_inputs() below
              "unlabeled",  # two rows of the batch carry no label (-1), as pool rows do
              "augmented_views",  # the batch's views are mixed: partner labels and mixing weights
              "logit_modes"}  # the cache row layouts accepted: checked at start-up (tests/train/test_mapped_cache.py)
_UNSUPPORTED: dict[str, str] = {}

STRATEGIES = list_strategies()


@functools.lru_cache(maxsize=1)
def demo_teacher():
    """A randomly initialised tiny open_clip teacher (no download)."""
    from distill.teacher import Teacher

    return Teacher("distill-demo-vit", None, CLASSES, templates=["a photo of a {}."])


def teacher_input_for(teacher) -> Callable[[Tensor], Tensor]:
    """pixels [B, 3, H, W] in [0, 1] -> the teacher's resized, normalized input (the trainer's function)."""
    return teacher_input_fn(teacher, torch.device("cpu"))


def make_student(needs: Needs, arch: str = ARCH, embed: bool | None = None) -> Student:
    """The trainer's rule: a projector into teacher space iff the strategy uses that space."""
    if embed is None:
        embed = needs.cached_features or needs.text_embeddings
    return Student(default_spec(arch, CLASSES, SIZE, embed_dim=EMBED_DIM if embed else None))


def make_inputs(name: str, seed: int = 0, embed: bool | None = None,
                needs: Needs | None = None) -> tuple[Student, StrategyContext, Batch]:
    """Student, context and one fixed batch for strategy ``name``, supplying only what it needs."""
    needs = needs or get_strategy(name).needs
    for need, reason in _UNSUPPORTED.items():
        if getattr(needs, need):
            pytest.skip(f"'{name}' declares needs.{need}: {reason}")
    torch.manual_seed(seed)
    student = make_student(needs, embed=embed)
    normalize = Normalizer(student.spec.mean, student.spec.std)
    pixels = torch.rand(BATCH, 3, SIZE, SIZE)
    labels = torch.arange(BATCH) % len(CLASSES)

    teacher = teacher_input = None
    if needs.online_teacher:
        teacher = demo_teacher()
        teacher_input = teacher_input_for(teacher)
        text, scale = teacher.text_embeddings, teacher.logit_scale
        emb, logits = teacher(teacher_input(pixels))
    else:  # a synthetic cache: embeddings near their class's text embedding, logits by the zero-shot rule
        text = F.normalize(torch.randn(len(CLASSES), EMBED_DIM), dim=-1)
        emb = F.normalize(text[labels] + 0.1 * torch.randn(BATCH, EMBED_DIM), dim=-1)
        scale = LOGIT_SCALE
        logits = scale * emb @ text.T
    teacher_space = needs.cached_features or needs.text_embeddings or needs.online_teacher
    ctx = StrategyContext(
        num_classes=len(CLASSES), class_names=CLASSES,
        embed_dim=EMBED_DIM if teacher_space else None,
        text_embeddings=text if needs.text_embeddings else None,
        logit_scale=scale if (teacher_space or needs.cached_logits) else None,
        teacher=teacher, teacher_input=teacher_input, normalize=normalize,
    )
    shown = labels.clone()
    if needs.unlabeled:
        shown[-2:] = -1  # pool rows (data.unlabeled): no label
    batch = Batch(
        pixels=pixels, images=normalize(pixels), labels=shown if needs.labels else None,
        teacher_logits=logits if needs.cached_logits else None,
        teacher_emb=emb if needs.cached_features else None,
        domain=torch.arange(BATCH) % 2, sample_index=torch.arange(BATCH), view=torch.zeros(BATCH, dtype=torch.long),
    )
    if needs.augmented_views and needs.labels:  # mixup pairs row i with row i - 1 (lam 1: unmixed)
        batch.partner_labels = shown.roll(1)
        batch.mix_lam = torch.linspace(0.5, 1.0, BATCH)
    _adversarial_and_target_inputs(needs, ctx, batch, seed)
    if needs.source_checkpoint:
        _source_trained_head(student, pixels, normalize)
    return student, ctx, batch


# ---------------------------------------------------------------------------- needs of the adversarial / SFDA strategies
def _adversarial_and_target_inputs(needs: Needs, ctx: StrategyContext, batch: Batch, seed: int) -> None:
    """Supply ``cached_adversarial`` (as adv_cached's ``batch_extras`` would) and ``target_data`` (as the trainer does)."""
    if needs.cached_adversarial:  # one cached adversarial view per image: pixels within 8/255, teacher logits on them
        g = torch.Generator().manual_seed(seed + 1)
        noise = torch.rand(batch.pixels.shape, generator=g) * 2 - 1
        batch.extras["adv_pixels"] = (batch.pixels + noise * 8 / 255).clamp(0, 1)
        batch.extras["adv_teacher_logits"] = batch.teacher_logits + 0.5 * torch.randn(batch.teacher_logits.shape,
                                                                                      generator=g)
        batch.extras["adv_clean_teacher_logits"] = batch.teacher_logits + 0.3 * torch.randn(
            batch.teacher_logits.shape, generator=g)
    if needs.target_data:  # the training images are the (unlabeled) target batch; epoch hooks iterate over it
        ctx.iterate_train = lambda: iter([batch])
        ctx.num_train = ctx.num_samples = BATCH


def _source_trained_head(student: Student, pixels: Tensor, normalize: Callable[[Tensor], Tensor]) -> None:
    """A stand-in for a source-trained classifier: the head becomes a nearest-class-mean rule fitted on
    the batch's labels (closed form, instant). Adaptation strategies that freeze the head (SHOT) start
    from a hypothesis rather than from random weights, as they would from a real source checkpoint."""
    with torch.no_grad():
        f = F.normalize(student.eval().features(normalize(pixels)), dim=-1)
        student.train()
        y = torch.arange(len(pixels)) % len(CLASSES)
        means = torch.stack([f[y == c].mean(0) if (y == c).any() else torch.zeros(f.shape[1]) for c in range(len(CLASSES))])
        student.head.weight.copy_(10.0 * F.normalize(means, dim=-1))
        student.head.bias.zero_()


def make_setup(name: str, options: dict[str, Any] | None = None, **kw) -> tuple[Strategy, Batch]:
    student, ctx, batch = make_inputs(name, **kw)
    return create_strategy(name, student, options, ctx), batch


def own_parameters(strategy: Strategy) -> list[tuple[str, torch.nn.Parameter]]:
    """Trainable parameters the strategy owns beyond the student (projectors, transforms, ...)."""
    return [(n, p) for n, p in strategy.named_parameters() if not n.startswith("student.") and p.requires_grad]


# ---------------------------------------------------------------------------- every strategy
def test_fixture_knows_every_need():
    unknown = {f.name for f in dataclasses.fields(Needs)} - _SUPPORTED - set(_UNSUPPORTED)
    assert not unknown, f"teach make_inputs() to supply (or skip) the new need(s) {sorted(unknown)}"


@pytest.mark.parametrize("name", STRATEGIES)
def test_docstring_names_a_paper(name):
    doc = get_strategy(name).__doc__ or ""
    assert re.search(r"\b(19|20)\d\d\b", doc), f"'{name}': the docstring should name the paper and its year"


@pytest.mark.parametrize("name", STRATEGIES)
def test_config_is_a_frozen_pydantic_dataclass_that_rejects_unknown_keys(name):
    config_cls = get_strategy(name).Config
    assert dataclasses.is_dataclass(config_cls) and config_cls.__dataclass_params__.frozen
    assert pydantic.dataclasses.is_pydantic_dataclass(config_cls), f"'{name}': declare its Config with @strategy_config"
    build_config(config_cls, {}, where="strategy")  # every option has a default
    with pytest.raises(DistillError, match=r"strategy\.no_such_option"):
        build_config(config_cls, {"no_such_option": 1}, where="strategy")


@pytest.mark.parametrize("name", STRATEGIES)
def test_forward_contract_and_gradients(name):
    strategy, batch = make_setup(name)
    out = strategy.train()(batch)
    assert "loss" in out
    loss = out["loss"]
    assert loss.dim() == 0 and torch.isfinite(loss), f"'{name}': loss {loss}"
    if "logits" in out:  # optional: the student's logits on batch.images, for the live accuracy display
        logits = out.pop("logits")
        assert logits.shape == (BATCH, len(CLASSES)) and not logits.requires_grad, f"'{name}': bad 'logits'"
    for key, part in out.items():
        if key != "loss":
            assert isinstance(part, Tensor) and part.dim() == 0, f"'{name}': part '{key}' is not a scalar tensor"
            assert not part.requires_grad, f"'{name}': part '{key}' should be detached"
            assert torch.isfinite(part), f"'{name}': part '{key}' = {part}"
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in strategy.student.backbone.parameters()), \
        f"'{name}': no gradient reaches the student's backbone"
    for n, p in own_parameters(strategy):
        assert p.grad is not None and p.grad.abs().sum() > 0, f"'{name}': no gradient reaches its parameter '{n}'"


@pytest.mark.parametrize("name", STRATEGIES)
def test_training_reduces_loss_on_a_fixed_batch(name):
    strategy, batch = make_setup(name)
    strategy.train().on_epoch_start(0)
    optimizer = torch.optim.AdamW([p for p in strategy.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.0)
    losses = []
    for _ in range(STEPS):
        loss = strategy(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(map(lambda v: v == v and abs(v) != float("inf"), losses)), f"'{name}': non-finite loss {losses}"
    assert sum(losses[-3:]) / 3 < 0.6 * losses[0], f"'{name}': loss did not drop clearly: {losses[0]:.3f} -> {losses}"


def test_fixture_online_teacher_path():
    """No strategy needs a live teacher yet; make sure the fixture is ready for the first one."""
    needs = Needs(cached_logits=True, cached_features=True, text_embeddings=True, online_teacher=True)
    student, ctx, batch = make_inputs("kd", needs=needs)
    assert student.projector is not None and ctx.teacher is not None and ctx.embed_dim == ctx.teacher.embed_dim
    x = ctx.teacher_input(batch.pixels)
    assert x.shape == (BATCH, 3, *ctx.teacher.preprocess_info.size)
    emb, logits = ctx.teacher(x)
    assert torch.allclose(emb, batch.teacher_emb) and torch.allclose(logits, batch.teacher_logits)
    assert torch.allclose(logits, ctx.logit_scale * emb @ ctx.text_embeddings.T, atol=1e-4)


# ---------------------------------------------------------------------------- feature-alignment family
@pytest.mark.parametrize("name", ["rise", "vl2v", "customkd"])
def test_missing_projector_is_a_clear_error(name):
    _, ctx, _ = make_inputs(name)
    with pytest.raises(DistillError, match="projector"):
        create_strategy(name, make_student(get_strategy(name).needs, embed=False), None, ctx)


def test_rise_l2_distance():
    strategy, batch = make_setup("rise", {"distance": "l2"})
    out = strategy(batch)
    emb = strategy.student.forward_all(batch.images)["embedding"]
    assert torch.allclose(out["feat"], (emb - batch.teacher_emb).pow(2).sum(-1).mean())
    with pytest.raises(DistillError, match=r"strategy\.distance"):
        build_config(get_strategy("rise").Config, {"distance": "l1"}, where="strategy")


def test_vl2v_exports_the_text_anchored_classifier(tmp_path):
    """The saved student predicts with s · normalize(P f) Tᵀ (up to a positive per-image factor).

    Before: the head was a linear probe trained on detached features; after training steps its
    argmax disagreed with the text classifier's, and the exported model never used T.
    """
    from distill.student.model import load_student, save_student

    strategy, batch = make_setup("vl2v")
    opt = torch.optim.SGD([p for p in strategy.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):  # move P and s away from where any init put the head
        opt.zero_grad()
        strategy.train()(batch)["loss"].backward()
        opt.step()
    assert not any(p.requires_grad for p in strategy.student.head.parameters()), "the head must not be trained"
    strategy.eval()
    predicted = strategy.predict(batch.images)  # what evaluation measures (and folds before best is saved)
    save_student(strategy.student, tmp_path / "best")
    shipped = load_student(tmp_path / "best").eval()
    with torch.no_grad():
        f = shipped.features(batch.images)
        z = F.normalize(shipped.projector(f), dim=-1)
        text_logits = strategy.scale() * z @ F.normalize(strategy.ctx.text_embeddings.float(), dim=-1).T
        exported = shipped(batch.images)
        norm = shipped.projector(f).norm(dim=-1, keepdim=True)
    assert torch.allclose(exported, norm * text_logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(exported.argmax(-1), text_logits.argmax(-1))
    assert torch.allclose(predicted, exported, atol=1e-5)


def test_vl2v_scale_fixed_or_learned():
    strategy, batch = make_setup("vl2v", {"learn_scale": False, "scale": 20.0})
    assert own_parameters(strategy) == [] and abs(float(strategy.scale()) - 20.0) < 1e-4
    learned, _ = make_setup("vl2v")
    assert [n for n, _ in own_parameters(learned)] == ["log_scale"]
    assert abs(float(learned.scale().detach()) - LOGIT_SCALE) < 1e-3  # starts at the teacher's scale
    with pytest.raises(DistillError, match=r"strategy\.scale"):
        make_setup("vl2v", {"scale": 1000.0})


def test_vl2v_needs_text_embeddings():
    student, ctx, _ = make_inputs("vl2v")
    with pytest.raises(DistillError, match="text embeddings"):
        create_strategy("vl2v", student, None, dataclasses.replace(ctx, text_embeddings=None))


def _grads(options: dict[str, Any]) -> dict[str, Tensor]:
    strategy, batch = make_setup("customkd", options)
    strategy.train()(batch)["loss"].backward()
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in strategy.named_parameters()}


def test_customkd_stop_gradient_and_frozen_head_on_the_customised_path():
    """The alignment never moves g (no collapse), and g's own loss never moves the student's head."""
    base = _grads({})
    no_align = _grads({"lambda_custom": 0.0})
    no_fit = _grads({"lambda_fit": 0.0})
    for n in base:
        if n.startswith("transform."):
            assert torch.allclose(base[n], no_align[n]), f"alignment term leaks gradient into g ({n})"
            assert no_fit[n].abs().sum() == 0, f"g is trained by something other than its own loss ({n})"
        if n.startswith("student.head."):
            assert torch.allclose(base[n], no_fit[n]), f"g's loss leaks gradient into the student's head ({n})"


def test_customkd_without_general_term_needs_no_projector():
    student, ctx, batch = make_inputs("customkd", embed=False)
    strategy = create_strategy("customkd", student, {"lambda_general": 0.0, "hidden": 0}, ctx)
    out = strategy(batch)
    assert "general" not in out and torch.isfinite(out["loss"])
    assert isinstance(strategy.transform, torch.nn.Linear)
