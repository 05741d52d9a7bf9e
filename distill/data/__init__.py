"""Multi-domain image folders (``ROOT/DOMAIN/CLASS/image``) and the built-in offline suite."""
from __future__ import annotations

from distill.data.folder import DomainFolder, Sample, load_class_map
from distill.data.images import BadImageError, load_rgb

__all__ = ["DomainFolder", "Sample", "load_class_map", "BadImageError", "load_rgb"]
