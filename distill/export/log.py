"""The export's progress sink: lines go to the caller's sink; warnings also go to export.json."""
from __future__ import annotations

import sys
from typing import Callable


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


class ExportLog:
    """Callable progress log that also collects warnings (export.json ``warnings`` lists them)."""

    def __init__(self, sink: Callable[[str], None] | None = None):
        self.sink = sink or _stderr
        self.warnings: list[str] = []

    def __call__(self, line: str) -> None:
        self.sink(line)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.sink(f"warning: {message}")
