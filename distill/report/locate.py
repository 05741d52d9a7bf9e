"""Where a path an artifact names is, wherever ``distill report`` runs.

export.json names its checkpoint and run, qad.json its checkpoint and the export it ran against, a bench record
the file it timed. A path stored relative means nothing without the folder it is relative to, and the report may
run anywhere, so each stored path is looked for in tiers, surest first (:func:`places`):

1. the path relative to the artifact's own folder, where the writer stored one (export.json ``provenance.relative``
   or, in files written just before that, top-level ``relative``; qad.json ``config.relative`` / ``relative``; a
   bench record's ``model_relative``, relative to its .jsonl's folder), together with the path itself when it is
   absolute (new artifacts store both). One tier: a tree of results copied or moved whole still finds its own
   parts (the absolute path names the old tree, not among the inputs), and a folder copied into another tree
   (an export copied beside another experiment's) finds both its own absolute place and, by the relative path,
   the other tree's: two different things fit, so nothing is joined rather than the wrong one. The relative path
   is taken as laid out (``..`` against the folder's path, not its real path: a ``runs/`` that is a symlink),
   and resolved through links as a second place;
2. an older artifact's relative path, relative to the folder its command ran in, which it does not record: against
   the artifact's folder and each folder above it (distill's outputs lie under the folder they were made from:
   ``demo_out/export/fm`` names ``demo_out/runs/fm``, made in the folder above ``demo_out``);
3. that path against the current folder (what the report did before, and right when it runs where the
   artifact was made).

A tier decides when exactly one of its places is what is looked for (:func:`find`); two different ones in one tier
decide nothing (:func:`hits` names them, for the report's "ambiguous" warning), so the report leaves the join out
rather than guess: it never joins the wrong thing silently. Joins by identity (sha256s) come before these, in the
callers, and settle an ambiguous tier where they can (:func:`narrow`): the one whose identity is the record's, or,
when the places hold copies of one another (a tree copied whole and reported next to its original: the relative
path names the copy's part, the absolute one the original's, both inputs), the first, as laid out relative to the
artifact: its own tree's. Places that differ in identity stay ambiguous. :func:`existing` (a path that exists, for
the decision's path comparison of checkpoints) settles copies the same way.

A join by identity alone (a bench record's sha256, listed by several exports: an export copied into another tree)
finds copies without a stored path to rank them by; :func:`nearest` ranks them by the same rule as tier 2: inside
the artifact's folder, then inside each folder above it, then by path, so that neither the last one read nor the
order the inputs were given in decides. Only copies: when the places differ in what a join takes from them (an
export's accuracies and data), :func:`nearest_held` names them instead, as ambiguous.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

T = TypeVar("T")
Tiers = list[list[str]]


def places(stored: str | None, folder: str | Path, relative: str | None = None) -> Tiers:
    """The real paths ``stored`` (as an artifact in ``folder`` stores it; ``relative``: the same path relative to
    ``folder``, where the writer stored one) may be, in tiers, surest first (module docstring)."""
    tiers: Tiers = []
    first: list[str] = []
    if relative:
        laid_out = os.path.normpath(os.path.join(os.path.abspath(folder), relative))  # `..` as the folder is laid out
        first += [os.path.realpath(laid_out), os.path.realpath(Path(folder) / relative)]
    path = Path(stored) if stored else None
    if path is not None and path.is_absolute():
        first.append(os.path.realpath(path))
    if first:
        tiers.append(list(dict.fromkeys(first)))
    if path is not None and not path.is_absolute():
        here = Path(os.path.abspath(folder))
        tiers.append(list(dict.fromkeys(os.path.realpath(up / path) for up in (here, *here.parents))))
        tiers.append([os.path.realpath(path)])
    return tiers


def hits(tiers: Tiers, index: Mapping[str, object], above: int = 0) -> list[str]:
    """The keys of ``index`` (real path -> thing) found at the first tier that has any: one is a join, two or more
    are ambiguous (:func:`find`). ``above``: a place may also be inside what is looked for, up to that many folders
    down (the nearest counts: a torch record's checkpoint inside its run)."""
    def at(path: str) -> str | None:
        for p in [path, *map(str, Path(path).parents)][:above + 1]:
            if p in index:
                return p
        return None
    for tier in tiers:
        found = list(dict.fromkeys(k for k in map(at, tier) if k is not None))
        if found:
            return found
    return []


def narrow(found: list[str], fits: Callable[[str], bool] | None = None,
           identity: Callable[[str], str | None] | None = None) -> list[str]:
    """Of two or more places :func:`hits` found, the ones ``fits`` keeps (the record's identity: a sha256), where it
    keeps any; then, when all that are left have one known ``identity`` (copies of one another), the first: the place
    as laid out relative to the artifact, its own tree's (the tiers list it first). Else all of them (ambiguous)."""
    if len(found) > 1 and fits is not None:
        found = [k for k in found if fits(k)] or found
    if len(found) > 1 and identity is not None:
        ids = {identity(k) for k in found}
        if len(ids) == 1 and None not in ids:
            found = found[:1]
    return found


def find(tiers: Tiers, index: Mapping[str, T], above: int = 0) -> T | None:
    """What ``index`` holds at the first tier with exactly one place in it (:func:`hits`); None when no tier has one,
    or the first tier that has any has two (ambiguous)."""
    found = hits(tiers, index, above)
    return index[found[0]] if len(found) == 1 else None


def existing(tiers: Tiers, identity: Callable[[str], str | None] | None = None) -> str | None:
    """The one place that exists, by the same tiers (:func:`find`); of two or more in a tier that hold copies of one
    another (the same ``identity``: a tree copied whole, reported next to its original), the first, the artifact's
    own tree's (:func:`narrow`); None when none exists or a tier has two that differ."""
    for tier in tiers:
        found = narrow(list(dict.fromkeys(p for p in tier if os.path.exists(p))), identity=identity)
        if found:
            return found[0] if len(found) == 1 else None
    return None


def nearest(candidates: Iterable[str], folder: str | Path) -> list[str]:
    """``candidates`` (paths of things that are copies of one another, found by identity rather than by a stored path:
    a sha256 several exports list) nearest ``folder`` first, by the tiers' rule: inside the artifact's own folder,
    then inside each folder above it (the fewer folders up to the one holding both, the nearer), then by path, so
    the choice does not depend on the order the inputs were given in."""
    here = Path(os.path.abspath(folder))

    def rank(path: str) -> tuple[int, str]:
        there = os.path.abspath(path)
        common = Path(os.path.commonpath([here, there]))
        return len(here.parts) - len(common.parts), there
    return sorted(dict.fromkeys(candidates), key=rank)



def nearest_held(held: Mapping[str, T], folder: str | Path, identity: Callable[[T], Any]) -> tuple[str | None, list[str]]:
    """Of ``held`` (place -> what it holds, found by a sha256 several places list), the place nearest ``folder``
    (:func:`nearest`) when all hold copies (one ``identity``: what a join takes from them); ``(None, places)`` when
    they differ (the same bytes exported twice with other results), for the caller's "ambiguous" warning."""
    if len({json.dumps(identity(v), sort_keys=True, default=str) for v in held.values()}) > 1:
        return None, sorted(held)
    return (nearest(held, folder)[0] if held else None), []
