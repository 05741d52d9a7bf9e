"""Distillation strategies, one file each, registered by decorator (like timm models).

>>> from distill.strategies import list_strategies, get_strategy
>>> list_strategies()  # every module in this package is imported on first use
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from distill.errors import DistillError
from distill.strategies.base import Batch, BatchSource, Needs, Strategy, StrategyContext, build_config, strategy_config

if TYPE_CHECKING:  # for the annotation only
    from distill.student.model import Student

S = TypeVar("S", bound=type[Strategy])

_REGISTRY: dict[str, type[Strategy]] = {}
_discovered = False


def register_strategy(name: str) -> Callable[[S], S]:
    """Class decorator: make a :class:`Strategy` available as ``name``."""

    def deco(cls: S) -> S:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"strategy '{name}' registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _discover() -> None:
    global _discovered
    if not _discovered:
        _discovered = True
        for info in pkgutil.iter_modules(__path__):
            if info.name not in ("base", "losses") and not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")


def list_strategies() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get_strategy(name: str) -> type[Strategy]:
    _discover()
    if name not in _REGISTRY:
        raise DistillError(f"unknown strategy '{name}' (available: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def create_strategy(name: str, student: Student, options: dict[str, Any] | None, ctx: StrategyContext) -> Strategy:
    """Validate ``options`` against the strategy's Config and build it around ``student``."""
    cls = get_strategy(name)
    return cls(student, build_config(cls.Config, options, where="strategy"), ctx)


__all__ = ["Batch", "BatchSource", "Needs", "Strategy", "StrategyContext", "register_strategy", "list_strategies",
           "get_strategy", "create_strategy", "build_config", "strategy_config"]
