"""Compressed pixel stores: each view encoded (JPEG or WebP) at the student's size, decoded by the workers.

Why: a raw store holds 3 x H x W bytes per row (150 kB at 224 px; 1M images x 8 views is 1.2 TB),
which past a few hundred thousand rows no longer fits the page cache, and then not the disk. A
224 px view as JPEG at quality 90 is ~5-15x smaller, for a decode of about a millisecond per row in
the DataLoader worker (``benchmarks/pixel_store.py`` measures both). The price is exactness: the
student sees the decoded bytes, not the teacher's (lossy), so training from a compressed store is
not byte-identical to training from a raw store or from the images. Raw stays the default.

Shard tensors of a compressed store (``format_version`` 2 of ``distill.cache_pixels``): ``data``
uint8 [total bytes] (the rows' encoded files, one after another), ``offsets`` int64 [n + 1] (row
``r`` is ``data[offsets[r]:offsets[r + 1]]``), ``sample_index`` [n] int64 and ``view`` [n] int16, as
in a raw store. Shards are hashed into the manifest and verified once like every mapped file
(:mod:`~distill.teacher.cache.mapped`); a row that still fails to decode is a one-line error naming
its shard.

Codecs: ``jpeg`` is encoded and decoded by ``torchvision.io`` (libjpeg-turbo, 4:2:0 chroma);
``webp`` is encoded by Pillow (torchvision has no WebP encoder) and decoded by
``torchvision.io.decode_webp``.
"""
from __future__ import annotations

import io
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg, decode_webp, encode_jpeg

from distill.errors import DistillError

CODECS = ("raw", "jpeg", "webp")
COMPRESSED = ("jpeg", "webp")
DEFAULT_QUALITY = 90


def check_codec(codec: str, quality: int | None) -> tuple[str, int | None]:
    """(codec, quality) checked: quality 1..100 for jpeg/webp (default :data:`DEFAULT_QUALITY`), None for raw.

    Raises:
        DistillError: an unknown codec, a quality outside 1..100, or a quality given with raw (one line).
    """
    if codec not in CODECS:
        raise DistillError(f"--pixel-codec: '{codec}' is not one of {', '.join(CODECS)}")
    if codec == "raw":
        if quality is not None:
            raise DistillError(f"--pixel-quality {quality}: applies to --pixel-codec jpeg or webp, not raw")
        return codec, None
    if quality is None:
        return codec, DEFAULT_QUALITY
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise DistillError(f"--pixel-quality: {quality!r} is not an integer in 1..100")
    return codec, int(quality)


def codec_label(codec: str, quality: int | None) -> str:
    """``raw`` or ``jpeg q90``: how messages name a store's encoding."""
    return codec if codec == "raw" else f"{codec} q{quality}"


def codec_flags(codec: str, quality: int | None) -> str:
    """The ``cache build`` flags that make a store with this encoding (empty for raw, the default)."""
    return "" if codec == "raw" else f" --pixel-codec {codec} --pixel-quality {quality}"


def encode(pixels: Tensor, codec: str, quality: int) -> Tensor:
    """uint8 [3, H, W] -> the encoded file as uint8 [bytes]."""
    if codec == "jpeg":
        return encode_jpeg(pixels.contiguous(), quality=quality)
    if codec == "webp":
        from PIL import Image  # lazy: only webp stores encode through Pillow

        buf = io.BytesIO()
        Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy()).save(buf, format="WEBP", quality=quality)
        return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
    raise ValueError(f"not a compressed codec: {codec}")


def decode(data: Tensor, codec: str) -> Tensor:
    """The encoded file uint8 [bytes] -> uint8 [3, H, W] (RGB). Raises RuntimeError on damaged bytes."""
    if codec == "jpeg":
        return decode_jpeg(data, mode=ImageReadMode.RGB)
    if codec == "webp":
        return decode_webp(data, mode=ImageReadMode.RGB)
    raise ValueError(f"not a compressed codec: {codec}")


def pack(rows: Sequence[Tensor]) -> dict[str, Tensor]:
    """Encoded rows -> the shard's ``data`` [total] and ``offsets`` [n + 1] columns."""
    sizes = torch.tensor([0, *(len(r) for r in rows)], dtype=torch.int64)
    data = torch.cat(list(rows)) if rows else torch.zeros(0, dtype=torch.uint8)
    return {"data": data.contiguous(), "offsets": sizes.cumsum(0)}


def decode_row(data: Tensor, offsets: Tensor, row: int, codec: str, where: str, rebuild: str) -> Tensor:
    """Row ``row`` of a mapped shard's ``data``/``offsets``, decoded: uint8 [3, H, W].

    Raises:
        DistillError: the bytes do not decode (one line naming ``where`` and ``rebuild``).
    """
    a, b = int(offsets[row]), int(offsets[row + 1])
    try:
        return decode(data[a:b], codec)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DistillError(f"{where}: row {row} does not decode as {codec} ({first}); {rebuild}") from None


__all__ = ["CODECS", "COMPRESSED", "DEFAULT_QUALITY", "check_codec", "codec_flags", "codec_label", "decode",
           "decode_row", "encode", "pack"]
