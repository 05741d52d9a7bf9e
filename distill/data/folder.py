"""``ROOT/DOMAIN/CLASS/image`` datasets with one global class list and a hash-based split.

- Classes: the sorted union of (mapped) class names over *all* domains under ROOT, so every
  stage agrees on label ids whichever domains it reads. A class missing from a domain is fine.
- Class-name map (optional YAML/JSON mapping): ``folder: name`` applies in every domain,
  ``DOMAIN/folder: name`` in one domain. When none is passed, ``ROOT/classnames.yaml`` is used
  if it exists. Use it when folder names are ids (``n02084071: dog``)
  or differ per domain (``auto: car``); the mapped names are the words put in prompts.
- Split: an image is in ``test`` when a hash of ``seed:DOMAIN/CLASS/file`` falls below
  ``test_fraction``; it never depends on scan order, machine or the other files present.
  ``val`` is carved from the rest by the same hash: the next ``val_fraction`` of the train
  share (default 0.1 of train), so the test split is the same whatever ``val_fraction`` is.
  Model selection reads ``val`` only; ``test`` is reported, never selected on.
  ``pretrain`` (``pretrain_fraction`` > 0) is carved from the *top* of the same hash, so test and
  val are the same whatever the pool's size: it is the stand-in teacher's pretraining pool
  (:mod:`distill.teacher.bootstrap`), which no student ever sees, as real CLIP never saw your
  evaluation images. :meth:`DomainFolder.select` reaches it only when asked for by name.
- Unlabeled folders outside ROOT (:mod:`distill.data.unlabeled`) join as extra unlabeled domains
  (:meth:`DomainFolder.add_folder`): label -1, all ``train``, at sample indices after ROOT's. Nothing
  about ROOT (its domains, indices, fingerprint, :meth:`DomainFolder.select` by default) changes.
- Bad images: :meth:`DomainFolder.exclude` (a cache's skipped list) or
  :meth:`DomainFolder.skip_undecodable` (a scan that decodes every image) take files out of
  :meth:`select`; sample indices and the fingerprint stay those of the full file list, so a
  cache built with ``--skip-bad`` still matches.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from bisect import bisect_left
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import yaml

from distill.data.class_map_keys import check_class_map_keys, warn_merged_folders
from distill.data.images import BadImageError, load_rgb
from distill.data.listing import NOT_UTF8, FileList, Listing, list_images, refuse_unnamed, shown
from distill.data.sample_table import (
    SPLIT_CODE,
    SPLITS,
    Sample,
    SampleColumns,
    SampleFiles,
    SampleTable,
    hash_file_lines,
    prefix_strings,
    sort_order,
    strip_strings,
    take_strings,
)
from distill.data.split import SplitRule, split_of
from distill.data.unlabeled import UnlabeledFolder
from distill.errors import DistillError
from distill.records import DATA_CLASS_MAP

STUDENT_SPLITS = ("train", "val", "test")  # what select() returns by default: never the teacher's pool


def load_class_map(path: str | Path | None) -> dict[str, str]:
    """Read a class-name map (YAML or JSON object of ``folder -> name``)."""
    if path is None:
        return {}
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DistillError(f"{path}: class-name map not found") from None
    except (OSError, UnicodeDecodeError) as e:  # a folder, no permission, a binary file
        raise DistillError(f"{path}: cannot read class-name map: {e.__class__.__name__}: {e}") from None
    except yaml.YAMLError as e:
        raise DistillError(f"{path}: invalid YAML in class-name map: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DistillError(f"{path}: class-name map must be a mapping 'folder: name', got {type(data).__name__}")
    out = {}
    for k, v in data.items():
        if isinstance(v, bool) or isinstance(k, bool):  # YAML reads unquoted yes/no/on/off as booleans
            raise DistillError(f"{path}: key '{k}' maps to {v!r}, read as a YAML boolean; quote it")
        if not isinstance(v, (str, int)) or str(v).strip() == "":
            raise DistillError(f"{path}: key '{k}' must map to a non-empty class name, got {v!r}")
        out[str(k)] = str(v).strip()
    return out


class DomainFolder:
    """Scan a ``ROOT/DOMAIN/CLASS/image`` tree.

    Args:
        root: dataset root.
        split: the split rule (:class:`~distill.data.split.SplitRule`: class-name map, test / val /
            pretrain fraction, split seed), passed whole; default: its defaults.
        listing: ROOT's :func:`list_images`, made elsewhere (a run lists once and shares it with every
            rank); None: scan ROOT here.
        skip_bad: leave files whose names are not UTF-8 out (:attr:`unnamed`; the stage warns) instead of
            refusing them (:mod:`distill.data.listing`): a stage's ``--skip-bad``.
        **keys: the rule's keys by name (``test_fraction=0.5``), over ``split``'s: a short spelling for
            scripts and tests.
    """

    def __init__(self, root: str | Path, split: SplitRule | None = None, listing: Listing | None = None, *,
                 skip_bad: bool = False, **keys: Any):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DistillError(f"{self.root}: dataset root not found (expected ROOT/DOMAIN/CLASS/image)")
        if keys or split is None:
            split = SplitRule.of("split rule", **{**(split.model_dump() if split is not None else {}), **keys})
        self.split = split
        class_map: str | Path | dict[str, str] | None = split.class_map
        test_fraction, split_seed = split.test_fraction, split.split_seed
        val_fraction, pretrain_fraction = split.val_fraction, split.pretrain_fraction
        if class_map is None and (self.root / DATA_CLASS_MAP).is_file():
            class_map = self.root / DATA_CLASS_MAP
        self.class_map_source = str(class_map) if isinstance(class_map, (str, Path)) else None
        self.class_map = class_map if isinstance(class_map, dict) else load_class_map(class_map)
        self.test_fraction = float(test_fraction)
        self.split_seed = int(split_seed)
        self.val_fraction = float(val_fraction)
        self.pretrain_fraction = float(pretrain_fraction)
        self.excluded: dict[str, str] = {}  # relpath -> why (undecodable): left out of select()
        self.folders: dict[str, UnlabeledFolder] = {}  # unlabeled folders outside ROOT, by name (add_folder)
        self._folder_rows: dict[str, tuple[int, int]] = {}  # each one's rows of self.samples.columns
        self._excluded_rows: tuple[Any, np.ndarray] | None = None  # (what it was made of, positions)

        domains, files = listing if listing is not None else list_images(self.root)
        self.domains: list[str] = list(domains)
        if not self.domains:
            raise DistillError(f"{self.root}: no domain folders found (expected ROOT/DOMAIN/CLASS/image)")
        files = files if isinstance(files, FileList) else FileList.of(self.domains, files)
        if files.unnamed and not skip_bad:
            refuse_unnamed(files.unnamed, f"{self.root} (`distill data summary {self.root}` lists them)")
        #: files left out because their names are not UTF-8 (their bytes shown as \xNN): ROOT's, added folders'
        self.unnamed: list[str] = list(files.unnamed)
        check_class_map_keys(self.class_map, self.class_map_source or "class-name map", self.root, self.domains,
                             {folder for _, folder in files.folders})
        if not len(files):
            raise DistillError(f"{self.root}: no images found under ROOT/DOMAIN/CLASS/")
        cmap = self.class_map
        names = [cmap.get(f"{domain}/{folder}", cmap.get(folder, folder)) for domain, folder in files.folders]
        warn_merged_folders(files.folders, names, self.class_map_source or "class-name map")
        self.classes: list[str] = sorted(set(names))
        label_of = {c: i for i, c in enumerate(self.classes)}
        label_of_folder = np.array([label_of[c] for c in names], dtype=np.int32)
        order = sort_order(files.text, files.offsets)  # samples in relpath order
        text, offsets = take_strings(files.text, files.offsets, order)
        label = label_of_folder[files.folder[order]]
        blob, n = text.tobytes(), len(order)
        split_code = np.fromiter((SPLIT_CODE[split_of(blob[offsets[i]:offsets[i + 1]].decode(), self.test_fraction,
                                                  self.split_seed, self.val_fraction, self.pretrain_fraction)]
                             for i in range(n)), dtype=np.int8, count=n)
        del blob
        #: every sample (a :class:`SampleTable`: a sequence of :class:`Sample` s, held as columns)
        self.samples = SampleTable(SampleColumns(np.arange(n, dtype=np.int64), text, offsets, files.domain[order],
                                                 self.domains, label, self.classes, label, split_code,
                                                 files.size[order]))
        self._root_samples = n

    # ------------------------------------------------------------------ unlabeled folders
    def add_folder(self, name: str, folder: UnlabeledFolder, first_index: int | None = None) -> SampleTable:
        """Add ``folder``'s images as the unlabeled domain ``name`` (label -1, split ``train``) at sample indices
        ``first_index``... (default: the next free index; a run passes its cache's, so rows and samples agree).

        Raises:
            DistillError: ``name`` is taken, or ``first_index`` falls on indices in use (the cache was built
                over a data.root that held fewer images).
        """
        if name in self.domains or name in self.folders:
            raise DistillError(f"unlabeled folder '{folder.entry}': name '{name}' is already a domain or folder")
        first = self.index_count if first_index is None else int(first_index)
        if first < self.index_count:
            raise DistillError(f"unlabeled folder '{folder.entry}': its cached sample indices start at {first}, but "
                               f"{self.root} (and the folders before it) use {self.index_count}: data.root changed "
                               "since the cache was built; rebuild the cache")
        n = folder.images
        text, offsets = folder.text, folder.offsets
        if folder.skip or int(offsets[0]):  # one another dataset holds: its arrays are views of "OTHER/path"s
            text, offsets = strip_strings(text, offsets, folder.skip)
        text, offsets = prefix_strings(f"{name}/", text, offsets)  # "NAME/path in the folder"
        zeros = np.zeros(n, dtype=np.int32)
        added = SampleColumns(np.arange(first, first + n, dtype=np.int64), text, offsets, zeros, [name], zeros, [""],
                              np.full(n, -1, dtype=np.int32), np.full(n, SPLIT_CODE["train"], dtype=np.int8),
                              folder.size)
        start = len(self.samples)
        self.folders[name] = folder
        self._folder_rows[name] = (start, start + n)
        self.unnamed += folder.unnamed
        self.samples = SampleTable(self.samples.columns.concat(added))
        self._view_folders()
        self._excluded_rows = None
        return self.samples[start:]

    def _view_folders(self) -> None:
        """Point each added folder's listing at its rows of the samples' columns (new ones after each add): the
        paths are held once, as ``NAME/path``, not also in the folder (``skip``: the ``NAME/`` bytes)."""
        c = self.samples.columns
        for name, (a, b) in self._folder_rows.items():
            self.folders[name] = dataclasses.replace(
                self.folders[name], text=c.text[c.offsets[a]:c.offsets[b]], offsets=c.offsets[a:b + 1],
                size=c.size[a:b], skip=len(name.encode()) + 1)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (what a ``spawn``/``forkserver`` worker receives): the added folders without their listings, which
        are views of the samples' columns that pickle would copy, so the paths would go twice; :meth:`__setstate__`
        points them at the columns again."""
        state = dict(self.__dict__)
        state["folders"] = {name: dataclasses.replace(f, text=f.text[:0], offsets=f.offsets[:0], size=f.size[:0])
                            for name, f in self.folders.items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._view_folders()

    def first_index(self, name: str) -> int:
        """The first sample index of unlabeled folder ``name``."""
        c = self.samples.columns
        rows = np.flatnonzero(c.domain[self._root_samples:] == c.domain_names.index(name))
        return int(c.index[self._root_samples + rows[0]])

    @property
    def index_count(self) -> int:
        """One past the largest sample index (ROOT's image count when no folder was added)."""
        return int(self.samples.columns.index[-1]) + 1 if len(self.samples) else 0

    def sample_at(self, index: int) -> Sample:
        """The sample with this index (ROOT's by position; an unlabeled folder's by lookup)."""
        c = self.samples.columns
        if 0 <= index < self._root_samples:
            return c.sample(int(index))
        p = self._root_samples + int(np.searchsorted(c.index[self._root_samples:], index))  # folders: ascending
        if p >= len(c) or int(c.index[p]) != index:
            raise KeyError(index)
        return c.sample(p)

    # ------------------------------------------------------------------ selection
    def check_domains(self, domains: Iterable[str]) -> list[str]:
        """Return ``domains`` as a list, or raise naming the first one not under ROOT (nor an added folder)."""
        domains = list(domains)
        for d in domains:
            if d not in self.domains and d not in self.folders:
                raise DistillError(f"domain '{d}' not found under {self.root} (have: {', '.join(self.domains)})")
        return domains

    def select(self, domains: Iterable[str] | None = None, split: str | None = None) -> SampleTable:
        """Samples of the given domains (default: all of ROOT's; an unlabeled folder when named) and split
        (default: train, val and test), in sample order: a :class:`SampleTable` (a sequence of samples).

        The teacher's pretraining pool is returned only for ``split="pretrain"``: no student-side
        selection can reach it by default.
        """
        if split is not None and split not in SPLITS:
            raise DistillError(f"split must be one of {SPLITS}, got '{split}'")
        splits = STUDENT_SPLITS if split is None else (split,)
        mask = self._domain_mask(domains) & np.isin(self.samples.columns.split, [SPLIT_CODE[s] for s in splits])
        if self.excluded:
            mask[self._excluded_positions()] = False
        return self.samples.take(np.flatnonzero(mask))

    def _domain_mask(self, domains: Iterable[str] | None) -> np.ndarray:
        """[samples] bool: the sample is in one of ``domains`` (default: ROOT's)."""
        keep = self.check_domains(domains) if domains is not None else self.domains
        c = self.samples.columns
        return np.isin(c.domain, [c.domain_names.index(d) for d in keep])

    def _excluded_positions(self) -> np.ndarray:
        """Positions of the :attr:`excluded` files (found once per change of the set or of the samples)."""
        key = (frozenset(self.excluded), id(self.samples.columns))
        if self._excluded_rows is None or self._excluded_rows[0] != key:
            c, root = self.samples.columns, self._root_samples
            found = []
            for rel in self.excluded:  # ROOT's rows are sorted by relpath: a binary search each
                p = bisect_left(range(root), rel, key=c.relpath)
                if p < root and c.relpath(p) == rel:
                    found.append(p)
            if len(c) > root:  # an unlabeled folder's files: one pass
                wanted = {rel.encode() for rel in self.excluded}
                found += [p for p in range(root, len(c)) if c._text[c.offsets[p]:c.offsets[p + 1]] in wanted]
            self._excluded_rows = (key, np.array(sorted(found), dtype=np.int64))
        return self._excluded_rows[1]

    # ------------------------------------------------------------------ bad images
    def exclude(self, skipped: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Leave these ``(relpath, reason)`` files out of :meth:`select`; returns the newly excluded."""
        new = [(r, why) for r, why in skipped if r not in self.excluded]
        self.excluded.update(new)
        return new

    def skip_undecodable(self, domains: Iterable[str] | None = None, split: str | None = None
                         ) -> list[tuple[str, str]]:
        """Decode every selected image once and exclude those that fail; returns ``(relpath, reason)``.

        This costs one full decode of the selection: a cache built with ``--skip-bad`` already
        lists its bad files (see :meth:`exclude`), so a run with a cache scans only what the
        cache does not cover.
        """
        bad = []
        for s in self.select(domains, split):
            try:
                load_rgb(self.path(s))
            except BadImageError as e:
                bad.append((s.relpath, e.reason))
        return self.exclude(bad)

    def left_out(self, domains: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """``(path, reason)`` of the files left out by ``skip_bad`` (names not UTF-8), for a stage's warning and
        record, named as the data set names its images (as :meth:`skip_undecodable` names them): ROOT-relative, an
        unlabeled folder's as ``NAME/...`` (:attr:`unnamed` holds them in full, for the lines that name only them).
        ``domains``: only those of these domains (or folders), the ones a stage reads (default: all)."""
        bases = [(f"{shown(self.root)}/", ""), *((f"{shown(f.path)}/", f"{name}/") for name, f in self.folders.items())]
        named = [next((f"{name}{p[len(base):]}" for base, name in bases if p.startswith(base)), p) for p in self.unnamed]
        used = None if domains is None else set(domains)
        return [(p, NOT_UTF8) for p in named if used is None or p.split("/", 1)[0] in used]

    def path(self, sample: Sample) -> Path:
        folder = self.folders.get(sample.domain)
        if folder is not None:
            return folder.path / sample.relpath[len(sample.domain) + 1:]
        return self.root / sample.relpath

    def files(self, samples: SampleTable) -> SampleFiles:
        """``samples``' (a selection of :attr:`samples`) indices and image files (:meth:`path`), read from the
        columns by position or index: what a DataLoader's dataset holds instead of a list of paths."""
        bases = [(f.path, len(name) + 1) if (f := self.folders.get(name)) is not None else (self.root, 0)
                 for name in samples.columns.domain_names]
        return SampleFiles(samples, bases)

    # ------------------------------------------------------------------ identity
    def fingerprint(self, domains: Iterable[str] | None = None) -> str:
        """sha256 over the selected file list and sizes, the class list and the split rule.

        ``pretrain_fraction`` is hashed only when > 0, so every fingerprint without a pool is unchanged.
        """
        h = hashlib.sha256()
        rule = {"classes": self.classes, "test_fraction": self.test_fraction,
                "split_seed": self.split_seed, "val_fraction": self.val_fraction}
        if self.pretrain_fraction > 0:
            rule["pretrain_fraction"] = self.pretrain_fraction
        h.update(json.dumps(rule, sort_keys=True).encode())
        hash_file_lines(h, self.samples.take(np.flatnonzero(self._domain_mask(domains))))  # excluded files included
        return h.hexdigest()

    def fingerprint_inputs(self, domains: Iterable[str] | None = None) -> dict:
        """What :meth:`fingerprint` is made of, field by field, so a mismatch can name the field that
        differs: split rule, domains, image count and a sha256 of the student-side file list (paths, sizes,
        classes; the pretraining pool is not in it)."""
        chosen = self.check_domains(domains) if domains is not None else self.domains
        samples = self.select(chosen)
        files = hashlib.sha256()  # over the lines one after another: the sha256 of their join
        hash_file_lines(files, samples)
        return {"test_fraction": self.test_fraction, "split_seed": self.split_seed,
                "pretrain_fraction": self.pretrain_fraction,
                "domains": [d for d in self.domains if d in set(chosen)], "images": len(samples),
                "files_sha256": files.hexdigest()}

    def summary(self) -> dict[str, dict[str, int]]:
        """``{domain: {"train": n, "val": n, "test": n, "pretrain": n}}`` (every file, excluded ones included)."""
        c, root = self.samples.columns, self._root_samples
        counts = np.bincount(c.domain[:root].astype(np.int64) * len(SPLITS) + c.split[:root],
                             minlength=len(self.domains) * len(SPLITS)).reshape(len(self.domains), len(SPLITS))
        return {d: {s: int(counts[i, j]) for j, s in enumerate(SPLITS)} for i, d in enumerate(self.domains)}

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"DomainFolder({str(self.root)!r}, domains={self.domains}, classes={len(self.classes)}, images={len(self)})"
