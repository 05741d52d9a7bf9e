"""The report's warnings about benchmark records it could not join to the file they timed (:func:`unmatched_warnings`)."""
from __future__ import annotations

import os


def unmatched_warnings(replaced: list[tuple[str, str]], elsewhere: list[tuple[str, str]]) -> list[str]:
    """One warning for records of a file since replaced (``replaced``: (file, sha256)), one for records whose file,
    found by its path relative to their .jsonl, has other bytes (``elsewhere``: (path named, path found))."""
    out: list[str] = []
    if replaced:
        files_ = list(dict.fromkeys(f for f, _ in replaced))
        out.append(
            f"{len(replaced)} benchmark record(s) timed a file since replaced: the sha256 they carry is not the one "
            f"export.json lists for {', '.join(files_[:3])}{' ...' if len(files_) > 3 else ''} (re-exported into the "
            "same folder?); they have no accuracy here: bench the export again")
    if elsewhere:
        pairs = list(dict.fromkeys(elsewhere))
        why = "copied next to another export" if all(os.path.exists(a) for a, _ in pairs) else \
            "copied next to another export, or that export re-exported since"
        out.append(
            f"{len(elsewhere)} benchmark record(s) timed a file other than the one found by its path relative to "
            f"their .jsonl, which has other bytes: "
            f"{'; '.join(f'{a} (found {b})' for a, b in pairs[:3])}{' ...' if len(pairs) > 3 else ''} (a bench file "
            f"{why}?); they have no accuracy here")
    return out
