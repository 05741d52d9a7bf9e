"""Teacher-side records: a built-in suite's ``suite.json``, a bootstrapped teacher's ``teacher.json``,
the cache's build plan and manifest, and its adversarial views' plan and manifest.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from distill.records.base import Record, SkippedImage, TeacherIdentity, _Closed, _Open
from distill.records.names import CACHE_BUILD_PLAN, CACHE_MANIFEST, SUITE_INFO, TEACHER_MANIFEST


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
class TeacherPool(_Closed):
    """The pretraining pool a stand-in teacher was trained on: the ``pretrain`` split of the data
    (:func:`distill.data.folder.split_of`), which no student ever sees. Which images are in it
    follows from ``split_seed`` and ``fraction`` alone (carved from the top of the path hash)."""

    fraction: float                   # pretrain_fraction: share of each domain
    split_seed: int
    test_fraction: float              # the split rule it was carved with (test and val do not move it)
    val_fraction: float
    images: int                       # pool images, the teacher's own validation hold-out included


class TeacherTrainingData(_Closed):
    """The data a bootstrapped teacher was trained on: its pretraining pool (``pretrain``; teachers
    from before the pool trained on the train split and record no ``pretrain``)."""

    root: str
    fingerprint: str
    train_images: int
    test_fraction: float
    split_seed: int
    class_map: str | None = None
    pretrain: TeacherPool | None = None


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


class CacheFolder(_Closed):
    """One unlabeled folder outside the root that a cache holds rows of (``cache build --unlabeled``)."""

    name: str                 # its domain name in the cache and in a run
    path: str                 # the resolved folder it was built from
    first_index: int          # its images are samples first_index.. (sorted by relative path)
    images: int
    files_sha256: str         # sorted relative paths + sizes: its identity
    content_sha256: str | None = None  # with --fingerprint content: the images' bytes too


class CacheDataset(_Closed):
    fingerprint: str
    domains: list[str]
    images: int
    test_fraction: float
    split_seed: int
    val_fraction: float = 0.0
    pretrain_fraction: float = 0.0  # the teacher's pool, never rows of the cache
    files_sha256: str | None = None
    content_fingerprint: str | None = None
    root: str | None = None       # set when the build completes
    class_map: str | None = None
    unlabeled_folders: list[CacheFolder] | None = None  # folders outside the root, cached after its domains

    @property
    def cached_images(self) -> int:
        """Images with rows: ``images`` (the root's cached domains) plus the unlabeled folders'."""
        return self.images + sum(f.images for f in self.unlabeled_folders or [])


class CacheViews(_Closed):
    """How a cache's views were drawn. ``policy`` (:class:`~distill.data.view_policy.ViewPolicy`'s
    ``to_dict``) and ``params_layout`` (the ``view_params`` columns) are set only for a policy beyond
    crops, so a crop-only manifest round-trips as before."""

    count: int
    seed: int
    augment: dict[str, Any]
    policy: dict[str, Any] | None = None
    params_layout: list[str] | None = None


LogitMode = Literal["full", "topk", "none"]  # what a cache row stores of the logits


class CacheRowLayout(_Closed):
    """What a cache row stores of the teacher's outputs (:mod:`distill.teacher.cache.compact`); a manifest
    without one (every cache before compact rows, and a default build) stores full logits and embeddings."""

    logits: LogitMode = "full"
    topk: int | None = None           # K of ``topk``: the K largest logits + classes + the rest's log-mean-exp
    embeddings: bool = True           # image_emb stored
    logit_scale: float | None = None  # the teacher's exact scale (``none`` recomputes scale * emb @ text.T)


class CacheShard(_Closed):
    file: str
    samples: list[int]             # [first, end) sample indices
    rows: int
    bytes: int
    sha256: str | None = None


class CacheBuildPlan(Record):
    """``build.json`` of a teacher cache: everything that determines its bytes, written before the first
    shard and compared on resume (:func:`~distill.teacher.cache.build.make_plan`). The manifest repeats
    these keys (in its own order) with what was written."""

    FILE: ClassVar[str] = CACHE_BUILD_PLAN
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
    layout: CacheRowLayout | None = None  # compact rows (format version 3); absent: full rows

    def to_dict(self) -> dict[str, Any]:
        """The plan as made (keys it did not set stay absent), so a plan file round-trips byte for byte."""
        return self.model_dump(mode="json", exclude_unset=True)


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
    # where the teacher checkpoint was read from (the identity holds only its name and sha256): what a
    # text-head student is re-targeted with by default (`distill export --classes`)
    teacher_path: str | None = None
    skipped: list[SkippedImage] = Field(default_factory=list)
    shards: list[CacheShard]
    text_embeddings_sha256: str | None = None
    created: str
    distill_version: str
    layout: CacheRowLayout | None = None  # compact rows (format version 3); absent: full rows

    def to_dict(self) -> dict[str, Any]:  # added by cache helper
        """The manifest as built: keys the build did not set (``dataset.content_fingerprint`` of a
        ``--fingerprint paths`` build) stay absent, so a manifest round-trips byte for byte."""
        return self.model_dump(mode="json", exclude_unset=True)


class AdversarialShard(_Closed):
    file: str
    rows: int
    sha256: str


class AdversarialPlan(Record):
    """``CACHE/adversarial/build.json`` (:mod:`distill.teacher.cache.adversarial`): everything that
    determines the views' bytes, written first and compared on resume."""

    FILE: ClassVar[str] = CACHE_BUILD_PLAN
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

    def to_dict(self) -> dict[str, Any]:
        """As made (keys it did not set stay absent), like :meth:`CacheBuildPlan.to_dict`."""
        return self.model_dump(mode="json", exclude_unset=True)


class AdversarialManifest(AdversarialPlan):
    """``CACHE/adversarial/manifest.json``: the plan (:class:`AdversarialPlan`) + the shards written.
    Written last: its presence means complete."""

    FILE: ClassVar[str] = CACHE_MANIFEST
    rows: int
    shards: list[AdversarialShard]
    skipped: list[SkippedImage] = Field(default_factory=list)
    shapes: dict[str, list[int]]
    created: str
