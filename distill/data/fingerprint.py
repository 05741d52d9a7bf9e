"""Content fingerprint of a dataset: what the images *are*, not only where they are.

``DomainFolder.fingerprint`` hashes paths and file sizes: cheap (no image is read), and it
catches added, removed, renamed or resized files, but not an image re-encoded or edited to the
same byte count. ``distill cache build --fingerprint content`` records this stronger identity
in the cache manifest (``dataset.content_fingerprint``); every run that opens such a cache
recomputes it and refuses a mismatch. It reads every selected image once (sha256 in 1 MiB
chunks, files hashed in parallel by a thread pool), so it is opt-in: about the cost of one decode-free pass over the files.
"""
from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Iterable

from distill.utils.io import sha256_files

if TYPE_CHECKING:  # typing only: the stages that call this import the dataset themselves
    from distill.data.folder import DomainFolder

MODES = ("paths", "content")


def content_fingerprint(dataset: DomainFolder, domains: Iterable[str] | None = None) -> str:
    """sha256 over the split rule, the class list and, per selected image, its path, class and byte hash.

    Args:
        dataset: a :class:`~distill.data.DomainFolder`.
        domains: the domains to cover (default all), as ``dataset.fingerprint`` takes them.
    """
    h = hashlib.sha256()
    h.update(json.dumps({"classes": dataset.classes, "test_fraction": dataset.test_fraction,
                         "split_seed": dataset.split_seed}, sort_keys=True).encode())
    samples = dataset.select(domains)
    for s, digest in zip(samples, sha256_files(dataset.path(s) for s in samples)):  # hashed by a thread pool
        h.update(f"{s.relpath}\t{digest}\t{s.class_name}\n".encode())
    return h.hexdigest()
