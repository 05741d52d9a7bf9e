"""Whole-cache views of a :class:`~distill.teacher.cache.read.TeacherCache`: ``cache.rows`` (every column of
every row) and what ``distill cache inspect`` prints (identity, sizes, bytes per row, the teacher's zero-shot
accuracy from view-0 logits gathered in chunks from the mapped shards)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Mapping

import torch
from pydantic import BaseModel
from torch import Tensor

from distill.records import CACHE_ADVERSARIAL_DIR
from distill.teacher.cache.adversarial import AdversarialViews
from distill.teacher.cache.format import SPLIT_CODES

if TYPE_CHECKING:
    from distill.teacher.cache.read import TeacherCache



class CacheRows(Mapping[str, Tensor]):
    """``cache.rows``: every row's columns by name, sorted by (sample_index, view).

    The index columns (:data:`~distill.teacher.cache.format.RESIDENT_KEYS`) are tensors in memory; the others (``image_emb``,
    ``logits``, ``view_params``, ``mix_partner``, ``mix_view``) are gathered from the mapped shards
    when asked for, all rows at once: fine for small caches and tests, while training gathers per
    batch (:meth:`TeacherCache.lookup`) and summaries in chunks.
    """

    def __init__(self, cache: TeacherCache):
        self._cache = cache

    def __getitem__(self, name: str) -> Tensor:
        c = self._cache
        if name in c.index:
            return c.index[name]
        if name not in c.stored_columns:
            raise KeyError(name)
        return c.gather(name, torch.arange(len(c)))

    def __iter__(self) -> Iterator[str]:
        return iter(self._cache.stored_columns)

    def __len__(self) -> int:
        return len(self._cache.stored_columns)


def _as_built(block: BaseModel) -> dict[str, Any]:
    """A manifest block as the build wrote it (keys it did not set stay absent)."""
    return block.model_dump(mode="json", exclude_unset=True)



def cache_summary(self: TeacherCache) -> dict[str, Any]:
    """What ``distill cache inspect`` shows: identity, sizes, accuracy, compute saved."""
    m = self.manifest
    train_rows = int((self.index["split"] == SPLIT_CODES["train"]).sum())
    flops = m.teacher_flops_per_image
    return {
        "path": str(self.path),
        "teacher": _as_built(m.teacher),
        "templates": len(m.templates),
        "classes": self.classes,
        "domains": self.domains,
        "dataset_fingerprint": m.dataset.fingerprint,
        "split": {k: getattr(m.dataset, k) for k in ("test_fraction", "val_fraction", "split_seed", "pretrain_fraction")},
        "images": m.dataset.cached_images,
        "rows": len(self),
        "views": self.views,
        "view_seed": m.views.seed,
        "augment": m.views.augment,
        "policy": m.views.policy,
        "dtype": m.dtype,
        "layout": self.layout.model_dump(mode="json"),
        "bytes_per_row": self.bytes_per_row(),
        "shapes": m.shapes,
        "shards": len(m.shards),
        "size_bytes": sum(f.stat().st_size for f in self.path.iterdir() if f.is_file()),
        "skipped": [_as_built(k) for k in m.skipped],
        "zero_shot_accuracy": zero_shot_accuracy(self),
        "teacher_flops_per_image": flops,
        "train_rows": train_rows,
        "teacher_flops_saved_per_epoch": None if flops is None else flops * train_rows,
        "created": m.created,
        "distill_version": m.distill_version,
        "adversarial": adversarial_summary(self),
        **({"unlabeled_folders": [f.model_dump(mode="json", exclude_none=True) for f in self.folders]}
           if self.folders else {}),
    }


def adversarial_summary(self: TeacherCache) -> dict[str, Any] | None:
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
    ix = self.index
    v0 = (ix["view"] == 0).nonzero().squeeze(1)
    label = torch.full((int(ix["sample_index"].max()) + 1,), -1, dtype=torch.long)
    label[ix["sample_index"][v0].long()] = ix["label"][v0].long()
    clean = torch.full_like(label, -1)
    clean[ix["sample_index"][v0].long()] = self.predictions(v0)
    adv_pred = views.rows["logits"].float().argmax(1)
    return {
        "complete": True, "path": str(adv_dir), "rows": m.rows, "images": m.images,
        "views": m.views, "epsilon": m.epsilon, "step_size": m.step_size, "steps": m.steps,
        "seed": m.seed, "domains": m.domains, "split": m.split, "objective": m.objective,
        "size_bytes": sum(f.stat().st_size for f in adv_dir.iterdir() if f.is_file()),
        "teacher_accuracy_clean": float((clean[si] == label[si]).float().mean()) if len(si) else None,
        "teacher_accuracy_adversarial": float((adv_pred == label[si]).float().mean()) if len(si) else None,
    }


def zero_shot_accuracy(self: TeacherCache) -> dict[str, dict[str, float]]:
    """``{domain: {split: accuracy}}`` of the teacher's view-0 zero-shot logits vs labels."""
    names = {c: s for s, c in SPLIT_CODES.items()}
    out: dict[str, dict[str, float]] = {}
    if not self.has_logits:
        return out
    ix = self.index
    v0 = (ix["view"] == 0).nonzero().squeeze(1)  # the view-0 rows' logits only, in chunks
    correct = self.predictions(v0) == ix["label"][v0].long()
    domain, split_code = ix["domain"][v0].long(), ix["split"][v0].long()
    for di, d in enumerate(self.domains):
        for code, split in names.items():
            m = (domain == di) & (split_code == code)
            if m.any():
                out.setdefault(d, {})[split] = float(correct[m].float().mean())
    return out
