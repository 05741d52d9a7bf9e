"""Config messages: a --set mistake names the override, not the YAML file it was applied to."""
from __future__ import annotations

from pathlib import Path

import yaml

from distill.cli import main as cli
from distill.config import load_train_config


def _recipe(tmp_path: Path) -> Path:
    p = tmp_path / "erm.yaml"
    p.write_text(yaml.safe_dump({"data": {"root": str(tmp_path / "data"), "source": ["mnist"]},
                                 "strategy": {"name": "erm"}, "run": {"out": str(tmp_path / "run")}}))
    return p


def test_set_mistake_is_blamed_on_the_override(tmp_path, capsys):
    assert cli(["train", "-c", str(_recipe(tmp_path)), "--set", "optim.lr=0.1", "--set", "optim.epochs=many"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --set optim.epochs=many: 'optim.epochs': Input should be a valid integer, unable to parse string "
        "as an integer (got 'many')")


def test_file_mistake_is_still_blamed_on_the_file(tmp_path, capsys):
    p = _recipe(tmp_path)
    p.write_text(p.read_text().replace("source:", "sauce:"))
    assert cli(["train", "-c", str(p), "--set", "optim.epochs=2"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {p}: missing required key 'data.source'"


def test_a_scalar_is_the_one_element_list(tmp_path):
    cfg = load_train_config(_recipe(tmp_path), ["data.source=clean", "data.target=noisy",
                                                "teacher.arch=RN50", "teacher.templates=a {}."])
    assert cfg.data.source == ["clean"] and cfg.data.target == ["noisy"] and cfg.teacher.templates == ["a {}."]
