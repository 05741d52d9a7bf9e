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
``view`` int16, ``domain`` int16 (index into ``manifest["dataset"]["domains"]``), ``label``
int16, ``split`` uint8 (0 train, 1 test), ``view_params`` float32 [n, 5]. A shard's safetensors
metadata holds ``skipped``: JSON list of the images of its range that could not be decoded.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

FORMAT = "distill.teacher_cache"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BUILD_PLAN = "build.json"
TEXT_EMBEDDINGS = "text_embeddings.safetensors"
SPLIT_CODES = {"train": 0, "test": 1, "val": 2}
DTYPES = {"float16": torch.float16, "float32": torch.float32}
ROW_DTYPES = {
    "sample_index": torch.int64,
    "view": torch.int16,
    "domain": torch.int16,
    "label": torch.int16,
    "split": torch.uint8,
    "view_params": torch.float32,
}
ROW_KEYS = ("image_emb", "logits", *ROW_DTYPES)
# Recorded in the manifest but not part of what a cached output means.
TEACHER_UNCOMPARED = ("open_clip_version", "torch_version")


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.safetensors"


def empty_rows(dim: int, num_classes: int, dtype: torch.dtype) -> dict[str, Tensor]:
    """Zero-row tensors with the shard schema (a shard whose images were all skipped)."""
    rows = {"image_emb": torch.zeros(0, dim, dtype=dtype), "logits": torch.zeros(0, num_classes, dtype=dtype)}
    rows.update({k: torch.zeros((0, 5) if k == "view_params" else (0,), dtype=dt) for k, dt in ROW_DTYPES.items()})
    return rows


def write_shard(path: Path, rows: Mapping[str, Tensor], skipped: list[dict]) -> None:
    """Atomically write one shard (temp file + rename: a kill leaves no partial shard)."""
    from safetensors.torch import save_file

    from distill.utils.io import atomic_write

    tensors = {k: rows[k].contiguous() for k in ROW_KEYS}
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata={"skipped": json.dumps(skipped)}))


def read_shard_skipped(path: Path) -> list[dict]:
    """The ``skipped`` list of a shard's metadata (no tensor is read)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return json.loads((f.metadata() or {}).get("skipped", "[]"))


def load_verified(file: Path, sha256: str | None, rebuild: str = "rebuild the cache") -> dict[str, Tensor]:
    """Tensors of a safetensors file whose bytes must hash to ``sha256`` (the manifest's record).

    The file is read once into memory; hashing those bytes costs about as much as reading them
    (see ``benchmarks/cache_read.py --verify``), so every open checks. ``sha256=None`` (a file
    the manifest holds no hash for) is read unchecked.

    Raises:
        DistillError: missing, changed since the build (sha256 differs), or unreadable; one line
            naming the file and what to do.
    """
    import hashlib

    from safetensors.torch import load

    from distill.errors import DistillError

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


# ---------------------------------------------------------------------- comparing identities
def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v))  # tuples -> lists, numpy-free, as the manifest stores it


def shorten(v: Any, width: int = 40) -> str:
    """A value as JSON, cut to ``width`` characters."""
    s = json.dumps(v)
    return s if len(s) <= width else s[: width - 3] + "..."


def describe(key: str, have: Any, want: Any) -> str:
    """One differing field, both values shortened; lists name their first difference."""
    if isinstance(have, list) and isinstance(want, list):
        i = next((i for i, (a, b) in enumerate(zip(have, want)) if a != b), min(len(have), len(want)))
        a = shorten(have[i]) if i < len(have) else "<end>"
        b = shorten(want[i]) if i < len(want) else "<end>"
        return f"{key}: {len(have)} vs {len(want)} items, first difference [{i}] {a} vs {b}"
    return f"{key}: {shorten(have)} vs {shorten(want)}"


#: Fields added to the identity after format version 1 shipped, with the value every older cache had.
LEGACY_DEFAULTS: dict[str, Any] = {"teacher.precision": "fp32"}

#: Relative tolerance of float fields (logit scale, mean/std, crop ranges, epsilons). A CUDA exp or
#: a JSON round trip moves the last digit (``teacher.logit_scale: 14.285714 vs 14.285715`` failed
#: a GPU-built cache on a CPU); a real difference (another teacher, other preprocessing) is far larger.
FLOAT_RTOL = 1e-6


def same_value(a: Any, b: Any) -> bool:
    """Equality, except that floats (also inside lists) match within :data:`FLOAT_RTOL`."""
    import math

    def num(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if num(a) and num(b) and (isinstance(a, float) or isinstance(b, float)):
        return math.isclose(a, b, rel_tol=FLOAT_RTOL, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return a == b


def diff_fields(have: Mapping[str, Any], want: Mapping[str, Any]) -> list[str]:
    """``"field: X vs Y"`` (``have`` vs ``want``) for each dotted field of ``want`` that differs.

    Floats compare within :data:`FLOAT_RTOL` (:func:`same_value`); a field missing from ``have``
    that :data:`LEGACY_DEFAULTS` knows takes its old default (caches built before it existed).
    """
    h, w = flatten(_jsonable(have)), flatten(_jsonable(want))

    def get(k: str) -> Any:
        return h.get(k, LEGACY_DEFAULTS.get(k, "<absent>"))

    return [describe(k, get(k), w[k]) for k in w if not same_value(get(k), w[k])]
