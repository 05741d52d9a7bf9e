"""Config -> objects: the one place a training run reads its :class:`~distill.config.TrainConfig`.

:func:`build` opens each teacher cache once (and checks its identity against this run's data
and teacher), creates the teacher in one place (only when the strategy runs it online, or when
the config names one whose identity the caches must match), makes the student and the
strategy, and returns a :class:`TrainSetup` of objects. Nothing below it reads the config's raw
form, and a strategy that needs only cached outputs never builds a teacher.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.config import TeacherConfig, TrainConfig
from distill.data.classes import ClassColumns, student_classes
from distill.data.fingerprint import content_fingerprint
from distill.data.folder import DomainFolder, Sample, list_images
from distill.data.listing import left_out_line
from distill.data.split import SplitRule
from distill.data.views import ViewConfig
from distill.errors import DistillError, DistillWarning
from distill.records import CACHE_MANIFEST, CacheManifest, UnlabeledPool
from distill.strategies import Strategy, StrategyContext, create_strategy, get_strategy
from distill.strategies._teachers import teacher_combination
from distill.strategies.base import Needs
from distill.student.model import Student, default_spec, load_student
from distill.student.transforms import normalize
from distill.teacher import Teacher
from distill.teacher.cache import (
    AdversarialViews,
    CacheMismatchError,
    TeacherCache,
    check_manifest,
    check_sample_indices,
    dataset_expectation,
    diff_fields,
    expected_identity,
)
from distill.teacher.cache.compact import check_strategy_layout
from distill.teacher.pool import check_teacher_pool, teacher_pool
from distill.teacher.prompts import resolve_templates
from distill.train.cache_mismatch import explained_mismatch
from distill.train.data import ViewPlan
from distill.train.pool import resolve_pool
from distill.train.source_run import SourceSplit, adaptation_split_warning, source_split
from distill.utils.runtime import (
    Dist,
    check_precision,
    init_distributed,
    resolve_device,
    seed_everything,
    set_deterministic,
    share_from_main,
)


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
    # data.unlabeled: the pool's train-split samples (and its folders' images), shown without labels next to
    # the labelled ones; pool_record: what summary.json says of it
    unlabeled: Sequence[Sample] = field(default_factory=list)
    pool_record: UnlabeledPool | None = None
    # dataset class ids of the student's classes (data.withhold_classes leaves some out); None = all
    class_columns: list[int] | None = None
    withheld_classes: list[str] = field(default_factory=list)  # data.withhold_classes

    @property
    def columns(self) -> ClassColumns:
        """Dataset class ids -> the student's (labels remapped, teacher logits sliced)."""
        return ClassColumns(self.class_columns, len(self.dataset.classes))


def teacher_input_fn(teacher: Teacher, device: torch.device) -> Callable[[Tensor], Tensor]:
    """pixels [B, 3, H, W] in [0, 1] -> the teacher's normalized input at its resolution."""
    info = teacher.preprocess_info
    mean = torch.tensor(info.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(info.std, device=device).view(1, 3, 1, 1)

    def teacher_input(pixels: Tensor) -> Tensor:
        x = F.interpolate(pixels, size=info.size, mode="bicubic", align_corners=False, antialias=True)
        return normalize(x.clamp(0, 1), mean, std)

    return teacher_input


def build(cfg: TrainConfig, on_data: Callable[[DomainFolder, list[TeacherCache], Dist], None] | None = None,
          resume: bool = False) -> TrainSetup:
    """Config -> objects. Nothing below this function reads the config's raw form. ``on_data`` is called with the
    data set (its pool folders added) and the caches as soon as they are open, before any image is decoded (the
    resume's data check: :func:`distill.train.data_identity.check_same_data`). ``resume``: ``cfg`` is a run's saved
    config, continued (its split rule is not said again: the run said it when it started, and cannot change it)."""
    device = resolve_device(cfg.run.device, what="run.device")  # indexed: cuda:LOCAL_RANK under torchrun
    check_precision(cfg.optim.precision, device, what="optim.precision")
    dist = init_distributed(device)
    seed_everything(cfg.run.seed)
    set_deterministic(cfg.run.deterministic)
    cfg = with_split_rule(cfg, warn=dist.main and not resume)  # unset keys: the cache's (saved with the run)
    # ROOT is listed once, on rank 0, and the listing sent to the other ranks
    dataset = DomainFolder(cfg.data.root, cfg.data.split_rule(),
                           listing=share_from_main(lambda: list_images(cfg.data.root), dist), skip_bad=cfg.data.skip_bad)
    if cfg.teacher is not None:  # before any cache or teacher is opened: a named stand-in's pool must stay out
        check_teacher_pool(cfg.teacher.pretrained, dataset, "this run", keys="data.")
    source = dataset.check_domains(cfg.data.source)
    target = dataset.check_domains(cfg.data.target) if cfg.data.target is not None else [
        x for x in dataset.domains if x not in source]
    strategy_cls = get_strategy(cfg.strategy.name)
    needs = strategy_cls.needs
    _check_requirements(cfg, strategy_cls.name, needs)
    class_names, class_columns = student_classes(dataset.classes, cfg.data.withhold_classes)
    columns = ClassColumns(class_columns, len(dataset.classes))
    if class_columns is not None and needs.online_teacher:
        raise DistillError(f"data.withhold_classes: strategy '{strategy_cls.name}' runs the teacher online over "
                           "every class; use a strategy that reads the teacher cache")

    caches = [TeacherCache.open(path) for path in cfg.caches()]  # each opened once; identity checked below
    # needs.online_teacher implies a teacher section (_check_requirements)
    teacher = _create_teacher(cfg.teacher, dataset, caches, device) \
        if cfg.teacher is not None and (caches or needs.online_teacher) else None
    for cache in caches:
        check_strategy_layout(strategy_cls.name, needs, cache.layout, cache.path)  # before any other work
        _check_cache(cache, cfg, dataset, teacher, dist)
    _check_same_views(caches)
    pool = resolve_pool(cfg, dataset, strategy_cls.name, needs, source, caches)  # adds its folders to dataset
    if on_data is not None:
        on_data(dataset, caches, dist)
    _check_view_policy(strategy_cls.name, needs, caches)
    read = target if needs.target_data else source + target  # a source-free run never opens its source domains
    skipped = _skip_bad_images(dataset, caches, read + [d for d in pool.names if d not in read], cfg.data.skip_bad)
    if skipped and dist.main:
        what, folders = "undecodable image(s) left out of training and evaluation", ", or an unlabeled folder's NAME/..."
        print(f"warning: {left_out_line(what, dataset.root, skipped, folders if dataset.folders else '')}",
              file=sys.stderr)
    _check_domain_images(dataset, source, target, needs, dist.main, cfg.run.select_on)
    manifest = caches[0].manifest if caches else None  # the first cache's: views, teacher

    # views: dictated by the (first) cache so training replays what the teacher saw
    if manifest is not None:
        views = ViewPlan(manifest.views.count, ViewConfig.from_dict(manifest.views.augment), manifest.views.seed)
    else:
        views = ViewPlan(cfg.run.views, ViewConfig(hflip=0.0), cfg.run.seed)

    all_text = caches[0].text_embeddings if caches else (teacher.text_embeddings.cpu() if teacher is not None
                                                         else None)
    text = columns.rows(all_text)  # the student's classes only
    text_head = cfg.student.head == "text"
    if text_head and text is None:
        raise DistillError("student.head=text needs the teacher's text embeddings: set 'cache' to a "
                           "`distill cache build` output")
    embed_dim = (int(text.shape[1]) if text is not None and (needs.cached_features or needs.text_embeddings
                                                                or text_head) else None)
    if manifest is not None:
        logit_scale = float(manifest.teacher.logit_scale or 0) or None
    else:
        logit_scale = teacher.logit_scale if teacher is not None else None

    student = _create_student(cfg, class_names, embed_dim, text, logit_scale).to(device)
    ctx = StrategyContext(
        num_classes=len(class_names), class_names=class_names, embed_dim=embed_dim,
        text_embeddings=text.to(device) if text is not None else None, logit_scale=logit_scale,
        all_text_embeddings=all_text.to(device) if all_text is not None else None,
        teacher=teacher if needs.online_teacher else None,
        teacher_input=teacher_input_fn(teacher, device) if teacher is not None else None,
        normalize=None, num_teachers=len(caches))
    strategy = create_strategy(cfg.strategy.name, student, cfg.strategy.options(), ctx).to(device)

    zero_shot = {}
    if caches:
        zero_shot = {dom: round(acc["test"], 6) for dom, acc in caches[0].zero_shot_accuracy().items()
                     if dom in read and "test" in acc}
    provenance = {"strategy": cfg.strategy.name, "run": str(Path(cfg.run.out).absolute()),  # read from other folders
                  "teacher": (manifest.teacher.model_dump(mode="json", exclude_unset=True) if manifest is not None
                              else teacher.identity() if teacher is not None else None),
                  "teacher_flops": manifest.teacher_flops_per_image if manifest is not None else None,
                  "source_domains": source, "cache": [str(p) for p in cfg.caches()]}
    if class_columns is not None:
        provenance["withheld_classes"] = list(cfg.data.withhold_classes)
    combination = teacher_combination(strategy, caches)  # several caches combined (kd/fm teachers.combine)
    if combination is not None:
        provenance["teachers"] = combination
    if text_head:  # what `distill export --classes` re-targets the text head with
        said = manifest if manifest is not None else teacher
        assert said is not None  # text_head has text (checked above): from the first cache or the teacher
        provenance["templates"] = list(said.templates)
        path = (str(cfg.teacher.pretrained) if cfg.teacher is not None and cfg.teacher.pretrained
                else manifest.teacher_path if manifest is not None else None)
        if path:
            provenance["teacher_pretrained"] = path  # the path (the identity has its name)
    adversarial = None
    if needs.cached_adversarial:
        adversarial = AdversarialViews.open(caches[0].path, caches[0].manifest)
        provenance["adversarial_views"] = {k: getattr(adversarial.manifest, k) for k in ("views", "epsilon", "steps",
                                                                                        "step_size", "seed", "objective")}
        missing = [d for d in pool.names if d not in adversarial.manifest.domains]
        if missing:
            raise DistillError(f"data.unlabeled: {missing} have no cached adversarial views (they cover "
                               f"{adversarial.manifest.domains}); build them with `distill cache build --adv-views K`")
    unlabeled = dataset.select(pool.names, "train") if pool.names else []
    return TrainSetup(cfg=cfg, dataset=dataset, source=source, target=target, strategy=strategy, caches=caches,
                      views=views, device=device, dist=dist, teacher_zero_shot=zero_shot, provenance=provenance,
                      adversarial=adversarial, skipped=skipped, unlabeled=unlabeled,
                      pool_record=pool.record(dataset, len(unlabeled), cfg.data.unlabeled_ratio),
                      class_columns=class_columns, withheld_classes=list(cfg.data.withhold_classes))


def _check_requirements(cfg: TrainConfig, name: str, needs: Needs) -> None:
    """Refuse a config that lacks what the strategy needs, naming the key to set."""
    if (needs.cached_logits or needs.cached_features or needs.text_embeddings) and not cfg.caches():
        raise DistillError(f"strategy '{name}' needs a teacher cache: set 'cache' to a `distill cache build` output")
    if needs.online_teacher and cfg.teacher is None:
        raise DistillError(f"strategy '{name}' runs the teacher online: set the 'teacher' section (arch, pretrained)")
    if needs.source_checkpoint and cfg.source_checkpoint is None:
        raise DistillError(f"strategy '{name}' adapts a source-trained student: set 'source_checkpoint'")


def _check_view_policy(name: str, needs: Needs, caches: list[TeacherCache]) -> None:
    """A strategy that matches the teacher on augmented views needs a cache that augmented them (else it is kd)."""
    if needs.augmented_views and caches and caches[0].manifest.views.policy is None:
        raise DistillError(f"strategy '{name}' matches the teacher on augmented views, but cache {caches[0].path} "
                           "holds crop-only views: build the cache with `distill cache build --policy fm`")


def with_split_rule(cfg: TrainConfig, warn: bool = True) -> TrainConfig:
    """``cfg`` with its whole split rule: the keys ``data`` sets, else those its first cache recorded, else (no
    cache) the pool the ``teacher`` section's ``teacher.json`` records (``pretrain_fraction``, ``split_seed``),
    else the defaults (:class:`~distill.data.split.SplitRule`). So a recipe that leaves the rule out trains on
    any cache, e.g. one built with a bootstrapped teacher's pretraining pool, on the cache's images' splits, and
    an online stand-in teacher without a cache keeps its pool out of the students' splits. An adaptation (a
    ``source_checkpoint``) without a cache takes the keys it leaves unset from its source run's rule, as ``distill
    adapt`` does (:mod:`distill.train.source_run`; the teacher pool's keys still win); one whose rule is not the one
    its source run split the same data with, or whose run is not found where it leaves keys unset, says so in one
    line (``warn``: on this rank): it would be tested on other target images than its source run."""
    paths = cfg.caches()
    built = paths and CacheManifest.exists_in(paths[0])  # no manifest: TeacherCache.open names the problem later
    base: dict[str, Any] = SplitRule.from_cache(CacheManifest.read(paths[0]).dataset) if built else {}
    found = teacher_pool(cfg.teacher.pretrained, cfg.data.root) if not built and cfg.teacher is not None else None  # or unbuilt
    if found is not None:  # which images are in the pool follows from these two alone (distill/teacher/pool.py)
        base = {"pretrain_fraction": found[0].fraction, "split_seed": found[0].split_seed}
    source = source_split(cfg.source_checkpoint) if cfg.source_checkpoint is not None else None  # an adaptation's
    if not built and isinstance(source, SourceSplit):  # as `distill adapt` without a cache: the source run's rule
        base = {**source.keys, **base}
    rule = cfg.data.split_rule(base)
    said = adaptation_split_warning(rule, cfg.data.root, source, paths[0] if built else None, base,
                                    given={*base, *cfg.data.split_keys()})
    if said is not None and warn:
        warnings.warn(said, DistillWarning, stacklevel=2)
    keys = {k: v for k, v in rule.model_dump().items() if v is not None}
    return cfg.model_copy(update={"data": cfg.data.model_copy(update=keys)})


def _templates(cfg: TeacherConfig, caches: list[TeacherCache]) -> list[str]:
    """The teacher's prompt templates: the config's, else the first cache's, else the teacher's own."""
    if cfg.templates:
        return list(cfg.templates)
    if caches:
        return list(caches[0].manifest.templates)
    return resolve_templates(None, cfg.pretrained)[0]


def _create_teacher(cfg: TeacherConfig, dataset: DomainFolder, caches: list[TeacherCache],
                    device: torch.device) -> Teacher:
    """The one teacher of a run (the config's teacher section), on ``device``."""
    teacher = Teacher(cfg.arch, cfg.pretrained, dataset.classes, _templates(cfg, caches),
                      device=str(device), precision=cfg.precision)
    return teacher.to(device)


def _check_cache(cache: TeacherCache, cfg: TrainConfig, dataset: DomainFolder, teacher: Teacher | None,
                 dist: Dist = Dist()) -> None:
    """Refuse a cache whose identity (teacher, preprocessing, classes, data) differs from this run's, or whose
    images data.root now numbers otherwise (a domain added before the cached ones: the rows are keyed by index).

    The data part includes ``pretrain_fraction``: a cache build refused a split rule other than its
    teacher's pool (:func:`~distill.teacher.pool.check_teacher_pool`), so a run that matches the cache
    keeps the teacher's pretraining images out of its splits even when it names no teacher.
    """
    manifest = cache.manifest
    data_inputs = dataset_expectation(cache.path, manifest, dataset)  # another data set's cache: named so
    content = None
    if manifest.dataset.content_fingerprint:  # built with --fingerprint content
        # every image read and hashed once per run (rank 0, a thread pool), not once per rank
        content = share_from_main(lambda: content_fingerprint(dataset, cache.domains), dist)
    templates = None
    if cfg.teacher is not None:
        templates = list(cfg.teacher.templates) if cfg.teacher.templates else list(manifest.templates)
    expect = expected_identity(teacher.identity() if teacher is not None else None,
                               teacher.preprocess_info.to_dict() if teacher is not None else None,
                               dataset.classes, dataset.fingerprint(cache.domains), templates, dataset=data_inputs,
                               content_fingerprint=content)
    try:
        check_manifest(manifest, expect, Path(cache.path) / CACHE_MANIFEST)
    except CacheMismatchError as e:  # the roots, and a split key the run sets otherwise: named with its fix
        raise explained_mismatch(e, manifest.dataset, dataset, cache.sample_indices) from None
    check_sample_indices(cache.path, cache.sample_indices(), dataset)  # rows are keyed by index: still the same images?


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


def _create_student(cfg: TrainConfig, class_names: list[str], embed_dim: int | None, text: Tensor | None,
                    logit_scale: float | None) -> Student:
    """The source checkpoint's student (adaptation) or a new one (zero-shot initialised if asked; a text
    head starts from the teacher's text embeddings of ``class_names``, the student's classes)."""
    if cfg.source_checkpoint is not None:
        student = load_student(cfg.source_checkpoint)
        if student.spec.class_names != class_names:
            raise DistillError(f"source_checkpoint {cfg.source_checkpoint}: its classes differ from data.root's"
                               + (" (less data.withhold_classes)" if cfg.data.withhold_classes else ""))
        return student
    text_head = cfg.student.head == "text"
    spec = default_spec(cfg.student.arch, class_names, cfg.student.input_size, embed_dim, head=cfg.student.head,
                        logit_scale=logit_scale if text_head else None)
    student = Student(spec, pretrained=cfg.student.pretrained, text_embeddings=text if text_head else None)
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
    (``data.skip_bad``), every undecodable image of the domains no cache covers. Returns those of ``domains``."""
    out = dataset.left_out(domains)  # names not UTF-8 of the domains it reads (only with scan: refused otherwise)
    for cache in caches:  # every one left out; those of the domains read said
        out += [k for k in dataset.exclude((k.path, k.reason) for k in cache.skipped) if k[0].split("/", 1)[0] in domains]
    if scan:
        covered = set(caches[0].domains + [f.name for f in caches[0].folders]) if caches else set()
        out += dataset.skip_undecodable([x for x in domains if x not in covered])
    return out


def _check_domain_images(dataset: DomainFolder, source: list[str], target: list[str], needs: Needs,
                         main: bool, select_on: str = "source_val") -> None:
    """An empty domain is named: none to train on is an error, one trained on or tested with none a warning, and so
    is a labelled run that selects on source validation with no validation image (it keeps its last epoch)."""
    key, trained = ("data.target", target) if needs.target_data else ("data.source", source)
    no_train = [d for d in trained if not len(dataset.select([d], "train"))]
    names = ", ".join(repr(d) for d in no_train)
    if trained and len(no_train) == len(trained):
        raise DistillError(f"{key}: {names} hold(s) no training images under {dataset.root} (an empty folder, or "
                           "none in the train split); nothing to train on: add images or choose other domains")
    untested = [d for d in target if not len(dataset.select([d], "test"))]
    if main and no_train:
        print(f"warning: {key}: {names} hold(s) no training images under {dataset.root}; trained on the others",
              file=sys.stderr)
    if main and not needs.target_data and select_on == "source_val" and not len(dataset.select(source, "val")):
        print(f"warning: data.source: {', '.join(map(repr, source))} hold(s) no validation images under "
              f"{dataset.root} (data.val_fraction {dataset.val_fraction:g}); checkpoints/best keeps the last epoch",
              file=sys.stderr)
    if main and untested:
        print(f"warning: data.target: {', '.join(map(repr, untested))} hold(s) no test images under {dataset.root}; "
              "left out of the target accuracy", file=sys.stderr)
