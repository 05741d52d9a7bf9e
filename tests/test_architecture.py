"""The layout rules of docs/architecture.md, checked on the source so that they stay true.

- small modules (<= 400 lines; the standalone edge runner is the one exception; an import statement counts as one
  line, however ruff's import sorting wraps it),
- no import cycle between distill's modules (imports under ``if TYPE_CHECKING`` excluded),
- function-local imports only where deliberately lazy, with a ``# lazy: <why>`` comment,
- artifact file names only in distill/records/ (docstrings may mention them).
Each test fails on the tree before the architecture step (e.g. distill/train.py had 816 lines,
bench/report.py <-> report_html.py was a cycle, 267 function-local imports had no reason given).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "distill"
MAX_LINES = 400
STANDALONE = {"distill/bench/edge_runner.py"}  # copied alone to a device: may not import distill
ARTIFACTS = ("summary.json", "export.json", "manifest.json", "student.json", "config.yaml", "metrics.csv",
             "robust.json", "bench.jsonl", "teacher.json", "build.json", "train_state.json", "last.json",
             "model.safetensors", "text_embeddings.safetensors", "open_clip_model.safetensors", "suite.json",
             "classnames.yaml", "index.csv")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _rel(path: Path) -> str:
    return path.relative_to(PKG.parent).as_posix()


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines.update(n.lineno for n in ast.walk(node) if hasattr(n, "lineno"))
    return lines


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_pkg: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        pkg = module.split(".") if is_pkg else module.split(".")[:-1]
        pkg = pkg[:len(pkg) - node.level + 1]
        base = ".".join(pkg + ([base] if base else []))
    return [base] + [f"{base}.{a.name}" for a in node.names]


def _size(path: Path) -> int:
    """Lines, with each import statement as one: ruff (isort) wraps a long import one name per line."""
    text = path.read_text()
    wrapped = sum(node.end_lineno - node.lineno for node in ast.walk(ast.parse(text))
                  if isinstance(node, (ast.Import, ast.ImportFrom)) and node.end_lineno)
    return len(text.splitlines()) - wrapped


def test_every_module_is_small():
    big = {_rel(p): n for p in _modules().values() if (n := _size(p)) > MAX_LINES and _rel(p) not in STANDALONE}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_no_import_cycle():
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_lines(tree)  # typing-only imports never run
        for node in ast.walk(tree):  # lazy imports count too: deferring an import hides a cycle, it does not remove it
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno in skip:
                continue
            for target in _imported(node, name, path.name == "__init__.py"):
                # a package importing its own submodules (its public API) is not a cycle
                if target in mods and target != name and not target.startswith(name + "."):
                    graph[name].add(target)
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_function_local_imports_say_why_they_are_lazy():
    unexplained = []
    for path in _modules().values():
        text = path.read_text()
        lines = text.splitlines()
        for fn in ast.walk(ast.parse(text)):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    context = " ".join(lines[max(0, node.lineno - 6):node.end_lineno])
                    if "lazy" not in context:
                        unexplained.append(f"{_rel(path)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not unexplained, "function-local imports without a `# lazy: <why>` comment:\n" + "\n".join(unexplained)


def test_artifact_file_names_live_in_records():
    pattern = re.compile(r"""["'](%s)["']""" % "|".join(re.escape(a) for a in ARTIFACTS))
    found = []
    for path in _modules().values():
        rel = _rel(path)
        if rel.startswith("distill/records/") or rel in STANDALONE:
            continue
        text = path.read_text()
        docstrings = _docstring_lines(ast.parse(text))
        for i, line in enumerate(text.splitlines(), 1):
            if i not in docstrings and pattern.search(line):
                found.append(f"{rel}:{i}: {line.strip()}")
    assert not found, "artifact file names outside distill/records/:\n" + "\n".join(found)


@pytest.mark.parametrize("graph,cycle", [({"a": {"b"}, "b": {"a"}}, True), ({"a": {"b"}, "b": set()}, False)])
def test_the_cycle_finder_finds_cycles(graph, cycle):
    assert (_find_cycle(graph) is not None) == cycle


# ---------------------------------------------------------------- helpers
def _docstring_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None
