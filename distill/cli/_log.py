"""Libraries' log warnings, and warnings.warn, in the CLI's ``warning: ...`` form.

timm, open_clip and onnxruntime's Python side warn through :mod:`logging`. With no handler configured, logging
prints such a record bare on stderr through ``logging.lastResort`` (timm at one scheduler step: "Cosine annealing
scheduler will have no effect on the learning rate since t_initial = t_mul = eta_mul = 1."), or, once a module-level
``logging.warning()`` (open_clip's) has called ``basicConfig``, as ``WARNING:root:...``. While a command runs,
:func:`warning_lines` gives the root logger a :class:`WarningLines` handler (so ``basicConfig`` adds none) and puts
one in ``lastResort``'s place, so the line reads ``warning: cosine annealing ...`` like the project's own warnings.
A program that configured logging itself (a Python API user calling :func:`distill.cli.main`) keeps its handlers.
A library that prints its log lines itself (a handler of its own on its logger) is not printed again
(:func:`printed_by_its_library`); huggingface_hub's own handler is taken off instead (below).

huggingface_hub gives its ``huggingface_hub`` logger a bare ``StreamHandler`` of its own when it is imported, so an
offline download's records ("'[Errno -2] Name or service not known' thrown while requesting HEAD ...", "Retrying in
1s [Retry 1/5].") printed bare, and again as ``warning:`` lines through the root's handler. Under the same rule
:func:`warning_lines` takes that handler off while a command runs (:func:`_hub_handlers`), and after the first such
network error says once what the wait is (:data:`HUB_UNREACHABLE`): huggingface_hub retries every file it tries five
times, 1 to 8 s apart (about 25 s a file where each try fails at once, as without DNS; an open_clip tag tries two
files), with no setting to shorten that but ``HF_HUB_OFFLINE=1``, which distill does not set for you (online, a
download must still work).

``warnings.warn`` prints ``file:line: UserWarning: message`` and the source line after it. While a command runs,
:func:`warning_lines` also takes ``warnings.showwarning`` (:class:`WarningPrinter`): a
:class:`~distill.errors.DistillWarning` (distill's own) reads ``warning: message``; a library's warning that is
shown (the expected and harmless ones are filtered where they arise, by category, message and module:
:data:`distill.export.onnx.TORCH_NOTICES`) reads ``warning: message [Category, file:line]`` on one line: the user
still learns where it came from. Which warnings show, and how often, is the filters' business as always
(``python -W error`` still turns them into errors), except that one text is printed once. Inside
``catch_warnings(record=True)`` (``pytest.warns``) nothing is taken: the caller records the warnings.
"""
from __future__ import annotations

import importlib
import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from distill.errors import DistillWarning


def lower_first(text: str) -> str:
    """``Cosine annealing ...`` -> ``cosine annealing ...``: a plain capitalized first word only; an acronym or a name
    spelled with capitals inside (``ONNX``, ``PyTorch``, ``TypedStorage``, ``X``) stays as it is."""
    word = text.split(maxsplit=1)[0] if text.strip() else ""
    if word == "A" or (len(word) > 1 and word[0].isupper() and word[1:].isalpha() and word[1:].islower()):
        return text[0].lower() + text[1:]
    return text


def printed_by_its_library(record: logging.LogRecord) -> bool:
    """Whether a handler of the record's own logger or of a parent below the root (huggingface_hub gives its loggers
    one on stderr) printed it already: a handler that prints (not a ``NullHandler``) at the record's level."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None and logger is not logging.getLogger():
        if any(not isinstance(h, logging.NullHandler) and record.levelno >= h.level for h in logger.handlers):
            return True
        logger = logger.parent if logger.propagate else None
    return False


class WarningLines(logging.Handler):
    """A log record of level WARNING or above as one ``warning: ...`` line on stderr (``error: ...`` from level
    ERROR up; its traceback after it)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter("%(message)s"))
        self.hub_hinted = False

    def emit(self, record: logging.LogRecord) -> None:
        if printed_by_its_library(record):  # a library that printed its own line (a handler of its own): once is enough
            return
        try:
            text = self.format(record)
        except Exception:  # logging's own rule: a bad record never breaks the program
            self.handleError(record)
            return
        kind = "warning" if record.levelno < logging.ERROR else "error"
        print(f"{kind}: {lower_first(text)}", file=sys.stderr, flush=True)
        # huggingface_hub's "'<network error>' thrown while requesting ..." (not its "HTTP Error 503 thrown ...")
        if not self.hub_hinted and record.name.split(".")[0] == HUB_LOGGER and " thrown while requesting " in text \
                and not text.startswith("HTTP Error"):
            self.hub_hinted = True
            print(f"warning: {HUB_UNREACHABLE}", file=sys.stderr, flush=True)


HUB_LOGGER = "huggingface_hub"
#: said once, after huggingface_hub's first network error and before its first retry's wait
HUB_UNREACHABLE = ("the Hugging Face hub cannot be reached; huggingface_hub retries each file before it gives up (set "
                   "HF_HUB_OFFLINE=1 to fail at once offline)")


def _hub_handlers() -> list[logging.Handler]:
    """The bare stderr handler huggingface_hub gave its logger (imported here, 30 ms: importing it adds the handler),
    where it logs at its default WARNING or above: with ``HF_HUB_VERBOSITY=info`` or a handler with a formatter (a
    user's), the user wants the hub's own lines, so none is taken."""
    try:
        importlib.import_module("huggingface_hub.utils.logging")  # lazy: only while a command runs
    except ImportError:  # not installed: nothing of it to print
        return []
    hub = logging.getLogger(HUB_LOGGER)
    if hub.getEffectiveLevel() < logging.WARNING:
        return []
    return [h for h in hub.handlers if type(h) is logging.StreamHandler and h.formatter is None]


def _where(filename: str) -> str:
    """A warning's file, short: from its package folder on (``torch/utils/data/dataloader.py``)."""
    parts = Path(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            return "/".join(parts[parts.index(marker) + 1:])
    return filename


class WarningPrinter:
    """``warnings.showwarning`` in the CLI's form: one ``warning: ...`` line on stderr; a library's names its
    category and place. A text already printed is not printed again (torch warns of too many DataLoader workers from
    two places, at the loader and at its iterator: one line says it)."""

    def __init__(self) -> None:
        self.printed: set[tuple[str, str]] = set()

    def __call__(self, message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
        text = " ".join(str(message).split())
        if (category.__name__, text) in self.printed:
            return
        self.printed.add((category.__name__, text))
        if not issubclass(category, DistillWarning):
            text += f" [{category.__name__}, {_where(filename)}:{lineno}]"
        try:
            print(f"warning: {lower_first(text)}", file=sys.stderr, flush=True)  # stderr, as every CLI warning
        except OSError:  # stderr gone: a warning is not worth a failure (as warnings' own showwarning)
            pass


@contextmanager
def warning_lines() -> Iterator[None]:
    """Inside: a log record of WARNING or above prints as a ``warning:`` line, unless the root logger already had a
    handler on entry (the program's own logging setup: left alone; huggingface_hub's records too, its own handler
    taken off meanwhile: :func:`_hub_handlers`); a shown ``warnings.warn`` too
    (:class:`WarningPrinter`), unless ``warnings.showwarning`` is not Python's own on entry (a program's, or a
    ``catch_warnings(record=True)``'s: left alone as well)."""
    root, before = logging.getLogger(), logging.lastResort
    handler = None if root.handlers else WarningLines()
    hub, hubs = logging.getLogger(HUB_LOGGER), _hub_handlers() if handler is not None else []
    if handler is not None:
        root.addHandler(handler)
        logging.lastResort = handler  # loggers that do not propagate to the root
    for h in hubs:  # its records reach the root's handler: printed once, as warning: lines
        hub.removeHandler(h)
    shown_before, printer = warnings.showwarning, WarningPrinter()
    # catch_warnings(record=True) (pytest.warns, recwarn) leaves showwarning Python's own and records through
    # warnings._showwarnmsg_impl: taking showwarning then would print what the caller means to record
    ours = shown_before is _PYTHONS_SHOWWARNING and getattr(warnings, "_showwarnmsg_impl", None) is _PYTHONS_IMPL
    if ours:
        warnings.showwarning = printer
    try:
        yield
    finally:
        if handler is not None:
            root.removeHandler(handler)
            logging.lastResort = before
        for h in hubs:
            hub.addHandler(h)  # (addHandler adds a handler once)
        if ours and warnings.showwarning is printer:
            warnings.showwarning = shown_before


#: Python's own showwarning (what warnings calls it; as imported here where it has no such name)
_PYTHONS_SHOWWARNING = getattr(warnings, "_showwarning_orig", warnings.showwarning)
_PYTHONS_IMPL = getattr(warnings, "_showwarnmsg_impl", None)  # what catch_warnings(record=True) replaces
