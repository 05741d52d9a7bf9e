"""distill: turn open_clip vision-language teachers into small, fast timm students.

Stages (one subpackage each): ``data`` -> ``teacher`` (frozen open_clip + on-disk cache)
-> ``strategies`` + ``student`` (training) -> ``export`` (ONNX / TensorRT) -> ``bench``.

The Python API (:mod:`distill.api`) is the stage functions the CLI calls, over the same typed
configs, each returning the typed record the CLI prints from::

    from distill.api import build_cache, train, adapt, export, load_recipe

    cfg = load_recipe("kd", {"optim.epochs": 5, "run.out": "runs/kd"})        # a TrainConfig
    summary = train(cfg)                                                      # a RunSummary
    report = export(summary.checkpoint, "exports/kd", precisions="fp32")      # an ExportReport

They (and ``report``) are imported from ``distill.api``, not from ``distill``: ``distill.train``,
``distill.export`` and ``distill.report`` are the stage subpackages, and Python rebinds those names on the package the
moment any module imports them, so a function of the same name here would not survive. The
names below (the other stage functions, the typed configs and records) are importable from
``distill`` itself, each on first use (PEP 562): ``import distill`` loads no torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_API: dict[str, str] = {
    # stage functions
    # (train, export and report: from distill.api; distill.train, distill.export and distill.report are the
    # subpackages)
    "build_cache": "distill.api", "adapt": "distill.api", "train_config": "distill.api", "adapt_config": "distill.api",
    "qad": "distill.api", "export_timm": "distill.api",
    # recipes (distill/configs/*.yaml)
    "load_recipe": "distill.recipes", "list_recipes": "distill.recipes",
    # typed configs
    "TrainConfig": "distill.config", "CacheBuildConfig": "distill.teacher.cache.job",
    "CacheOptions": "distill.teacher.cache.options", "AdversarialOptions": "distill.teacher.cache.options",
    "PixelOptions": "distill.teacher.cache.options", "ExportConfig": "distill.export.config",
    "QADConfig": "distill.export.qad_config",
    # typed records
    "CacheManifest": "distill.records", "RunSummary": "distill.records", "ExportReport": "distill.records",
    "QADRecord": "distill.export.qad_config", "ReportWritten": "distill.report.write",
    # the one error users see
    "DistillError": "distill.errors",
}

__all__ = ["__version__", *_API]

if TYPE_CHECKING:
    from distill.api import adapt, adapt_config, build_cache, export_timm, qad, train_config
    from distill.config import TrainConfig
    from distill.errors import DistillError
    from distill.export.config import ExportConfig
    from distill.export.qad_config import QADConfig, QADRecord
    from distill.recipes import list_recipes, load_recipe
    from distill.records import CacheManifest, ExportReport, RunSummary
    from distill.report.write import ReportWritten
    from distill.teacher.cache.job import CacheBuildConfig
    from distill.teacher.cache.options import AdversarialOptions, CacheOptions, PixelOptions


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'distill' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
