"""pyproject.toml: one ONNX Runtime per install, the demo data as an extra, the recipes shipped;
each missing optional dependency is one line naming the extra that brings it."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import tomllib

from distill.cli import main
from distill.errors import DistillError
from distill.recipes import CONFIGS_DIR

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requirements}


def test_base_dependencies_force_no_onnx_runtime_nor_demo_data():
    base = _names(PROJECT["project"]["dependencies"])
    assert not {n for n in base if n.startswith("onnxruntime")}, base
    assert not base & {"mlxtend", "scikit-learn"}, base
    assert "scipy" in base  # the suite's renderers import it; it used to come only through scikit-learn


def test_extras_install_exactly_one_onnx_runtime():
    extras = {k: _names(v) for k, v in PROJECT["project"]["optional-dependencies"].items()}
    assert extras["cpu"] == {"onnxruntime"}
    assert extras["gpu"] == {"onnxruntime-gpu"}
    for name, deps in extras.items():
        assert not {"onnxruntime", "onnxruntime-gpu"} <= deps, name
    assert "onnxruntime" not in extras["tensorrt"]
    assert extras["demo"] == {"mlxtend", "scikit-learn"}


def test_install_script_adds_cpu_unless_gpu_is_asked():
    script = (REPO / "scripts" / "install.sh").read_text()
    assert '*,gpu,*|*,tensorrt,*) RUNTIME="" ;;' in script and 'RUNTIME="cpu,"' in script
    assert 'target=".[${RUNTIME}demo${EXTRAS:+,$EXTRAS}]"' in script


def test_recipes_are_package_data():
    data = PROJECT["tool"]["setuptools"]["package-data"]["distill"]
    package = REPO / "distill"
    shipped = {p for pattern in data for p in package.glob(pattern)}
    assert shipped == set(CONFIGS_DIR.glob("*.yaml")) and len(shipped) >= 10


@pytest.fixture
def no_demo_data(monkeypatch):
    """mlxtend and scikit-learn as if not installed (an import of them raises ImportError)."""
    from distill.data import builtin

    for name in ("mlxtend", "mlxtend.data", "sklearn", "sklearn.datasets"):
        monkeypatch.setitem(sys.modules, name, None)
    for loader in (builtin._load_mnist, builtin._load_optdigits, builtin._load_photos):
        loader.cache_clear()
    yield
    for loader in (builtin._load_mnist, builtin._load_optdigits, builtin._load_photos):
        loader.cache_clear()


def test_missing_demo_data_is_one_line_naming_the_extra(no_demo_data, tmp_path, capsys):
    from distill.data.builtin import materialize

    with pytest.raises(DistillError, match=r"pip install 'distill-vlm\[demo\]'"):
        materialize(tmp_path, quick=True)
    assert main(["data", "materialize", "--out", str(tmp_path), "--quick"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "distill-vlm[demo]" in err and "mlxtend" in err


def test_missing_onnx_runtime_is_one_line_at_export(monkeypatch, tmp_path, capsys):
    from distill.api import export

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # find_spec: not installed
    with pytest.raises(DistillError, match=r"distill-vlm\[cpu\].*distill-vlm\[gpu\]"):
        export(tmp_path / "ckpt", tmp_path / "out")
    for argv in (["export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "out")],
                 ["demo", "--quick", "--out", str(tmp_path / "demo")]):  # the demo says so before it trains
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "no ONNX Runtime is installed" in err
    assert not (tmp_path / "demo").exists()
