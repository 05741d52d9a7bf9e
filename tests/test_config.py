"""distill.config: one-line errors naming the key (a --set mistake names the override, not the file it was
applied to), --set overrides, the robust section's epsilons and corruptions, and config.yaml round trips."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distill.cli import main as cli
from distill.config import RobustSettings, dump_config, format_eps, load_train_config, parse_eps
from distill.errors import DistillError
from distill.robust.corruptions import CORRUPTIONS


def _recipe(tmp_path: Path) -> Path:
    p = tmp_path / "erm.yaml"
    p.write_text(yaml.safe_dump({"data": {"root": str(tmp_path / "data"), "source": ["mnist"]},
                                 "strategy": {"name": "erm"}, "run": {"out": str(tmp_path / "run")}}))
    return p


def test_set_mistake_is_blamed_on_the_override(tmp_path, capsys):
    assert cli(["train", "-c", str(_recipe(tmp_path)), "--set", "optim.lr=0.1", "--set", "optim.epochs=many"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: --set optim.epochs=many: 'optim.epochs': Input should be a valid integer, unable to parse string "
        "as an integer (got 'many')")


def test_file_mistake_is_still_blamed_on_the_file(tmp_path, capsys):
    p = _recipe(tmp_path)
    p.write_text(p.read_text().replace("source:", "sauce:"))
    assert cli(["train", "-c", str(p), "--set", "optim.epochs=2"]) == 1
    # the misspelt key is named (it used to be "missing required key 'data.source'"), with the key it misspells
    assert capsys.readouterr().err.strip() == f"error: {p}: unknown key 'data.sauce' (did you mean 'data.source'?)"


def test_a_scalar_is_the_one_element_list(tmp_path):
    cfg = load_train_config(_recipe(tmp_path), ["data.source=clean", "data.target=noisy",
                                                "teacher.arch=RN50", "teacher.templates=a {}."])
    assert cfg.data.source == ["clean"] and cfg.data.target == ["noisy"] and cfg.teacher.templates == ["a {}."]


def test_domains_split_on_commas_as_adapt_and_export_take_them(tmp_path):
    """``data.source: "clean,inv"`` was one domain named 'clean,inv', while ``adapt(target="a,b")``, ``--target a,b``
    and export's domain keys split it (QA G, F9); unlabeled entries (folders) are kept whole."""
    cfg = load_train_config(_recipe(tmp_path), ["data.source=clean,inv", "data.target=[noisy, 'a, b']",
                                                "data.unlabeled=./pool,x"])
    assert (cfg.data.source, cfg.data.target, cfg.data.unlabeled) == (["clean", "inv"], ["noisy", "a", "b"],
                                                                      ["./pool,x"])
    with pytest.raises(DistillError, match="data.source"):
        load_train_config(_recipe(tmp_path), ["data.source=,"])


# ---------------------------------------------------------------------------- validation names the key
def _base(tmp_path: Path, **extra) -> dict:
    return {"data": {"root": str(tmp_path / "data"), "source": ["mnist"]}, "strategy": {"name": "kd"},
            "run": {"out": str(tmp_path / "run")}, **extra}


@pytest.mark.parametrize("change, message", [
    ({"optim": {"lrr": 0.1}}, "config: unknown key 'optim.lrr'"),
    ({"optim": {"epochs": 0}}, "config: 'optim.epochs': Input should be greater than or equal to 1 (got 0)"),
    ({"strategy": {"name": "kd", "temprature": 2}}, "config: unknown key 'strategy.temprature'"),
    ({"strategy": {"name": "nope"}}, "config: unknown strategy 'nope'"),
    ({"robust": {"severity": 6}}, "config: 'robust.severity': Input should be less than or equal to 5 (got 6)"),
    ({"robust": {"corruptions": ["fog"]}}, "config: 'robust.corruptions': Value error, unknown corruption 'fog'"),
    ({"robust": {"pgd_eps": ["big"]}}, "config: 'robust.pgd_eps': Value error, epsilon 'big': expected a number"),
    ({"robust": {"pgd_eps": [2]}}, "config: 'robust.pgd_eps': Value error, epsilon 2: must be in [0, 1]"),
])
def test_a_bad_value_is_one_line_naming_its_key(tmp_path, change, message):
    with pytest.raises(DistillError) as e:
        load_train_config(None, base={**_base(tmp_path), **change})
    assert str(e.value).startswith(message), str(e.value)


@pytest.mark.parametrize("override, message", [
    ("optim.epoch=3", "--set optim.epoch=3: unknown key 'optim.epoch'"),
    ("strategy.temprature=2", "--set strategy.temprature=2: unknown key 'strategy.temprature' (valid: "),
    ("strategy.temperature=hot", "--set strategy.temperature=hot: strategy.temperature: "),
    ("strategy.name=kdd", "--set strategy.name=kdd: unknown strategy 'kdd' (available: "),
    ("strategy={name: kd, temprature: 2}", "--set strategy={name: kd, temprature: 2}: unknown key 'strategy.temprature'"),
])
def test_a_strategy_key_mistake_names_the_set_item_like_any_other_key(tmp_path, capsys, override, message):
    """README: an unknown key is one line naming it and the --set item that set it; strategy keys too."""
    assert cli(["train", "-c", str(_recipe(tmp_path)), "--set", "strategy.name=kd", "--set", override]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and len(err.splitlines()) == 1, err
    p = _recipe(tmp_path)
    p.write_text(p.read_text().replace("name: erm", "name: kd\n  temprature: 2"))
    assert cli(["train", "-c", str(p), "--set", "optim.epochs=2"]) == 1
    assert capsys.readouterr().err.startswith(f"error: {p}: unknown key 'strategy.temprature' (valid: ")


@pytest.mark.parametrize("override, message", [
    ("data.target=[sketch,mnist]", "data.target: 'mnist' also in data.source; "
                                   "a target domain must be one the student does not train on"),
    ("data.target=mnist", "data.target: 'mnist' also in data.source"),
    ("data.source=[mnist,mnist]", "data.source: 'mnist' listed twice"),
    ("data.target=[sketch,sketch]", "data.target: 'sketch' listed twice"),
])
def test_a_target_must_be_unseen_and_domains_listed_once(tmp_path, capsys, override, message):
    """A source domain among the targets would be averaged into the "unseen domain" accuracy (QA B4). A new run
    is refused; a run configured so before the check still loads (resume, export and report read its config)."""
    assert cli(["train", "-c", str(_recipe(tmp_path)), "--set", override]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
    old = load_train_config(_recipe(tmp_path), [override])  # an older run's config.yaml: read as written
    with pytest.raises(DistillError, match=message.split(";")[0]):
        old.data.check_new_run()


def test_set_overrides_are_parsed_as_yaml_and_win_over_the_file(tmp_path):
    cfg = load_train_config(_recipe(tmp_path), ["optim.lr=3e-4", "optim.epochs=3", "data.target=[a, b]",
                                                "optim.grad_clip=null", "strategy.name=kd", "strategy.alpha=0.5"])
    assert cfg.optim.lr == 3e-4 and cfg.optim.epochs == 3 and cfg.data.target == ["a", "b"]
    assert cfg.optim.grad_clip is None and cfg.strategy.options() == {"alpha": 0.5}
    with pytest.raises(DistillError, match="expected key=value"):
        load_train_config(_recipe(tmp_path), ["optim.lr"])


# ---------------------------------------------------------------------------- epsilons, the robust section
def test_parse_and_format_eps():
    assert parse_eps("2/255") == pytest.approx(2 / 255) and parse_eps("0.01") == 0.01 and parse_eps(0.5) == 0.5
    assert format_eps(8 / 255) == "8/255" and format_eps(0.01) == "0.01"
    with pytest.raises(DistillError, match="2/255"):
        parse_eps("two")
    with pytest.raises(DistillError, match=r"\[0, 1\]"):
        parse_eps("8")


def test_robust_epsilons_parse_fractions_and_corruptions_expand(tmp_path):
    cfg = load_train_config(None, base=_base(tmp_path, robust={"pgd_eps": ["2/255", 0.5, "0.25"],
                                                                "pgd_step_size": "1/255", "corruptions": "all"}))
    assert cfg.robust.pgd_eps == (2 / 255, 0.5, 0.25)
    assert cfg.robust.pgd_step_size == 1 / 255 and cfg.robust.to_dict()["pgd_step_rule"] == "fixed"
    assert cfg.robust.corruptions == tuple(CORRUPTIONS)
    assert load_train_config(None, base=_base(tmp_path, robust={"pgd_eps": "8/255"})).robust.pgd_eps == (8 / 255,)
    assert load_train_config(None, base=_base(tmp_path)).robust is None, "off unless asked for"
    # distill eval builds the same model from its flags; its record writes the epsilons back as fractions
    settings = RobustSettings(pgd_eps=(8 / 255,), pgd_steps=4)
    assert settings.to_dict()["pgd_eps"] == ["8/255"] and settings.to_dict()["corruptions"] == list(CORRUPTIONS)


def test_the_dumped_config_loads_back_to_the_same_config(tmp_path):
    """RUN/config.yaml is what --resume reads: dump -> load must be the identity."""
    cfg = load_train_config(None, base=_base(tmp_path, robust={"pgd_eps": ["2/255"], "corruptions": ["jpeg"]}))
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    assert load_train_config(path) == cfg
