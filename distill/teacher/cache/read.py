"""Read a teacher cache and refuse one that does not match the run.

``TeacherCache.open(path, expect)`` compares the manifest with what the caller expects
(teacher identity, preprocessing, class list, dataset fingerprint, templates) before it reads a
tensor, and raises :class:`CacheMismatchError` naming every differing field.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from distill.data.view_policy import CROP_PARAMS, LAM, PARAMS_LAYOUT, ViewPolicy
from distill.data.views import ViewConfig
from distill.errors import DistillError
from distill.records import (
    CACHE_BUILD_PLAN,
    CACHE_MANIFEST,
    TEXT_EMBEDDINGS,
    CacheFolder,
    CacheManifest,
    SkippedImage,
)
from distill.teacher.cache.compact import dense_logits, logit_columns, row_layout
from distill.teacher.cache.format import (
    DTYPES,
    FORMAT,
    MAPPED_KEYS,
    RESIDENT_KEYS,
    ROW_DTYPES,
    SPLIT_CODES,
    SUPPORTED_VERSIONS,
    load_verified,
)
from distill.teacher.cache.identity import CacheMismatchError, cached_sample_indices, check_manifest
from distill.teacher.cache.mapped import MappedFile, verify_once
from distill.teacher.cache.summary import CacheRows, adversarial_summary, cache_summary, zero_shot_accuracy
from distill.utils.io import read_json


class TeacherCache:
    """A complete teacher cache, memory-mapped: rows of teacher outputs, looked up by (sample, view).

    Opening reads the manifest, the text embeddings and the small index columns of every shard
    (:data:`RESIDENT_KEYS`: ``sample_index`` int64, ``view``/``domain``/``label`` int16, ``split``
    uint8: 15 bytes a row, plus 8 bytes a (sample, view) slot of the row lookup table, ~23 B a row
    in all, ~23 MB at 10^6 rows). Everything else stays in the shards, mapped
    (:class:`~distill.teacher.cache.mapped.MappedFile`) and gathered per batch by :meth:`lookup`:
    pages are shared through the page cache by every DataLoader worker and rank, and are not
    anonymous memory. Each shard's bytes are checked against the manifest's sha256 once and the
    check recorded (:func:`~distill.teacher.cache.mapped.verify_once`), so reopening stats files
    instead of reading them.

    Rows may be compact (:class:`~distill.records.CacheRowLayout`: top-k logits, no stored logits,
    no embeddings); :meth:`lookup` returns dense ``logits`` [B, C] whatever the layout
    (:mod:`~distill.teacher.cache.compact`), and ``image_emb`` only when the cache stores it.

    Attributes:
        path: the cache directory.
        manifest: the cache's :class:`~distill.records.CacheManifest` (``manifest.json``).
        index: the resident index columns, sorted by (sample_index, view).
        rows: :class:`CacheRows`, every column by name (mapped ones gathered on access):
            ``image_emb`` [N, D] and ``logits`` [N, C] (cache dtype), ``view_params`` [N, P] float32
            (P = 5 crop params, or :attr:`params_layout`), ``mix_partner`` [N] int64 and
            ``mix_view`` [N] int16 (the mixed-in row; -1: none), and the index columns.
        text_embeddings: [C, D] float32 zero-shot head.
    """

    def __init__(self, path: Path, manifest: CacheManifest, shards: list[MappedFile], text_embeddings: Tensor,
                 rebuild: str):
        self.path, self.manifest, self.text_embeddings = path, manifest, text_embeddings
        self.layout = row_layout(manifest)
        self._files = [s.path for s in shards]
        self._rebuild = rebuild
        self._maps: list[MappedFile | None] = list(shards)
        # the index columns, copied shard by shard into preallocated tensors: no per-shard copies held at once,
        # few temporaries (anonymous memory freed by Python is not always handed back to the OS)
        counts = torch.tensor([s.rows() for s in shards], dtype=torch.long)
        self._ends = counts.cumsum(0)  # shard k holds concatenated rows [ends[k] - counts[k], ends[k])
        self._starts = self._ends - counts
        N = int(counts.sum())
        index = {k: torch.empty(N, dtype=ROW_DTYPES[k]) for k in RESIDENT_KEYS}
        for s, a, b in zip(shards, self._starts.tolist(), self._ends.tolist()):
            for k in RESIDENT_KEYS:
                index[k][a:b] = s.tensor(k)
        V = self.views
        key = index["sample_index"] * V
        key += index["view"]
        self._src = None  # sorted row -> concatenated row (None: the shards are already in order, as built)
        if N > 1 and not bool((key[1:] >= key[:-1]).all()):
            order = torch.argsort(key, stable=True)
            index = {k: t[order] for k, t in index.items()}
            key, self._src = key[order], order
        self.index = index
        self.rows = CacheRows(self)
        size = int(key.max()) + 1 if N else 0  # = (max sample_index + 1) * V at most
        size = (size + V - 1) // V * V
        self._row_of = torch.full((size,), -1, dtype=torch.long)  # sample_index * V + view -> row
        self._row_of[key] = torch.arange(N)
        del key
        self._skipped = {s.sample_index: s for s in manifest.skipped if s.sample_index is not None}  # open() checks

    def __getstate__(self) -> dict:
        """Pickled to a spawned DataLoader worker: the maps are dropped (the worker maps the shards itself)."""
        return {**self.__dict__, "_maps": [None] * len(self._maps)}

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | Path, expect: Mapping[str, Any] | None = None, verify: bool = True) -> TeacherCache:
        """Open the cache at ``path``; with ``expect`` (see :func:`expected_identity`) refuse a mismatch.

        With ``verify`` (default) every shard's and the text embeddings' bytes are checked against
        the sha256 the manifest recorded at build time: once per file version, recorded in
        ``.verified.json`` (later opens stat the files; see :mod:`~distill.teacher.cache.mapped`).

        Raises:
            CacheMismatchError: the manifest differs from ``expect`` (message names each field).
            DistillError: not a cache, an unfinished build, or a missing/changed/corrupt shard.
        """
        path = Path(path)
        if not (path / CACHE_MANIFEST).exists():
            if (path / CACHE_BUILD_PLAN).exists():
                raise DistillError(f"{path}: unfinished teacher cache (no {CACHE_MANIFEST}); rerun the same "
                                   f"`distill cache build` to resume it")
            raise DistillError(f"{path}: not a teacher cache (no {CACHE_MANIFEST})")
        raw = read_json(path / CACHE_MANIFEST)  # the format is checked before the record is parsed
        if raw.get("preprocess", {}).get("exif_transpose") is not True:  # built before EXIF was applied
            raise CacheMismatchError(path, ["preprocess.exif_transpose: <absent> vs true (images are now read with "
                                            "their EXIF orientation applied)"])
        if raw.get("format") != FORMAT or raw.get("format_version") not in SUPPORTED_VERSIONS:
            raise DistillError(f"{path / CACHE_MANIFEST}: format {raw.get('format')!r} version "
                               f"{raw.get('format_version')!r}, this distill reads {FORMAT!r} versions "
                               f"{', '.join(map(str, SUPPORTED_VERSIONS))}; rebuild the cache")
        manifest = CacheManifest.from_dict(raw, path / CACHE_MANIFEST)
        lost = next((s for s in manifest.skipped if s.sample_index is None), None)  # every build records it
        if lost is not None:
            raise DistillError(f"{path / CACHE_MANIFEST}: skipped image {lost.path!r} has no sample_index; rebuild the cache")
        if expect:
            check_manifest(manifest, expect, path / CACHE_MANIFEST)
        rebuild = f"delete {path} and rebuild it with `distill cache build`"
        if verify:
            verify_once(path, [(s.file, s.sha256) for s in manifest.shards], rebuild)
        shards = []
        for shard in manifest.shards:
            mapped = MappedFile(path / shard.file, rebuild)
            n = mapped.rows()
            if n != shard.rows:
                raise DistillError(f"{mapped.path}: {n} rows, manifest says {shard.rows}; rebuild the cache")
            shards.append(mapped)
        text = load_verified(path / TEXT_EMBEDDINGS, manifest.text_embeddings_sha256 if verify else None,
                             rebuild)["text_embeddings"].float()
        return cls(path, manifest, shards, text, rebuild)

    # ------------------------------------------------------------------ mapped columns
    @property
    def stored_columns(self) -> tuple[str, ...]:
        """Every column :attr:`rows` serves: the index, the mapped ones, and the outputs the layout holds."""
        outs = (("image_emb",) if self.layout.embeddings else ()) + (("logits",) if self.has_logits else ())
        return (*outs, *RESIDENT_KEYS, *MAPPED_KEYS)

    @property
    def has_logits(self) -> bool:
        """Whether :meth:`lookup` can give teacher logits (stored, top-k, or recomputed from embeddings)."""
        return self.layout.logits != "none" or self.layout.embeddings

    def _map(self, k: int) -> MappedFile:
        m = self._maps[k]
        if m is None:
            m = self._maps[k] = MappedFile(self._files[k], self._rebuild)
        return m

    def _gather_stored(self, names: Sequence[str], row: Tensor) -> dict[str, Tensor]:
        """Stored tensors ``names`` of sorted rows ``row`` [B] (each in its stored dtype).

        Rows are grouped by shard and copied with ``numpy.take`` straight from the maps into one output
        per name (a torch op per shard and name costs ~10x numpy's call overhead; a batch of 256 random
        rows of a 10^6-row cache touches ~200 shards).
        """
        src = row if self._src is None else self._src.index_select(0, row)
        shard = torch.searchsorted(self._ends, src, right=True)
        order = torch.argsort(shard, stable=True)
        local = (src - self._starts.index_select(0, shard)).index_select(0, order).numpy()
        ks, counts = torch.unique_consecutive(shard.index_select(0, order), return_counts=True)
        bounds = [0, *counts.cumsum(0).tolist()]
        first = self._map(int(ks[0]))
        out = {}
        for name in names:
            like = first.array(name)
            shape, dtype = ((like.shape[1:], like.dtype) if like is not None
                            else ((), torch.empty(0, dtype=ROW_DTYPES[name]).numpy().dtype))
            out[name] = np.empty((len(row), *shape), dtype=dtype)
        for k, a, b in zip(ks.tolist(), bounds[:-1], bounds[1:]):
            m = self._map(k)
            for name in names:
                arr = m.array(name)
                if arr is None:  # a version-1 shard: no mix columns
                    out[name][a:b] = -1
                else:
                    np.take(arr, local[a:b], axis=0, out=out[name][a:b], mode="clip")
        back = torch.empty_like(order)
        back[order] = torch.arange(len(order))
        return {name: torch.from_numpy(o).index_select(0, back) for name, o in out.items()}

    def gather(self, name: str, row: Tensor) -> Tensor:
        """Column ``name`` of sorted rows ``row`` [B]: ``logits`` dense [B, C] in the cache dtype whatever the
        layout; the others as stored (index columns from memory)."""
        row = torch.as_tensor(row, dtype=torch.long)
        if name in self.index:
            return self.index[name].index_select(0, row)
        if name == "logits":
            return self._logits(row).to(DTYPES[self.manifest.dtype])
        if name == "image_emb" and not self.layout.embeddings:
            raise DistillError(f"{self.path}: the cache stores no image embeddings (built with --no-embeddings); "
                               "rebuild it with embeddings for a strategy that matches them")
        if name not in MAPPED_KEYS + ("image_emb",):
            raise KeyError(name)
        if not len(row):
            return self._empty(name)
        return self._gather_stored([name], row)[name]

    def _empty(self, name: str) -> Tensor:
        dt = DTYPES[self.manifest.dtype]
        if name == "image_emb":
            return torch.zeros(0, self.manifest.embed_dim, dtype=dt)
        if name == "view_params":
            return torch.zeros(0, len(self.params_layout), dtype=torch.float32)
        return torch.zeros(0, dtype=ROW_DTYPES[name])

    def _logits(self, row: Tensor) -> Tensor:
        """Dense float32 logits [B, C] of sorted rows ``row``, from the stored columns of the layout."""
        C = self.manifest.num_classes
        if not len(row):
            return torch.zeros(0, C)
        stored = self._gather_stored(logit_columns(self.layout), row)
        return dense_logits(self.layout, stored, self.text_embeddings)

    # ------------------------------------------------------------------ metadata
    @property
    def classes(self) -> list[str]:
        return list(self.manifest.classes)

    @property
    def domains(self) -> list[str]:
        """The labelled domains under the root it was built from (not the unlabeled folders)."""
        return list(self.manifest.dataset.domains)

    @property
    def folders(self) -> list[CacheFolder]:
        """The unlabeled folders outside the root it holds rows of (``cache build --unlabeled``)."""
        return list(self.manifest.dataset.unlabeled_folders or [])

    @property
    def views(self) -> int:
        return int(self.manifest.views.count)

    @property
    def view_seed(self) -> int:
        """Seed of the augmented views' crops (training replays the same views)."""
        return int(self.manifest.views.seed)

    @property
    def view_config(self) -> ViewConfig:
        """Crop/flip settings of views 1.. as built."""
        return ViewConfig.from_dict(self.manifest.views.augment)

    @property
    def view_policy(self) -> ViewPolicy | None:
        """The augmented-view policy the cache was built with; None for a crop-only (or version-1) cache."""
        p = self.manifest.views.policy
        return None if p is None else ViewPolicy.from_dict(p)

    @property
    def params_layout(self) -> tuple[str, ...]:
        """Names of the ``view_params`` columns."""
        return tuple(self.manifest.views.params_layout or PARAMS_LAYOUT[:CROP_PARAMS])

    @property
    def templates(self) -> list[str]:
        return list(self.manifest.templates)

    @property
    def skipped(self) -> list[SkippedImage]:
        """Images the build could not decode (no row holds them)."""
        return list(self.manifest.skipped)

    def sample_indices(self) -> dict[str, Tensor]:
        """Root domain -> the sorted sample indices the cache gave its images (rows and skipped images), for
        :func:`~distill.teacher.cache.identity.check_sample_indices`."""
        return cached_sample_indices(self.domains, self.index["sample_index"], self.index["domain"], self.skipped)

    def __len__(self) -> int:
        return len(self.index["sample_index"])

    def __repr__(self) -> str:
        t = self.manifest.teacher
        return (f"TeacherCache({str(self.path)!r}, teacher={t.arch}/{t.pretrained}, rows={len(self)}, "
                f"views={self.views}, domains={self.domains})")

    # ------------------------------------------------------------------ access
    def lookup(self, sample_index: Tensor, view: Tensor, outputs: bool = True) -> dict[str, Tensor]:
        """Rows of B (sample, view) pairs, gathered from the mapped shards; vectorized, O(B).

        Args:
            sample_index: [B] dataset sample indices.
            view: [B] view numbers in ``[0, views)``.
            outputs: also the teacher's outputs (``logits``, ``image_emb``); False: the view columns and
                labels only (e.g. every item's view params at start-up, without gathering every row's logits).

        Returns:
            ``logits`` [B, C] float32 (dense whatever the layout; absent only when the cache holds
            neither logits nor embeddings), ``image_emb`` [B, D] float32 (when stored),
            ``view_params`` [B, P] float32, ``label`` [B] int64, ``domain`` [B] int64, and the mix:
            ``mix_partner`` [B] int64 (sample index, -1 none), ``mix_view`` [B] int64 (-1 none),
            ``mix_lam`` [B] float32 (the own image's share; 1.0 unmixed).

        Raises:
            DistillError: a requested row is not in the cache (skipped image, other domain...).
        """
        row = self._rows_of(sample_index, view)
        names = [*MAPPED_KEYS, *(("image_emb",) if self.layout.embeddings and outputs else ())]
        names += [n for n in logit_columns(self.layout) if n not in names] if self.has_logits and outputs else []
        g = self._gather_stored(names, row) if len(row) else {n: self._empty(n) for n in MAPPED_KEYS}
        params, partner = g["view_params"], g["mix_partner"]
        lam = params[:, LAM] if params.shape[1] > LAM else torch.ones(len(row), dtype=torch.float32)
        out = {"view_params": params,
               "label": self.index["label"].index_select(0, row).long(),
               "domain": self.index["domain"].index_select(0, row).long(),
               "mix_partner": partner,
               "mix_view": g["mix_view"].long(),
               "mix_lam": torch.where(partner >= 0, lam, torch.ones_like(lam)).contiguous()}
        if self.layout.embeddings and outputs:
            out["image_emb"] = g["image_emb"].float() if len(row) else self._empty("image_emb").float()
        if self.has_logits and outputs:
            out["logits"] = (dense_logits(self.layout, g, self.text_embeddings) if len(row)
                             else torch.zeros(0, self.manifest.num_classes))
        return out

    def _rows_of(self, sample_index: Tensor, view: Tensor) -> Tensor:
        """[B] sorted row numbers of (sample, view) pairs; a missing one is a DistillError naming why."""
        # rows live on the CPU; indices may come from a batch already on the GPU
        si = torch.as_tensor(sample_index, dtype=torch.long).cpu()
        v = torch.as_tensor(view, dtype=torch.long).cpu()
        key = si * self.views + v
        valid = (v >= 0) & (v < self.views) & (key >= 0) & (key < len(self._row_of))
        row = torch.where(valid, self._row_of.index_select(0, torch.where(valid, key, 0)) if len(self._row_of)
                          else key, -1)
        if bool((row < 0).any()):
            missing = (row < 0).nonzero().squeeze(1)
            s, w = int(si[missing[0]]), int(v[missing[0]])
            why = (f"image skipped at build: {self._skipped[s].path} ({self._skipped[s].reason})"
                   if s in self._skipped else f"cache holds views 0..{self.views - 1} of domains "
                   f"{self.domains + [f.name for f in self.folders]}")
            raise DistillError(f"{self.path}: no cached row for sample {s} view {w} "
                               f"({len(missing)} of {len(key)} requested rows missing; {why})")
        return row

    def predictions(self, row: Tensor, chunk: int = 65536) -> Tensor:
        """[M] int64 argmax of the teacher's logits (as stored) on sorted rows ``row``, one chunk at a time."""
        row = torch.as_tensor(row, dtype=torch.long)
        return torch.cat([self.gather("logits", row[i:i + chunk]).float().argmax(1)
                          for i in range(0, len(row), chunk)] or [torch.zeros(0, dtype=torch.long)])

    def row_ids(self, split: str | None = None, domains: Sequence[str] | None = None,
                view: int | None = None) -> Tensor:
        """[M] int64 row numbers (into :attr:`rows` and :meth:`gather`) of the given split, domains and view (default: all)."""
        keep = torch.ones(len(self), dtype=torch.bool)
        if split is not None:
            if split not in SPLIT_CODES:
                raise DistillError(f"split must be one of {', '.join(SPLIT_CODES)}, got '{split}'")
            keep &= self.index["split"] == SPLIT_CODES[split]
        if domains is not None:
            ids = []
            for d in domains:
                if d not in self.domains:
                    raise DistillError(f"domain '{d}' is not in cache {self.path} (has: {', '.join(self.domains)})")
                ids.append(self.domains.index(d))
            keep &= torch.isin(self.index["domain"].long(), torch.tensor(ids, dtype=torch.long))
        if view is not None:
            keep &= self.index["view"] == view
        return keep.nonzero().squeeze(1)

    def summary(self) -> dict[str, Any]:
        """What ``distill cache inspect`` shows: identity, sizes, bytes per row, accuracy, compute saved."""
        return cache_summary(self)

    def adversarial_summary(self) -> dict[str, Any] | None:
        """The cache's adversarial views: None if none, else their plan, size and the teacher's accuracy."""
        return adversarial_summary(self)

    def zero_shot_accuracy(self) -> dict[str, dict[str, float]]:
        """``{domain: {split: accuracy}}`` of the teacher's view-0 zero-shot logits vs labels."""
        return zero_shot_accuracy(self)

    def bytes_per_row(self) -> float | None:
        """Shard bytes (headers included) per row: what a row costs on disk and in the page cache."""
        return round(sum(s.bytes for s in self.manifest.shards) / len(self), 1) if len(self) else None
