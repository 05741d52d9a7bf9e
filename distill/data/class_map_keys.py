"""A class-name map's keys checked against the class folders under a data root (:class:`~distill.data.folder.DomainFolder`).

A ``DOMAIN/folder`` key must name a domain and a class folder under the root: a typo (``caltec/auto``) would otherwise
be ignored and leave the folder name as an extra class, so it is an error. A ``folder`` key that names a class folder
in no domain (``dgo: hound``) is a warning, said once per process: a command builds the data set more than once
(train, export, eval, qad and ``data summary`` each do, some several times), and a shared map that covers more classes
than this root holds would otherwise say it at every build.

Two class folders of one domain mapped to one name are merged into one class: a way to coarsen labels
(``husky: dog``, ``beagle: dog``), or a typo that silently joins two classes. It is a warning (once per process)
naming the folders, the class and the domains. The same folder name in several domains is one class by design.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Collection, Mapping, Sequence

from distill.errors import DistillError

#: (the map, the root, the keys) warned about in this process
_WARNED: set[tuple[str, str, tuple[str, ...]]] = set()
#: (the map, the merges) warned about in this process
_WARNED_MERGED: set[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]]] = set()


def check_class_map_keys(class_map: Mapping[str, str], where: str, root: Path, domains: Collection[str],
                         folders: Collection[str]) -> None:
    """Refuse a ``DOMAIN/folder`` key naming no domain or class folder under ``root``; warn (once) of ``folder`` keys
    naming a class folder in no domain. ``where``: the map's file (or "class-name map"); ``folders``: the class
    folders holding images."""
    for key in class_map:
        if "/" not in key:
            continue
        domain, folder = key.split("/", 1)
        if domain not in domains:
            raise DistillError(f"{where}: key '{key}' names domain '{domain}', which is not under {root} "
                               f"(domains: {', '.join(domains)})")
        if not (root / domain / folder).is_dir():
            raise DistillError(f"{where}: key '{key}' names class folder '{folder}', which is not under {root / domain}")
    unmatched = tuple(k for k in class_map if "/" not in k and k not in folders
                      and not any((root / d / k).is_dir() for d in domains))
    said = (where, str(root), unmatched)
    if unmatched and said not in _WARNED and os.environ.get("RANK", "0") == "0":  # not by every DDP rank
        _WARNED.add(said)
        print(f"warning: {where}: key(s) {', '.join(map(repr, unmatched))} name no class folder in any domain "
              f"under {root}: ignored (a typo? a key is 'folder' or 'DOMAIN/folder')", file=sys.stderr)


def warn_merged_folders(folders: Sequence[tuple[str, str]], names: Sequence[str], where: str) -> None:
    """Warn (once) when a class-name map gives two class folders of one domain the same class name: they become
    one class. ``folders``: ``(domain, folder)`` pairs; ``names``: each one's mapped class name."""
    groups: dict[tuple[str, str], list[str]] = {}  # (domain, class) -> its folders
    for (domain, folder), name in zip(folders, names):
        groups.setdefault((domain, name), []).append(folder)
    merged: dict[tuple[str, tuple[str, ...]], list[str]] = {}  # (class, folders) -> the domains merging them
    for (domain, name), members in groups.items():
        if len(members) > 1:
            merged.setdefault((name, tuple(sorted(members))), []).append(domain)
    said = (where, tuple(sorted(merged)))
    if not merged or said in _WARNED_MERGED or os.environ.get("RANK", "0") != "0":
        return
    _WARNED_MERGED.add(said)
    for (name, merged_folders), domains in sorted(merged.items()):
        print(f"warning: {where}: class folders {', '.join(map(repr, merged_folders))} (in domain(s) {', '.join(domains)}) "
              f"are all mapped to '{name}': merged into one class (intended? give each its own name to keep them "
              "apart)", file=sys.stderr)
