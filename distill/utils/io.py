"""Atomic file writes and content hashes."""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from distill.errors import DistillError


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` atomically: ``write(tmp)`` fills a temp file beside it, then rename.

    A process killed at any moment leaves either the old file or the complete new one,
    never a partial file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; artifacts get normal permissions
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


#: Threads hashing files at once (:func:`sha256_files`): reads and hashlib (which releases the GIL
#: on buffers over 2 kB) overlap; more than the cores helps while files come from disk or a network.
HASH_THREADS = min(32, (os.cpu_count() or 1) + 4)


def sha256_files(paths: Iterable[str | Path], threads: int | None = None, chunk: int = 1024) -> Iterator[str]:
    """:func:`sha256_file` of each path, in order, computed by a thread pool (``chunk`` paths in flight
    at a time, so a listing of 10^7 files never becomes 10^7 futures)."""
    with ThreadPoolExecutor(threads or HASH_THREADS, thread_name_prefix="sha256") as pool:
        batch: list[str | Path] = []
        for path in paths:
            batch.append(path)
            if len(batch) == chunk:
                yield from pool.map(sha256_file, batch)
                batch = []
        yield from pool.map(sha256_file, batch)


def read_json(path: str | Path) -> Any:
    """Read JSON (UTF-8), turning a parse error or undecodable bytes into a one-line DistillError naming the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DistillError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:  # a binary or corrupt file: not a traceback
        raise DistillError(f"{path}: not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r})") from None
    except json.JSONDecodeError as e:
        raise DistillError(f"{path}: invalid JSON {json_error(e)}") from None


def json_error(e: json.JSONDecodeError, lines: bool = True) -> str:
    """``at line L, column C: WHAT`` for a one-line error (``lines=False``, a JSON Lines line: ``at column C: WHAT``).

    ``e.msg`` alone can read cut off: some end in "at" and leave the place to ``str(e)`` ("Unterminated string
    starting at"). Where the text ends before the value does (a file half-written by a killed command), it says so:
    at the end, inside a string, or inside a literal or number that runs to the end (``{"a": tru``, ``[1.``); an
    empty (or blank) text is called empty, not cut off.
    """
    where = f"line {e.lineno}, column {e.colno}" if lines else f"column {e.colno}"
    what = f"{e.msg.removesuffix(' at')} there" if e.msg.endswith(" at") else e.msg
    if not e.doc.strip():
        return f"at {where}: the {'file' if lines else 'line'} is empty"
    if e.msg.startswith("Unterminated string") or not e.doc[e.pos:].strip() or _cut_in_literal(e.doc, e.pos, e.msg):
        what += "; the text ends before it is complete (cut off, as by an interrupted write?)"
    return f"at {where}: {what}"


_LITERALS = ("true", "false", "null", "NaN", "Infinity", "-Infinity")  # what json.loads reads as a bare word
_NUMBER_START = re.compile(r"-?(0|[1-9][0-9]*)?(\.[0-9]*)?([eE][-+]?[0-9]*)?")  # a number, possibly unfinished


def _cut_in_literal(doc: str, pos: int, msg: str) -> bool:
    """The text ends inside a bare word or number that starts at or just before ``pos``: ``tru``, ``-``, ``1.``,
    ``2e`` at the end (JSON reads the number's whole part and stops at the rest, so look back over its digits)."""
    rest = doc[pos:].rstrip()
    if msg == "Expecting value" and any(lit.startswith(rest) and lit != rest for lit in _LITERALS):
        return True
    start = pos
    while start > 0 and doc[start - 1] in "0123456789-+.eE":
        start -= 1
    # a value that begins here ("Expecting value": ``-``) or a number read in part before here (``1.``, ``2e``)
    return (msg == "Expecting value" or start < pos) and _NUMBER_START.fullmatch(doc[start:].rstrip()) is not None


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """Refuse, in one line, an output folder that cannot be one: ``path``, or a folder above it, is a file.

    Every command that writes a folder calls this before its work (and :func:`make_out_dir` to create it), so
    ``--out some_file`` is ``error: ...`` naming the path, not a FileExistsError / NotADirectoryError traceback.
    ``flag`` is how the user named the folder (``--out``, ``run.out``).
    """
    path = Path(path)
    for p in (path, *path.parents):
        if p.is_dir():
            break
        if p.exists() or p.is_symlink():  # a file, or a link to nothing
            what = "exists and is not a folder" if p == path else f"{p} is a file, not a folder"
            raise DistillError(f"{flag} {path}: {what}; choose another {flag}")
    return path


def make_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """:func:`check_out_dir`, then create the folder (and its parents); a failure is one line naming it."""
    path = check_out_dir(path, flag)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DistillError(f"{flag} {path}: cannot create this folder ({e.strerror or e})") from None
    return path


@contextmanager
def removed_if_left_empty(path: str | Path) -> Iterator[Path]:
    """Run a stage that writes the folder ``path``; when it fails or is interrupted (Ctrl-C) after creating the
    folder and leaving it empty, remove it, and each folder above it that it created too (``--out new/a/b``: ``new``,
    ``new/a``) and left empty. A folder that was there before, or holds files, is kept."""
    path = Path(path)
    # each level os.makedirs may make, '..' resolved (new/a/../b makes new, new/a and new/b): absolute, deepest first
    levels = {Path(os.path.abspath(p)) for p in (path, *path.parents)}
    levels |= set(Path(os.path.abspath(path)).parents)
    made = sorted((p for p in levels if not (p.exists() or p.is_symlink())), key=lambda p: len(p.parts), reverse=True)
    try:
        yield path
    except BaseException:
        for folder in made:  # deepest first: one that holds something (or is not a folder) is kept, and so its parents
            with suppress(OSError):  # the stage's own error is the one to report
                if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
                    folder.rmdir()
        raise


def append_line(path: str | Path, line: str) -> None:
    """Append ``line`` (no newline in it) to the JSON-lines file ``path`` as a line of its own, as every bench file is
    appended to (:func:`distill.bench.edge_runner.appending`: its last line ended first, one write() of the whole
    line, other processes appending to it waiting their turn)."""
    from distill.bench.edge_runner import appending  # lazy: distill.bench imports the records that import this

    with appending(path) as write:
        write(line)
