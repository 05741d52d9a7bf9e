"""Typed settings of a cache build, made once by the CLI (or a script) and passed down whole.

:class:`CacheOptions` and :class:`AdversarialOptions` hold what determines the bytes (they go
into the plans and manifests); :class:`PixelOptions` names the pixel stores to add. How a
process runs (decode workers, progress bar, skipping bad images) stays a keyword of
:func:`~distill.teacher.cache.build.build_cache`: it never changes what is written.
Values are checked where the plan is made, with the messages a user acts on.
"""
from __future__ import annotations

import numbers
import operator
from dataclasses import dataclass, fields
from typing import Any, Sequence

from distill.data.view_policy import ViewPolicy
from distill.data.views import ViewConfig
from distill.errors import DistillError
from distill.teacher.cache.view_options import UNSET_AUGMENT, view_settings

#: what a field holds, as :func:`check_types` names it (numpy's ints and floats are numbers too)
INTEGER, NUMBER, TEXT, FLAG = (numbers.Integral,), (numbers.Real,), (str,), (bool,)


def check_types(cfg: Any, expected: dict[str, tuple[tuple[type, ...], str]]) -> None:
    """One line naming the first field of the dataclass ``cfg`` whose value is not of its type (a bool is no
    number); ``expected``: field -> (the types it takes, None allowed when the field is annotated ``X | None``;
    what it is). A value of the right type is checked where it is used (``views`` >= 1 where the cache's plan is made)."""
    optional = {f.name for f in fields(cfg) if _takes_none(f.type)}
    for name, (types, what) in expected.items():
        value = getattr(cfg, name)
        if value is None and name in optional:
            continue
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            shown = f"{value!r}"[:80]
            raise DistillError(f"{type(cfg).__name__}.{name}: expected {what}, got {shown} ({type(value).__name__})")
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, int, float)):  # numpy's: plain Python
            object.__setattr__(cfg, name, operator.index(value) if isinstance(value, numbers.Integral) else float(value))


def _takes_none(annotation: Any) -> bool:
    """Whether a field's annotation (a string under ``from __future__ import annotations``) lets it be None."""
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return "None" in (part.strip() for part in text.split("|")) or text.startswith(("Optional[", "typing.Optional["))


def _names(owner: str, values: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """Domain names: a list, or one string of comma-separated names as ``--domains a,b`` takes them."""
    if values is None:
        return None
    names = [v.strip() for v in values.split(",") if v.strip()] if isinstance(values, str) else values
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
        raise DistillError(f"{owner}.domains: expected domain names (a list, or 'a,b'), got {values!r:.80}")
    if isinstance(values, str) and not names:
        raise DistillError(f"{owner}.domains: {values!r} names no domain (None: all)")
    return tuple(names)


@dataclass(frozen=True)
class CacheOptions:
    """What a teacher cache holds, besides the dataset and the teacher.

    Attributes:
        domains: domains to cache (None: all): a list, or ``"a,b"``.
        views: rows per image: view 0 clean (open_clip eval transform), views 1.. augmented.
        seed: seed of the views' random crops (with sample index and view number).
        augment: crop/flip settings of views 1..: a ViewConfig, or a mapping of ``scale``, ``ratio`` and ``hflip``
            (``--crop-scale``, ``--crop-ratio``, ``--hflip``; ``hflip`` unset: the policy's, 0 for ``fm``).
        batch_size: images x views per teacher forward (rounded down to whole images).
        shard_size: images per shard.
        dtype: ``float16`` or ``float32`` for ``image_emb`` and ``logits``.
        fingerprint: ``"paths"`` (paths + sizes) or ``"content"``: also hash every image's
            bytes into the manifest, so a run refuses an image edited to the same size.
        policy: augmented-view policy of views 1.. (:mod:`distill.data.view_policy`);
            its crop replaces ``augment``. None or a crop-only policy: today's crop views. Also a preset's name
            (``"fm"``, ``"crops"``: ``--policy``) or a mapping of ``name``, ``mixup`` and ``cutmix`` (``--policy``,
            ``--mixup``, ``--cutmix``), which take ``augment`` as their crop, as the CLI does
            (:mod:`distill.teacher.cache.view_options`: the same function, so the same cache either way).
        logits: ``"full"``, ``"topk"`` (the ``topk`` largest, TinyViT style) or ``"none"`` (recomputed
            from the embeddings and the text head); see :mod:`distill.teacher.cache.compact`.
        topk: K of ``logits="topk"``.
        embeddings: store the image embeddings (False: only for strategies that read logits alone).
    """

    domains: tuple[str, ...] | None = None
    views: int = 1
    seed: int = 0
    augment: ViewConfig = UNSET_AUGMENT  # (or a mapping: view_options; unset: the policy's default crop)
    batch_size: int = 64
    shard_size: int = 1024
    dtype: str = "float16"
    fingerprint: str = "paths"
    policy: ViewPolicy | None = None  # (or a preset name, or a mapping: view_options)
    logits: str = "full"
    topk: int | None = None
    embeddings: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "domains", _names("CacheOptions", self.domains))
        for name, value in zip(("augment", "policy"), view_settings(self.augment, self.policy)):  # a name, a mapping
            object.__setattr__(self, name, value)
        check_types(self, {"views": (INTEGER, "an integer"), "seed": (INTEGER, "an integer"),
                           "augment": ((ViewConfig,), "a ViewConfig or a mapping"), "batch_size": (INTEGER, "an integer"),
                           "shard_size": (INTEGER, "an integer"), "dtype": (TEXT, "float16 or float32"),
                           "fingerprint": (TEXT, "paths or content"), "policy": ((ViewPolicy,), "a ViewPolicy"),
                           "logits": (TEXT, "full, topk or none"), "topk": (INTEGER, "an integer"),
                           "embeddings": (FLAG, "True or False")})

    @property
    def view_policy(self) -> ViewPolicy:
        """The policy views are drawn with (crop-only from ``augment`` when none was given)."""
        return self.policy if self.policy is not None else ViewPolicy("crops", self.augment)


@dataclass(frozen=True)
class AdversarialOptions:
    """K PGD views per image against the teacher, stored with its outputs (``CACHE/adversarial``).

    Attributes:
        views: adversarial views per image (K).
        epsilon: L-inf radius in pixel units ([0, 1] images).
        step_size: PGD step (None: 2.5 * epsilon / steps).
        steps: PGD steps.
        seed: seed of the random starts (with sample index and view); None: the cache's view
            seed when built with the cache, else 0.
        split: ``"train"`` (what training reads), ``"test"``, or None for both.
        domains: domains that get adversarial views (None: every cached domain and unlabeled folder): a list,
            or ``"a,b"``.
    """

    views: int = 1
    epsilon: float = 8 / 255
    step_size: float | None = None
    steps: int = 5
    seed: int | None = None
    split: str | None = "train"
    domains: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "domains", _names("AdversarialOptions", self.domains))
        check_types(self, {"views": (INTEGER, "an integer"), "epsilon": (NUMBER, "a number (pixel units)"),
                           "step_size": (NUMBER, "a number (pixel units)"), "steps": (INTEGER, "an integer"),
                           "seed": (INTEGER, "an integer"), "split": (TEXT, "train or test (None: both)")})


@dataclass(frozen=True)
class PixelOptions:
    """Pixel stores to add: every row's view as uint8 at these (H, W) sizes and resize filter
    (``CACHE/pixels-HxW-INTERP``), so a student of that size and filter never decodes.

    ``sizes``: each an int (a square size) or an ``(H, W)`` pair: ``32``, ``[32, 24]`` (two square sizes, as
    ``--store-pixels 32,24``), ``((32, 24),)`` (one). A tuple of two ints, ``(32, 24)``, is refused: one H x W size
    or two square ones? ``codec`` ``raw`` (exact, 3*H*W bytes a row) or
    ``jpeg``/``webp`` at ``quality`` 1..100 (default 90 for those; lossy, decoded by the training workers:
    :mod:`~distill.teacher.cache.pixel_codecs`).
    """

    sizes: tuple[tuple[int, int], ...] = ()
    interpolation: str = "bicubic"
    codec: str = "raw"
    quality: int | None = None

    def __post_init__(self) -> None:
        from distill.teacher.cache.pixel_codecs import check_codec  # lazy: torchvision.io

        object.__setattr__(self, "sizes", _sizes(self.sizes))
        check_types(self, {"interpolation": (TEXT, "a resize filter name"), "codec": (TEXT, "raw, jpeg or webp")})
        codec, quality = check_codec(self.codec, self.quality)
        object.__setattr__(self, "codec", codec)
        object.__setattr__(self, "quality", quality)


def _sizes(sizes: Any) -> tuple[tuple[int, int], ...]:
    """``PixelOptions.sizes`` as (H, W) pairs: an int is a square size; each listed once."""
    def size(item: Any) -> tuple[int, int] | None:
        hw = (item, item) if not isinstance(item, (list, tuple)) else tuple(item)
        ok = len(hw) == 2 and all(_integer(v) and v >= 1 for v in hw)
        return (operator.index(hw[0]), operator.index(hw[1])) if ok else None

    if isinstance(sizes, tuple) and len(sizes) == 2 and all(_integer(v) for v in sizes):
        h, w = (operator.index(v) for v in sizes)
        raise DistillError(f"PixelOptions.sizes ({h}, {w}): one {h}x{w} size or two square ones? Write (({h}, {w}),) for "
                           f"one H x W store, [{h}, {w}] for {h}x{h} and {w}x{w}")
    items = [sizes] if _integer(sizes) else sizes
    pairs = [size(item) for item in items] if isinstance(items, (list, tuple)) else [None]
    if None in pairs:
        raise DistillError(f"PixelOptions.sizes: expected sizes (32, or (H, W) pairs: ((32, 24),)), got {sizes!r:.80}")
    out = tuple(p for p in pairs if p is not None)
    twice = sorted({f"{h}x{w}" for h, w in out if out.count((h, w)) > 1})
    if twice:
        raise DistillError(f"PixelOptions.sizes {sizes!r}: {', '.join(twice)} listed twice (an int is a square size; "
                           "one H x W size is written ((H, W),))")
    return out


def _integer(value: Any) -> bool:
    """An int, numpy's too (``numbers.Integral``); a bool is no size."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
