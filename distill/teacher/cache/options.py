"""Typed settings of a cache build, made once by the CLI (or a script) and passed down whole.

:class:`CacheOptions` and :class:`AdversarialOptions` hold what determines the bytes (they go
into the plans and manifests); :class:`PixelOptions` names the pixel stores to add. How a
process runs (decode workers, progress bar, skipping bad images) stays a keyword of
:func:`~distill.teacher.cache.build.build_cache`: it never changes what is written.
Values are checked where the plan is made, with the messages a user acts on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from distill.data.view_policy import ViewPolicy
from distill.data.views import ViewConfig


def _names(values: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


@dataclass(frozen=True)
class CacheOptions:
    """What a teacher cache holds, besides the dataset and the teacher.

    Attributes:
        domains: domains to cache (None: all).
        views: rows per image: view 0 clean (open_clip eval transform), views 1.. augmented.
        seed: seed of the views' random crops (with sample index and view number).
        augment: crop/flip settings of views 1...
        batch_size: images x views per teacher forward (rounded down to whole images).
        shard_size: images per shard.
        dtype: ``float16`` or ``float32`` for ``image_emb`` and ``logits``.
        fingerprint: ``"paths"`` (paths + sizes) or ``"content"``: also hash every image's
            bytes into the manifest, so a run refuses an image edited to the same size.
        policy: augmented-view policy of views 1.. (:mod:`distill.data.view_policy`);
            its crop replaces ``augment``. None or a crop-only policy: today's crop views.
        logits: ``"full"``, ``"topk"`` (the ``topk`` largest, TinyViT style) or ``"none"`` (recomputed
            from the embeddings and the text head); see :mod:`distill.teacher.cache.compact`.
        topk: K of ``logits="topk"``.
        embeddings: store the image embeddings (False: only for strategies that read logits alone).
    """

    domains: tuple[str, ...] | None = None
    views: int = 1
    seed: int = 0
    augment: ViewConfig = field(default_factory=ViewConfig)
    batch_size: int = 64
    shard_size: int = 1024
    dtype: str = "float16"
    fingerprint: str = "paths"
    policy: ViewPolicy | None = None
    logits: str = "full"
    topk: int | None = None
    embeddings: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "domains", _names(self.domains))
        if self.policy is not None:
            object.__setattr__(self, "augment", self.policy.crop)

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
        domains: domains that get adversarial views (None: every cached domain and unlabeled folder).
    """

    views: int = 1
    epsilon: float = 8 / 255
    step_size: float | None = None
    steps: int = 5
    seed: int | None = None
    split: str | None = "train"
    domains: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "domains", _names(self.domains))


@dataclass(frozen=True)
class PixelOptions:
    """Pixel stores to add: every row's view as uint8 at these (H, W) sizes and resize filter
    (``CACHE/pixels-HxW-INTERP``), so a student of that size and filter never decodes.

    ``codec`` ``raw`` (exact, 3*H*W bytes a row) or ``jpeg``/``webp`` at ``quality`` 1..100 (default
    90 for those; lossy, decoded by the training workers: :mod:`~distill.teacher.cache.pixel_codecs`).
    """

    sizes: tuple[tuple[int, int], ...] = ()
    interpolation: str = "bicubic"
    codec: str = "raw"
    quality: int | None = None

    def __post_init__(self) -> None:
        from distill.teacher.cache.pixel_codecs import check_codec  # lazy: torchvision.io

        object.__setattr__(self, "sizes", tuple((int(h), int(w)) for h, w in self.sizes))
        codec, quality = check_codec(self.codec, self.quality)
        object.__setattr__(self, "codec", codec)
        object.__setattr__(self, "quality", quality)
