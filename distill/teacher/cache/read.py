"""Read a teacher cache and refuse one that does not match the run.

``TeacherCache.open(path, expect)`` compares the manifest with what the caller expects
(teacher identity, preprocessing, class list, dataset fingerprint, templates) before it reads a
tensor, and raises :class:`CacheMismatchError` naming every differing field.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from pydantic import BaseModel
from torch import Tensor

from distill.data.view_policy import CROP_PARAMS, LAM, PARAMS_LAYOUT, ViewPolicy
from distill.data.views import ViewConfig
from distill.errors import DistillError
from distill.records import (
    CACHE_ADVERSARIAL_DIR, CACHE_BUILD_PLAN, CACHE_MANIFEST, TEXT_EMBEDDINGS, CacheFolder, CacheManifest, SkippedImage,
)
from distill.teacher.cache.adversarial import AdversarialViews
from distill.teacher.cache.format import FORMAT, ROW_KEYS, SPLIT_CODES, SUPPORTED_VERSIONS, load_verified, upgrade_rows
from distill.teacher.cache.identity import CacheMismatchError, cached_sample_indices, check_manifest
from distill.utils.io import read_json


def _as_built(block: BaseModel) -> dict[str, Any]:
    """A manifest block as the build wrote it (keys it did not set stay absent)."""
    return block.model_dump(mode="json", exclude_unset=True)


class TeacherCache:
    """A complete teacher cache in memory: rows of teacher outputs, looked up by (sample, view).

    All rows are loaded into memory (at fp16 a 1M-row, D=512 cache is ~1 GB). Past that, the
    scaling path is to memory-map the shards (``safetensors.safe_open`` slices) and keep only
    the [N] index columns resident; :meth:`lookup` would gather from the mapped shards.

    Attributes:
        path: the cache directory.
        manifest: the cache's :class:`~distill.records.CacheManifest` (``manifest.json``).
        rows: ``{name: Tensor}`` of all rows sorted by (sample_index, view): ``image_emb`` [N, D]
            and ``logits`` [N, C] (cache dtype), ``sample_index`` [N] int64, ``view`` [N] int16,
            ``domain`` [N] int16, ``label`` [N] int16, ``split`` [N] uint8 (0 train, 1 test),
            ``view_params`` [N, P] float32 (P = 5 crop params, or :attr:`params_layout`),
            ``mix_partner`` [N] int64 and ``mix_view`` [N] int16 (the mixed-in row; -1: none).
        text_embeddings: [C, D] float32 zero-shot head.
    """

    def __init__(self, path: Path, manifest: CacheManifest, rows: dict[str, Tensor], text_embeddings: Tensor):
        self.path, self.manifest, self.rows, self.text_embeddings = path, manifest, rows, text_embeddings
        V = self.views
        si, v = rows["sample_index"], rows["view"].long()
        size = (int(si.max()) + 1) * V if len(si) else 0
        self._row_of = torch.full((size,), -1, dtype=torch.long)  # sample_index * V + view -> row
        self._row_of[si * V + v] = torch.arange(len(si))
        self._skipped = {int(s.sample_index): s for s in manifest.skipped}

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | Path, expect: Mapping[str, Any] | None = None, verify: bool = True) -> TeacherCache:
        """Load the cache at ``path``; with ``expect`` (see :func:`expected_identity`) refuse a mismatch.

        With ``verify`` (default) every shard's and the text embeddings' bytes are checked against
        the sha256 the manifest recorded at build time, as they are read (one pass, in memory).

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
        if expect:
            check_manifest(manifest, expect, path / CACHE_MANIFEST)
        parts = []
        rebuild = f"delete {path} and rebuild it with `distill cache build`"
        for shard in manifest.shards:
            file = path / shard.file
            part = load_verified(file, shard.sha256 if verify else None, rebuild)
            if len(part["sample_index"]) != shard.rows:
                raise DistillError(f"{file}: {len(part['sample_index'])} rows, manifest says {shard.rows}; "
                                   f"rebuild the cache")
            parts.append(upgrade_rows(part))
        rows = {k: torch.cat([p[k] for p in parts]) for k in ROW_KEYS}
        order = torch.argsort(rows["sample_index"] * manifest.views.count + rows["view"].long(), stable=True)
        if not torch.equal(order, torch.arange(len(order))):
            rows = {k: t[order] for k, t in rows.items()}
        text = load_verified(path / TEXT_EMBEDDINGS, manifest.text_embeddings_sha256 if verify else None,
                             rebuild)["text_embeddings"].float()
        return cls(path, manifest, rows, text)

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
        return cached_sample_indices(self.domains, self.rows["sample_index"], self.rows["domain"], self.skipped)

    def __len__(self) -> int:
        return len(self.rows["sample_index"])

    def __repr__(self) -> str:
        t = self.manifest.teacher
        return (f"TeacherCache({str(self.path)!r}, teacher={t.arch}/{t.pretrained}, rows={len(self)}, "
                f"views={self.views}, domains={self.domains})")

    # ------------------------------------------------------------------ access
    def lookup(self, sample_index: Tensor, view: Tensor) -> dict[str, Tensor]:
        """Rows of B (sample, view) pairs; vectorized, O(B).

        Args:
            sample_index: [B] dataset sample indices.
            view: [B] view numbers in ``[0, views)``.

        Returns:
            ``image_emb`` [B, D] and ``logits`` [B, C] float32, ``view_params`` [B, P] float32,
            ``label`` [B] int64, ``domain`` [B] int64, and the mix: ``mix_partner`` [B] int64
            (sample index, -1 none), ``mix_view`` [B] int64 (-1 none), ``mix_lam`` [B] float32
            (the own image's share; 1.0 unmixed).

        Raises:
            DistillError: a requested row is not in the cache (skipped image, other domain...).
        """
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
        r = self.rows
        params = r["view_params"].index_select(0, row)
        partner = r["mix_partner"].index_select(0, row)
        lam = params[:, LAM] if params.shape[1] > LAM else torch.ones(len(row), dtype=torch.float32)
        return {"image_emb": r["image_emb"].index_select(0, row).float(),
                "logits": r["logits"].index_select(0, row).float(),
                "view_params": params,
                "label": r["label"].index_select(0, row).long(),
                "domain": r["domain"].index_select(0, row).long(),
                "mix_partner": partner,
                "mix_view": r["mix_view"].index_select(0, row).long(),
                "mix_lam": torch.where(partner >= 0, lam, torch.ones_like(lam)).contiguous()}

    def row_ids(self, split: str | None = None, domains: Sequence[str] | None = None,
                view: int | None = None) -> Tensor:
        """[M] int64 row numbers (into :attr:`rows`) of the given split, domains and view (default: all)."""
        keep = torch.ones(len(self), dtype=torch.bool)
        if split is not None:
            if split not in SPLIT_CODES:
                raise DistillError(f"split must be one of {', '.join(SPLIT_CODES)}, got '{split}'")
            keep &= self.rows["split"] == SPLIT_CODES[split]
        if domains is not None:
            ids = []
            for d in domains:
                if d not in self.domains:
                    raise DistillError(f"domain '{d}' is not in cache {self.path} (has: {', '.join(self.domains)})")
                ids.append(self.domains.index(d))
            keep &= torch.isin(self.rows["domain"].long(), torch.tensor(ids, dtype=torch.long))
        if view is not None:
            keep &= self.rows["view"] == view
        return keep.nonzero().squeeze(1)

    def summary(self) -> dict[str, Any]:
        """What ``distill cache inspect`` shows: identity, sizes, accuracy, compute saved."""
        m = self.manifest
        train_rows = int((self.rows["split"] == SPLIT_CODES["train"]).sum())
        flops = m.teacher_flops_per_image
        return {
            "path": str(self.path),
            "teacher": _as_built(m.teacher),
            "templates": len(m.templates),
            "classes": self.classes,
            "domains": self.domains,
            "dataset_fingerprint": m.dataset.fingerprint,
            "images": m.dataset.cached_images,
            "rows": len(self),
            "views": self.views,
            "view_seed": m.views.seed,
            "augment": m.views.augment,
            "policy": m.views.policy,
            "dtype": m.dtype,
            "shapes": m.shapes,
            "shards": len(m.shards),
            "size_bytes": sum(f.stat().st_size for f in self.path.iterdir() if f.is_file()),
            "skipped": [_as_built(k) for k in m.skipped],
            "zero_shot_accuracy": self.zero_shot_accuracy(),
            "teacher_flops_per_image": flops,
            "train_rows": train_rows,
            "teacher_flops_saved_per_epoch": None if flops is None else flops * train_rows,
            "created": m.created,
            "distill_version": m.distill_version,
            "adversarial": self.adversarial_summary(),
            **({"unlabeled_folders": [f.model_dump(mode="json", exclude_none=True) for f in self.folders]}
               if self.folders else {}),
        }

    def adversarial_summary(self) -> dict[str, Any] | None:
        """The cache's adversarial views (``CACHE/adversarial``): None if there are none, else their plan,
        row count, size and the teacher's accuracy on them next to its accuracy on the same images clean."""
        adv_dir = self.path / CACHE_ADVERSARIAL_DIR
        if not adv_dir.is_dir():
            return None
        if not AdversarialViews.exists(self.path):
            return {"complete": False, "path": str(adv_dir)}
        views = AdversarialViews.open(self.path, self.manifest)
        m = views.manifest
        si = views.rows["sample_index"].long()
        v0 = self.rows["view"] == 0
        label = torch.full((int(self.rows["sample_index"].max()) + 1,), -1, dtype=torch.long)
        label[self.rows["sample_index"][v0].long()] = self.rows["label"][v0].long()
        clean = torch.full_like(label, -1)
        clean[self.rows["sample_index"][v0].long()] = self.rows["logits"][v0].float().argmax(1)
        adv_pred = views.rows["logits"].float().argmax(1)
        return {
            "complete": True, "path": str(adv_dir), "rows": m.rows, "images": m.images,
            "views": m.views, "epsilon": m.epsilon, "step_size": m.step_size, "steps": m.steps,
            "seed": m.seed, "domains": m.domains, "split": m.split, "objective": m.objective,
            "size_bytes": sum(f.stat().st_size for f in adv_dir.iterdir() if f.is_file()),
            "teacher_accuracy_clean": float((clean[si] == label[si]).float().mean()) if len(si) else None,
            "teacher_accuracy_adversarial": float((adv_pred == label[si]).float().mean()) if len(si) else None,
        }

    def zero_shot_accuracy(self) -> dict[str, dict[str, float]]:
        """``{domain: {split: accuracy}}`` of the teacher's view-0 zero-shot logits vs labels."""
        names = {c: s for s, c in SPLIT_CODES.items()}
        v0 = self.rows["view"] == 0
        correct = (self.rows["logits"].float().argmax(1) == self.rows["label"].long())
        out: dict[str, dict[str, float]] = {}
        for di, d in enumerate(self.domains):
            for code, split in names.items():
                m = v0 & (self.rows["domain"].long() == di) & (self.rows["split"].long() == code)
                if m.any():
                    out.setdefault(d, {})[split] = float(correct[m].float().mean())
        return out
