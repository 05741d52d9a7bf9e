"""The one exception type users see: a single actionable line, printed by the CLI; and the project's warning."""
from __future__ import annotations


class DistillError(Exception):
    """A user-facing error. ``str(err)`` is one line naming the file, key or value at fault.

    The CLI prints ``error: <message>`` and exits with status 1, without a traceback (2 is argparse's, for bad usage).
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # force a single line


class UnknownKeyword(DistillError, TypeError):
    """A mistyped keyword argument of a public API function (:func:`distill.validation.checked_keywords`): one line
    naming it and the closest keyword, as every :class:`DistillError`, and still the TypeError Python raises for an
    unknown keyword, so a caller that catches TypeError (probing for a keyword an older distill lacks) keeps working."""


class DistillWarning(UserWarning):
    """A warning of distill's own (``warnings.warn(..., DistillWarning)``): the CLI prints it as one ``warning: ...``
    line like the rest of its warnings (:mod:`distill.cli._log`); a Python caller's warning filters apply as usual."""
