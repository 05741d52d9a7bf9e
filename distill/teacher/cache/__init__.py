"""The teacher cache: the frozen teacher's outputs on disk, the spine every later stage reads.

Run the teacher once (:func:`build_cache`), then train any number of students from the cache
(:class:`TeacherCache`). The directory is an artifact a person can read: ``manifest.json``
records the teacher identity, prompts, classes, preprocessing, dataset fingerprint, views and
shapes; readers compare it with what the run expects and refuse a mismatch.

One job per module:
    - :mod:`distill.teacher.cache_format`: directory layout, shard schema, field comparison.
    - :mod:`distill.teacher.cache_build`: the resumable, distributed builder.
    - :mod:`distill.teacher.cache_read`: the reader and the expectation check.
    - :mod:`distill.teacher.cache_pixels`: the views' pixels at the student's size (no decoding).
    - :mod:`distill.teacher.views`: view params (crop box + flip) and their replay.
"""
from __future__ import annotations

from distill.teacher.cache_build import SHARD_DELAY_ENV, build_cache, make_plan
from distill.teacher.cache_format import BUILD_PLAN, MANIFEST, TEXT_EMBEDDINGS, shard_name
from distill.teacher.cache_read import (
    CacheMismatchError, TeacherCache, check_manifest, dataset_expectation, expected_identity,
)
from distill.teacher.views import ViewConfig, apply_view, view_params

__all__ = [
    "BUILD_PLAN", "MANIFEST", "SHARD_DELAY_ENV", "TEXT_EMBEDDINGS", "CacheMismatchError", "TeacherCache",
    "ViewConfig", "apply_view", "build_cache", "check_manifest", "dataset_expectation", "expected_identity", "make_plan",
    "shard_name", "view_params",
]
