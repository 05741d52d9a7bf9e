"""One cache build as one typed config: :class:`CacheBuildConfig` -> :func:`run_cache_build`.

``distill cache build`` parses its flags into a :class:`CacheBuildConfig` and calls
:func:`run_cache_build`; ``distill.build_cache(cfg)`` (the Python API) is the same function. It
resolves what the flags leave open (the teacher's templates and pretraining pool from the
``teacher.json`` beside a bootstrapped checkpoint, the device), makes the dataset and the
teacher (or takes an already-loaded one: a benchmark that times the bare teacher holds it), and
runs :func:`~distill.teacher.cache.build.build_cache`. Benchmarks and the demo build through it
too, so there is one way to assemble dataset, teacher and options.
"""
from __future__ import annotations

import os
import sys
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from distill.data.folder import DomainFolder
from distill.data.listing import NOT_UTF8
from distill.data.split import SPLIT_KEYS, SplitKeys
from distill.data.unlabeled import add_folders, folder_hint, is_folder_entry, scan_folders
from distill.errors import DistillError
from distill.records import CacheManifest
from distill.teacher.cache.options import (
    FLAG,
    INTEGER,
    TEXT,
    AdversarialOptions,
    CacheOptions,
    PixelOptions,
    check_types,
)
from distill.teacher.cache.view_options import flag_hint
from distill.teacher.pool import pool_line, teacher_pool
from distill.teacher.prompts import resolve_templates

if TYPE_CHECKING:
    from distill.teacher.clip import Teacher


@dataclass(frozen=True)
class CacheBuildConfig:
    """A teacher cache to build: the data and its split rule, the teacher, what the cache holds.

    Attributes:
        data: dataset root (ROOT/DOMAIN/CLASS/image).
        out: cache directory (new, or this same build to resume).
        arch: open_clip model name (``ViT-B-32``, or a bootstrapped teacher's ``distill-demo-rn``).
        pretrained: open_clip tag, checkpoint file, or ``"none"`` or None (random weights seeded with 0).
        templates_file: prompt templates (default: the ``teacher.json`` beside a bootstrapped
            ``pretrained`` checkpoint, else the built-in ones).
        split: the split rule's keys (:class:`~distill.data.split.SplitKeys`: class map, test / val /
            pretrain fraction, split seed); unset ones take the defaults, except ``pretrain_fraction``: the
            stand-in teacher's pretraining pool its ``teacher.json`` records (never cached), else 0.
        unlabeled: folders of unlabeled images outside ROOT to cache too (``data.unlabeled`` of a run).
        options: what the cache holds (views, view policy, shards, dtype, fingerprint).
        adversarial: also craft PGD views against the teacher (``adv_cached``); None: none.
        pixels: also store every view's pixels at these sizes; None: none.
        skip_bad: skip undecodable images (listed in the manifest) instead of stopping.
        workers: decode workers per process (default: cores - 1; none for a set of one batch).
        progress: show a progress bar.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        precision: the teacher's inference dtype: ``fp32``, ``bf16`` (on CPU too) or ``fp16`` (CUDA only).

    ``split``, ``options``, ``adversarial`` and ``pixels`` may be given as mappings of their keys
    (``split={"test_fraction": 0.2}``); a value of the wrong type is one :class:`DistillError` line naming it.
    """

    data: str | Path
    out: str | Path
    arch: str
    pretrained: str
    templates_file: str | Path | None = None
    split: SplitKeys = field(default_factory=SplitKeys)
    unlabeled: Sequence[str] = ()
    options: CacheOptions = field(default_factory=CacheOptions)
    adversarial: AdversarialOptions | None = None
    pixels: PixelOptions | None = None
    skip_bad: bool = False
    workers: int | None = None
    progress: bool = True
    device: str = "auto"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        for name in ("data", "out", "templates_file"):
            value = getattr(self, name)
            if not (isinstance(value, (str, Path)) or (value is None and name == "templates_file")):
                raise DistillError(f"CacheBuildConfig.{name}: expected a path, got {value!r:.80}")
        if isinstance(self.pretrained, Path) or self.pretrained is None:  # None: random weights, as "none"
            object.__setattr__(self, "pretrained", "none" if self.pretrained is None else str(self.pretrained))
        unlabeled = [self.unlabeled] if isinstance(self.unlabeled, (str, Path)) else self.unlabeled
        if not isinstance(unlabeled, (list, tuple)) or not all(isinstance(u, (str, Path)) for u in unlabeled):
            raise DistillError(f"CacheBuildConfig.unlabeled: expected folders (a list of paths), got {self.unlabeled!r:.80}")
        object.__setattr__(self, "unlabeled", tuple(str(u) for u in unlabeled))
        for name, cls in (("split", SplitKeys), ("options", CacheOptions), ("adversarial", AdversarialOptions),
                          ("pixels", PixelOptions)):
            object.__setattr__(self, name, _section(name, getattr(self, name), cls))
        check_types(self, {"arch": (TEXT, "an open_clip model name"), "pretrained": (TEXT, "a tag, a file or 'none'"),
                           "skip_bad": (FLAG, "True or False"), "workers": (INTEGER, "an integer"),
                           "progress": (FLAG, "True or False"), "device": (TEXT, "auto, cpu, cuda or cuda:N"),
                           "precision": (TEXT, "fp32, bf16 or fp16")})

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> CacheBuildConfig:
        """A config from a mapping of its keys (``distill.build_cache({...})``); an unknown or missing key is one line."""
        if not isinstance(options, Mapping):
            raise DistillError(f"build_cache: config must be a CacheBuildConfig or a mapping of its keys, got "
                               f"{type(options).__name__}")
        keys = [f.name for f in fields(cls)]
        unknown = [k for k in options if k not in keys]
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
                   and f.name not in options]
        if unknown or missing:
            what = f"unknown key '{unknown[0]}'" if unknown else f"missing required key '{missing[0]}'"
            raise DistillError(f"build_cache config: {what} (keys: {', '.join(keys)})")
        return cls(**options)


def _section(name: str, value: Any, cls: type) -> Any:
    """A section of :class:`CacheBuildConfig` as its type: itself, or made from a mapping of its keys."""
    if value is None and name in ("adversarial", "pixels"):
        return None
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        keys = list(SPLIT_KEYS) if cls is SplitKeys else [f.name for f in fields(cls)]
        unknown = [k for k in value if k not in keys]
        if unknown:
            raise DistillError(f"CacheBuildConfig.{name}: unknown key '{unknown[0]}' (keys: {', '.join(keys)})"
                               + (flag_hint(unknown[0]) if cls is CacheOptions else ""))
        return cls(**value)
    raise DistillError(f"CacheBuildConfig.{name}: expected a {cls.__name__} or a mapping of its keys, got "
                       f"{value!r:.80}")


def add_unlabeled_folders(dataset: DomainFolder, entries: Sequence[str], skip_bad: bool = False) -> None:
    """``--unlabeled DIR...``: scan each folder and add it to ``dataset`` as an unlabeled domain. The flag takes
    folders only, so a bare name (``field``) is the folder of that name here, unless it names a domain."""
    for entry in entries:
        if entry in dataset.domains and not is_folder_entry(entry):
            raise DistillError(f"--unlabeled: '{entry}' is a domain under ROOT (cached by --domains, all by default); "
                               f"--unlabeled takes folders outside ROOT ({folder_hint(entry)})")
    add_folders(dataset, scan_folders(list(entries), dataset.root, "--unlabeled", skip_bad))


def run_cache_build(cfg: CacheBuildConfig, teacher: Teacher | None = None) -> CacheManifest | None:
    """Build (or resume, or find complete) the cache ``cfg`` describes; its manifest on rank 0, None on others.

    Args:
        cfg: the build.
        teacher: an already-loaded teacher to use instead of making one from ``cfg`` (a benchmark that
            times the bare teacher against the build holds it); it must be ``cfg.arch`` / ``cfg.pretrained``
            built with the dataset's classes, and it brings its own templates, device and precision
            (``cfg.templates_file``, ``cfg.device`` and ``cfg.precision`` are then not used).
    """
    from distill.teacher.cache.build import build_cache  # lazy: torch and open_clip load only when a cache is built

    dataset = cache_dataset(cfg)
    if dataset.unnamed and int(os.environ.get("RANK", 0)) == 0:
        more = len(dataset.unnamed) - 10  # one line stays readable at 10^5 such names (review 4 L2)
        print(f"warning: {len(dataset.unnamed)} image(s) left out, not cached ({NOT_UTF8}; rename them to cache them): "
              + ", ".join(dataset.unnamed[:10]) + (f" and {more} more (`distill data summary {cfg.data}` lists "
                                                   "them all)" if more > 0 else ""), file=sys.stderr, flush=True)
    line = pool_line(cfg.pretrained, dataset)
    if line is not None and int(os.environ.get("RANK", 0)) == 0:
        print(line, flush=True)
    if teacher is None:
        teacher = make_teacher(cfg, dataset)
    else:
        _check_teacher(cfg, teacher)
    out = Path(cfg.out)
    build_cache(dataset, teacher, out, cfg.options, adversarial=cfg.adversarial,
                pixels=cfg.pixels, skip_bad=cfg.skip_bad, num_workers=cfg.workers, progress=cfg.progress)
    return CacheManifest.read(out) if int(os.environ.get("RANK", 0)) == 0 else None


def cache_dataset(cfg: CacheBuildConfig) -> DomainFolder:
    """The images of ``cfg``: its data root under its split rule (the teacher's pool filled in), plus its
    unlabeled folders."""
    pool = teacher_pool(cfg.pretrained, cfg.data)  # a pool drawn from other data holds nothing out here
    dataset = DomainFolder(cfg.data, cfg.split.split_rule({"pretrain_fraction": pool[0].fraction} if pool else None,
                                                          where="cache build"), skip_bad=cfg.skip_bad)
    add_unlabeled_folders(dataset, cfg.unlabeled, cfg.skip_bad)
    return dataset


def make_teacher(cfg: CacheBuildConfig, dataset: DomainFolder) -> Teacher:
    """The teacher of ``cfg`` for ``dataset``'s classes: templates resolved (and printed on rank 0), device and
    precision checked, deterministic cuBLAS set; ``pretrained="none"``: random weights seeded with 0."""
    # lazy: torch and open_clip load only when a cache is built (the CLI's --help stays light)
    import torch

    from distill.teacher.clip import Teacher
    from distill.utils.runtime import check_precision, deterministic_cublas, resolve_device

    templates_file = None if cfg.templates_file is None else str(cfg.templates_file)
    templates, templates_source = resolve_templates(templates_file, cfg.pretrained)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"prompt templates: {len(templates)} from {templates_source}", flush=True)
    device = resolve_device(cfg.device, what="--device")
    check_precision(cfg.precision, device, what="--precision")
    deterministic_cublas()  # before the teacher's first matmul: a resumed build writes the same bytes
    pretrained = _pretrained(cfg)
    if pretrained is None:
        torch.manual_seed(0)  # random weights, identical in every process and every run
    return Teacher(cfg.arch, pretrained, dataset.classes, templates, device=str(device), precision=cfg.precision)


def _pretrained(cfg: CacheBuildConfig) -> str | None:
    return None if str(cfg.pretrained).lower() == "none" else str(cfg.pretrained)


def _check_teacher(cfg: CacheBuildConfig, teacher: Teacher) -> None:
    """A teacher passed to :func:`run_cache_build` is the one ``cfg`` names."""
    have = (teacher.arch, None if teacher.pretrained is None else str(teacher.pretrained))
    if have != (cfg.arch, _pretrained(cfg)):
        raise DistillError(f"run_cache_build: the teacher given is {have[0]} / {have[1]}, the config names "
                           f"{cfg.arch} / {_pretrained(cfg)}; pass the config's teacher or none")
