"""Libraries' log warnings in the CLI's ``warning: ...`` form.

timm, open_clip and onnxruntime's Python side warn through :mod:`logging`. With no handler configured, logging
prints such a record bare on stderr through ``logging.lastResort`` (timm at one scheduler step: "Cosine annealing
scheduler will have no effect on the learning rate since t_initial = t_mul = eta_mul = 1."). While a command runs,
:func:`warning_lines` puts :class:`WarningLines` in its place, so the line reads ``warning: cosine annealing ...``
like the project's own warnings. A program that configured logging (the Python API's users) keeps its handlers.
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
    """A log record of level WARNING or above as one ``warning: ...`` line on stderr (its traceback after it)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # logging's own rule: a bad record never breaks the program
            self.handleError(record)
            return
        print(f"warning: {lower_first(text)}", file=sys.stderr, flush=True)


@contextmanager
def warning_lines() -> Iterator[None]:
    """Inside: a log record no handler takes prints as a ``warning:`` line (instead of bare)."""
    before = logging.lastResort
    logging.lastResort = WarningLines()
    try:
        yield
    finally:
        logging.lastResort = before
