"""Config -> objects: the one place a training run reads its :class:`~distill.config.TrainConfig`.

:func:`build` opens each teacher cache once (and checks its identity against this run's data
and teacher), creates the teacher in one place (only when the strategy runs it online, or when
the config names one whose identity the caches must match), makes the student and the
strategy, and returns a :class:`TrainSetup` of objects. Nothing below it reads the config's raw
form, and a strategy that needs only cached outputs never builds a teacher.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.config import TrainConfig
from distill.data.fingerprint import content_fingerprint
from distill.data.folder import DomainFolder
from distill.errors import DistillError
from distill.records import CACHE_MANIFEST
from distill.strategies import Strategy, StrategyContext, create_strategy, get_strategy
from distill.strategies.base import Needs
from distill.student.model import Student, default_spec, load_student
from distill.student.transforms import normalize
from distill.teacher import Teacher
from distill.teacher.cache import (AdversarialViews, TeacherCache, check_manifest, dataset_expectation, diff_fields,
                                   expected_identity)
from distill.teacher.pool import check_teacher_pool
from distill.teacher.prompts import resolve_templates
from distill.teacher.views import ViewConfig
from distill.train.data import ViewPlan
from distill.utils.runtime import (Dist, check_precision, init_distributed, resolve_device, seed_everything,
                                   set_deterministic)


@dataclass
class TrainSetup:
    """Objects the trainer needs; built from a config by :func:`build`."""

    cfg: TrainConfig
    dataset: DomainFolder
    source: list[str]                      # source domains (trained on unless the strategy adapts)
    target: list[str]                      # target domains (evaluated; adapted on by target-data strategies)
    strategy: Strategy
    caches: list[TeacherCache]
    views: ViewPlan
    device: torch.device
    dist: Dist
    teacher_zero_shot: dict[str, float]    # domain -> the first cache's teacher test accuracy (fraction)
    provenance: dict[str, Any]             # recorded in the best checkpoint's student.json
    adversarial: AdversarialViews | None = None  # when needs.cached_adversarial
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relpath, reason) left out


def teacher_input_fn(teacher: Teacher, device: torch.device) -> Callable[[Tensor], Tensor]:
    """pixels [B, 3, H, W] in [0, 1] -> the teacher's normalized input at its resolution."""
    info = teacher.preprocess_info
    mean = torch.tensor(info.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(info.std, device=device).view(1, 3, 1, 1)

    def teacher_input(pixels: Tensor) -> Tensor:
        x = F.interpolate(pixels, size=info.size, mode="bicubic", align_corners=False, antialias=True)
        return normalize(x.clamp(0, 1), mean, std)

    return teacher_input


def build(cfg: TrainConfig) -> TrainSetup:
    """Config -> objects. Nothing below this function reads the config's raw form."""
    device = resolve_device(cfg.run.device, what="run.device")  # indexed: cuda:LOCAL_RANK under torchrun
    check_precision(cfg.optim.precision, device, what="optim.precision")
    dist = init_distributed(device)
    seed_everything(cfg.run.seed)
    set_deterministic(cfg.run.deterministic)
    dataset = DomainFolder(cfg.data.root, cfg.data.class_map, cfg.data.test_fraction, cfg.data.split_seed,
                           cfg.data.val_fraction, cfg.data.pretrain_fraction)
    if cfg.teacher is not None:  # before any cache or teacher is opened: a named stand-in's pool must stay out
        check_teacher_pool(cfg.teacher.pretrained, dataset, "this run")
    source = dataset.check_domains(cfg.data.source)
    target = dataset.check_domains(cfg.data.target) if cfg.data.target is not None else [
        x for x in dataset.domains if x not in source]
    strategy_cls = get_strategy(cfg.strategy.name)
    needs = strategy_cls.needs
    _check_requirements(cfg, strategy_cls.name, needs)

    caches = [TeacherCache.open(path) for path in cfg.caches()]  # each opened once; identity checked below
    teacher = _create_teacher(cfg, dataset, caches, device) if (cfg.teacher and caches) or needs.online_teacher \
        else None
    for cache in caches:
        _check_cache(cache, cfg, dataset, teacher)
    _check_same_views(caches)
    skipped = _skip_bad_images(dataset, caches, source + target, cfg.data.skip_bad)
    if skipped and dist.main:
        print(f"warning: {len(skipped)} undecodable image(s) left out of training and evaluation: "
              + ", ".join(f"{p} ({why})" for p, why in skipped))
    manifest = caches[0].manifest if caches else None  # the first cache's: views, teacher

    # views: dictated by the (first) cache so training replays what the teacher saw
    if manifest is not None:
        views = ViewPlan(manifest.views.count, ViewConfig.from_dict(manifest.views.augment), manifest.views.seed)
    else:
        views = ViewPlan(cfg.run.views, ViewConfig(hflip=0.0), cfg.run.seed)

    text = caches[0].text_embeddings if caches else (teacher.text_embeddings.cpu() if teacher is not None else None)
    embed_dim = int(text.shape[1]) if text is not None and (needs.cached_features or needs.text_embeddings) else None
    if manifest is not None:
        logit_scale = float(manifest.teacher.logit_scale or 0) or None
    else:
        logit_scale = teacher.logit_scale if teacher is not None else None

    student = _create_student(cfg, dataset, embed_dim, text, logit_scale).to(device)
    ctx = StrategyContext(
        num_classes=len(dataset.classes), class_names=dataset.classes, embed_dim=embed_dim,
        text_embeddings=text.to(device) if text is not None else None, logit_scale=logit_scale,
        teacher=teacher if needs.online_teacher else None,
        teacher_input=teacher_input_fn(teacher, device) if teacher is not None else None,
        normalize=None)
    strategy = create_strategy(cfg.strategy.name, student, cfg.strategy.options(), ctx).to(device)

    zero_shot = {}
    if caches:
        zero_shot = {dom: round(acc["test"], 6) for dom, acc in caches[0].zero_shot_accuracy().items()
                     if dom in source + target and "test" in acc}
    provenance = {"strategy": cfg.strategy.name, "run": str(cfg.run.out),
                  "teacher": (manifest.teacher.model_dump(mode="json", exclude_unset=True) if manifest is not None
                              else teacher.identity() if teacher is not None else None),
                  "teacher_flops": manifest.teacher_flops_per_image if manifest is not None else None,
                  "source_domains": source, "cache": [str(p) for p in cfg.caches()]}
    adversarial = None
    if needs.cached_adversarial:
        adversarial = AdversarialViews.open(caches[0].path, caches[0].manifest)
        provenance["adversarial_views"] = {k: getattr(adversarial.manifest, k) for k in ("views", "epsilon", "steps",
                                                                                        "step_size", "seed", "objective")}
    return TrainSetup(cfg=cfg, dataset=dataset, source=source, target=target, strategy=strategy, caches=caches,
                      views=views, device=device, dist=dist, teacher_zero_shot=zero_shot, provenance=provenance,
                      adversarial=adversarial, skipped=skipped)


def _check_requirements(cfg: TrainConfig, name: str, needs: Needs) -> None:
    """Refuse a config that lacks what the strategy needs, naming the key to set."""
    if (needs.cached_logits or needs.cached_features or needs.text_embeddings) and not cfg.caches():
        raise DistillError(f"strategy '{name}' needs a teacher cache: set 'cache' to a `distill cache build` output")
    if needs.online_teacher and cfg.teacher is None:
        raise DistillError(f"strategy '{name}' runs the teacher online: set the 'teacher' section (arch, pretrained)")
    if needs.source_checkpoint and cfg.source_checkpoint is None:
        raise DistillError(f"strategy '{name}' adapts a source-trained student: set 'source_checkpoint'")


def _templates(cfg: TrainConfig, caches: list[TeacherCache]) -> list[str]:
    """The teacher's prompt templates: the config's, else the first cache's, else the teacher's own."""
    if cfg.teacher.templates:
        return list(cfg.teacher.templates)
    if caches:
        return list(caches[0].manifest.templates)
    return resolve_templates(None, cfg.teacher.pretrained)[0]


def _create_teacher(cfg: TrainConfig, dataset: DomainFolder, caches: list[TeacherCache],
                    device: torch.device) -> Teacher:
    """The one teacher of a run, on ``device``."""
    teacher = Teacher(cfg.teacher.arch, cfg.teacher.pretrained, dataset.classes, _templates(cfg, caches),
                      device=str(device), precision=cfg.teacher.precision)
    return teacher.to(device)


def _check_cache(cache: TeacherCache, cfg: TrainConfig, dataset: DomainFolder, teacher: Teacher | None) -> None:
    """Refuse a cache whose identity (teacher, preprocessing, classes, data) differs from this run's.

    The data part includes ``pretrain_fraction``: a cache build refused a split rule other than its
    teacher's pool (:func:`~distill.teacher.pool.check_teacher_pool`), so a run that matches the cache
    keeps the teacher's pretraining images out of its splits even when it names no teacher.
    """
    manifest = cache.manifest
    data_inputs = dataset_expectation(cache.path, manifest, dataset)  # another data set's cache: named so
    content = None
    if manifest.dataset.content_fingerprint:  # built with --fingerprint content
        content = content_fingerprint(dataset, cache.domains)
    templates = None
    if cfg.teacher is not None:
        templates = list(cfg.teacher.templates) if cfg.teacher.templates else list(manifest.templates)
    expect = expected_identity(teacher.identity() if teacher is not None else None,
                               teacher.preprocess_info.to_dict() if teacher is not None else None,
                               dataset.classes, dataset.fingerprint(cache.domains), templates, dataset=data_inputs,
                               content_fingerprint=content)
    check_manifest(manifest, expect, Path(cache.path) / CACHE_MANIFEST)


def _check_same_views(caches: list[TeacherCache]) -> None:
    """Several teachers must describe the same image views row for row."""
    if not caches:
        return
    first = caches[0].manifest.views
    for cache in caches[1:]:
        views = cache.manifest.views
        if views != first:
            diffs = diff_fields({"views": views.model_dump()}, {"views": first.model_dump()})
            raise DistillError(f"cache {cache.path}: its views differ from the first cache's ({'; '.join(diffs)}); "
                               "several teachers must be cached with the same --views, --seed and crop settings "
                               "so that every row describes the same image view")


def _create_student(cfg: TrainConfig, dataset: DomainFolder, embed_dim: int | None, text: Tensor | None,
                    logit_scale: float | None) -> Student:
    """The source checkpoint's student (adaptation) or a new one (zero-shot initialised if asked)."""
    if cfg.source_checkpoint is not None:
        student = load_student(cfg.source_checkpoint)
        if student.spec.class_names != dataset.classes:
            raise DistillError(f"source_checkpoint {cfg.source_checkpoint}: its classes differ from data.root's")
        return student
    spec = default_spec(cfg.student.arch, dataset.classes, cfg.student.input_size, embed_dim)
    student = Student(spec, pretrained=cfg.student.pretrained)
    if cfg.student.zero_shot_init:
        if text is None or logit_scale is None:
            raise DistillError("student.zero_shot_init needs a cache (or teacher) for the text embeddings")
        if student.projector is None:
            raise DistillError("student.zero_shot_init needs a strategy with a projector (a feature strategy)")
        student.zero_shot_init(text, logit_scale)
    return student


def _skip_bad_images(dataset: DomainFolder, caches: list[TeacherCache], domains: list[str],
                     scan: bool) -> list[tuple[str, str]]:
    """Exclude the caches' skipped images (always: the cache has no row for them) and, with ``scan``
    (``data.skip_bad``), every undecodable image of the domains no cache covers. Returns them."""
    out = []
    for cache in caches:
        out += dataset.exclude((k.path, k.reason) for k in cache.skipped)
    if scan:
        covered = set(caches[0].domains) if caches else set()
        out += dataset.skip_undecodable([x for x in domains if x not in covered])
    return out
