"""The split rule's flags, spelled once for every command that reads images (not a command: the leading ``_``)."""
from __future__ import annotations

import argparse
from typing import Any, Iterable

from distill.data.split import SPLIT_KEYS, SplitKeys, SplitRule


def add_split_arguments(p: argparse.ArgumentParser, unset: Iterable[str] = (), unset_from: str = "") -> None:
    """The split rule's flags (``--class-map``, ``--test-fraction``, ``--split-seed``, ``--val-fraction``,
    ``--pretrain-fraction``), spelled once for every command; :func:`split_rule_of` reads them back.

    Keys in ``unset`` default to None: the command fills them from ``unset_from`` (said in the help).
    """
    d, unset = SplitRule(), set(unset)

    def default(key: str) -> tuple[Any, str]:
        value = getattr(d, key)
        if key in unset:
            return None, f" (default: {unset_from}, else {value})"
        return value, f" (default {value})"

    p.add_argument("--class-map", default=None, metavar="FILE",
                   help="YAML/JSON 'folder: name' or 'DOMAIN/folder: name' map (default: "
                   + (f"{unset_from}, else " if "class_map" in unset else "") + "ROOT/classnames.yaml if present)")
    value, note = default("test_fraction")
    p.add_argument("--test-fraction", type=float, default=value, metavar="F",
                   help="fraction of each domain held out as test, by path hash" + note)
    value, note = default("split_seed")
    p.add_argument("--split-seed", type=int, default=value, metavar="N", help="seed of the split hash" + note)
    value, note = default("val_fraction")
    p.add_argument("--val-fraction", type=float, default=value, metavar="F",
                   help="share of the train split held out for model selection" + note)
    value, note = default("pretrain_fraction")
    p.add_argument("--pretrain-fraction", type=float, default=value, metavar="F",
                   help="share of each domain that is the stand-in teacher's pretraining pool, never a student's"
                   + note)


def split_rule_of(args: argparse.Namespace, **fill: Any) -> SplitRule:
    """The rule the split flags give; ``fill``: values for the flags left unset (None). A bad value is one line."""
    keys = {k: getattr(args, k) for k in SPLIT_KEYS if getattr(args, k, None) is not None}
    return SplitRule.of("split rule", **{**fill, **keys})


def split_keys_of(args: argparse.Namespace) -> SplitKeys:
    """The split keys the flags set (the unset ones None: the stage fills them). A bad value is one line."""
    keys = {k: getattr(args, k) for k in SPLIT_KEYS if getattr(args, k, None) is not None}
    SplitRule.of("split rule", **keys)  # the same one-line error for a value no rule takes
    return SplitKeys(**keys)
