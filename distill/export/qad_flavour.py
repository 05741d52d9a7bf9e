"""Which int8 flavour ``distill qad`` tunes for (issue 21 "Edge"): ``--flavour``, else the ``--export`` folder's.

Without ``--flavour`` (``QADConfig.flavour`` None) and with ``--export``, QAD follows the export, read from its typed
record (:class:`~distill.records.ExportReport`): an export with one int8 flavour gives that one; one with both
(``--int8-flavour both``) gives the flavour its recommendation (``recommendation.flavour``) ships as int8; an export
that recommends a float precision names no int8 flavour, and QAD then takes :data:`DEFAULT_FLAVOUR`, as without an
export. Each choice made from the export is said in one line. An explicit ``--flavour`` always wins; a flavour the
export has no int8 file of is refused in one line naming the folder and the flavours it has.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from distill.errors import DistillError
from distill.export.qad_config import DEFAULT_FLAVOUR
from distill.records import EXPORT_REPORT, ExportReport
from distill.spelling import option


class Choice(NamedTuple):
    """The flavour QAD tunes for, and why (``""``: given, or no export to follow: nothing to say)."""

    flavour: str
    why: str = ""


def missing_flavour(export_dir: str | Path, flavour: str, have: list[str]) -> DistillError:
    """The one line for an export with no int8 file of ``flavour``, naming the flavours it has."""
    has = f"its int8 file(s): {', '.join(have)}" if have else "no int8 file"
    fix = (f"pass --flavour {' or '.join(have)}" if have else
           f"export with --precision int8 --int8-flavour {flavour}") + ", or drop --export to compare with plain PTQ"
    return DistillError(f"{export_dir}: no int8 file of flavour {flavour} ({has}); {fix}")


def qad_flavour(given: str | None, export_dir: str | Path | None) -> Choice:
    """The flavour QAD tunes for: ``given`` (``--flavour``), else ``export_dir``'s (see the module docstring), else
    :data:`DEFAULT_FLAVOUR`.

    Raises:
        DistillError: ``export_dir`` has no int8 file of the flavour (given, or the default where it has none).
    """
    if export_dir is None or not ExportReport.exists_in(export_dir):  # no export.json: --export's own check says so
        return Choice(given or DEFAULT_FLAVOUR)
    report = ExportReport.read(export_dir)
    have = [f for f in report.int8_flavours if any(  # an int8 file listed but not in the folder is not QAD's to take
        m.int8_flavour == f and (Path(export_dir) / m.file).is_file() for m in report.models)]
    if given is not None:
        if given not in have:
            raise missing_flavour(export_dir, given, have)
        return Choice(given)
    if not have:
        raise missing_flavour(export_dir, DEFAULT_FLAVOUR, have)
    where = Path(export_dir) / EXPORT_REPORT
    if len(have) == 1:
        return Choice(have[0], f"int8 flavour {have[0]}: the only int8 file of {where} (--flavour sets it)")
    rec = report.recommendation
    if rec is not None and rec.precision == "int8" and rec.flavour in have:
        return Choice(rec.flavour, f"int8 flavour {rec.flavour}: the int8 file {where} recommends of its "
                                   f"{' and '.join(have)} (--flavour {_other(have, rec.flavour)} tunes the other)")
    said = f"recommends {rec.precision}, no int8 flavour" if rec is not None else "holds no recommendation"
    return Choice(DEFAULT_FLAVOUR, f"int8 flavour {DEFAULT_FLAVOUR} (the default): {where} {said} of its "
                                   f"{' and '.join(have)} (--flavour {_other(have, DEFAULT_FLAVOUR)} tunes the other)")


def _other(have: list[str], flavour: str) -> str:
    return next(f for f in have if f != flavour)


def unused_flags(flavour: str, trt_batches: object, trt_workspace_mib: object, reduce_range: object) -> str | None:
    """A warning where options of the other flavour were given (not None): they change nothing in a QAD for
    ``flavour``, which is now often the export's rather than the user's (``--trt-*`` on ort-cpu: no
    ``build_engine.sh``; ``--reduce-range`` on tensorrt: its weights are 8-bit). Options are named as the caller
    spelled them (:mod:`distill.spelling`: flags under ``distill qad``, keywords from Python)."""
    if flavour == "tensorrt":
        flag = option("reduce_range")
        given = [] if reduce_range is None else [
            (flag if reduce_range else flag.replace("--", "--no-", 1)) if flag.startswith("--")
            else option("reduce_range", reduce_range)]
        other = "ort-cpu"
    else:
        given = [option(key) for key, value in (("trt_batches", trt_batches), ("trt_workspace_mib", trt_workspace_mib))
                 if value is not None]
        other = "tensorrt"
    if not given:
        return None
    return (f"{' and '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to {option('flavour', other)} only: "
            f"ignored, this QAD tunes the {flavour} file")
