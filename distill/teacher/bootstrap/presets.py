"""The bootstrap's recipe: presets, templates and the schedule chosen from the data size.

Kept apart from the trainer (:mod:`distill.teacher.bootstrap.train`) and free of torch and
open_clip, so ``distill teacher bootstrap --help`` can print the presets without loading them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

DEMO_ARCH = "distill-demo-rn"
#: `distill teacher bootstrap`'s default pretraining pool: this share of each domain (the demo's too)
BOOTSTRAP_POOL = 0.3
FORMAT = "distill-demo-teacher/1"

#: Zero-shot templates for the demo teacher: no domain words, so one head serves every domain.
#: Half of the training captions use them (see :data:`CAPTION_TEMPLATES`).
DEMO_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "an image of a {}.",
    "a picture of the {}.",
    "a {}.",
)

#: Training captions that name the domain (``{domain}`` with '_' -> ' ', ``{cls}`` the class name).
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a {domain} image of a {cls}.",
    "a {domain} picture of the {cls}.",
    "a {cls} in {domain} style.",
    "a {cls} from the {domain} set.",
)


@dataclass(frozen=True)
class BootstrapPreset:
    """Training defaults. ``max_per_domain`` caps train images per domain (0: all of them).

    ``epochs`` and ``batch_size`` are what a large set gets; :func:`choose_schedule` adapts them
    to a small one (``min_steps`` optimizer steps at least, a batch of at most
    ``1 / MIN_BATCHES_PER_EPOCH`` of the images).
    """

    epochs: int
    batch_size: int
    lr: float
    max_per_domain: int = 0
    min_steps: int = 0


#: Full run on the built-in digits suite's pretraining pool (``pretrain_fraction`` 0.3: 2098 images, 191
#: of them held out to validate; 35 epochs x 29 steps): test-split zero-shot accuracy 97.7 / 86.7 /
#: 83.7 / 98.2 % on mnist / mnist_c / mnist_m / optdigits (target mean 89.5, one seed). ``min_steps``
#: was 600 when the teacher trained on the whole train split (4038 images, 14 x 63 steps: 96.7 / 85.7 /
#: 84.8 / 98.5, target mean 89.7); on the pool, 600 steps (21 epochs) gave 95.7 / 82.9 / 72.0 / 98.0
#: (target mean 84.3), so the smaller pool gets more steps rather than a larger share of the data.
#: On a small set it trains longer and with smaller batches (:func:`choose_schedule`): with the fixed
#: 14 epochs x batch 64, 187 photos (5 classes) got 28 steps, the loss stayed at ln(64) and the
#: teacher scored below chance; ~500 steps at batch 16-32 gave ~90 %.
FULL = BootstrapPreset(epochs=14, batch_size=64, lr=2e-3, min_steps=1000)
#: A few seconds: tests and ``distill demo --quick``. It exercises the real code path but stays
#: near chance (and says so): from random init both towers first collapse to one embedding, and
#: escaping that takes a few hundred steps (about two full-preset epochs).
QUICK = BootstrapPreset(epochs=6, batch_size=32, lr=2e-3, max_per_domain=64)

#: A batch is at most this fraction of the train images (so every epoch has several steps).
MIN_BATCHES_PER_EPOCH = 4
#: Smallest batch :func:`choose_schedule` picks (a contrastive batch needs negatives).
MIN_AUTO_BATCH = 8
#: Share of the pretraining pool held out (by a hash of the path) to validate zero-shot accuracy while
#: training; no student split is ever opened. Only when the pool has at least
#: ``MIN_VAL_IMAGES / VAL_FRACTION`` images.
VAL_FRACTION = 0.1
MIN_VAL_IMAGES = 10
#: ... and at most this many (enough to tell a teacher from chance within a few points): on the
#: digits suite a full 10% (444 images) gave 91.6 % mean zero-shot accuracy, 256 gave 92.9, none 93.6
#: (one seed each), so a large set gives up little.
MAX_VAL_IMAGES = 256
#: Train images scored at each printed epoch for its train zero-shot accuracy (un-augmented).
TRAIN_EVAL_IMAGES = 512
#: About this many epoch lines at most (every :func:`epoch_stride`-th epoch), plus the first and the last: a 9-image
#: pool's 1000 one-step epochs (the 1000-step minimum) printed 1000 lines.
EPOCH_LINES = 20
#: The resume state (model + AdamW, 55 MB for the demo model) is written after each printed epoch and after any epoch
#: ending this many seconds after the last write: written after each of 1000 one-step epochs it took two thirds of
#: a 9-image pool's run (100 epochs: 9.7 of 14.8 s); a kill loses at most this much training, or an epoch.
STATE_EVERY_S = 60.0


def epoch_stride(epochs: int) -> int:
    """Print every this-many-th epoch's line (1: each of up to :data:`EPOCH_LINES` epochs)."""
    return max(1, math.ceil(epochs / EPOCH_LINES))


def is_reported(epoch: int, first: int, epochs: int) -> bool:
    """Whether 0-based ``epoch`` of ``epochs`` prints its line (and is scored zero-shot): the first this run trains
    (``first``, after a resume too), every :func:`epoch_stride`-th and the last."""
    return epoch == first or epoch + 1 == epochs or (epoch + 1) % epoch_stride(epochs) == 0


def choose_schedule(n_train: int, preset: BootstrapPreset, epochs: int | None = None,
                    batch_size: int | None = None) -> tuple[int, int]:
    """(epochs, batch_size) for ``n_train`` images: the preset's, adapted to a small set.

    An explicit ``epochs`` / ``batch_size`` is kept. Otherwise the batch is halved (not below
    :data:`MIN_AUTO_BATCH`) until it is at most ``n_train / MIN_BATCHES_PER_EPOCH``, and the epochs
    are raised until the run takes at least ``preset.min_steps`` optimizer steps.
    """
    if batch_size is None:
        batch_size = preset.batch_size
        while batch_size > MIN_AUTO_BATCH and batch_size * MIN_BATCHES_PER_EPOCH > n_train:
            batch_size //= 2
        batch_size = max(2, min(batch_size, n_train))
    if epochs is None:
        steps_per_epoch = max(1, n_train // batch_size)
        epochs = max(preset.epochs, math.ceil(preset.min_steps / steps_per_epoch))
    return int(epochs), int(batch_size)


def near_chance(accuracy: float, num_classes: int) -> bool:
    """True when ``accuracy`` is below twice chance (capped halfway between chance and 1)."""
    chance = 1.0 / max(num_classes, 1)
    return accuracy < min(2 * chance, (1 + chance) / 2)


WEIGHT_DECAY = 0.1
WARMUP_FRACTION = 0.1
#: Light augmentation: no flips (digits and text are not mirror-symmetric).
AUGMENT = {"max_rotate_deg": 10.0, "scale": (0.9, 1.1), "max_translate": 0.1,
           "brightness": 0.15, "contrast": 0.2}


@dataclass(frozen=True)
class BootstrapSettings:
    """What to train, overriding the preset (:data:`FULL`, or :data:`QUICK`) where set.

    Attributes:
        arch: an open_clip CLIP config name (default this package's ``distill-demo-rn``).
        epochs, batch_size, lr, max_per_domain: None keeps the preset's (adapted to a small set
            by :func:`choose_schedule`); ``max_per_domain`` 0 means every train image.
        seed: model init, shuffling, caption choice and augmentation.
    """

    arch: str = DEMO_ARCH
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    max_per_domain: int | None = None
    seed: int = 0


#: Train zero-shot accuracy at least this with held-out validation at least :data:`MEMORISED_GAP` lower: the
#: teacher memorised its pool (the issue's case: 48 pool images, train 100 %, test 47 %).
MEMORISED_TRAIN = 0.95
MEMORISED_GAP = 0.25


def near_chance_warning(accuracy: dict[str, float], history: list[float], n_classes: int, epochs: int,
                        steps_per_epoch: int, batch_size: int, quick: bool, n_train: int = 0) -> str | None:
    """One line saying the teacher cannot be trusted, with the numbers and what to do; else None.

    Judged on held-out validation accuracy: near chance, or far below a near-perfect train accuracy
    (memorised). Without a held-out image (a pool under ``MIN_VAL_IMAGES / VAL_FRACTION`` images) the
    teacher cannot be judged, and the line says so instead of trusting train accuracy.
    """
    train, val = accuracy.get("train", float("nan")), accuracy.get("val", float("nan"))
    unjudged = math.isnan(val)
    acc, which = (train, "train") if unjudged else (val, "val")
    if math.isnan(acc):
        return None
    no_val = (f"no held-out validation: {n_train} pool images leave none to validate on (a pool of at least "
              f"{math.ceil(MIN_VAL_IMAGES / VAL_FRACTION)} holds {MIN_VAL_IMAGES}+ out)")
    if near_chance(acc, n_classes):
        todo = ("expected of --quick, a smoke-test preset; drop --quick for a usable teacher" if quick else
                f"train longer or with smaller batches, e.g. --epochs {max(2 * epochs, 100)} --batch-size "
                f"{max(2, batch_size // 2)}, and check it with `distill teacher eval`")
        return (f"the bootstrapped teacher is near chance: zero-shot {which} accuracy {100 * acc:.1f}% "
                f"(chance {100 / n_classes:.1f}% with {n_classes} classes{'; ' + no_val if unjudged else ''}), "
                f"final loss {history[-1]:.3f} (ln(batch {batch_size}) = {math.log(batch_size):.3f} means nothing "
                f"learned) after {epochs} epochs x {steps_per_epoch} steps; {todo}")
    if unjudged:
        return (f"the bootstrapped teacher cannot be judged: {no_val}; its zero-shot train accuracy "
                f"{100 * train:.1f}% says nothing about unseen images (a small pool is easily memorised): raise "
                f"--pretrain-fraction, or measure it with `distill teacher eval` (the test split)")
    if train >= MEMORISED_TRAIN and train - val >= MEMORISED_GAP:
        return (f"the bootstrapped teacher memorised its pool: zero-shot train accuracy {100 * train:.1f}% but "
                f"{100 * val:.1f}% on held-out images, the number that predicts unseen ones; a larger pool "
                f"(--pretrain-fraction) or fewer epochs (--epochs {max(1, epochs // 2)}) generalise better")
    return None
