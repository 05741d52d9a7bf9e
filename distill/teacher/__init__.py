"""Frozen open_clip teachers, their zero-shot heads, and the on-disk teacher cache."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distill.teacher.clip import Teacher, register_model_configs

__all__ = ["Teacher", "register_model_configs"]


def __getattr__(name: str) -> Any:
    # lazy (PEP 562): open_clip and torch load on first use, so `distill.teacher.<light module>` (prompts,
    # pool, the bootstrap presets) is cheap to import and `distill --help` never loads torch
    if name in __all__:
        from distill.teacher import clip

        return getattr(clip, name)
    raise AttributeError(f"module 'distill.teacher' has no attribute {name!r}")
