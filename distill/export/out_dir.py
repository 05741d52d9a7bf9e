"""The export's output folder: made when missing, left as found when the export fails before writing into it,
and cleared of an earlier export's record and files before this export writes its own.

``export.json`` describes the files beside it (with their sha256), and ``distill bench`` / ``distill report`` follow
it. Re-exporting into a folder that holds an export would otherwise leave, until the new ``export.json`` is written
at the very end, the old record describing the new files (an interrupted export), and the old model's files that
this export does not write (fewer precisions) beside the new ones. So, once the export's inputs have been checked
(a bad ``--data`` loses nothing), :meth:`OutputFolder.clear_previous` moves the old ``export.json`` and the files
it listed aside (into a hidden ``.previous-export-*`` folder inside it) and says which. When the new export
finishes they are deleted (:meth:`OutputFolder.commit`); when it fails or is interrupted they are put back
(:meth:`OutputFolder.restore`), so the folder again holds the earlier export, whole. Nothing else is touched: files
the user put there stay. (A killed process leaves the hidden folder; the next export into the folder removes it.)

Another stage's folder (a checkpoint folder, a training run's, a teacher cache, a ``distill qad`` folder...) is
refused as the output folder (:meth:`OutputFolder.check`, :func:`refuse_checkpoint_or_run`, which ``distill qad``
calls too; the rule is :mod:`distill.outputs`'): the export's files would mix with the folder's own, and ``distill
bench`` of it would time the wrong files.

One folder goes the same way, as a unit: ``checkpoint/``, the re-targeted student of ``--classes``. export.json
does not list it; it is the earlier export's when that export re-targeted (its ``config.classes``), and then it is
set aside with the rest. A ``checkpoint/`` that no export.json here says an export wrote is the user's: a
``--classes`` export, which writes one, refuses the folder in one line before writing anything
(:meth:`OutputFolder.check_writes`), and a failed ``--classes`` export takes its own away (``replaces``), so it
leaves neither its student beside the earlier export nor the earlier export without its own, nor (a first export)
a ``checkpoint/`` its retry would refuse. The student is written into the export's scratch folder and moved into
place once the models are written (:meth:`OutputFolder.place`), so an export killed before then leaves none either.
One killed between that move and the ``export.json`` write does leave it, unlisted: before the move a marker
(:data:`~distill.records.EXPORT_MOVE_MARKER`, naming the source checkpoint and its weights' sha256) goes into it,
and is removed once ``export.json`` lists the folder (:meth:`OutputFolder.finish`). One killed between that write
and the removal leaves a listed folder's marker, which nothing heeds and the next export into the folder removes;
a failure or Ctrl-C there keeps the complete export (nothing is put back once export.json is written). The next export into the folder,
of any checkpoint and with or without ``--classes``, removes a marked, unlisted ``checkpoint/`` (a killed export's
leftover, which no export finished) and says so; an unmarked one (the user's) is still refused.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from distill.errors import DistillError
from distill.outputs import EXPORT, refuse_stage_folder
from distill.records import (
    EXPORT_CHECKPOINT,
    EXPORT_MOVE_MARKER,
    EXPORT_REPORT,
)

FOLDERS = (EXPORT_CHECKPOINT,)  # the folders an export writes: set aside and put back whole
WRITTEN_BY = "distill export"  # the marker's ``written_by``


class OutputFolder:
    """``out_dir`` of one export: :meth:`make` it, :meth:`clear_previous` before writing, :meth:`undo` on failure."""

    def __init__(self, path: Path):
        self.path = path
        self.created: Path | None = None  # the topmost folder this export created
        self.used = False  # set once the export starts writing its own files
        self.backup: Path | None = None  # the earlier export's files while this one runs
        self.moved: list[str] = []
        self.replaces: list[str] = []  # what this export writes in place of what was set aside (removed on failure)
        self.source: dict[str, Any] = {}  # the checkpoint exported: {"checkpoint": path, "checkpoint_sha256": ...}
        self.done = False  # set once export.json is written (:meth:`finish`): from then on nothing is undone

    def check(self) -> None:
        """A file where the folder should be, or another stage's folder (a checkpoint, a run, a cache...), is one line naming it
        (checked first, and again by :meth:`make`): see :func:`refuse_checkpoint_or_run`."""
        if self.path.exists() and not self.path.is_dir():
            raise DistillError(f"{self.path}: is a file, not a folder; the export writes its files into a folder "
                               "(give a new folder, or one holding an earlier export to replace)")
        refuse_checkpoint_or_run(self.path)

    def make(self) -> None:
        """Create the folder (and missing parents)."""
        self.check()
        path, top = self.path, None
        for folder in (path, *path.parents):
            if folder.exists():
                break
            top = folder
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DistillError(f"{path}: cannot create the output folder ({e.strerror or e})") from None
        self.created = top

    def undo(self) -> None:
        """After a failure before the export wrote anything: remove the folders :meth:`make` created."""
        if self.created is not None and not self.used:
            shutil.rmtree(self.created, ignore_errors=True)

    def check_writes(self, writes: Sequence[str]) -> None:
        """Refuse, in one line, a folder of :data:`FOLDERS` this export will write (``writes``) that is there and
        that no export.json here says an earlier export wrote: the user's, which the export would replace. One a
        killed export moved in before writing export.json (its marker says so) is not refused: :meth:`clear_previous`
        removes it."""
        record = self.path / EXPORT_REPORT
        listed = _listed(record)[1] if record.is_file() else []
        for name in writes:
            path = self.path / name
            if not (path.exists() or path.is_symlink()) or name in listed:
                continue
            if self._marker(name) is None:
                raise DistillError(f"{path}: --classes writes the re-targeted student into this folder, and no "
                                   f"{EXPORT_REPORT} here says an earlier export wrote it: move it away, or "
                                   "choose another --out")

    def _marker(self, name: str) -> dict[str, Any] | None:
        """The marker in folder ``name`` (written by :meth:`place`), or None: no folder, no marker, not ours."""
        path = self.path / name
        if path.is_symlink() or not path.is_dir():
            return None
        try:
            marker = json.loads((path / EXPORT_MOVE_MARKER).read_text())
        except (OSError, ValueError):
            return None
        return marker if isinstance(marker, dict) and marker.get("written_by") == WRITTEN_BY else None

    def place(self, scratch: Path, name: str) -> None:
        """Move this export's folder ``name`` from ``scratch`` into place, marked as this export's (the source
        checkpoint) first: a kill before export.json lists it leaves a folder the retry can tell from the user's."""
        (scratch / EXPORT_MOVE_MARKER).write_text(json.dumps({"written_by": WRITTEN_BY, **self.source}))
        os.replace(scratch, self.path / name)

    def clear_previous(self, say: Callable[[str], None], replaces: Sequence[str] = ()) -> list[str]:
        """Move an earlier export's ``export.json`` and the files it listed (only those: its ``checkpoint/`` when it
        re-targeted) aside; return their names. ``replaces``: the folders of :data:`FOLDERS` this export will write
        (refused by :meth:`check_writes` when one is there and no earlier export's), removed again on failure."""
        self.check_writes(replaces)
        self.used = True
        for stale in self.path.glob(".previous-export-*"):  # a killed export's: its replacement never finished
            say(f"{stale}: the files a killed export had set aside; removed (this export replaces them too)")
            shutil.rmtree(stale, ignore_errors=True)
        self.replaces = list(replaces)
        record = self.path / EXPORT_REPORT
        old, listed = _listed(record) if record.is_file() else (None, [])
        for name in FOLDERS:  # a killed export's, moved in and never listed: whether or not this export writes one
            marker = self._marker(name)
            if marker is not None and name in listed:  # listed: an export killed after export.json, before commit()
                (self.path / name / EXPORT_MOVE_MARKER).unlink(missing_ok=True)  # it finished: its folder is whole
            elif marker is not None:
                say(f"{self.path / name}: the re-targeted student a killed export (of {marker.get('checkpoint')}) "
                    f"moved in before writing {EXPORT_REPORT}, which lists it nowhere; removed")
                _remove(self.path / name)
        # the record first: never a record of other files
        names = [n for n in dict.fromkeys([EXPORT_REPORT, *listed]) if self._movable(n)] if old is not None else []
        if not names:
            return []
        self.backup = Path(tempfile.mkdtemp(prefix=".previous-export-", dir=self.path))
        for name in names:
            (self.backup / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.path / name, self.backup / name)
            self.moved.append(name)
        shown = ", ".join(f"{n}/" if n in FOLDERS else n for n in self.moved)
        what = f" (of {old.get('checkpoint')}, {old.get('created')})" if old else " (unreadable)"
        say(f"{self.path} held an earlier export{what}: its {EXPORT_REPORT} and the files it listed are set aside "
            f"until this export finishes (put back if it does not): {shown}")
        return self.moved

    def _movable(self, name: str) -> bool:
        """A name inside the folder that is there: a file (or link), or one of :data:`FOLDERS`."""
        path = self.path / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            return False
        return path.is_file() or path.is_symlink() or (name in FOLDERS and path.is_dir())

    def finish(self, write: Callable[[], Path]) -> Path:
        """``write`` this export's ``export.json`` (which lists what it placed), then :meth:`commit`. Once it is
        written the export is complete (:attr:`done`): a failure or Ctrl-C after it, even one that stops ``write``
        between its rename and its return, keeps it (no :meth:`restore`,
        which would take its checkpoint/ away from the export.json listing it), and a kill before :meth:`commit`
        leaves a marker in a listed folder, which the next export into the folder removes (:meth:`clear_previous`)
        and nothing reads meanwhile (a listed folder's marker is ignored)."""
        record = self.path / EXPORT_REPORT
        there, written = record.exists(), False  # there: the earlier export's record was not set aside (none was)
        try:
            path = write()
            written = True
            return path
        finally:  # an atomic write: export.json there now is this export's, whole, even if a Ctrl-C followed it
            if written or (not there and record.is_file()):
                self.done = True
                self.commit()

    def commit(self) -> None:
        """The new export is complete (its export.json lists what it placed): the markers :meth:`place` wrote and
        the earlier export's files go."""
        for name in self.replaces:
            (self.path / name / EXPORT_MOVE_MARKER).unlink(missing_ok=True)
        if self.backup is not None:
            shutil.rmtree(self.backup, ignore_errors=True)
            self.backup = None

    def restore(self) -> None:
        """The new export failed or was interrupted: the earlier export's files come back (over any of the same
        name this one wrote), its ``export.json`` last. What this export wrote in place of the set-aside folders
        (``replaces``) goes even when there was no earlier export: else its retry would take it for the user's."""
        try:
            for name in self.replaces:  # this export's own (its re-targeted checkpoint/): not the earlier export's
                _remove(self.path / name)
        except OSError as e:
            raise DistillError(f"{self.path / name}: could not remove what the failed export wrote ({e.strerror or e}); "
                               "remove it before exporting into this folder again") from None
        self.replaces = []
        if self.backup is None:
            return
        try:
            for name in sorted(self.moved, key=lambda n: n == EXPORT_REPORT):
                (self.path / name).parent.mkdir(parents=True, exist_ok=True)
                if (self.backup / name).is_dir():  # a folder does not replace one: this export's goes first
                    _remove(self.path / name)
                os.replace(self.backup / name, self.path / name)
        except OSError as e:  # the backup stays: nothing of the earlier export is deleted
            raise DistillError(f"{self.backup}: could not put the earlier export back ({e.strerror or e}); its files "
                               f"are there: move them into {self.path}") from None
        shutil.rmtree(self.backup, ignore_errors=True)
        self.backup = None


def refuse_checkpoint_or_run(path: Path, writer: str = "the export", suggest: str = "exports",
                             own: str = EXPORT) -> None:
    """Another stage's folder (a checkpoint, a training run, a teacher cache, a qad or export folder...) as
    ``--out`` of ``writer`` (``distill export``, ``distill qad``, whose own folders are of kind ``own``) is one line
    naming it, with an ``--out`` to give instead (under ``suggest``): :func:`distill.outputs.refuse_stage_folder`."""
    refuse_stage_folder(path, writer, suggest, own)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_file() or path.is_symlink():
        path.unlink()


def _listed(record: Path) -> tuple[dict[str, Any], list[str]]:
    """The earlier ``export.json`` as JSON and the files it names (``files``, then each model's ``file``, then
    ``checkpoint`` when it re-targeted: ``config.classes``); read leniently: a record from another version, or a
    half-written one, still names what it can."""
    try:
        old = json.loads(record.read_text())
    except (OSError, ValueError):
        return {}, []
    if not isinstance(old, dict):
        return {}, []
    files, models = old.get("files"), old.get("models")
    names = list(files) if isinstance(files, list) else []
    names += [m.get("file") for m in models if isinstance(m, dict)] if isinstance(models, list) else []
    config = old.get("config")
    names += [EXPORT_CHECKPOINT] if isinstance(config, dict) and config.get("classes") else []
    return old, [n for n in names if isinstance(n, str) and n]
