"""Prompt templates for zero-shot heads. ``{}`` is replaced by the class name."""
from __future__ import annotations

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


def check_templates(templates: list[str] | tuple[str, ...]) -> list[str]:
    from distill.errors import DistillError

    templates = list(templates)
    if not templates:
        raise DistillError("prompt templates: need at least one template")
    for t in templates:
        if t.count("{}") != 1:
            raise DistillError(f"prompt template {t!r} must contain exactly one '{{}}' for the class name")
    return templates
