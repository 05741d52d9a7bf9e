"""The Python API: the stage functions the CLI calls, over the same typed configs and records.

Each function takes the typed config its command builds (or the few arguments that make one)
and returns the typed record the command reads back and prints::

    from distill.api import export, load_recipe, train

    cfg = load_recipe("kd", {"optim.epochs": 5, "run.out": "runs/kd"})        # a TrainConfig
    summary = train(cfg)                                                      # a RunSummary
    report = export(summary.checkpoint, "exports/kd", precisions="fp32,int8")  # an ExportReport

==========================  ====================================  =====================
function                    config                                returns
==========================  ====================================  =====================
:func:`build_cache`         :class:`CacheBuildConfig`             :class:`CacheManifest`
:func:`train`               :class:`TrainConfig` or a recipe      :class:`RunSummary`
:func:`adapt`               the arguments of ``distill adapt``    :class:`RunSummary`
:func:`export`              :class:`ExportConfig` (or its keys)   :class:`ExportReport`
:func:`export_timm`         ``distill export --format timm``      the weights file's path
:func:`qad`                 :class:`QADConfig` (or its keys)      :class:`QADRecord`
:func:`report`              folders and bench ``.jsonl`` files    :class:`ReportWritten`
:func:`bench`               the flags of ``distill bench``        a list of :class:`BenchRecord`
:func:`bootstrap_teacher`   the flags of ``teacher bootstrap``    :class:`TeacherManifest`
==========================  ====================================  =====================

Errors are :class:`~distill.errors.DistillError` (one line naming the file, key or value), as
on the command line; a path argument of another type too (``export: checkpoint must be a path (str or os.PathLike),
got int``: ``checked_keywords(paths=...)``); a mistyped keyword argument of any function here too (one line with the closest keyword:
:func:`distill.validation.checked_keywords`; an :class:`~distill.errors.UnknownKeyword`, still a TypeError as
Python's). Nothing heavy is imported until a function runs.

The functions print what their commands print: :func:`train` and :func:`adapt` their banner and a
line per epoch, :func:`build_cache` its templates line, on stdout (``contextlib.redirect_stdout``
silences them); :func:`export` and :func:`qad` log to stderr. Progress bars (stderr) are on by
default: ``progress=False`` turns them off (for a training run, the config key ``run.progress``;
allowed with ``resume``). :func:`train` and :func:`adapt` leave the process as found: torch's
deterministic-algorithms and cuDNN flags and the global random generators (Python, numpy, torch,
CUDA), which a run sets and reseeds every step, are put back after it, also after an error; the
environment keeps ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (repeatable cuBLAS results; it acts only
before the first cuBLAS call) and what torch sets itself (``TORCHINDUCTOR_CACHE_DIR``). Under torchrun, the process
group a run joins stays up after it (a later run reuses it): end it with ``torch.distributed.destroy_process_group()``
at the end of the script, as the CLI does after a command that finished well. (``distill`` itself
re-exports these lazily, but for ``train`` and ``export``, whose names are the stage subpackages.)
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from distill.api_bench import bench
from distill.api_teacher import bootstrap_teacher
from distill.config import TrainConfig, load_train_config
from distill.errors import DistillError
from distill.recipes import list_recipes, load_recipe, override_items, override_namer, resolve_recipe
from distill.records import RUN_CONFIG
from distill.run_paths import resumed_config
from distill.validation import checked_keywords

__all__ = ["adapt", "adapt_config", "bench", "bootstrap_teacher", "build_cache", "export", "export_timm",
           "list_recipes", "load_recipe", "qad", "report", "require_onnxruntime", "train", "train_config"]

if TYPE_CHECKING:
    from distill.export.config import ExportConfig
    from distill.export.qad_config import QADConfig, QADRecord
    from distill.records import CacheManifest, ExportReport, RunSummary
    from distill.report.write import ReportWritten
    from distill.teacher.cache.job import CacheBuildConfig

#: what to install when no ONNX Runtime is importable (both wheels provide the module `onnxruntime`)
ORT_HINT = ("no ONNX Runtime is installed: pip install 'distill-vlm[cpu]' (or 'distill-vlm[gpu]' on a CUDA "
            "machine; install one of the two, never both)")


@checked_keywords()
def build_cache(config: CacheBuildConfig | Mapping[str, Any], *, progress: bool | None = None) -> CacheManifest | None:
    """Run the teacher once over a dataset and write (or resume, or find complete) a teacher cache.

    ``distill cache build`` with its flags as :class:`~distill.teacher.cache.job.CacheBuildConfig`
    fields (a config, or a mapping of its keys). ``progress``: the progress bar on or off (None: the
    config's ``progress``, on by default). Returns the cache's manifest (None on ranks other than 0
    under torchrun).
    """
    # lazy: the cache package loads torch and open_clip
    from distill.teacher.cache.job import CacheBuildConfig, run_cache_build

    cfg = config if isinstance(config, CacheBuildConfig) else CacheBuildConfig.from_options(config)
    if (flag := _check_progress(progress)) is not None:
        cfg = dataclasses.replace(cfg, progress=flag)
    return run_cache_build(cfg)


def _check_progress(progress: Any) -> bool | None:
    if progress is not None and not isinstance(progress, bool):
        raise DistillError(f"progress: expected True, False or None, got {progress!r:.80}")
    return progress


def _with_progress(cfg: TrainConfig, progress: bool | None) -> TrainConfig:
    """``cfg`` with ``run.progress`` set to ``progress`` (None: as it is). It changes no result, so a resumed run
    takes it too."""
    if _check_progress(progress) is None or progress == cfg.run.progress:
        return cfg
    return cfg.model_copy(update={"run": cfg.run.model_copy(update={"progress": progress})})


#: ``--set`` items: a mapping (``{"optim.epochs": 5}``) or ``KEY=VALUE`` strings (``["optim.epochs=5"]``)
Overrides = Mapping[str, Any] | Sequence[str] | None


@checked_keywords()
def train_config(config: TrainConfig | str | Path, overrides: Overrides = None) -> TrainConfig:
    """A :class:`TrainConfig` from a config, a recipe file or a built-in recipe's name, with ``overrides``.

    ``overrides`` are ``--set`` items as a mapping (``{"optim.epochs": 5, "run.out": "runs/x"}``) or as
    ``KEY=VALUE`` strings, validated exactly as on the command line.
    """
    return _train_config(config, overrides, "train_config")


def _train_config(config: TrainConfig | str | Path, overrides: Overrides, what: str) -> TrainConfig:
    """:func:`train_config`; ``what``: the function called, which a config of another type names."""
    if isinstance(config, TrainConfig):
        if not overrides:
            return config
        return load_train_config(None, override_items(overrides), base=config.model_dump(mode="json"),
                                 named=override_namer(overrides))
    if not isinstance(config, (str, os.PathLike)):
        raise DistillError(f"{what}: config must be a TrainConfig, a recipe file or a recipe name, got "
                           f"{type(config).__name__}")
    return load_train_config(resolve_recipe(config), override_items(overrides), named=override_namer(overrides))


@checked_keywords(paths=("resume",))
def train(config: TrainConfig | str | Path | None = None, overrides: Overrides = None, *,
          resume: str | Path | None = None, progress: bool | None = None, skip_bad: bool = False,
          ) -> RunSummary | None:
    """Train a student: ``distill train -c CONFIG --set KEY=VALUE ...`` (or ``--resume RUN_DIR``).

    It prints what the command prints, on stdout: the banner, the ``input:`` line and a line per epoch
    (``contextlib.redirect_stdout`` silences them), and draws progress bars on stderr unless ``run.progress``
    is false (``progress=False``).

    Args:
        config: a :class:`TrainConfig`, a recipe file, or a built-in recipe's name (``"kd"``).
        overrides: ``--set`` items as a mapping (``{"optim.epochs": 5}``) or ``KEY=VALUE`` strings.
        resume: continue the run in this folder from its last checkpoint, exactly as configured
            (no ``config`` or ``overrides`` with it).
        progress: the progress bars on or off (``run.progress``; None: as configured, on by default). It
            changes no result, so it is allowed with ``resume`` (as ``--no-progress`` is with ``--resume``).
        skip_bad: leave undecodable images out, listed once (``--skip-bad``: ``data.skip_bad: true``; not with
            ``resume``).

    Returns:
        The run's :class:`~distill.records.RunSummary` (also ``RUN/summary.json``); None on ranks
        other than 0 under torchrun.
    """
    from distill.train import train as run_training  # lazy: torch, timm; `import distill.api` stays cheap
    from distill.utils.runtime import preserved_global_state  # lazy: torch

    if resume is not None:
        given = [name for name, value in (("config", config), ("overrides", overrides),
                                          ("skip_bad", _skip_bad_items(skip_bad))) if _passed(value)]
        cfg, again = _with_progress(_resumed(resume, given, "train"), progress), True
    elif config is None:
        raise DistillError("train: pass a config (a TrainConfig, a recipe file or a built-in recipe's name) or resume")
    else:
        cfg, again = _with_progress(_train_config(config, _with_skip_bad(overrides, skip_bad), "train"), progress), False
    with preserved_global_state():
        return run_training(cfg, resume=again)


def _skip_bad_items(skip_bad: Any) -> dict[str, bool]:
    """``skip_bad=True`` (``--skip-bad``) as the override it stands for; ``{}`` for False."""
    if not isinstance(skip_bad, bool):
        raise DistillError(f"skip_bad: expected True or False, got {skip_bad!r:.80}")
    return {"data.skip_bad": True} if skip_bad else {}


def _with_skip_bad(overrides: Overrides, skip_bad: Any) -> Overrides:
    """``overrides`` plus ``data.skip_bad: true`` when ``skip_bad`` (a mapping stays a mapping)."""
    extra = _skip_bad_items(skip_bad)
    if not extra:
        return overrides
    if overrides is None or isinstance(overrides, Mapping):
        return {**(overrides or {}), **extra}
    return [*override_items(overrides), "data.skip_bad=true"]


def _passed(value: Any) -> bool:
    """Whether an argument was given (None and an empty collection are its defaults)."""
    return value is not None and not (isinstance(value, (tuple, list, dict)) and not value)


def _resumed(run_dir: str | Path, given: Sequence[str], what: str) -> TrainConfig:
    """The config of the run in ``run_dir``; ``given``: the arguments passed with ``resume`` (refused, by name)."""
    if given:
        raise DistillError(f"{what}: resume continues the run exactly as configured (its {RUN_CONFIG}); "
                           f"{', '.join(given)} not allowed with it")
    return resumed_config(run_dir)  # its relative paths as they were where it was started (distill/run_paths.py)


@checked_keywords(paths=("source_checkpoint", "data", "out"), path_lists=("cache",))
def adapt_config(source_checkpoint: str | Path, target: str | Sequence[str], data: str | Path, *,
                 cache: str | Path | Sequence[str | Path] = (), strategy: str = "sfda", out: str | Path | None = None,
                 source_domains: Sequence[str] | None = None, overrides: Overrides = None,
                 ) -> TrainConfig:
    """The :class:`TrainConfig` of a source-free adaptation (what ``distill adapt`` trains).

    Args:
        source_checkpoint: ``RUN/checkpoints/best`` of a run on the source domains.
        target: target domain(s): a name, ``"a,b"`` or a list.
        data: dataset root holding them.
        cache: teacher cache folder(s), one per teacher (sfda and teacher_pl need one).
        strategy: ``sfda``, ``shot`` or ``teacher_pl``.
        out: run folder (default ``runs/adapt-STRATEGY-TARGETS``).
        source_domains: the checkpoint's source domains, when its ``student.json`` lacks them.
        overrides: ``--set`` items, as a mapping or as ``KEY=VALUE`` strings.
    """
    from distill.train.adapt import adapt_train_config  # lazy: the strategies and the adaptation recipe load torch

    return adapt_train_config(source_checkpoint, target, data, cache=cache, strategy=strategy, out=out,
                              source_domains=source_domains, items=override_items(overrides),
                              named=override_namer(overrides))


@checked_keywords(paths=("source_checkpoint", "data", "out", "resume"), path_lists=("cache",))
def adapt(source_checkpoint: str | Path | None = None, target: str | Sequence[str] | None = None,
          data: str | Path | None = None, *, cache: str | Path | Sequence[str | Path] = (),
          strategy: str | None = None, out: str | Path | None = None, source_domains: Sequence[str] | None = None,
          overrides: Overrides = None, resume: str | Path | None = None, progress: bool | None = None,
          skip_bad: bool = False) -> RunSummary | None:
    """Adapt a source-trained student to unlabeled target domains (``distill adapt``; see :func:`adapt_config`).

    ``strategy`` defaults to ``sfda``. ``resume=RUN_DIR`` continues an interrupted adaptation, exactly as
    configured (its strategy too): no other argument with it but ``progress``, which turns the progress bars
    on or off (``run.progress``) as in :func:`train`, whose lines on stdout it prints too. ``skip_bad``: leave
    undecodable images out (``--skip-bad``: ``data.skip_bad: true``; not with ``resume``). Returns the run's
    :class:`~distill.records.RunSummary` (None on ranks other than 0).
    """
    from distill.train import train as run_training  # lazy: torch, timm
    from distill.utils.runtime import preserved_global_state  # lazy: torch

    if resume is not None:
        args = {"source_checkpoint": source_checkpoint, "target": target, "data": data, "cache": cache,
                "strategy": strategy, "out": out, "source_domains": source_domains, "overrides": overrides,
                "skip_bad": _skip_bad_items(skip_bad)}
        given = [name for name, value in args.items() if _passed(value)]
        cfg, again = _resumed(resume, given, "adapt"), True
    elif source_checkpoint is None or target is None or data is None:
        raise DistillError("adapt: pass source_checkpoint, target and data (or resume=RUN_DIR)")
    else:
        cfg, again = adapt_config(source_checkpoint, target, data, cache=cache, strategy=strategy or "sfda", out=out,
                                  source_domains=source_domains, overrides=_with_skip_bad(overrides, skip_bad)), False
    with preserved_global_state():
        return run_training(_with_progress(cfg, progress), resume=again, command="adapt")


@checked_keywords()
def require_onnxruntime() -> None:
    """One line saying what to install when neither ``onnxruntime`` nor ``onnxruntime-gpu`` is."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise DistillError(ORT_HINT)


@checked_keywords("distill.export.config:ExportConfig",
                  {"format": "distill export --format timm is export_timm(checkpoint, out) (timm's own checkpoint "
                             "layout; export() writes ONNX)"},
                  paths=("checkpoint", "out", "data_root", "classes", "teacher_pretrained"), path_lists=("caches",))
def export(checkpoint: str | Path, out: str | Path, config: ExportConfig | Mapping[str, Any] | None = None,
           **options: Any) -> ExportReport:
    """Export a checkpoint to ONNX fp32/fp16/int8 (+ TensorRT) with parity and accuracy checks (``distill export``).

    Args:
        checkpoint: a checkpoint folder (``RUN/checkpoints/best``).
        out: output folder (``export.json``, the ``.onnx`` files, ``build_engine.sh``).
        config: an :class:`~distill.export.ExportConfig`, or a mapping of its keys; or give its keys as
            ``options`` (``precisions="fp32,int8"``, ``data_root=...``, ``eval_count=0`` for every test image),
            which update ``config`` when both are given.

    Returns:
        The :class:`~distill.records.ExportReport` written to ``out/export.json``.
    """
    require_onnxruntime()
    from distill.export import ExportConfig, export_checkpoint  # lazy: torch, onnx, onnxruntime

    if isinstance(config, ExportConfig):
        cfg = config.with_updates(**options)
    elif config is None or isinstance(config, Mapping):
        cfg = ExportConfig.from_options({**(config or {}), **options})
    else:
        raise DistillError(f"export: config must be an ExportConfig or a mapping of its keys, got {type(config).__name__}")
    return export_checkpoint(checkpoint, out, cfg)


@checked_keywords(paths=("checkpoint", "out"))
def export_timm(checkpoint: str | Path, out: str | Path) -> Path:
    """A checkpoint as timm's own checkpoint (``distill export --format timm``): ``out/model.safetensors`` and
    ``out/config.json`` for ``timm.create_model("local-dir:OUT")``. Returns the weights file."""
    from distill.export.timm_format import export_timm as write_timm  # lazy: torch, timm

    return write_timm(checkpoint, out)


@checked_keywords("distill.export.qad_config:QADConfig",
                  paths=("checkpoint", "out_dir", "cache", "data_root", "export_dir"))
def qad(config: QADConfig | Mapping[str, Any] | None = None, **options: Any) -> QADRecord:
    """Quantization-aware distillation of a trained student into an int8 QDQ ONNX (``distill qad``).

    Args:
        config: a :class:`~distill.export.qad_config.QADConfig` or a mapping of its keys; or its keys as ``options``
            (``checkpoint=..., out_dir=..., epochs=2``), which update ``config`` when both are given. ``flavour``
            unset (the default, as ``distill qad`` without ``--flavour``): ``export_dir``'s int8 flavour (with both,
            the one its recommendation ships as int8), else ort-cpu; the record's ``flavour`` is the one taken.

    Returns:
        The :class:`~distill.export.qad_config.QADRecord` written to ``out_dir/qad.json`` (PTQ vs QAD
        top-1 disagreement with fp32 per domain).
    """
    require_onnxruntime()
    from distill.export.qad import qad as run_qad  # lazy: torch, onnx, onnxruntime
    from distill.export.qad_config import QADConfig

    if config is not None and not isinstance(config, (QADConfig, Mapping)):
        raise DistillError(f"qad: config must be a QADConfig or a mapping of its keys, got {type(config).__name__}")
    given = config.model_dump() if isinstance(config, QADConfig) else dict(config or {})
    cfg = QADConfig.from_options({**given, **options})
    return run_qad(cfg)


@checked_keywords(paths=("out",), path_lists=("paths",))
def report(paths: str | Path | Sequence[str | Path], out: str | Path = "report.html",
           title: str = "distill report") -> ReportWritten:
    """Write the HTML report and its Markdown summary (``distill report``).

    Args:
        paths: run, export and qad folders, bench ``.jsonl`` files, or folders holding them (searched recursively).
        out: the HTML file; the Markdown goes beside it with ``.md``. An existing folder, or a string ending in a
            separator (``"site/"``, made if missing): ``out/report.html`` and ``out/report.md``.

    Returns:
        A :class:`~distill.report.write.ReportWritten`: both files' paths, what went in, and its warnings, one line
        each (an input left out, such as a half-written record, or a bench record that joins no model), which the
        command prints as ``warning:`` lines.
    """
    from distill.report.write import write_report  # lazy: the report's imports (numpy, scipy)

    return write_report([paths] if isinstance(paths, (str, os.PathLike)) else list(paths), out, title)
