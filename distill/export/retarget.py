"""``distill export --classes FILE``: re-target a text-head (open-vocabulary) student to other classes.

A text-head student predicts in the teacher's embedding space; its classifier is the teacher's
prompt-ensembled text embeddings of its class names (:class:`distill.student.model.Student`).
Re-targeting builds that head for the names in FILE with the teacher's text tower (the one home
of the zero-shot head: :class:`distill.teacher.Teacher`, with the templates the student was
trained with), and swaps it in with no retraining. The export saves the re-targeted checkpoint into
its folder (``OUT/checkpoint``), so that what ships is reproducible from files alone, and runs the
usual steps (fp32 parity, fp16, int8) on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from distill.errors import DistillError
from distill.export.log import ExportLog
from distill.student.model import Student
from distill.teacher import Teacher
from distill.teacher.prompts import DEFAULT_TEMPLATES


@dataclass(frozen=True)
class TeacherSource:
    """The text tower a head is built with: open_clip arch, weights, and prompt templates."""

    arch: str
    pretrained: str | None
    templates: tuple[str, ...]


def read_class_file(path: str | Path) -> list[str]:
    """Class names from ``path``: a YAML list, or one name per line (blank lines and ``#`` comments skipped).

    Raises:
        DistillError: missing file, no names, a repeated name, or YAML that is not a list of names.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DistillError(f"--classes {path}: file not found") from None
    names: Any = None
    try:
        names = yaml.safe_load(text)
    except yaml.YAMLError:
        pass
    if not isinstance(names, list):  # plain text: one name per line (a YAML scalar or mapping is not a list)
        names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    names = [str(n).strip() for n in names if not isinstance(n, (dict, list)) and str(n).strip()]
    if not names:
        raise DistillError(f"--classes {path}: no class names (one per line, or a YAML list)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DistillError(f"--classes {path}: class name(s) {repeated} appear more than once")
    return names


def require_text_head(student: Student) -> None:
    """Only a text-head student can be re-targeted (a linear head's classes are its trained weights)."""
    if student.spec.head != "text":
        raise DistillError(f"--classes re-targets a text-head student, but this '{student.spec.arch}' has a linear "
                           "head: train it with student.head=text")


def teacher_source(student: Student, arch: str | None = None, pretrained: str | None = None) -> TeacherSource:
    """The text tower to re-target ``student`` with: the given arch/weights, else those it was trained with
    (its provenance), and always its templates (the head it learned against was built with them)."""
    prov = student.spec.provenance
    trained = prov.get("teacher") or {}
    arch = arch or trained.get("arch")
    if not arch:
        raise DistillError("the student's provenance names no teacher: pass --teacher-arch (and --teacher-pretrained)")
    if pretrained is None:
        pretrained = prov.get("teacher_pretrained") or trained.get("pretrained")
    if pretrained is None and not arch.startswith(("hf-hub:", "local-dir:")):
        raise DistillError(f"the student's teacher '{arch}' has no recorded weights (random init): a new one would "
                           "embed elsewhere; pass --teacher-pretrained")
    templates = tuple(prov.get("templates") or DEFAULT_TEMPLATES)
    return TeacherSource(arch, pretrained, templates)


def load_text_teacher(source: TeacherSource, class_names: list[str]) -> Teacher:
    """The teacher (CPU, fp32) whose zero-shot head for ``class_names`` becomes the student's classifier."""
    try:
        return Teacher(source.arch, source.pretrained, class_names, list(source.templates))
    except DistillError as e:
        raise DistillError(f"re-targeting needs the teacher's text tower ({source.arch}): {e}; "
                           "pass --teacher-arch / --teacher-pretrained") from None


def retarget(student: Student, class_names: list[str], source: TeacherSource, log: ExportLog | None = None) -> Student:
    """Swap ``student``'s text head for the teacher's embeddings of ``class_names``; returns the student.

    Raises:
        DistillError: a linear-head student, or a teacher of another embedding width.
    """
    spec = student.spec
    require_text_head(student)
    teacher = load_text_teacher(source, class_names)
    if teacher.embed_dim != spec.embed_dim:
        raise DistillError(f"teacher {source.arch} embeds in {teacher.embed_dim} dimensions, the student's projector "
                           f"in {spec.embed_dim}: re-target with the teacher it was trained with")
    trained = (spec.provenance.get("teacher") or {}).get("checkpoint_sha256")
    now = teacher.identity().get("checkpoint_sha256")
    if log is not None and trained and now and trained != now:
        log.warn(f"teacher weights {source.pretrained} differ from those the student was trained with "
                 "(checkpoint_sha256): its embedding space may not be the student's")
    previous = list(spec.class_names)
    student.set_classes(class_names, teacher.text_embeddings.cpu())
    spec.provenance = {**spec.provenance, "retargeted": {
        "from_classes": previous, "teacher": {"arch": source.arch, "pretrained": source.pretrained},
        "templates": list(source.templates)}}
    return student


def retarget_to_classes_in(student: Student, classes_file: str | Path, log: ExportLog,
                           teacher_arch: str | None = None, teacher_pretrained: str | None = None) -> Student:
    """Re-target ``student`` to the names in ``classes_file`` (with the given text tower, else the one it was
    trained with); returns it. Nothing is written: the export saves it as ``OUT/checkpoint``
    (:data:`~distill.records.EXPORT_CHECKPOINT`) once its inputs are checked and the earlier export is set aside."""
    require_text_head(student)
    source = teacher_source(student, teacher_arch, teacher_pretrained)
    names = read_class_file(classes_file)
    log(f"re-targeting the text head to {len(names)} classes from {classes_file} with {source.arch}")
    return retarget(student, names, source, log)
