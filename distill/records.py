"""Typed artifacts that stages hand each other, and their file names.

Every file one stage writes and another reads has one record here: a bootstrapped teacher's
``teacher.json`` (teacher -> cache, demo), the cache manifest and its adversarial views'
(teacher -> train), the run summary and robustness report (train -> export, report, demo), the
export report (export -> bench, report, demo) and the bench record (bench -> report). Writers build a
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

import json
from pathlib import Path
from typing import Any, ClassVar, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError, model_serializer

from distill.errors import DistillError
from distill.utils.io import atomic_write_json, read_json

# ------------------------------------------------------------------ artifact file names
# A run folder (distill train / distill adapt)
RUN_CONFIG = "config.yaml"             # the resolved TrainConfig the run was started with
RUN_SUMMARY = "summary.json"           # RunSummary, written when the run ends
RUN_METRICS = "metrics.csv"            # one row per epoch (accuracies as fractions)
ROBUST_REPORT = "robust.json"          # RobustReport of the selected checkpoint (config `robust`)
RUN_TENSORBOARD = "tb"                 # RUN/tb: TensorBoard event files of a training run
CHECKPOINTS_DIR = "checkpoints"        # checkpoints/<step>/, checkpoints/best/, checkpoints/last.json
CHECKPOINT_POINTER = "last.json"       # CheckpointPointer: which checkpoints/<dir> is the newest complete one
TRAIN_STATE = "train_state.json"       # optimizer/scheduler/RNG step state inside a checkpoint
BEST_CHECKPOINT = "best"               # checkpoints/best: the selected student
# A student checkpoint folder
STUDENT_SPEC = "student.json"          # StudentSpec
STUDENT_WEIGHTS = "model.safetensors"
# A teacher cache folder (each companion folder has its own CACHE_BUILD_PLAN and CACHE_MANIFEST)
CACHE_MANIFEST = "manifest.json"       # CacheManifest (AdversarialManifest in CACHE/adversarial); written last
CACHE_BUILD_PLAN = "build.json"        # the plan, written when a build starts (resume checks it)
TEXT_EMBEDDINGS = "text_embeddings.safetensors"
CACHE_ADVERSARIAL_DIR = "adversarial"  # adversarial views crafted against the teacher
CACHE_PIXELS_PREFIX = "pixels-"        # pixels-HxW-INTERP: a pixel store at the student's size
# A bootstrapped stand-in teacher folder
TEACHER_MANIFEST = "teacher.json"      # TeacherManifest; written last
TEACHER_CHECKPOINT = "open_clip_model.safetensors"
TEACHER_BOOTSTRAP_STATE = "bootstrap-state.safetensors"  # while it trains
# A materialized built-in data suite (the class map is also what any dataset root may hold)
DATA_CLASS_MAP = "classnames.yaml"
SUITE_INFO = "suite.json"              # SuiteInfo: provenance; written last: its presence means complete
SUITE_INDEX = "index.csv"
# An export folder
EXPORT_REPORT = "export.json"          # ExportReport
# Benchmarks, report and demo
BENCH_RECORDS = "bench.jsonl"          # one BenchRecord per line
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
DEMO_RESULTS = "results.md"            # distill demo: its printed accuracy tables, as written to OUT/


def percent(fraction: float) -> float:
    """A fraction as the percent that is printed, rounded to 4 decimals of a percent.

    Records keep fractions (rows 6 decimals, what 4 of a percent were); rounding here first makes
    every printed digit the one the percent the run measured prints (23/80 -> 28.75 -> ``28.8``;
    ``100 * 0.2875`` alone is 28.749999... and prints 28.7).
    """
    return round(100.0 * fraction, 4)


def pct(fraction: float | None, digits: int = 1) -> str:
    """A fraction printed as a percent with ``digits`` decimals (:func:`percent`); ``n/a`` for None/NaN."""
    if fraction is None or fraction != fraction:
        return "n/a"
    return f"{percent(fraction):.{digits}f}"


# ------------------------------------------------------------------ base
class Record(BaseModel):
    """A JSON artifact with a file name. Subclasses set ``FILE``."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())
    FILE: ClassVar[str] = ""

    @classmethod
    def path_in(cls, folder: str | Path) -> Path:
        return Path(folder) / cls.FILE

    @classmethod
    def exists_in(cls, folder: str | Path) -> bool:
        return cls.path_in(folder).is_file()

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None):
        """Validate ``data``; a mismatch is one line: ``<source>: <key.path>: <problem>``."""
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
            raise DistillError(f"{source or cls.FILE}: {where}: {err['msg']}{more}") from None

    @classmethod
    def read(cls, path: str | Path):
        """Read from a file, or from ``FILE`` inside a folder."""
        path = Path(path)
        file = path if path.suffix == Path(cls.FILE).suffix and not path.is_dir() else cls.path_in(path)
        return cls.from_dict(read_json(file), file)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def write(self, folder: str | Path) -> Path:
        """Atomically write ``folder/FILE`` and return its path."""
        path = self.path_in(folder)
        atomic_write_json(path, self.to_dict())
        return path


class _Open(BaseModel):
    """A nested block that keeps keys this version does not name (forward compatible)."""

    model_config = ConfigDict(extra="allow", frozen=True, protected_namespaces=())


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


Accuracy = dict[str, float]  # domain -> fraction in [0, 1]


# ------------------------------------------------------------------ shared blocks
class TeacherIdentity(_Open):
    """What a cached teacher output means: open_clip arch + weights (+ library versions)."""

    arch: str
    pretrained: str | None = None
    checkpoint_sha256: str | None = None
    open_clip_version: str | None = None
    torch_version: str | None = None
    logit_scale: float | None = None
    precision: str | None = None


class SkippedImage(_Open):
    """An image that could not be decoded (``--skip-bad``)."""

    path: str
    sample_index: int | None = None  # before reason: the key order a cache manifest has always had (cache helper)
    reason: str


# ------------------------------------------------------------------ run folder internals
class CheckpointPointer(Record):
    """``RUN/checkpoints/last.json``: which ``checkpoints/<dir>`` is the newest complete one (rewritten atomically)."""

    FILE: ClassVar[str] = CHECKPOINT_POINTER
    dir: str
    step: int


# ------------------------------------------------------------------ built-in data suite
class SuiteDomain(_Open):
    """One domain of a materialized built-in suite (provenance details stay as extra keys)."""

    source: str
    count: int


class SuiteInfo(Record):
    """``ROOT/suite.json`` of a materialized built-in data suite: provenance; written last (its presence
    with matching ``params`` and image counts means complete)."""

    FILE: ClassVar[str] = SUITE_INFO
    suite: str
    params: dict[str, Any]            # what the materialization was made with (generator version, quick, seed)
    image: dict[str, Any]
    classes: dict[str, str]           # folder -> class name
    domains: dict[str, SuiteDomain]
    mnist_split: str
    sources: dict[str, Any]
    versions: dict[str, str]
    content_sha256: str
    index: str


# ------------------------------------------------------------------ bootstrapped teacher
class TeacherTrainingData(_Closed):
    """The data a bootstrapped teacher was trained on (its train split only)."""

    root: str
    fingerprint: str
    train_images: int
    test_fraction: float
    split_seed: int
    class_map: str | None = None


class TeacherManifest(Record):
    """``teacher.json`` beside a bootstrapped stand-in teacher's checkpoint (:mod:`distill.teacher.bootstrap`).

    Written last: its presence (with a matching ``checkpoint_sha256`` and ``run_key``) marks a
    finished bootstrap. Readers take the arch and the zero-shot ``templates`` from it.
    ``open_clip_config`` is the file's ``model_config`` (a name pydantic keeps for itself).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, protected_namespaces=())
    FILE: ClassVar[str] = TEACHER_MANIFEST
    format: str
    arch: str
    checkpoint: str                   # file name inside the folder (TEACHER_CHECKPOINT)
    checkpoint_sha256: str
    templates: list[str]
    classes: list[str]
    domains: list[str]
    dataset: TeacherTrainingData
    training: dict[str, Any]          # the recipe's hyper-parameters (free-form)
    open_clip_config: dict[str, Any] = Field(alias="model_config")
    loss_history: list[float]
    zero_shot: dict[str, float | None]  # "train" / "val" -> fraction (None: no images)
    train_seconds: float
    versions: dict[str, str]
    run_key: str
    warning: str | None = None        # a near-chance teacher's warning (absent when fine)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


# ------------------------------------------------------------------ teacher cache
class CachePreprocess(_Closed):
    size: list[int]
    mean: list[float]
    std: list[float]
    interpolation: str
    resize_mode: str
    crop: str
    exif_transpose: bool = False


class CacheDataset(_Closed):
    fingerprint: str
    domains: list[str]
    images: int
    test_fraction: float
    split_seed: int
    val_fraction: float = 0.0
    files_sha256: str | None = None
    content_fingerprint: str | None = None
    root: str | None = None       # set when the build completes
    class_map: str | None = None


class CacheViews(_Closed):
    count: int
    seed: int
    augment: dict[str, Any]


class CacheShard(_Closed):
    file: str
    samples: list[int]             # [first, end) sample indices
    rows: int
    bytes: int
    sha256: str | None = None


class CacheManifest(Record):
    """``manifest.json`` of a teacher cache: identity (what the outputs mean) + what was written."""

    FILE: ClassVar[str] = CACHE_MANIFEST
    format: str
    format_version: int
    teacher: TeacherIdentity
    templates: list[str]
    classes: list[str]
    preprocess: CachePreprocess
    dataset: CacheDataset
    views: CacheViews
    dtype: Literal["float16", "float32"]
    embed_dim: int
    num_classes: int
    batch_size: int
    shard_size: int
    num_shards: int
    rows: int
    shapes: dict[str, list[int]]
    row_dtypes: dict[str, str]
    teacher_flops_per_image: int | None = None
    skipped: list[SkippedImage] = Field(default_factory=list)
    shards: list[CacheShard]
    text_embeddings_sha256: str | None = None
    created: str
    distill_version: str

    def to_dict(self) -> dict[str, Any]:  # added by cache helper
        """The manifest as built: keys the build did not set (``dataset.content_fingerprint`` of a
        ``--fingerprint paths`` build) stay absent, so a manifest round-trips byte for byte."""
        return self.model_dump(mode="json", exclude_unset=True)


class AdversarialShard(_Closed):
    file: str
    rows: int
    sha256: str


class AdversarialManifest(Record):
    """``CACHE/adversarial/manifest.json`` (:mod:`distill.teacher.cache.adversarial`): the build plan
    (everything that determines the views' bytes; ``build.json`` holds the same keys) + the shards
    written. Written last: its presence means complete."""

    FILE: ClassVar[str] = CACHE_MANIFEST
    format: str
    format_version: int
    teacher: TeacherIdentity          # without the library versions (not part of what an output means)
    preprocess: CachePreprocess
    dataset_fingerprint: str
    domains: list[str]
    split: str | None                 # None: every split
    images: int
    views: int
    epsilon: float
    epsilon_levels: int               # floor(epsilon * 255): the budget in 8-bit levels
    step_size: float
    steps: int
    seed: int
    objective: str
    dtype: Literal["float16", "float32"]
    batch_size: int
    shard_size: int
    num_shards: int
    rows: int
    shards: list[AdversarialShard]
    skipped: list[SkippedImage] = Field(default_factory=list)
    shapes: dict[str, list[int]]
    created: str

    def to_dict(self) -> dict[str, Any]:
        """As built (keys the build did not set stay absent), like :meth:`CacheManifest.to_dict`."""
        return self.model_dump(mode="json", exclude_unset=True)


# ------------------------------------------------------------------ robustness
class RobustAccuracy(_Closed):
    """One domain of a robust evaluation (fractions): clean, under PGD per epsilon (``"2/255"``), under
    each corruption, and the corruptions' mean (None without corruptions)."""

    n: int
    clean: float
    pgd: dict[str, float]
    corruptions: dict[str, float]
    corruption_mean: float | None


class RobustReport(Record):
    """``robust.json`` of a run (its selected checkpoint), ``summary.json``'s ``robust`` and ``distill eval --json``.

    ``data``, ``split`` and ``skipped_images`` are set by ``distill eval`` only (a training run's data
    and split are in its config); a report without them writes none of the three. ``settings`` is
    :meth:`distill.config.RobustSettings.to_dict` (epsilons as written, ``"2/255"``).
    """

    FILE: ClassVar[str] = ROBUST_REPORT
    checkpoint: str
    data: str | None = None
    split: str | None = None
    skipped_images: list[SkippedImage] | None = None
    settings: dict[str, Any]
    domains: dict[str, RobustAccuracy] = Field(default_factory=dict)

    @model_serializer(mode="wrap")
    def _without_eval_only_keys(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = handler(self)
        if self.data is None:  # a training run's report: checkpoint, settings, domains (as ever)
            for key in ("data", "split", "skipped_images"):
                out.pop(key, None)
        else:  # distill eval's: the skipped images as {path, reason}, [] when none
            out["skipped_images"] = [k.model_dump(mode="json", exclude_none=True) for k in self.skipped_images or []]
        return out


# ------------------------------------------------------------------ run summary
class RunSummary(Record):
    """``summary.json``: what a training/adaptation run produced and how it was selected.

    Accuracies are fractions. ``source_*``/``target_*`` are means over the domains listed.
    """

    FILE: ClassVar[str] = RUN_SUMMARY
    strategy: str
    strategy_options: dict[str, Any] = Field(default_factory=dict)
    student: str
    teacher: TeacherIdentity | None = None
    source_domains: list[str]
    target_domains: list[str]
    trained_on: list[str]
    best_epoch: int
    selected_on: str
    val_acc: Accuracy = Field(default_factory=dict)
    source_val_acc: float | None = None
    test_acc: Accuracy
    source_acc: float | None = None
    target_acc: float | None = None
    teacher_zero_shot: Accuracy | None = None
    params: int
    flops: int | None = None
    teacher_flops: int | None = None
    checkpoint: str
    train_seconds_this_session: float
    skipped_images: list[SkippedImage] = Field(default_factory=list)
    robust: RobustReport | None = None


# ------------------------------------------------------------------ export report
class ExportedModel(_Open):
    """One file of an export: where it is, how it was checked, how accurate it is.

    Precision-specific details (``drops_pts``, the int8 fallback, notes) stay as extra keys.
    """

    file: str
    bytes: int
    sha256: str
    precision: str
    runtime: str
    parity: dict[str, Any] | None = None
    accuracy: Accuracy | None = None
    mean_accuracy: float | None = None


class ExportReport(Record):
    """``export.json``: the files an export wrote, their parity/accuracy, and provenance.

    A failed export writes what it had (``status="failed"``), so most blocks are optional.
    """

    FILE: ClassVar[str] = EXPORT_REPORT
    format: str
    created: str
    status: Literal["running", "ok", "failed"]
    checkpoint: str
    student: str
    class_names: list[str]
    input: dict[str, Any]
    preprocess: dict[str, Any]
    provenance: dict[str, Any] = Field(default_factory=dict)
    run_summary: RunSummary | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str | None] = Field(default_factory=dict)
    models: list[ExportedModel] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    data: dict[str, Any] | None = None
    exporter: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None
    tensorrt: dict[str, Any] | None = None
    files: list[str] = Field(default_factory=list)
    elapsed_s: float | None = None


# ------------------------------------------------------------------ bench record
class LatencyStats(_Closed):
    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p99: float
    max: float


class BenchRecord(Record):
    """One line of ``bench.jsonl``: one model x runtime x batch measured on one device.

    Written by :mod:`distill.bench.edge_runner` (standalone: it cannot import distill, so it
    writes plain JSON that this record validates) and by the torch runner.
    """

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True, protected_namespaces=())
    FILE: ClassVar[str] = BENCH_RECORDS
    schema_: str = Field(alias="schema")
    model: str
    model_name: str
    model_sha256: str | None = None
    model_meta: dict[str, Any] = Field(default_factory=dict)
    runtime: str
    batch: int
    input_shape: list[int]
    threads: int | None = None
    warmup: int
    iters: int
    latency_ms: LatencyStats
    throughput_ips: float
    memory: dict[str, Any] = Field(default_factory=dict)
    device: dict[str, Any] = Field(default_factory=dict)
    timestamp: str

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def read_lines(cls, path: str | Path) -> Iterator[BenchRecord]:
        """Every record of a ``bench.jsonl`` (blank lines skipped); errors name file and line."""
        path = Path(path)
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as e:
                raise DistillError(f"{path}:{n}: invalid JSON: {e.msg}") from None
            yield cls.from_dict(data, f"{path}:{n}")

    def append_to(self, path: str | Path) -> None:
        with open(path, "a") as f:
            f.write(json.dumps(self.to_dict()) + "\n")
