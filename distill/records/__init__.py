"""Typed artifacts that stages hand each other, and their file names.

Import from here: ``from distill.records import RunSummary, RUN_SUMMARY``. Modules: :mod:`.names`
(every artifact file name), :mod:`.base` (the Record base, units), :mod:`.teacher` (suite, teacher,
cache manifests), :mod:`.run` (checkpoint pointer, robustness, run summary), :mod:`.ship` (export
report, bench record), :mod:`.qad` (``distill qad``'s PTQ vs QAD record).

Every file one stage writes and another reads has one record here: a bootstrapped teacher's
``teacher.json`` (teacher -> cache, demo), the cache manifest and its adversarial views'
(teacher -> train) and their plans (``build.json``: a build -> its resumed self), the run
summary and robustness report (train -> export, report, demo), the
export report (export -> bench, report, demo), the QAD record (qad -> report) and the bench record (bench -> report). Writers build a
record and call :meth:`Record.write`; readers call :meth:`Record.read` and use attributes,
never ``json.load(...)["key"]``. timm's ``PretrainedCfg`` and open_clip's ``PreprocessCfg`` do
the same for per-model facts; :class:`distill.student.model.StudentSpec` for checkpoints.

Units: every accuracy in a record is a **fraction** in [0, 1]. It becomes a percent only
where it is printed (:func:`pct`, :func:`percent`).

Records are pydantic models: a file that does not match is one line naming the file and
the key (:meth:`Record.from_dict`). Top-level keys are strict; a few nested blocks that are
free-form by nature (options, environment details) stay ``dict``.
"""
from __future__ import annotations

from distill.records.base import Accuracy, Record, SkippedImage, TeacherIdentity, pct, percent, same_checkpoint
from distill.records.names import (
    BENCH_RECORDS,
    BEST_CHECKPOINT,
    CACHE_ADVERSARIAL_DIR,
    CACHE_BUILD_PLAN,
    CACHE_MANIFEST,
    CACHE_PIXELS_PREFIX,
    CHECKPOINT_POINTER,
    CHECKPOINTS_DIR,
    DATA_CLASS_MAP,
    DEMO_RESULTS,
    EXPORT_CHECKPOINT,
    EXPORT_MOVE_MARKER,
    EXPORT_REPORT,
    QAD_ENGINE,
    QAD_REPORT,
    REPORT_HTML,
    REPORT_MD,
    ROBUST_REPORT,
    RUN_CONFIG,
    RUN_DATA,
    RUN_FINISHED,
    RUN_LAUNCH,
    RUN_METRICS,
    RUN_SUMMARY,
    RUN_TENSORBOARD,
    STUDENT_SPEC,
    STUDENT_WEIGHTS,
    SUITE_INDEX,
    SUITE_INFO,
    TEACHER_BOOTSTRAP_STATE,
    TEACHER_CHECKPOINT,
    TEACHER_MANIFEST,
    TEXT_EMBEDDINGS,
    TIMM_CONFIG,
    TIMM_WEIGHTS,
    TRAIN_STATE,
)
from distill.records.qad import Disagreement, HoldoutPairs, QADAccuracy, QADEngine, QADRecord, QADSettings, QADTensorRT
from distill.records.run import (
    CheckpointPointer,
    CombinedTeacher,
    PoolFolder,
    RobustAccuracy,
    RobustReport,
    RunData,
    RunLaunch,
    RunSummary,
    TeacherCombination,
    UnlabeledPool,
)
from distill.records.ship import BenchRecord, ExportedModel, ExportReport, LatencyStats, ShipRecommendation
from distill.records.teacher import (
    AdversarialManifest,
    AdversarialPlan,
    AdversarialShard,
    CacheBuildPlan,
    CacheDataset,
    CacheFolder,
    CacheManifest,
    CachePreprocess,
    CacheRowLayout,
    CacheShard,
    CacheViews,
    SuiteDomain,
    SuiteInfo,
    TeacherManifest,
    TeacherPool,
    TeacherTrainingData,
)

__all__ = [
    "Accuracy", "AdversarialManifest", "AdversarialPlan", "AdversarialShard", "BENCH_RECORDS", "BEST_CHECKPOINT", "BenchRecord",
    "CACHE_ADVERSARIAL_DIR", "CACHE_BUILD_PLAN", "CACHE_MANIFEST", "CACHE_PIXELS_PREFIX", "CHECKPOINTS_DIR",
    "CHECKPOINT_POINTER", "CacheBuildPlan", "CacheDataset", "CacheManifest", "CachePreprocess", "CacheRowLayout",
    "CacheShard", "CacheViews", "CacheFolder", "CheckpointPointer", "CombinedTeacher", "DATA_CLASS_MAP", "DEMO_RESULTS",
    "Disagreement", "EXPORT_CHECKPOINT", "EXPORT_MOVE_MARKER", "EXPORT_REPORT", "ExportReport", "ExportedModel",
    "LatencyStats", "PoolFolder",
    "HoldoutPairs", "QADAccuracy", "QADEngine", "QADRecord", "QADSettings", "QADTensorRT", "QAD_ENGINE", "QAD_REPORT",
    "REPORT_HTML", "REPORT_MD", "ROBUST_REPORT",
    "RUN_CONFIG", "RUN_DATA", "RUN_FINISHED", "RUN_LAUNCH", "RUN_METRICS", "RUN_SUMMARY", "RunData", "RunLaunch",
    "RUN_TENSORBOARD", "Record", "RobustAccuracy", "RobustReport", "RunSummary", "STUDENT_SPEC",
    "STUDENT_WEIGHTS", "SUITE_INDEX", "SUITE_INFO", "ShipRecommendation", "SkippedImage", "SuiteDomain", "SuiteInfo",
    "TEACHER_BOOTSTRAP_STATE", "TEACHER_CHECKPOINT", "TEACHER_MANIFEST", "TEXT_EMBEDDINGS", "TIMM_CONFIG", "TIMM_WEIGHTS", "TRAIN_STATE",
    "TeacherCombination", "TeacherIdentity", "TeacherManifest", "TeacherPool", "TeacherTrainingData", "UnlabeledPool", "pct", "percent",
    "same_checkpoint",
]
