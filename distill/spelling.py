"""How a message names an option: as the caller spelled it.

A stage's messages advise on its options (``re-export with --calib-count 17 ... or drop --export``). On the command
line those are flags; called from Python (:mod:`distill.api`) they are the config's keys (``calib_count=17``,
``export_dir``). A command runs its stage inside :func:`option_names` with its key -> flag table (the one its
parser's errors use, e.g. ``distill/cli/qad.py``'s ``FLAGS``); a message names an option through :func:`option`
alone, so each message is written once and reads right for both callers.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator, Mapping

_NAMES: ContextVar[Mapping[str, str]] = ContextVar("distill_option_names", default={})
_NO_VALUE = object()


@contextmanager
def option_names(names: Mapping[str, str]) -> Iterator[None]:
    """Within it, :func:`option` names a key as ``names`` spells it (a command's flags)."""
    token = _NAMES.set(dict(names))
    try:
        yield
    finally:
        _NAMES.reset(token)


def option(key: str, value: Any = _NO_VALUE) -> str:
    """``key`` (with ``value``) as the caller gave it: the flag inside :func:`option_names` (``--calib-count 17``),
    else the Python keyword (``calib_count=17``)."""
    flag = _NAMES.get().get(key)
    if value is _NO_VALUE:
        return flag or key
    return f"{flag} {value}" if flag else f"{key}={value}"
