"""The strategy contract: what a distillation method is, needs, and returns.

A strategy is an ``nn.Module`` that owns the student and any extra trainable parts
(projectors, transforms), so one optimizer covers them. ``forward(batch)`` returns a dict
with ``"loss"`` plus named parts for logging. ``needs`` tells the trainer what to supply —
nothing more is loaded (a cache-only strategy never builds a teacher).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Sequence, TypeVar

import torch
from pydantic import ConfigDict, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass
from torch import Tensor, nn

from distill.errors import DistillError
from distill.validation import bool_refused

if TYPE_CHECKING:  # the trainer hands every strategy a Student; imported for the annotation only
    from distill.student.model import Student

T = TypeVar("T")


@dataclass(frozen=True)
class Needs:
    """What a strategy needs the trainer to provide."""

    labels: bool = True  # ground-truth labels of the training images
    cached_logits: bool = False  # teacher zero-shot logits from the cache
    cached_features: bool = False  # teacher image embeddings from the cache
    text_embeddings: bool = False  # the teacher's zero-shot head [C, D]
    online_teacher: bool = False  # a live teacher model (e.g. for adversarial inputs)
    cached_adversarial: bool = False  # adversarial views stored in the cache (`cache build --adv-views K`)
    target_data: bool = False  # unlabeled target-domain images
    source_checkpoint: bool = False  # a source-trained student to start from
    # accepts rows without a label (``data.unlabeled`` pool images, label -1): its label terms go through
    # losses.label_cross_entropy and its other terms are well-defined on any cached image
    unlabeled: bool = False
    augmented_views: bool = False  # needs a cache built with an augmenting view policy (`--policy fm`)
    # the cache row layouts (`cache build --logits`) whose dense logits this strategy accepts: "topk" is exact
    # at temperature 1 and in argmax, approximate at other temperatures (distill.teacher.cache.compact)
    logit_modes: tuple[str, ...] = ("full", "topk", "none")


@dataclass
class Batch:
    """One training batch. Image tensors are ``[B, 3, H, W]`` at the student's resolution.

    ``pixels`` are in [0, 1] (for attacks and for feeding an online teacher); ``images`` are
    the same pixels normalized with the student's mean/std.
    """

    pixels: Tensor
    images: Tensor
    # [B] int64; -1 on rows without a label (pool images, withheld classes); None when the strategy gets none
    labels: Tensor | None = None
    # a mixed view is lam * own image + (1 - lam) * partner's: the partner's label ([B] int64, -1 = none)
    # and lam ([B] float, 1.0 = unmixed); None when the cache mixes nothing
    partner_labels: Tensor | None = None
    mix_lam: Tensor | None = None
    teacher_logits: Tensor | None = None  # [B, C] float32 (first cache)
    teacher_logits_all: list[Tensor] | None = None  # one [B, C] per cache (multi-teacher)
    teacher_emb: Tensor | None = None  # [B, D] float32, L2-normalized
    domain: Tensor | None = None  # [B] int64, index into the dataset's domains
    sample_index: Tensor | None = None  # [B] int64
    # sample_index on the CPU, as the loader gave it: per-sample state held on the host (SampleTargets' rows) is read
    # with it, without a copy back from the device; None where the batch has no sample index
    host_index: Tensor | None = None
    view: Tensor | None = None  # [B] int64
    # what one strategy alone reads (e.g. adv_cached's cached adversarial views), filled by its own
    # :meth:`Strategy.batch_extras`; the trainer neither fills nor reads it
    extras: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchSource:
    """Where a training batch comes from: what :meth:`Strategy.batch_extras` may read to build its extras.

    The trainer fills it per batch; the caches and adversarial views are the run's opened ones
    (duck-typed here: strategies import nothing from the cache).
    """

    sample_index: Tensor  # [B] int64 on the CPU, as the loader gave it
    view: Tensor  # [B] int64 on the CPU: the cached view each image shows
    epoch: int
    seed: int  # run.seed
    device: torch.device
    memory_format: torch.memory_format  # the student's (channels_last on CUDA)
    caches: Sequence[Any] = ()  # the run's TeacherCaches; the first is the one teacher logits come from
    adversarial: Any = None  # the first cache's AdversarialViews, opened when needs.cached_adversarial
    # cache logits [B, C_cache] -> the student's columns (data.withhold_classes drops some)
    student_logits: Callable[[Tensor], Tensor] = lambda logits: logits


@dataclass
class StrategyContext:
    """Fixed facts a strategy may use, supplied once at construction."""

    num_classes: int
    class_names: list[str]
    embed_dim: int | None = None  # teacher embedding width
    text_embeddings: Tensor | None = None  # [C, D] teacher zero-shot head
    # [C_all, D] the text embeddings of every class name of the data set, data.withhold_classes' included
    all_text_embeddings: Tensor | None = None
    logit_scale: float | None = None  # teacher's logit scale (exp'd)
    teacher: Any = None  # distill.teacher.Teacher when needs.online_teacher
    teacher_input: Callable[[Tensor], Tensor] | None = None  # pixels -> teacher-normalized input
    normalize: Callable[[Tensor], Tensor] | None = None  # pixels -> student-normalized input
    # Clean (view-0) batches over every training image in a fixed order, for epoch hooks such
    # as pseudo-label refresh; set by the trainer. For target-data strategies these are the
    # unlabeled target images (labels None).
    iterate_train: Callable[[], Iterator[Batch]] | None = None
    num_train: int = 0  # number of training images (sample indices are dataset-wide)
    num_samples: int = 0  # size of the whole dataset (bound for sample_index)
    num_teachers: int = 1  # teacher caches the run opened: one [B, C] per cache in batch.teacher_logits_all
    # where per-sample state that grows with the data set is written (SampleTargets' files); set by the trainer to
    # the run's checkpoint folder, so that a checkpoint links them (None: the system's temp folder)
    state_dir: str | None = None
    # False on a DDP rank that saves no checkpoint: its files go to state_dir only as unnamed O_TMPFILEs (nothing
    # to clash or leave behind), else to the system's temp folder (RowFile.create's scratch)
    state_linked: bool = True


#: The optim section a source-free adaptation starts from: a short, gentle fine-tune of an
#: already trained model (no warm-up from scratch). Target-data strategies declare only what
#: differs (SHOT: lr 5e-4) in their ``optim_defaults``; see :meth:`Strategy.default_optim`.
ADAPTATION_OPTIM: dict[str, Any] = {"epochs": 10, "batch_size": 64, "optimizer": "adamw", "lr": 3e-3,
                                    "weight_decay": 0.01, "warmup_epochs": 0, "grad_clip": 1.0}


class Strategy(nn.Module):
    """Base class. Subclasses set ``Config`` (a dataclass), ``needs`` and implement ``forward``."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = type("NoConfig", (), {})
    needs: ClassVar[Needs] = Needs()
    #: Optimizer settings (``optim.*`` keys) this strategy needs where its stage's defaults do not
    #: suit it (:meth:`default_optim`); ``--set optim.*`` overrides them.
    optim_defaults: ClassVar[dict[str, Any]] = {}

    @classmethod
    def default_optim(cls) -> dict[str, Any]:
        """The ``optim`` section this strategy starts from: its stage's defaults under its own ``optim_defaults``.

        A target-data (source-free) strategy adapts an already trained model: its stage is
        :data:`ADAPTATION_OPTIM` (``distill adapt``). Others train from scratch under the
        config's own defaults (:class:`distill.config.OptimConfig`).
        """
        return {**(ADAPTATION_OPTIM if cls.needs.target_data else {}), **cls.optim_defaults}

    student: Student

    def __init__(self, student: Student, config: Any, ctx: StrategyContext):
        super().__init__()
        self.student = student
        self.config = config
        self.ctx = ctx

    def forward(self, batch: Batch) -> dict[str, Tensor]:  # pragma: no cover - abstract
        """Return ``{"loss": scalar, <part>: detached scalar, ...}``; optionally ``"logits"``
        ([B, C], detached, of the student on ``batch.images``) for the live accuracy display."""
        raise NotImplementedError

    def need(self, value: T | None, name: str) -> T:
        """``batch.<name>`` (``value``), which this strategy's :attr:`needs` ask the trainer for: :func:`batch_field`."""
        return batch_field(value, name, f"strategy '{self.name}'")

    def on_epoch_start(self, epoch: int) -> None:
        """Hook run by the trainer before each epoch (e.g. refresh pseudo-labels)."""

    def batch_extras(self, source: BatchSource) -> dict[str, Tensor]:
        """This strategy's own inputs for a batch from ``source``, on ``source.device``: they become
        ``batch.extras``. The trainer supplies what every strategy shares (pixels, labels, cached rows);
        what only one strategy reads is built here, by it. Default: none."""
        return {}

    def predict(self, images: Tensor) -> Tensor:
        """Logits used for evaluation: [B, 3, H, W] -> [B, C]."""
        return self.student(images)


def batch_field(value: T | None, name: str, who: str) -> T:
    """``value``, the batch's field ``name``, which the trainer fills for a strategy whose :class:`Needs` ask for it;
    a hand-made batch without it is one line naming ``who`` (the strategy or option) and the field."""
    if value is None:
        raise DistillError(f"{who} reads batch.{name}, but the batch has none (distill.train fills it "
                           "from the strategy's needs)")
    return value


def strategy_config(cls: type) -> type:
    """Declare a strategy's options (``@strategy_config class KDConfig: temperature: float = 4.0``).

    A frozen pydantic dataclass: the same config style as :mod:`distill.config` (values are
    validated and coerced on construction, unknown keys are errors), with the declaration
    shape of a dataclass so that a strategy file reads like DESIGN.md's.
    """
    return pydantic_dataclass(cls, frozen=True, config=ConfigDict(extra="forbid"))


class OptionError(DistillError):
    """A strategy option that does not validate; ``key`` is the option at fault (so that
    :func:`distill.config.load_train_config` can name the ``--set`` item that set it)."""

    def __init__(self, message: str, key: str):
        super().__init__(message)
        self.key = key


def build_config(config_cls: type, values: dict[str, Any] | None, where: str = "strategy") -> Any:
    """Validate ``values`` into ``config_cls`` (a :func:`strategy_config` class); errors name the key.

    Raises:
        OptionError: an unknown key or a bad value (``.key`` is the option).
    """
    values = dict(values or {})
    if not dataclasses.is_dataclass(config_cls):
        if values:
            raise OptionError(f"{where}: takes no options, got {sorted(values)}", sorted(values)[0])
        return None
    fields = {f.name for f in dataclasses.fields(config_cls)}
    for key, value in values.items():
        if key not in fields:
            raise OptionError(f"unknown key '{where}.{key}' (valid: {', '.join(sorted(fields)) or 'none'})", key)
        field = getattr(config_cls, "__pydantic_fields__", {}).get(key)
        kind = bool_refused(field.annotation) if isinstance(value, bool) and field is not None else None
        if kind is not None:  # pydantic's lax mode would take True as 1
            raise OptionError(f"{where}.{key}: Input should be a valid {kind}, not a bool (got {value!r})", key)
    try:
        return config_cls(**values)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise OptionError(f"{where}.{loc}: {err['msg']} (got {err.get('input')!r})", str(err["loc"][0])) from None
