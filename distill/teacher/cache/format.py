"""On-disk layout of a teacher cache, shared by its writer and its readers.

```
DIR/
  build.json                    # the plan (identity + settings), written when a build starts
  shard-00000.safetensors ...   # rows of samples [k*shard_size, (k+1)*shard_size), all views
  text_embeddings.safetensors   # [C, D] float32 zero-shot head
  manifest.json                 # the plan + results; written last: its presence means complete
```

Shard tensors, one row per (image, view), sorted by (sample_index, view):
``image_emb`` [n, D] and ``logits`` [n, C] in the cache dtype, ``sample_index`` int64,
``view`` int16, ``domain`` int16 (index into ``manifest.dataset.domains``), ``label``
int16, ``split`` uint8 (0 train, 1 test), ``view_params`` float32 [n, P] (P = 5 crop params, or
the view policy's :data:`~distill.data.view_policy.PARAMS_LAYOUT`, named by the manifest's
``views.params_layout``), ``mix_partner`` int64 (the mixed-in sample, -1 none) and ``mix_view``
int16 (its view, -1 none). A shard's safetensors metadata holds ``skipped``: JSON list of the
images of its range that could not be decoded.

Version 2 added ``mix_partner``/``mix_view`` and the wider ``view_params``; a version-1 cache
still opens (:func:`upgrade_rows` fills the mix columns with -1). Version 3 is a cache with compact
rows (the manifest's ``layout``, :mod:`~distill.teacher.cache.compact`): ``image_emb`` may be absent
and ``logits`` replaced by top-k columns or left out. A full-row build still writes version 2, so its
plan and bytes are what they were.

The reader keeps :data:`RESIDENT_KEYS` in memory and maps the rest (:mod:`~distill.teacher.cache.mapped`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import load, save_file
from torch import Tensor

from distill.errors import DistillError
from distill.utils.io import atomic_write

FORMAT = "distill.teacher_cache"
FORMAT_VERSION = 2
COMPACT_VERSION = 3  # a build with a row layout other than full
SUPPORTED_VERSIONS = (1, 2, 3)
SPLIT_CODES = {"train": 0, "test": 1, "val": 2}
DTYPES = {"float16": torch.float16, "float32": torch.float32}
ROW_DTYPES = {
    "sample_index": torch.int64,
    "view": torch.int16,
    "domain": torch.int16,
    "label": torch.int16,
    "split": torch.uint8,
    "view_params": torch.float32,
    "mix_partner": torch.int64,
    "mix_view": torch.int16,
}
ROW_KEYS = ("image_emb", "logits", *ROW_DTYPES)
MIX_KEYS = ("mix_partner", "mix_view")  # absent from version-1 shards
RESIDENT_KEYS = ("sample_index", "view", "domain", "label", "split")  # 15 B a row, in memory after open
MAPPED_KEYS = ("view_params", *MIX_KEYS)  # gathered per batch with the outputs


def shard_name(k: int) -> str:
    """File of shard ``k`` (of the cache and of each companion folder)."""
    return f"shard-{k:05d}.safetensors"


def empty_rows(dim: int, num_classes: int, dtype: torch.dtype, width: int = 5) -> dict[str, Tensor]:
    """Zero-row tensors with the shard schema (a shard whose images were all skipped); ``width``: P."""
    rows = {"image_emb": torch.zeros(0, dim, dtype=dtype), "logits": torch.zeros(0, num_classes, dtype=dtype)}
    rows.update({k: torch.zeros((0, width) if k == "view_params" else (0,), dtype=dt)
                 for k, dt in ROW_DTYPES.items()})
    return rows


def upgrade_rows(rows: dict[str, Tensor]) -> dict[str, Tensor]:
    """A version-1 shard's tensors with the version-2 mix columns added (-1: no partner)."""
    n = len(rows["sample_index"])
    return {**rows, **{k: torch.full((n,), -1, dtype=ROW_DTYPES[k]) for k in MIX_KEYS if k not in rows}}


def save_shard(path: Path, tensors: Mapping[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically write one safetensors shard (temp file + rename: a kill leaves no partial shard)."""
    atomic_write(path, lambda p: save_file(dict(tensors), str(p), metadata=metadata))


def shard_columns(rows: Mapping[str, Tensor], skipped: list[dict], outputs: Sequence[str] = ROW_KEYS[:2]
                  ) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors, metadata) of one cache shard: the teacher ``outputs`` (the layout's columns) and
    :data:`ROW_DTYPES` columns of ``rows``, and its skipped images."""
    return {k: rows[k].contiguous() for k in (*outputs, *ROW_DTYPES)}, {"skipped": json.dumps(skipped)}


def write_shard(path: Path, rows: Mapping[str, Tensor], skipped: list[dict], outputs: Sequence[str] = ROW_KEYS[:2]
                ) -> None:
    """Atomically write one cache shard (:func:`shard_columns`)."""
    save_shard(path, *shard_columns(rows, skipped, outputs))



def shard_rows(path: Path) -> int:
    """Rows of a shard (its ``sample_index`` length; no tensor is read)."""
    with safe_open(str(path), "pt") as f:
        return int(f.get_slice("sample_index").get_shape()[0])


def read_shard_columns(path: Path, names: Sequence[str]) -> dict[str, Tensor]:
    """Only these tensors of a shard (e.g. its index columns; its outputs are not read)."""
    with safe_open(str(path), "pt") as f:
        return {name: f.get_tensor(name) for name in names}


def read_shard_skipped(path: Path) -> list[dict]:
    """The ``skipped`` list of a shard's metadata (no tensor is read)."""
    with safe_open(str(path), "pt") as f:
        return json.loads((f.metadata() or {}).get("skipped", "[]"))


def load_verified(file: Path, sha256: str | None, rebuild: str = "rebuild the cache") -> dict[str, Tensor]:
    """Tensors of a safetensors file whose bytes must hash to ``sha256`` (the manifest's record).

    The file is read once into memory and hashed from those bytes: for small files (the text
    embeddings). Shards are mapped instead and checked once per file version
    (:func:`~distill.teacher.cache.mapped.verify_once`), then read with ``sha256=None`` (unchecked here).

    Raises:
        DistillError: missing, changed since the build (sha256 differs), or unreadable; one line
            naming the file and what to do.
    """
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise DistillError(f"{file}: listed in the manifest but missing; {rebuild}") from None
    if sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise DistillError(f"{file}: sha256 {got[:12]}... differs from the manifest's {sha256[:12]}... (changed or "
                               f"corrupted since the build); {rebuild}")
    try:
        return load(data)
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise DistillError(f"{file}: unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                           f"{rebuild}") from None
