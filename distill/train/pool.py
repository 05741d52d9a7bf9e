"""A run's unlabeled pool (``data.unlabeled``): domains under data.root and folders outside it, as samples.

A domain entry pools its ``train`` split. A folder entry (:func:`~distill.data.unlabeled.is_folder_entry`)
is scanned and added to the run's dataset as the unlabeled domain its cache holds
(:meth:`~distill.data.folder.DomainFolder.add_folder`): under the cache's name and at the cache's sample
indices, so every row the trainer looks up is the folder's image. The cache is matched by the folder's
file list (``files_sha256``, and ``content_sha256`` when the cache recorded one), not by where the folder
lives: a folder moved elsewhere still matches, a folder whose images changed does not. From there the
trainer's pool code (its own generator, the label gate that gives every pool row -1) is the domains'.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from distill.config import TrainConfig
from distill.data.folder import DomainFolder
from distill.data.unlabeled import UnlabeledFolder, add_folders, folder_hint, is_folder_entry, scan_folders
from distill.errors import DistillError
from distill.records import CacheFolder, PoolFolder, UnlabeledPool
from distill.strategies import get_strategy, list_strategies
from distill.strategies.base import Needs
from distill.teacher.cache import TeacherCache

KEY = "data.unlabeled"


@dataclass(frozen=True)
class Pool:
    """The pool's domains under data.root and its folders (added to the dataset under these names)."""

    domains: list[str] = field(default_factory=list)
    folders: dict[str, UnlabeledFolder] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Every domain of the pool, as the dataset names it."""
        return self.domains + list(self.folders)

    def record(self, dataset: DomainFolder, images: int, ratio: float) -> UnlabeledPool | None:
        """``summary.json``'s ``unlabeled`` (None without a pool)."""
        if not images:
            return None
        folders = [PoolFolder(name=name, path=str(f.path), images=len(dataset.select([name])))
                   for name, f in self.folders.items()]
        return UnlabeledPool(domains=self.domains, images=images, ratio=ratio, folders=folders or None)


def resolve_pool(cfg: TrainConfig, dataset: DomainFolder, name: str, needs: Needs, source: list[str],
                 caches: list[TeacherCache]) -> Pool:
    """Check ``data.unlabeled`` against the strategy, the data and the caches; add its folders to ``dataset``.

    Raises:
        DistillError: one line naming the key and the entry: a strategy that takes no pool, a name that is
            neither a domain nor a folder, a source domain, a domain or folder the cache lacks, a folder that
            does not exist, holds no images, overlaps data.root or changed since the cache was built.
    """
    entries = cfg.data.unlabeled
    if not entries:
        return Pool()
    if needs.target_data:
        raise DistillError(f"{KEY}: strategy '{name}' already trains on unlabeled target images only; "
                           f"remove {KEY}")
    if not needs.unlabeled:
        raise DistillError(f"{KEY}: strategy '{name}' does not take unlabeled images (strategies that do: "
                           f"{', '.join(n for n in list_strategies() if get_strategy(n).needs.unlabeled)})")
    domains = [e for e in entries if not is_folder_entry(e)]
    for domain in domains:
        if domain not in dataset.domains:
            raise DistillError(f"{KEY}: domain '{domain}' not found under {dataset.root} "
                               f"(have: {', '.join(dataset.domains)}; {folder_hint(domain)})")
        if domain in source:
            raise DistillError(f"{KEY}: '{domain}' is also a source domain (a pool domain has no labels)")
        if caches and domain not in caches[0].domains:
            raise DistillError(f"{KEY}: domain '{domain}' is not in cache {caches[0].path} "
                               f"(has: {', '.join(caches[0].domains)}); cache it with `distill cache build`")
    folders = scan_folders([e for e in entries if is_folder_entry(e)], dataset.root, KEY, cfg.data.skip_bad)
    if caches:
        placed = sorted((_cached_folder(folder, caches) for folder in folders), key=lambda p: p[1].first_index)
        for folder, record in placed:
            dataset.add_folder(record.name, folder, record.first_index)
    else:
        add_folders(dataset, folders)
    if round(cfg.data.unlabeled_ratio * cfg.optim.batch_size) < 1:
        raise DistillError(f"data.unlabeled_ratio={cfg.data.unlabeled_ratio}: gives no pool image per step at "
                           f"optim.batch_size={cfg.optim.batch_size}")
    added = {f.path: n for n, f in dataset.folders.items()}  # the dataset's folders: views of its columns
    return Pool(domains, {added[f.path]: dataset.folders[added[f.path]] for f in folders})


def _cached_folder(folder: UnlabeledFolder, caches: list[TeacherCache]) -> tuple[UnlabeledFolder, CacheFolder]:
    """(folder, its record in the first cache), refusing a folder some cache lacks or holds elsewhere."""
    rebuild = f"rebuild with `distill cache build ... --unlabeled {shlex.quote(folder.entry)}`"
    files = folder.files_sha256()
    content: str | None = None  # read the folder's bytes once, however many caches recorded them
    found: CacheFolder | None = None
    for cache in caches:
        record = next((r for r in cache.folders if r.files_sha256 == files), None)
        if record is None:
            same_place = next((r for r in cache.folders if r.path == str(folder.path)), None)
            if same_place is not None:
                raise DistillError(
                    f"{KEY}: folder '{folder.entry}' changed since cache {cache.path} was built (files_sha256 "
                    f"{same_place.files_sha256[:12]} vs {files[:12]}: {same_place.images} vs {folder.images} "
                    f"images, or files renamed or resized); {rebuild}")
            raise DistillError(f"{KEY}: cache {cache.path} was built without unlabeled folder '{folder.entry}'; "
                               f"{rebuild}")
        if record.content_sha256 is not None:
            content = content or folder.content_sha256()
        if record.content_sha256 is not None and record.content_sha256 != content:
            raise DistillError(f"{KEY}: folder '{folder.entry}': its images' bytes changed since cache {cache.path} "
                               f"was built (content_sha256); {rebuild}")
        if found is not None and (record.name, record.first_index) != (found.name, found.first_index):
            raise DistillError(f"{KEY}: folder '{folder.entry}' is '{found.name}' from sample {found.first_index} in "
                               f"cache {caches[0].path} but '{record.name}' from {record.first_index} in {cache.path}; "
                               "build the caches with the same --unlabeled folders")
        found = found or record
    assert found is not None  # caches is non-empty (the caller's `if caches`), and each sets found or raises
    return folder, found
