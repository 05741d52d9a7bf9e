"""Where a path an artifact names is, wherever ``distill report`` runs.

export.json names its checkpoint and run, qad.json its checkpoint and the export it ran against, a bench record
the file it timed. A path stored relative means nothing without the folder it is relative to, and the report may
run anywhere, so each stored path is looked for in tiers, surest first (:func:`places`):

1. the path relative to the artifact's own folder, where the writer stored one (export.json and qad.json
   ``relative``, a bench record's ``model_relative``, relative to its .jsonl's folder): a tree of results copied or
   moved whole still finds its own parts;
2. the path itself when it is absolute (new artifacts store them so);
3. an older artifact's relative path, relative to the folder its command ran in, which it does not record: against
   the artifact's folder and each folder above it (distill's outputs lie under the folder they were made from:
   ``demo_out/export/fm`` names ``demo_out/runs/fm``, made in the folder above ``demo_out``);
4. that path against the current folder (what the report did before, and right when it runs where the
   artifact was made).

A tier decides when exactly one of its places is what is looked for (:func:`find`); two different ones in one tier
(an older relative path that two folders above the artifact both hold) decide nothing, so the report leaves the
join out rather than guess: it never joins the wrong thing silently. Joins by identity (sha256s) come before
these, in the callers.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping, TypeVar

T = TypeVar("T")
Tiers = list[list[str]]


def places(stored: str | None, folder: str | Path, relative: str | None = None) -> Tiers:
    """The real paths ``stored`` (as an artifact in ``folder`` stores it; ``relative``: the same path relative to
    ``folder``, where the writer stored one) may be, in tiers, surest first (module docstring)."""
    tiers: Tiers = []
    if relative:
        tiers.append([os.path.realpath(Path(folder) / relative)])
    if stored:
        path = Path(stored)
        if path.is_absolute():
            tiers.append([os.path.realpath(path)])
        else:
            here = Path(os.path.abspath(folder))
            tiers.append(list(dict.fromkeys(os.path.realpath(up / path) for up in (here, *here.parents))))
            tiers.append([os.path.realpath(path)])
    return tiers


def find(tiers: Tiers, index: Mapping[str, T], above: int = 0) -> T | None:
    """What ``index`` (real path -> thing) holds at the first tier with exactly one place in it; None when no tier
    has one, or the first tier that has any has two (ambiguous). ``above``: a place may also be inside what is
    looked for, up to that many folders down (the nearest counts: a torch record's checkpoint inside its run)."""
    def at(path: str) -> str | None:
        for p in [path, *map(str, Path(path).parents)][:above + 1]:
            if p in index:
                return p
        return None
    return first(tiers, at, index.__getitem__)


def existing(tiers: Tiers) -> str | None:
    """The one place that exists, by the same tiers (:func:`find`); None when none does or a tier has two."""
    return first(tiers, lambda p: p if os.path.exists(p) else None, lambda p: p)


def first(tiers: Tiers, at: Callable[[str], str | None], value: Callable[[str], T]) -> T | None:
    """``value`` of the one key ``at`` finds among a tier's places, for the first tier where it finds any."""
    for tier in tiers:
        hits = list(dict.fromkeys(k for k in map(at, tier) if k is not None))
        if hits:
            return value(hits[0]) if len(hits) == 1 else None
    return None
