"""distill/api.py: the keywords that mirror a command's flags (``skip_bad`` for ``--skip-bad``), and error messages
worded for a Python call (the keys it passed, not ``--set``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from distill import api
from distill.config import TrainConfig, dump_config, load_train_config
from distill.errors import DistillError
from distill.recipes import CONFIGS_DIR
from distill.records import RUN_CONFIG
from distill.run_paths import stored_paths


@pytest.fixture
def trained(monkeypatch):
    import distill.train

    calls: list[tuple[TrainConfig, bool]] = []
    monkeypatch.setattr(distill.train, "train", lambda cfg, resume=False, **kw: calls.append((cfg, resume)) or "summary")
    return calls


# ---------------------------------------------------------------- skip_bad: --skip-bad of train and adapt (QA G, F7)
@pytest.mark.parametrize("overrides", [None, {"optim.epochs": 1}, ["optim.epochs=1"]])
def test_train_takes_skip_bad_as_the_cli_takes_skip_bad(trained, overrides):
    assert api.train("erm", overrides, skip_bad=True) == "summary"
    assert api.train("erm", overrides) == "summary"
    assert [cfg.data.skip_bad for cfg, _ in trained] == [True, False]


def test_adapt_takes_skip_bad(monkeypatch, trained):
    seen = []
    monkeypatch.setattr(api, "adapt_config", lambda *a, overrides=None, **k: seen.append(overrides)
                        or load_train_config(CONFIGS_DIR / "shot.yaml", api.override_items(overrides)))
    assert api.adapt("ckpt", "mnist_m", "data", skip_bad=True, overrides={"optim.epochs": 1}) == "summary"
    assert seen == [{"optim.epochs": 1, "data.skip_bad": True}] and trained[0][0].data.skip_bad


def test_skip_bad_is_refused_with_resume_and_checked(trained, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_CONFIG).write_text(dump_config(stored_paths(load_train_config(CONFIGS_DIR / "sfda.yaml",
                                                                             [f"run.out={run}"]))))
    with pytest.raises(DistillError, match=r"train: .*; skip_bad not allowed with it$"):
        api.train(resume=run, skip_bad=True)
    with pytest.raises(DistillError, match=r"adapt: .*; skip_bad not allowed with it$"):
        api.adapt(resume=run, skip_bad=True)
    with pytest.raises(DistillError, match=r"^skip_bad: expected True or False, got 'yes'$"):
        api.train("erm", skip_bad="yes")  # type: ignore[arg-type]
    assert api.train(resume=run, skip_bad=False) == "summary"


# ---------------------------------------------------------------- messages name what the caller passed (QA G, F8)
def test_an_override_given_in_python_is_named_as_given_there(capsys, tmp_path, monkeypatch):
    """A mapping's bad value was named ``--set optim.epochs=two``, a flag the caller never typed; the command line
    keeps its flag."""
    with pytest.raises(DistillError, match=r"^optim\.epochs='two': 'optim\.epochs': Input should be a valid integer"):
        api.train_config("kd", {"optim.epochs": "two"})
    with pytest.raises(DistillError, match=r"^run\.threads=1: unknown key 'run\.threads'"):
        api.load_recipe("kd", {"run.threads": 1})
    with pytest.raises(DistillError, match=r"^optim\.epochs=two: 'optim\.epochs'"):
        api.train_config("kd", ["optim.epochs=two"])  # a KEY=VALUE string: as written
    with pytest.raises(DistillError, match=r"^'optim\.epochs': expected key=value"):
        api.train_config("kd", ["optim.epochs"])
    import distill.train.adapt
    from distill.config import load_yaml

    monkeypatch.setattr(distill.train.adapt, "adapt_recipe", lambda *a, **k: load_yaml(CONFIGS_DIR / "shot.yaml"))
    with pytest.raises(DistillError, match=r"^optim\.lr='x': "):
        api.adapt_config(tmp_path, "mnist_m", tmp_path, strategy="shot", overrides={"optim.lr": "x"})

    from distill.cli import main

    assert main(["train", "-c", "kd", "--set", "optim.epochs=two"]) == 1
    assert capsys.readouterr().err.startswith("error: --set optim.epochs=two: 'optim.epochs'")


def test_a_stage_names_its_options_as_the_running_command_spells_them():
    """One message, two spellings: the flag inside the command (distill/cli/qad.py wraps its run), the key from
    Python."""
    from distill.cli.qad import FLAGS
    from distill.export.qad_calibration import _agree
    from distill.spelling import option_names

    with pytest.raises(DistillError) as python:
        _agree(Path("exp/kd"), "calib_count", 32, 17)
    with option_names(FLAGS), pytest.raises(DistillError) as command:
        _agree(Path("exp/kd"), "calib_count", 32, 17)
    assert str(python.value) == ("exp/kd: calib_count=32 differs from the export's 17; with export_dir both int8 files "
                                 "calibrate alike, so that the no-harm rule's hold-out holds no calibration image of "
                                 "either: drop calib_count, or re-export with it")
    assert str(command.value) == ("exp/kd: --calib-count 32 differs from the export's 17; with --export both int8 "
                                  "files calibrate alike, so that the no-harm rule's hold-out holds no calibration "
                                  "image of either: drop --calib-count, or re-export with it")


# ---------------------------------------------------------------- distill export --format timm (QA G, F17)
def test_export_timm_is_the_api_of_format_timm(tmp_path):
    import distill
    from distill.errors import UnknownKeyword
    from distill.student.model import Student, default_spec, save_student

    ckpt = save_student(Student(default_spec("test_resnet", ["a", "b"], 32)).eval(), tmp_path / "ckpt")
    path = api.export_timm(ckpt, tmp_path / "timm")
    assert path == tmp_path / "timm" / "model.safetensors" and path.is_file()
    assert (tmp_path / "timm" / "config.json").is_file() and distill.export_timm is api.export_timm
    with pytest.raises(UnknownKeyword, match=r"^export\(\): unknown keyword argument 'format': distill export "
                                             r"--format timm is export_timm\(checkpoint, out\)"):
        api.export(ckpt, tmp_path / "x", format="timm")
