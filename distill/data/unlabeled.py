"""Unlabeled image folders outside ``data.root``: the deployment case's "images from where the model will run".

``data.unlabeled`` (and ``distill cache build --unlabeled``) names domains under ``data.root`` *or*
folders anywhere. An entry is a folder when it looks like a path (:func:`is_folder_entry`: it holds a
path separator or starts with ``.`` or ``~``), so a domain name can never be mistaken for one. A folder
holds any image files, flat or nested; no class subfolders, no labels.

A folder joins a :class:`~distill.data.folder.DomainFolder` as one more unlabeled "domain"
(:meth:`~distill.data.folder.DomainFolder.add_folder`): a stable name (:func:`folder_names`), every image
in its ``train`` split with label -1, at sample indices after data.root's. So the cache, the trainer's
pool and its label gate see one sample-index space, and a folder is cached once like a domain.

Its identity (:func:`folder_record`) is the sorted relative paths and sizes of its images (``files_sha256``)
and, for ``cache build --fingerprint content``, their bytes (``content_sha256``): a folder whose images
were added, removed, resized (or edited, with content) no longer matches its cache and is refused.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np

from distill.data.images import IMAGE_EXTENSIONS
from distill.data.listing import pack_images, refuse_unnamed, shown
from distill.data.sample_table import pack_strings
from distill.errors import DistillError
from distill.utils.io import sha256_files

if TYPE_CHECKING:  # typing only: folder.py imports this module
    from distill.data.folder import DomainFolder

FOLDER_HINT = "a folder is named by a path: with a '/', or starting with '.' or '~'"


def is_folder_entry(entry: str) -> bool:
    """Whether a ``data.unlabeled`` entry names a folder (a path) rather than a domain under data.root."""
    return "/" in entry or os.sep in entry or entry.startswith((".", "~"))


def folder_hint(entry: str) -> str:
    """:data:`FOLDER_HINT`, and when ``entry`` (a bare name) is a folder here, the entry that names it."""
    return FOLDER_HINT + (f"; for the folder '{entry}' here, write './{entry}'" if Path(entry).is_dir() else "")


@dataclass(frozen=True, eq=False)
class UnlabeledFolder:
    """A scanned folder of unlabeled images, its listing packed (:class:`~distill.data.listing.PackedFiles`: one
    UTF-8 buffer and two int64 arrays, no Python object per image; a run holds it while the folder is in its data).

    Attributes:
        entry: the folder as the recipe or command line wrote it (what messages name).
        path: its resolved directory.
        text, offsets: every image's relative posix path, packed, in :func:`~distill.data.listing.walk_images`
            order (sorted by path, folder by folder).
        size: every image's size in bytes.
        unnamed: its images left out because their names are not UTF-8 (:mod:`distill.data.listing`), shown paths.
        skip: bytes before each relative path in ``text``: 0 as scanned; ``len("NAME/")`` once a dataset holds it,
            its arrays then views of the dataset's sample columns (:meth:`~distill.data.folder.DomainFolder.add_folder`).
    """

    entry: str
    path: Path
    text: np.ndarray     # uint8 [B]
    offsets: np.ndarray  # int64 [n + 1]
    size: np.ndarray     # int64 [n]
    unnamed: tuple[str, ...] = ()
    skip: int = 0

    @classmethod
    def of(cls, entry: str, path: Path, files: Sequence[tuple[str, int]], unnamed: tuple[str, ...] = ()) -> UnlabeledFolder:
        """From ``(relative path, size)`` pairs (tests, a few hand-made files)."""
        text, offsets = pack_strings(rel for rel, _ in files)
        return cls(entry, path, text, offsets, np.array([size for _, size in files], dtype=np.int64), unnamed)

    @property
    def images(self) -> int:
        """How many images it holds."""
        return len(self.size)

    def _chunks(self) -> Iterator[tuple[bytes, list[int], list[int]]]:
        """(a chunk of :data:`CHUNK` images' packed path bytes, their ends in it from 0, their sizes) in order."""
        first = int(self.offsets[0])  # 0, or where this folder's rows start in a dataset's columns
        for a in range(0, self.images, CHUNK):
            b = min(a + CHUNK, self.images)
            start = int(self.offsets[a])
            yield (self.text[start - first:int(self.offsets[b]) - first].tobytes(),
                   (self.offsets[a:b + 1] - start).tolist(), self.size[a:b].tolist())

    def rows(self) -> Iterator[tuple[str, int]]:
        """``(relative path, size)`` of each image, in order, made a chunk at a time."""
        skip = self.skip
        for buf, ends, sizes in self._chunks():
            for i, size in enumerate(sizes):
                yield buf[ends[i] + skip:ends[i + 1]].decode(), size

    def files_sha256(self) -> str:
        """sha256 over the sorted relative paths and sizes, ``path<TAB>size<LF>`` each (reads no image)."""
        h, skip = hashlib.sha256(), self.skip
        for buf, ends, sizes in self._chunks():  # the lines a chunk at a time: the sha256 of their join
            h.update(b"".join(b"%s\t%d\n" % (buf[ends[i] + skip:ends[i + 1]], size) for i, size in enumerate(sizes)))
        return h.hexdigest()

    def content_sha256(self) -> str:
        """sha256 over the sorted relative paths and each image's bytes hashed (one read of the folder)."""
        h = hashlib.sha256()
        rels = (rel for rel, _ in self.rows())
        digests = sha256_files(self.path / rel for rel, _ in self.rows())  # a thread pool
        for rel, digest in zip(rels, digests):
            h.update(f"{rel}\t{digest}\n".encode())
        return h.hexdigest()


#: images per step of :meth:`UnlabeledFolder.rows` and :meth:`UnlabeledFolder.files_sha256` (bounded temporaries)
CHUNK = 1 << 12


def scan_folder(entry: str, root: str | Path, key: str, skip_bad: bool = False) -> UnlabeledFolder:
    """Scan the folder ``entry`` names; one-line errors name ``key`` and the entry. An image whose name is not
    UTF-8 is refused, or with ``skip_bad`` left out (:attr:`UnlabeledFolder.unnamed`).

    Raises:
        DistillError: the folder does not exist, holds no images, or overlaps ``root`` (its images would be
            the root's labelled train/val/test images: name the domain instead); an image's name is not UTF-8.
    """
    path = Path(entry).expanduser()
    if not path.is_dir():
        raise DistillError(f"{key}: folder '{entry}' does not exist" + (" (it is a file)" if path.exists() else ""))
    path, root = path.resolve(), Path(root).resolve()
    if path == root or root in path.parents or path in root.parents:
        raise DistillError(f"{key}: folder '{entry}' overlaps the data root {root} (its images are the domains' "
                           "labelled train/val/test images); name a domain under the root to pool its train split")
    files = pack_images(path, hidden_folders=False)  # one stat per image, packed as it walks
    if files.unnamed and not skip_bad:
        refuse_unnamed(files.unnamed, f"{key} folder '{entry}'")
    if not len(files.size):
        raise DistillError(f"{key}: folder '{entry}' holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return UnlabeledFolder(entry, path, files.text, files.offsets, files.size, files.unnamed)


def scan_folders(entries: Iterable[str], root: str | Path, key: str, skip_bad: bool = False) -> list[UnlabeledFolder]:
    """:func:`scan_folder` of each entry, refusing one folder named twice."""
    folders: list[UnlabeledFolder] = []
    for entry in entries:
        folder = scan_folder(entry, root, key, skip_bad)
        twice = next((f for f in folders if f.path == folder.path), None)
        if twice is not None:
            raise DistillError(f"{key}: folder '{entry}' is named twice (also as '{twice.entry}')")
        folders.append(folder)
    return folders


def folder_names(folders: Iterable[UnlabeledFolder], taken: Iterable[str]) -> list[str]:
    """A stable name per folder: its directory's name (bytes that are not UTF-8 shown as ``\\xNN``: the name is
    stored as text, in sample paths and caches' manifests), ``-2``, ``-3``... after one a domain or folder has."""
    used, names = set(taken), []
    for folder in folders:
        base = shown(folder.path.name) or "folder"
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}-{k}"
        used.add(name)
        names.append(name)
    return names


def add_folders(dataset: DomainFolder, folders: Iterable[UnlabeledFolder]) -> None:
    """Add ``folders`` to ``dataset`` (a :class:`~distill.data.folder.DomainFolder`) as a cache build places them:
    sorted by path (the order they were named in does not change the cache), named by :func:`folder_names`,
    at the next free sample indices."""
    folders = sorted(folders, key=lambda f: str(f.path))
    for name, folder in zip(folder_names(folders, dataset.domains), folders):
        dataset.add_folder(name, folder)


def folder_record(dataset: DomainFolder, name: str, content: bool = False) -> dict[str, str | int]:
    """What a cache records of folder ``name`` of ``dataset`` (a :class:`~distill.data.folder.DomainFolder`):
    name, path, first sample index, image count, ``files_sha256`` (and ``content_sha256`` with ``content``)."""
    folder = dataset.folders[name]
    record: dict[str, str | int] = {"name": name, "path": str(folder.path), "first_index": dataset.first_index(name),
              "images": folder.images, "files_sha256": folder.files_sha256()}
    if content:
        record["content_sha256"] = folder.content_sha256()
    return record
