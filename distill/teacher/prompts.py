"""Prompt templates for zero-shot heads. ``{}`` is replaced by the class name.

One home for templates: :func:`read_templates` reads every accepted file format and
:func:`resolve_templates` picks the templates a command uses (an explicit file, else the
``teacher.json`` of a bootstrapped teacher beside its checkpoint, else :data:`DEFAULT_TEMPLATES`),
so ``cache build``, ``teacher eval`` and training agree on what a teacher's head is.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from distill.errors import DistillError
from distill.records import TEACHER_MANIFEST, TeacherManifest
from distill.utils.io import json_error

# A compact subset of the CLIP ImageNet templates (Radford et al. 2021, "prompt ensembling").
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a cropped photo of a {}.",
    "a blurry photo of a {}.",
    "a drawing of a {}.",
    "a painting of a {}.",
    "a sketch of a {}.",
    "a cartoon {}.",
    "art of the {}.",
    "a rendering of a {}.",
)


def check_templates(templates: Sequence[str]) -> list[str]:
    """``templates`` as a list, each with exactly one ``{}`` for the class name."""
    templates = list(templates)
    if not templates:
        raise DistillError("prompt templates: need at least one template")
    for t in templates:
        if t.count("{}") != 1:
            raise DistillError(f"prompt template {t!r} must contain exactly one '{{}}' for the class name")
    return templates


def read_templates(path: str | Path) -> list[str]:
    """Templates from a text file (one per line, '#' comments) or JSON (a list, or an object with a
    ``templates`` list such as a bootstrapped teacher's ``teacher.json``)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DistillError(f"{path}: templates file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DistillError(f"{path}: cannot read templates file: {e.__class__.__name__}: {e}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DistillError(f"{path}: invalid JSON {json_error(e)}") from None
        if isinstance(data, dict):
            data = data.get("templates")
        if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
            raise DistillError(f"{path}: expected a JSON list of templates or an object with a 'templates' list")
        templates = data
    else:
        templates = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    try:
        return check_templates(templates)
    except DistillError as e:
        raise DistillError(f"{path}: {e}") from None


def teacher_manifest_of(pretrained: str | Path | None) -> Path | None:
    """``teacher.json`` beside a local checkpoint file (a bootstrapped teacher), if there is one."""
    if not pretrained:
        return None
    p = Path(pretrained)
    return p.parent / TEACHER_MANIFEST if p.is_file() and (p.parent / TEACHER_MANIFEST).is_file() else None


def resolve_templates(templates_file: str | Path | None, pretrained: str | Path | None) -> tuple[list[str], str]:
    """The templates a command uses and where they came from (printed, so a user sees which).

    ``templates_file`` when given; else the templates in ``teacher.json`` beside a local
    ``pretrained`` checkpoint (the ones the teacher was trained with); else the defaults.
    """
    if templates_file:
        return read_templates(templates_file), str(templates_file)
    manifest = teacher_manifest_of(pretrained)
    if manifest is not None:
        templates = TeacherManifest.read(manifest).templates
        if templates:
            try:
                return check_templates(templates), str(manifest)
            except DistillError as e:
                raise DistillError(f"{manifest}: {e}") from None
    return list(DEFAULT_TEMPLATES), "distill.teacher.prompts.DEFAULT_TEMPLATES"
