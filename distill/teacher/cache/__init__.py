"""The teacher cache: the frozen teacher's outputs on disk, the spine every later stage reads.

Run the teacher once (:func:`build_cache`), then train any number of students from the cache
(:class:`TeacherCache`). The directory is an artifact a person can read: ``manifest.json``
records the teacher identity, prompts, classes, preprocessing, dataset fingerprint, views and
shapes; readers compare it with what the run expects and refuse a mismatch.

This package's public API is what this module exports; one job per module:
    - :mod:`~distill.teacher.cache.format`: directory layout, shard schema, verified reads.
    - :mod:`~distill.teacher.cache.identity`: the one identity check (manifest vs expectation).
    - :mod:`~distill.teacher.cache.shards`: the one resumable, distributed shard writer and build skeleton.
    - :mod:`~distill.teacher.cache.options`: typed build settings.
    - :mod:`~distill.teacher.cache.build`: the builder (:mod:`~distill.teacher.cache.inputs`: its decode path).
    - :mod:`~distill.teacher.cache.job`: one build as one typed config (``distill cache build``,
      ``distill.build_cache``): data, split rule and teacher resolved, then the builder run.
    - :mod:`~distill.teacher.cache.read`: the reader (memory-mapped; :mod:`~distill.teacher.cache.mapped`: the
      maps and the verify-once record; :mod:`~distill.teacher.cache.summary`: whole-cache views).
    - :mod:`~distill.teacher.cache.compact`: compact rows (top-k / recomputed logits, no embeddings).
    - :mod:`~distill.teacher.cache.adversarial`: PGD views crafted once against the teacher.
    - :mod:`~distill.teacher.cache.pixels`: the views' pixels at the student's size (no decoding); read by
      :mod:`~distill.teacher.cache.pixel_store`, raw or compressed (:mod:`~distill.teacher.cache.pixel_codecs`).
    - :mod:`distill.data.views`: view params (crop box + flip) and their replay.
"""
from __future__ import annotations

from distill.data.views import ViewConfig, apply_view, view_params
from distill.teacher.cache.adversarial import AdversarialViews, build_adversarial_views
from distill.teacher.cache.build import SHARD_DELAY_ENV, build_cache, make_plan
from distill.teacher.cache.format import shard_name
from distill.teacher.cache.identity import (
    CacheMismatchError,
    check_manifest,
    check_sample_indices,
    dataset_expectation,
    diff_fields,
    expected_identity,
    identity_diffs,
)
from distill.teacher.cache.job import CacheBuildConfig, run_cache_build
from distill.teacher.cache.options import AdversarialOptions, CacheOptions, PixelOptions
from distill.teacher.cache.pixel_store import PixelStore, find_pixel_store
from distill.teacher.cache.pixels import build_pixel_store, parse_sizes, pixel_dir_name
from distill.teacher.cache.read import TeacherCache

__all__ = [
    "SHARD_DELAY_ENV", "AdversarialOptions", "CacheBuildConfig", "run_cache_build",
    "AdversarialViews", "CacheMismatchError", "CacheOptions", "PixelOptions", "PixelStore", "TeacherCache",
    "ViewConfig", "apply_view", "build_adversarial_views", "build_cache", "build_pixel_store", "check_manifest",
    "check_sample_indices", "dataset_expectation", "diff_fields", "expected_identity", "find_pixel_store",
    "identity_diffs", "make_plan", "parse_sizes", "pixel_dir_name", "shard_name", "view_params",
]
