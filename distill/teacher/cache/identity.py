"""What a teacher cache *is*, and the one check that compares it with what a run expects.

Every reader of a cache artifact (the cache itself, its adversarial views, its pixel stores,
a resumed build's plan) asks the same question: does the manifest on disk describe what this
run expects, and if not, which fields differ? :func:`identity_diffs` answers it, once; the
callers only word the refusal (``CacheMismatchError`` for the cache, their own line for the
adversarial views and pixel stores).

Values compare as JSON (tuples are lists), floats within :data:`FLOAT_RTOL`, and a field added
after format version 1 shipped takes its old value (:data:`LEGACY_DEFAULTS`) when absent.

The identity pins the cached domains' files, not where data.root numbers them: rows are keyed by
sample index, a position among *all* the root's images. :func:`check_sample_indices` is the
second question every reader of rows asks (after the identity): do the cache's images still sit at
the indices its rows name?
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from distill.data.folder import STUDENT_SPLITS, DomainFolder
from distill.errors import DistillError
from distill.records import CACHE_MANIFEST, CacheManifest, SkippedImage
from distill.teacher.cache.format import read_shard_columns

# Recorded in the manifest but not part of what a cached output means.
TEACHER_UNCOMPARED = ("open_clip_version", "torch_version")

#: Fields added to the identity after format version 1 shipped, with the value every older cache had.
LEGACY_DEFAULTS: dict[str, Any] = {"teacher.precision": "fp32", "dataset.pretrain_fraction": 0.0}

#: Relative tolerance of float fields (logit scale, mean/std, crop ranges, epsilons). A CUDA exp or
#: a JSON round trip moves the last digit (``teacher.logit_scale: 14.285714 vs 14.285715`` failed
#: a GPU-built cache on a CPU); a real difference (another teacher, other preprocessing) is far larger.
FLOAT_RTOL = 1e-6

#: Where each key of :func:`expected_identity` lives in a cache manifest.
CACHE_LAYOUT: dict[str, tuple[str, ...]] = {
    "teacher": ("teacher",),
    "preprocess": ("preprocess",),
    "classes": ("classes",),
    "dataset_fingerprint": ("dataset", "fingerprint"),
    "templates": ("templates",),
    "dataset": ("dataset",),
    "content_fingerprint": ("dataset", "content_fingerprint"),
}


# ---------------------------------------------------------------------- comparing values
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


def same_value(a: Any, b: Any) -> bool:
    """Equality, except that floats (also inside lists) match within :data:`FLOAT_RTOL`."""

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


# ---------------------------------------------------------------------- identity
def identity_diffs(manifest: Mapping[str, Any], expect: Mapping[str, Any],
                   layout: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """``"field: manifest's vs expected"`` for each field where ``manifest`` differs from ``expect``.

    The one identity check of the cache and its companions (adversarial views, pixel stores,
    resumed build plans); callers word the refusal.

    Args:
        manifest: a manifest or plan as read from disk (a dict).
        expect: what the run expects. With ``layout``, its keys are the layout's (see
            :func:`expected_identity` for the cache's); without, they are top-level keys of
            ``manifest`` (a plan compared with a plan).
        layout: expect key -> its path in ``manifest``; a field is named by that path, dotted.
            The ``teacher`` key is compared without the library versions
            (:data:`TEACHER_UNCOMPARED`); ``dataset`` compares each fingerprint input the
            manifest records (older caches record fewer).

    Raises:
        ValueError: ``expect`` has a key the layout does not know (a programming error).
    """
    if layout is None:
        return diff_fields(manifest, expect)
    unknown = set(expect) - set(layout)
    if unknown:
        raise ValueError(f"unknown expect key(s) {sorted(unknown)}; known: {', '.join(layout)}")
    have, want = {}, {}
    for key, value in expect.items():
        if key == "teacher":
            value = {k: v for k, v in value.items() if k not in TEACHER_UNCOMPARED}
        node: Any = manifest
        for part in layout[key]:
            node = node.get(part, "<absent>") if isinstance(node, Mapping) else "<absent>"
        if key == "dataset":  # each fingerprint input the manifest records, before the fingerprint itself
            node = node if isinstance(node, Mapping) else {}
            for k, v in value.items():
                if k in node:
                    have[f"dataset.{k}"], want[f"dataset.{k}"] = node[k], v
            continue
        name = ".".join(layout[key])
        have[name], want[name] = node, value
    return diff_fields(have, want)


#: what a mismatching cache's refusal says to do, unless a caller knows better (:class:`CacheMismatchError`)
REBUILD_ADVICE = "rebuild it with `distill cache build` or point to the matching cache"


class CacheMismatchError(DistillError):
    """A cache whose manifest differs from what the run expects. ``.fields`` lists the differences."""

    def __init__(self, path: str | Path, fields: list[str], advice: str = REBUILD_ADVICE):
        self.path, self.fields, self.advice = str(path), fields, advice
        super().__init__(f"{path}: teacher cache does not match this run (cache vs expected: {'; '.join(fields)}); "
                         f"{advice}")


def expected_identity(
    teacher_identity: Mapping[str, Any] | None = None,
    preprocess: Mapping[str, Any] | None = None,
    classes: Sequence[str] | None = None,
    dataset_fingerprint: str | None = None,
    templates: Sequence[str] | None = None,
    dataset: Mapping[str, Any] | None = None,
    content_fingerprint: str | None = None,
) -> dict:
    """What a run expects of a cache, for ``TeacherCache.open(path, expect=...)``.

    Pass only what the run knows (``None`` is not checked); a trainer that never loads the
    teacher can still name its arch/pretrained tag, preprocessing, classes and data.
    Library versions in a teacher identity are recorded in the manifest but not compared.

    Args:
        teacher_identity: ``Teacher.identity()`` or a subset such as ``{"arch": ..., "pretrained": ...}``.
        preprocess: ``Teacher.preprocess_info.to_dict()`` or a subset (``{"mean": ..., "std": ...}``).
        classes: class names in label order.
        dataset_fingerprint: ``DomainFolder.fingerprint(domains)``.
        templates: prompt templates.
        dataset: ``DomainFolder.fingerprint_inputs(domains)``: the split rule, domains, image count
            and file list the fingerprint is made of, so a mismatch names the field that differs
            (compared where the manifest records them; older caches record fewer).
        content_fingerprint: ``distill.data.fingerprint.content_fingerprint(dataset, domains)``; pass it
            when the manifest records one (``cache build --fingerprint content``).
    """
    expect: dict[str, Any] = {}
    if teacher_identity is not None:
        expect["teacher"] = {k: v for k, v in teacher_identity.items() if k not in TEACHER_UNCOMPARED}
    if preprocess is not None:
        expect["preprocess"] = dict(preprocess)
    if classes is not None:
        expect["classes"] = list(classes)
    if dataset is not None:  # before the fingerprint: the named field is what a user can act on
        expect["dataset"] = dict(dataset)
    if dataset_fingerprint is not None:
        expect["dataset_fingerprint"] = str(dataset_fingerprint)
    if templates is not None:
        expect["templates"] = list(templates)
    if content_fingerprint is not None:
        expect["content_fingerprint"] = str(content_fingerprint)
    return expect


def check_manifest(manifest: CacheManifest | Mapping[str, Any], expect: Mapping[str, Any],
                   path: str | Path = CACHE_MANIFEST) -> None:
    """Raise :class:`CacheMismatchError` naming each field where ``manifest`` differs from ``expect``."""
    as_built = manifest.to_dict() if isinstance(manifest, CacheManifest) else manifest
    fields = identity_diffs(as_built, expect, CACHE_LAYOUT)
    if fields:
        raise CacheMismatchError(path, fields)


def dataset_expectation(path: str | Path, manifest: CacheManifest, dataset: DomainFolder) -> dict:
    """A run's expectation of the data behind the cache at ``path``: the fingerprint inputs of
    ``dataset`` (a :class:`~distill.data.folder.DomainFolder`) over the cache's domains.

    Raises:
        CacheMismatchError: the cache holds domains that ``dataset`` lacks: a cache of another
            data set (its fingerprint cannot even be computed), named as such rather than as a
            missing domain.
    """
    built = manifest.dataset
    domains = list(built.domains)
    missing = [d for d in domains if d not in dataset.domains]
    if missing:
        raise CacheMismatchError(path, [
            f"dataset.domains: {shorten(domains)} vs {shorten(dataset.domains)} (the cache was built from "
            f"{built.root or 'another data set'}; this run's data.root is {dataset.root})"])
    return dataset.fingerprint_inputs(domains)


# ---------------------------------------------------------------------- sample indices
def cached_sample_indices(domains: Sequence[str], sample_index: Tensor, domain: Tensor,
                          skipped: Iterable[SkippedImage]) -> dict[str, Tensor]:
    """Root domain -> the sorted sample indices a cache gave that domain's images: its rows' and its skipped images'.

    Args:
        domains: the cache's root domains (``manifest.dataset.domains``); rows of its unlabeled folders
            (domain ids past them) are left out: :meth:`~distill.data.folder.DomainFolder.add_folder` checks
            where those start.
        sample_index, domain: the rows' columns (``domain`` indexes the cache's domains).
        skipped: the images the build could not decode (no row holds them).
    """
    skipped = list(skipped)
    index, ids = sample_index.long(), domain.long()
    out = {}
    for i, name in enumerate(domains):
        lost = torch.tensor([k.sample_index for k in skipped if k.path.split("/", 1)[0] == name], dtype=torch.long)
        out[name] = torch.unique(torch.cat([index[ids == i], lost]))
    return out


def stored_sample_indices(cache_dir: str | Path, manifest: CacheManifest) -> dict[str, Tensor]:
    """:func:`cached_sample_indices` of the complete cache at ``cache_dir``, from its shards' index columns only."""
    none = torch.zeros(0, dtype=torch.long)
    columns = [read_shard_columns(Path(cache_dir) / s.file, ("sample_index", "domain")) for s in manifest.shards]
    return cached_sample_indices(manifest.dataset.domains, torch.cat([c["sample_index"] for c in columns] or [none]),
                                 torch.cat([c["domain"] for c in columns] or [none]), manifest.skipped)


def check_sample_indices(path: str | Path, cached: Mapping[str, Tensor], dataset: DomainFolder) -> None:
    """Refuse a cache whose images sit at other sample indices in ``dataset`` (a
    :class:`~distill.data.folder.DomainFolder`) than the ones its rows name.

    A domain added to data.root (or removed from it) that sorts before a cached one moves every index of that
    domain while its fingerprint still matches: each row would be read for another image. Call it after the
    identity check (:func:`check_manifest`): a cached domain's file list is then the one the cache was built from,
    so its indices can only have moved all together, and the cache's indices being among the domain's current
    ones means they did not move (exact for a cache of every image of a domain, as ``cache build`` makes; never a
    false refusal). Checked from the rows themselves, so a cache built before this check is checked too.

    Args:
        path: the cache (named in the message).
        cached: :func:`cached_sample_indices` of the cache (:meth:`TeacherCache.sample_indices`,
            :func:`stored_sample_indices`).
        dataset: this run's data.

    Raises:
        DistillError: one line naming the cache, the domain, both index ranges and what to do.
    """
    now: dict[str, list[int]] = {name: [] for name in cached}
    for sample in dataset.samples:  # the cache holds what select() gives by default: never the teacher's pool
        if sample.domain in now and sample.split in STUDENT_SPLITS:
            now[sample.domain].append(sample.index)
    for name, have in cached.items():
        want = torch.tensor(now[name], dtype=torch.long)
        if not len(have) or bool(torch.isin(have, want).all()):
            continue
        moved = f"{int(want.min())}..{int(want.max())}" if len(want) else "none"
        raise DistillError(
            f"{path}: the cache holds domain '{name}' at sample indices {int(have.min())}..{int(have.max())}, but "
            f"{dataset.root} now numbers its images {moved}: the data root gained or lost domains before '{name}' "
            "since the cache was built (sample indices count every domain under it), so each row would be read for "
            f"another image; rebuild the cache, or move the new domain out of {dataset.root}")
