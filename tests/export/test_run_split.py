"""On a run's own data, export, qad and eval keep the run's split rule: another value of a split key would score the
student on images it trained on (a QA run: export with test_fraction 0.5 of a run trained with 0.3 said 'ok', and
190 of its 818 'test' images were train images). On other data the keys are free (distill.run_split)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from distill.cli import EXIT_ERROR, main
from distill.data.folder import DomainFolder
from distill.errors import DistillError
from distill.export import ExportConfig, export_checkpoint
from distill.export.log import ExportLog
from distill.export.training_run import TrainingRun, with_run_defaults
from distill.records import EXPORT_REPORT, RUN_CONFIG

TRAINED = {"test_fraction": 0.3, "split_seed": 0, "val_fraction": 0.1, "pretrain_fraction": 0.0}  # the run_ckpt run's
OTHER = {"test_fraction": 0.5, "split_seed": 3, "val_fraction": 0.2, "pretrain_fraction": 0.1}


def _log() -> ExportLog:
    return ExportLog(lambda s: None)


@pytest.fixture(scope="module")
def other_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another data set with the run's classes and domains (other images): nothing in it was trained on."""
    import synthetic  # tests/export/ is on sys.path (conftest.py)

    return synthetic.make_tree(tmp_path_factory.mktemp("other") / "tiny", per_class=4, seed=1)


def test_the_api_export_refuses_another_test_fraction_on_the_runs_data(run_ckpt: Path, tmp_path: Path) -> None:
    """The QA report's call, refused before anything is written."""
    from distill.api import export

    with pytest.raises(DistillError) as e:
        export(run_ckpt, tmp_path / "exp", test_fraction=0.5, eval_count=4, exporter="torchscript")
    message = str(e.value)
    assert message.startswith("export: test_fraction 0.5 differs from training's 0.3 "
                              f"({run_ckpt.parent.parent / RUN_CONFIG})"), message
    assert "trained on" in message and "leave test_fraction unset" in message and "\n" not in message
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("key", list(OTHER))
def test_every_placing_split_key_is_compared_however_the_root_is_spelled(run_ckpt: Path, tiny_root: Path,
                                                                        tmp_path: Path, key: str) -> None:
    run = TrainingRun.of_checkpoint(run_ckpt, _log())
    link = tmp_path / "link"
    link.symlink_to(tiny_root)
    for root in (None, str(tiny_root), str(link), os.path.relpath(tiny_root)):
        with pytest.raises(DistillError, match=f"^export: {key} {OTHER[key]} differs from training's {TRAINED[key]} "):
            with_run_defaults(ExportConfig(data_root=root, **{key: OTHER[key]}), run, _log())


def test_the_runs_own_values_and_a_class_map_are_accepted_on_its_data(run_ckpt: Path, tiny_root: Path) -> None:
    """The run's values given again are fine; a class map moves no image between splits and is not compared."""
    run = TrainingRun.of_checkpoint(run_ckpt, _log())
    cfg = with_run_defaults(ExportConfig(data_root=str(tiny_root), class_map="names.yaml", **TRAINED), run, _log())
    assert {k: getattr(cfg, k) for k in TRAINED} == TRAINED and cfg.class_map == "names.yaml"


def test_other_data_takes_any_split(run_ckpt: Path, other_root: Path, tmp_path: Path) -> None:
    run = TrainingRun.of_checkpoint(run_ckpt, _log())
    cfg = with_run_defaults(ExportConfig(data_root=str(other_root), **OTHER), run, _log())
    assert {k: getattr(cfg, k) for k in OTHER} == OTHER
    rep = export_checkpoint(run_ckpt, tmp_path / "exp", ExportConfig(
        data_root=str(other_root), test_fraction=0.5, exporter="torchscript", eval_count=4), log=lambda s: None)
    assert rep.status == "ok" and rep.config["test_fraction"] == 0.5 and rep.data["root"] == str(other_root)


def test_qad_refuses_an_export_whose_split_is_not_the_runs(run_ckpt: Path, export_dir: Path, tmp_path: Path) -> None:
    """qad --export takes the export's split: an export made (before the refusal) with another rule on the run's
    data is refused, naming its export.json."""
    import distill.export.qad as qad_module
    from distill.export.kept_float import export_int8
    from distill.export.qad_config import QADConfig
    from distill.export.quantize import FLAVOURS

    leaky = tmp_path / "exp"
    shutil.copytree(export_dir, leaky)
    report = json.loads((leaky / EXPORT_REPORT).read_text())
    report["config"]["test_fraction"] = 0.5
    (leaky / EXPORT_REPORT).write_text(json.dumps(report))
    run = TrainingRun.of_checkpoint(run_ckpt, _log())
    cfg = QADConfig(checkpoint=str(run_ckpt), out_dir="unused", export_dir=str(leaky))
    with pytest.raises(DistillError) as e:
        qad_module.export_config(cfg, run, _log(), export_int8(leaky, run_ckpt, FLAVOURS["ort-cpu"]))
    message = str(e.value)
    assert message.startswith(f"{leaky / EXPORT_REPORT}: test_fraction 0.5 differs from training's 0.3"), message
    assert "re-export with the run's split" in message
    # the export as made, with the run's split, is fine
    ecfg = qad_module.export_config(cfg.model_copy(update={"export_dir": str(export_dir)}), run, _log(),
                                    export_int8(export_dir, run_ckpt, FLAVOURS["ort-cpu"]))
    assert ecfg.test_fraction == 0.3


def _eval(ckpt: Path, root: Path, *flags: str) -> list[str]:
    return ["eval", str(ckpt), "--data", str(root), "--pgd-eps", "0", "--corruptions", "none", "--no-progress", *flags]


def test_eval_refuses_another_split_on_the_runs_data(run_ckpt: Path, tiny_root: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    assert main(_eval(run_ckpt, tiny_root, "--test-fraction", "0.5")) == EXIT_ERROR
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {run_ckpt}: --test-fraction 0.5 differs from training's 0.3 "
                           f"({run_ckpt.parent.parent / RUN_CONFIG})"), line
    assert "drop --test-fraction" in line


def _counts(capsys: pytest.CaptureFixture) -> dict[str, int]:
    return {d: r["n"] for d, r in json.loads(capsys.readouterr().out)["domains"].items()}


def test_eval_takes_the_runs_split_on_its_data_and_any_on_other_data(run_ckpt: Path, tiny_root: Path,
                                                                     other_root: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """Unset split flags are the run's on its data (they were the defaults: 0.3 for a run trained with 0.5)."""
    run_dir = tmp_path / "run"
    shutil.copytree(run_ckpt.parent.parent, run_dir)
    config = json.loads((run_dir / RUN_CONFIG).read_text())
    config["data"]["test_fraction"] = 0.5
    (run_dir / RUN_CONFIG).write_text(json.dumps(config))
    ckpt = run_dir / "checkpoints" / "best"

    def tests(root: Path, fraction: float) -> dict[str, int]:
        return {d: n["test"] for d, n in DomainFolder(root, test_fraction=fraction).summary().items()}

    assert main(_eval(ckpt, tiny_root, "--json")) == 0
    assert _counts(capsys) == tests(tiny_root, 0.5) != tests(tiny_root, 0.3)
    assert main(_eval(ckpt, tiny_root, "--json", "--test-fraction", "0.5")) == 0  # the run's value, given
    assert _counts(capsys) == tests(tiny_root, 0.5)
    assert main(_eval(ckpt, other_root, "--json", "--test-fraction", "0.2")) == 0  # other data: any split
    assert _counts(capsys) == tests(other_root, 0.2)
    assert main(_eval(ckpt, other_root, "--json")) == 0  # and the defaults, not the run's
    assert _counts(capsys) == tests(other_root, 0.3)


def test_an_empty_run_section_keeps_the_runs_data_section(tmp_path: Path) -> None:
    """`run:` left empty in a hand-edited config.yaml (YAML null) names no start folder; the view used to fail
    validation as a whole and export/qad/eval went on without the run's data (its root, its split rule)."""
    from distill.run_split import read_run_config

    (tmp_path / "data").mkdir()
    (tmp_path / RUN_CONFIG).write_text(f"data:\n  root: {tmp_path / 'data'}\n  source: [a]\n  test_fraction: 0.4\n"
                                       "run:\n")
    warnings: list[str] = []
    view = read_run_config(tmp_path / RUN_CONFIG, warnings.append, "going on without it")
    assert warnings == []
    assert view.data is not None and view.data.test_fraction == 0.4
