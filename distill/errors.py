"""The one exception type users see: a single actionable line, printed by the CLI."""
from __future__ import annotations


class DistillError(Exception):
    """A user-facing error. ``str(err)`` is one line naming the file, key or value at fault.

    The CLI prints ``error: <message>`` and exits with status 1, without a traceback (2 is argparse's, for bad usage).
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # force a single line
