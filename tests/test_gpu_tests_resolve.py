"""tests/gpu skip on every CPU machine, so nothing here ran them when the code moved: on their first
GPU run (an H200) one still imported a name that a refactor had removed. This holds the part a CPU can
check: every ``from distill... import name`` / ``from tests... import name`` in tests/gpu resolves."""
from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

GPU_TESTS = sorted((Path(__file__).parent / "gpu").glob("test_*.py"))


def unresolved_imports(source: str) -> list[str]:
    """``module.name`` of each project import in ``source`` (module-level or inside a function) that does not exist."""
    missing = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("distill", "tests"):
            module = importlib.import_module(node.module)
            missing += [f"{node.module}.{a.name}" for a in node.names
                        if not hasattr(module, a.name) and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
    return missing


def test_the_checker_finds_a_removed_name():
    assert unresolved_imports("def f():\n    from distill.teacher.cache import MANIFEST, shard_name\n") == \
        ["distill.teacher.cache.MANIFEST"]


@pytest.mark.parametrize("path", GPU_TESTS, ids=lambda p: p.name)
def test_every_project_import_in_the_gpu_tests_resolves(path):
    assert GPU_TESTS, "no tests/gpu files found"
    assert unresolved_imports(path.read_text()) == []
