"""The record base class, the units rule (fractions; :func:`pct` prints), blocks shared by records, and whether two
records name the same checkpoint (:func:`same_checkpoint`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError, model_serializer

from distill.errors import DistillError
from distill.utils.io import atomic_write_json, read_json

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11; pydantic depends on typing_extensions


def percent(fraction: float) -> float:
    """A fraction as the percent that is printed, rounded to 4 decimals of a percent.

    Records keep fractions (rows 6 decimals, what 4 of a percent were); rounding here first makes
    every printed digit the one the percent the run measured prints (23/80 -> 28.75 -> ``28.8``;
    ``100 * 0.2875`` alone is 28.749999... and prints 28.7).
    """
    return round(100.0 * fraction, 4)


def pct(fraction: float | None, digits: int = 1) -> str:
    """A fraction printed as a percent with ``digits`` decimals (:func:`percent`); ``n/a`` for None/NaN."""
    if fraction is None or fraction != fraction:
        return "n/a"
    return f"{percent(fraction):.{digits}f}"




def relative_paths(folder: str | Path, **paths: str | Path | None) -> dict[str, str]:
    """Each path given (absolute, or relative to the current folder), relative to ``folder``, as laid out (absolute,
    links not resolved: a ``runs/`` that is a symlink to scratch stays ``../../runs/x``, which a tree copied with its
    links followed still finds): what a record keeps beside the absolute path, so that a tree of results copied or
    moved whole still finds its parts (the report reads it: :mod:`distill.report.locate`). A path None, or on
    another drive, is left out."""
    out = {}
    for key, path in paths.items():
        if path is None:
            continue
        try:
            out[key] = os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
        except ValueError:  # Windows: another drive
            continue
    return out


def same_checkpoint(path: str | Path, sha256: str | None, other: str | Path, other_sha256: str | None) -> bool:
    """Do two records name the same student checkpoint (export.json ``checkpoint`` +
    ``provenance.checkpoint_sha256``, qad.json ``checkpoint`` + ``checkpoint_sha256``, or a folder at hand and its
    weights' sha256)? The weights' sha256s decide when both are known: the same weights wherever the folder was
    typed from, and not the same when a checkpoint was retrained in place. Else the paths, resolved, a
    ``model.safetensors`` standing for its folder (older records stored the path as typed, relative to the cwd
    they were written from, as the reader's cwd reads them)."""
    if sha256 and other_sha256:
        return sha256 == other_sha256
    return _checkpoint_folder(path) == _checkpoint_folder(other)


def _checkpoint_folder(path: str | Path) -> str:
    real = Path(os.path.realpath(path))
    return str(real.parent if real.is_file() else real)


# ------------------------------------------------------------------ base
class Record(BaseModel):
    """A JSON artifact with a file name. Subclasses set ``FILE``."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())
    FILE: ClassVar[str] = ""

    @classmethod
    def path_in(cls, folder: str | Path) -> Path:
        return Path(folder) / cls.FILE

    @classmethod
    def exists_in(cls, folder: str | Path) -> bool:
        return cls.path_in(folder).is_file()

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> Self:
        """Validate ``data``; a mismatch is one line: ``<source>: <key.path>: <problem>``."""
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
            raise DistillError(f"{source or cls.FILE}: {where}: {err['msg']}{more}") from None

    @classmethod
    def read(cls, path: str | Path) -> Self:
        """Read from a file, or from ``FILE`` inside a folder."""
        path = Path(path)
        file = path if path.suffix == Path(cls.FILE).suffix and not path.is_dir() else cls.path_in(path)
        return cls.from_dict(read_json(file), file)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def write(self, folder: str | Path) -> Path:
        """Atomically write ``folder/FILE`` and return its path."""
        path = self.path_in(folder)
        atomic_write_json(path, self.to_dict())
        return path


class RelativeRecord(Record):
    """A record that may carry ``relative``: its paths relative to its own folder, as the release that introduced
    them wrote them at the top level. Written now inside an open dict (``provenance``, ``config``: a file the release
    before reads); this key is read for those files and left out when empty (a key the release before forbids;
    review 2, M3)."""

    relative: dict[str, str] = Field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if not out.get("relative"):
            out.pop("relative", None)
        return out


class _Open(BaseModel):
    """A nested block that keeps keys this version does not name (forward compatible)."""

    model_config = ConfigDict(extra="allow", frozen=True, protected_namespaces=())


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


Accuracy = dict[str, float]  # domain -> fraction in [0, 1]


# ------------------------------------------------------------------ shared blocks
class TeacherIdentity(_Open):
    """What a cached teacher output means: open_clip arch + weights (+ library versions)."""

    arch: str
    pretrained: str | None = None
    checkpoint_sha256: str | None = None
    open_clip_version: str | None = None
    torch_version: str | None = None
    logit_scale: float | None = None
    precision: str | None = None


class SkippedImage(_Open):
    """An image that could not be decoded (``--skip-bad``)."""

    path: str
    sample_index: int | None = None  # before reason: the key order a cache manifest has always had (cache helper)
    reason: str

    @model_serializer(mode="wrap")
    def _without_unknown_index(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``{path, reason}`` where no sample index is known (run summaries, eval), as those files always had."""
        out = handler(self)
        if self.sample_index is None:
            out.pop("sample_index", None)
        return out
