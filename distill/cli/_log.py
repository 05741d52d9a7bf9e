"""Libraries' log warnings in the CLI's ``warning: ...`` form.

timm, open_clip and onnxruntime's Python side warn through :mod:`logging`. With no handler configured, logging
prints such a record bare on stderr through ``logging.lastResort`` (timm at one scheduler step: "Cosine annealing
scheduler will have no effect on the learning rate since t_initial = t_mul = eta_mul = 1."), or, once a module-level
``logging.warning()`` (open_clip's) has called ``basicConfig``, as ``WARNING:root:...``. While a command runs,
:func:`warning_lines` gives the root logger a :class:`WarningLines` handler (so ``basicConfig`` adds none) and puts
one in ``lastResort``'s place, so the line reads ``warning: cosine annealing ...`` like the project's own warnings.
A program that configured logging itself (a Python API user calling :func:`distill.cli.main`) keeps its handlers.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager


def lower_first(text: str) -> str:
    """``Cosine annealing ...`` -> ``cosine annealing ...``; an acronym (``ONNX ...``) stays as it is."""
    if text[:1].isupper() and not text[1:2].isupper():
        return text[0].lower() + text[1:]
    return text


class WarningLines(logging.Handler):
    """A log record of level WARNING or above as one ``warning: ...`` line on stderr (``error: ...`` from level
    ERROR up; its traceback after it)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # logging's own rule: a bad record never breaks the program
            self.handleError(record)
            return
        kind = "warning" if record.levelno < logging.ERROR else "error"
        print(f"{kind}: {lower_first(text)}", file=sys.stderr, flush=True)


@contextmanager
def warning_lines() -> Iterator[None]:
    """Inside: a log record of WARNING or above prints as a ``warning:`` line, unless the root logger already had a
    handler on entry (the program's own logging setup: left alone)."""
    root, before = logging.getLogger(), logging.lastResort
    handler = None if root.handlers else WarningLines()
    if handler is not None:
        root.addHandler(handler)
        logging.lastResort = handler  # loggers that do not propagate to the root
    try:
        yield
    finally:
        if handler is not None:
            root.removeHandler(handler)
            logging.lastResort = before
