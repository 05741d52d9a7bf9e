"""timm students: backbone + classifier + projector into the teacher's embedding space."""
from __future__ import annotations

from distill.student.model import Student, StudentSpec, load_student, save_student

__all__ = ["Student", "StudentSpec", "load_student", "save_student"]
