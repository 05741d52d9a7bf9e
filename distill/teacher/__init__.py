"""Frozen open_clip teachers, their zero-shot heads, and the on-disk teacher cache."""
from __future__ import annotations

from distill.teacher.clip import Teacher, register_model_configs

__all__ = ["Teacher", "register_model_configs"]
