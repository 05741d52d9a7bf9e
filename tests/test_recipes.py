"""distill/recipes.py: configs/*.yaml loaded with overrides (the demo and benchmarks train these), and reuse of a finished run."""
from __future__ import annotations

from pathlib import Path

import pytest

from distill.config import load_train_config, parse_overrides
from distill.errors import DistillError
from distill.recipes import CONFIGS_DIR, _yaml_value, load_recipe, recipe_path, train_or_resume
from distill.records import RunSummary


def test_overrides_change_only_what_they_name(tmp_path: Path) -> None:
    as_written = load_train_config(CONFIGS_DIR / "kd.yaml").model_dump(mode="json")
    cfg = load_recipe("kd", {"data.root": tmp_path / "data", "run.out": tmp_path / "run", "optim.epochs": 3,
                             "data.target": ("optdigits",)}).model_dump(mode="json")
    assert cfg["data"]["root"] == str(tmp_path / "data") and cfg["run"]["out"] == str(tmp_path / "run")
    assert cfg["optim"]["epochs"] == 3 and cfg["data"]["target"] == ["optdigits"]
    for section, key in (("data", "root"), ("run", "out"), ("optim", "epochs"), ("data", "target")):
        cfg[section][key] = as_written[section][key]
    assert cfg == as_written  # the strategy, student, the rest of optim: the file's


def test_a_recipe_that_is_not_there_lists_those_that_are() -> None:
    with pytest.raises(DistillError, match=r"no such recipe \(configs/ has: .*\bkd\b.*\bsfda\b"):
        recipe_path("nope")


def test_a_bad_override_is_named_as_python_gave_it() -> None:
    """A mapping's entry, not ``--set``, which the caller never typed (QA G, F8)."""
    with pytest.raises(DistillError, match=r"^optim\.epochs=0: "):
        load_recipe("erm", {"optim.epochs": 0})


@pytest.mark.parametrize("value", ["8/255", "null", "yes", "/a b/c: d", 1e-5, 8 / 255, True, None, [1, "x"],
                                   {"pgd_eps": ["8/255"], "max_images": 40}])
def test_override_values_mean_what_they_are(value) -> None:
    """Values reach the config as themselves, not as YAML reinterpreted ('null' stays a string, 1e-05 a float)."""
    assert parse_overrides([f"k={_yaml_value(value)}"]) == [("k", value)]


def test_a_finished_run_is_read_not_retrained(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    RunSummary(strategy="erm", student="test_resnet", source_domains=["a"], target_domains=["b"], trained_on=["a"],
               best_epoch=2, selected_on="source validation accuracy", test_acc={"a": 0.5, "b": 0.25}, params=1,
               checkpoint=str(run / "checkpoints" / "best"), train_seconds_this_session=1.0).write(run)
    summary = train_or_resume(load_recipe("erm", {"data.root": tmp_path, "run.out": run}))
    assert summary.test_acc == {"a": 0.5, "b": 0.25} and summary.best_epoch == 2
    assert f"{run}: already trained" in capsys.readouterr().out


def test_load_recipe_takes_a_file_a_name_with_its_suffix_and_set_items(tmp_path: Path) -> None:
    """load_recipe finds recipes as `distill train -c` does (resolve_recipe) and takes overrides as `--set` items too,
    as adapt_config does: "kd.yaml" was "kd.yaml.yaml: no such recipe", a list an AttributeError."""
    kd = load_recipe("kd")
    assert load_recipe("kd.yaml") == kd and load_recipe(CONFIGS_DIR / "kd.yaml") == kd
    own = tmp_path / "mine.yaml"
    own.write_text((CONFIGS_DIR / "kd.yaml").read_text())
    assert load_recipe(str(own)) == kd
    by_items = load_recipe("kd", ["optim.epochs=2", "run.out=runs/x"])
    assert by_items == load_recipe("kd", {"optim.epochs": 2, "run.out": "runs/x"}) and by_items.optim.epochs == 2
    assert load_recipe("kd", "optim.epochs=2") == load_recipe("kd", ["optim.epochs=2"])
    with pytest.raises(DistillError, match=r"^optim\.epochs=0: "):
        load_recipe("kd", ["optim.epochs=0"])
    with pytest.raises(DistillError, match="overrides: expected a mapping"):
        load_recipe("kd", [("optim.epochs", 2)])  # type: ignore[list-item]
    with pytest.raises(DistillError, match=r"nope\.yaml: no such config file, nor a built-in recipe"):
        load_recipe("nope.yaml")
