"""distill/cli/__init__.py: what every command shares (exit codes, --version, --no-progress, a torch-free
--help), recipes by name, --set's malformed values, `distill adapt --resume`."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import distill
from distill.cli import EXIT_ERROR, EXIT_USAGE, _leaf_parsers, build_parser, main
from distill.config import TrainConfig, dump_config, load_train_config, parse_overrides
from distill.errors import DistillError
from distill.recipes import CONFIGS_DIR, list_recipes, load_recipe, resolve_recipe
from distill.records import RUN_CONFIG
from distill.run_paths import stored_paths

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "timm", "open_clip", "onnxruntime", "kornia")


def _fresh_python(code: str) -> str:
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.strip()


def test_help_of_every_command_imports_no_torch():
    """`distill --help` (and each command's --help) answers without loading torch or any other heavy library."""
    commands = [[], ["train"], ["adapt"], ["cache"], ["cache", "build"], ["export"], ["eval"], ["bench"], ["report"],
                ["data", "materialize"], ["teacher", "bootstrap"], ["demo"]]
    loaded = _fresh_python(
        "import contextlib, io, sys\n"
        "from distill.cli import main\n"
        f"for argv in {commands!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main([*argv, '--help'])\n"
        "        except SystemExit as e:\n"
        "            assert e.code == 0, (argv, e.code)\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    assert loaded == "", f"`distill --help` imported {loaded}"


def test_import_distill_and_its_api_import_no_torch():
    loaded = _fresh_python(
        "import sys, distill\n"
        "from distill.api import adapt, build_cache, export, load_recipe, train\n"
        "assert distill.RunSummary.__name__ == 'RunSummary' and callable(distill.adapt)\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    assert loaded == ""


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"distill {distill.__version__}"


def test_exit_codes_usage_2_errors_1(capsys):
    """argparse's bad usage exits 2; a DistillError (bad input, failed run) returns 1 with one `error:` line."""
    with pytest.raises(SystemExit) as e:
        main(["train", "--no-such-flag"])
    assert e.value.code == EXIT_USAGE == 2
    capsys.readouterr()
    assert main(["train", "-c", "no_such_recipe"]) == EXIT_ERROR == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: no_such_recipe:") and "kd" in err


def test_every_command_takes_no_progress_and_quiet():
    leaves = [p for p in _leaf_parsers(build_parser()) if p.prog != "distill"]
    assert len(leaves) >= 12, [p.prog for p in leaves]
    for parser in leaves:
        flags = {s for a in parser._actions for s in a.option_strings}
        assert {"--no-progress", "--quiet"} <= flags, parser.prog
        assert parser._option_string_actions["--quiet"].dest == "no_progress"


def test_no_progress_turns_off_every_tqdm_bar_for_the_command_only(monkeypatch, capsys):
    """Bars a command does not pass the flag to (export, eval, teacher loading) read TQDM_DISABLE."""
    import os

    import distill.cli.data

    seen = []

    def fake(*args, **kwargs):
        seen.append(os.environ.get("TQDM_DISABLE"))
        raise DistillError("stop")

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(distill.cli.data, "DomainFolder", fake)
    assert main(["data", "summary", "ROOT", "--quiet"]) == 1 and main(["data", "summary", "ROOT"]) == 1
    assert seen == ["1", None] and "TQDM_DISABLE" not in os.environ


@pytest.fixture
def trained(monkeypatch):
    """`distill.train.train` replaced by a recorder: the CLI's config and resume flag, no training."""
    import distill.train

    calls: list[tuple[TrainConfig, bool]] = []
    monkeypatch.setattr(distill.train, "train", lambda cfg, resume=False, **kw: calls.append((cfg, resume)))
    return calls


@pytest.mark.parametrize("select_on, why", [("teacher_agreement", "no teacher agreement measured"),
                                             ("source_val", "no validation images in the source domains")])
def test_a_run_that_kept_its_last_epoch_says_why_by_what_it_selects_on(monkeypatch, tmp_path, capsys, select_on, why):
    """Review 25 L1: the last line of a labelled `run.select_on: teacher_agreement` run that measured no agreement
    said "no validation images in the source domains" (the CLI did not pass what the run selects on)."""
    import distill.train

    summary = SimpleNamespace(strategy="kd", selected_on="last_epoch", best_epoch=3, checkpoint=tmp_path / "best",
                              source_acc=0.5, target_acc=0.25)
    monkeypatch.setattr(distill.train, "train", lambda cfg, resume=False, **kw: summary)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "-c", "kd", "--set", f"run.select_on={select_on}"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"checkpoint (kept: last epoch, 3; {why}): {tmp_path / 'best'}  (source 50.0, target 25.0)")


def test_train_takes_a_builtin_recipe_by_name_and_no_progress(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file named fm here: the built-in recipe
    assert main(["train", "-c", "fm", "--no-progress", "--set", "optim.epochs=3"]) == 0
    (cfg, resume), = trained
    assert not resume and cfg.strategy.name == "fm" and cfg.optim.epochs == 3 and cfg.run.progress is False
    as_written = load_train_config(CONFIGS_DIR / "fm.yaml")
    assert cfg.model_dump() == load_train_config(
        None, ["optim.epochs=3", "run.progress=false"], base=as_written.model_dump(mode="json")).model_dump()
    assert main(["train", "-c", "fm"]) == 0 and trained[-1][0].run.progress is True  # the old default


def test_list_recipes(capsys):
    assert main(["train", "--list-recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == list_recipes() and str(CONFIGS_DIR / "kd.yaml") in "\n".join(lines)


def test_recipe_lookup(tmp_path, monkeypatch):
    assert set(list_recipes()) >= {"erm", "kd", "fm", "sfda"}
    assert resolve_recipe("kd") == resolve_recipe("kd.yaml") == CONFIGS_DIR / "kd.yaml"
    assert (REPO / "configs" / "kd.yaml").resolve() == (CONFIGS_DIR / "kd.yaml").resolve()  # the checkout's link
    monkeypatch.chdir(tmp_path)
    Path("kd").write_text("x: 1\n")  # review 25b L8: a bare name is the built-in recipe, whatever the folder holds
    Path("kd.yaml").write_text("x: 1\n")
    assert resolve_recipe("kd") == CONFIGS_DIR / "kd.yaml" and load_recipe("kd") == load_recipe(CONFIGS_DIR / "kd.yaml")
    assert resolve_recipe("./kd") == Path("kd") and resolve_recipe(Path("kd")) == Path("kd")  # a path is the file
    assert resolve_recipe("kd.yaml") == Path("kd.yaml")  # a file name: a user's own recipe wins
    Path("mine").write_text("x: 1\n")
    assert resolve_recipe("mine") == Path("mine")  # no built-in of that name: the file
    with pytest.raises(DistillError, match=r"sub/kd: no such config file, nor a built-in recipe \(built-in: .*kd"):
        resolve_recipe("sub/kd")  # a path is never a recipe name


@pytest.mark.parametrize("item", ["data.target=[mnist_m", "data.target=mnist_m]", "data.source={a: 1",
                                  "run.out='runs/x", 'run.out="runs/x'])
def test_set_reports_unbalanced_brackets_and_quotes(item):
    key = item.split("=")[0]
    with pytest.raises(DistillError) as e:
        parse_overrides([item])
    msg = str(e.value)
    assert f"'{key}'" in msg and "malformed" in msg and "\n" not in msg


def test_set_still_reads_lists_quotes_and_plain_text():
    got = parse_overrides(["data.target=[mnist_m, optdigits]", "a='b c'", "b=x: y z", "c=it's", 'd="["', "e="])
    assert got == [("data.target", ["mnist_m", "optdigits"]), ("a", "b c"), ("b", {"x": "y z"}), ("c", "it's"),
                   ("d", "["), ("e", None)]


def test_set_malformed_on_the_command_line_is_one_line(capsys):
    assert main(["train", "-c", "kd", "--set", "data.target=[mnist_m"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'data.target'" in err and "malformed" in err


def _run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    # as a run writes it: its paths absolute (distill/run_paths.py; they need not exist, `train` is mocked here)
    cfg = stored_paths(load_train_config(CONFIGS_DIR / "sfda.yaml", [f"run.out={run}"]))
    (run / RUN_CONFIG).write_text(dump_config(cfg))
    return run


def test_adapt_resume_continues_the_run(trained, tmp_path):
    run = _run_dir(tmp_path)
    assert main(["adapt", "--resume", str(run), "--quiet"]) == 0
    (cfg, resume), = trained
    assert resume and cfg.strategy.name == "sfda" and str(cfg.run.out) == str(run) and cfg.run.progress is False


def test_adapt_resume_refuses_other_options_and_needs_its_arguments_without(trained, tmp_path, capsys):
    run = _run_dir(tmp_path)
    assert main(["adapt", "--resume", str(run), "--target", "mnist_m", "--set", "optim.epochs=3"]) == 1
    err = capsys.readouterr().err
    assert "--target, --set not allowed" in err and not trained
    with pytest.raises(SystemExit) as e:  # without --resume the defining options are required: bad usage
        main(["adapt", "--target", "mnist_m"])
    assert e.value.code == 2
    assert "--source-checkpoint, --data (or --resume RUN_DIR)" in capsys.readouterr().err


def _starts_with_warning(node: ast.expr) -> bool:
    first = node.values[0] if isinstance(node, ast.JoinedStr) and node.values else node
    return isinstance(first, ast.Constant) and isinstance(first.value, str) and \
        first.value.strip().lower().startswith("warning")


def test_warnings_go_to_stderr_results_to_stdout():
    """Every `print("warning: ...")` in the package goes to stderr (the CLI and the stages it calls)."""
    offenders = []
    for path in (REPO / "distill").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print" and \
                    node.args and _starts_with_warning(node.args[0]):
                to = next((k.value for k in node.keywords if k.arg == "file"), None)
                if not (isinstance(to, ast.Attribute) and to.attr == "stderr"):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders


def test_adapt_help_shows_one_resume_spelling(capsys):
    with pytest.raises(SystemExit):
        main(["adapt", "--help"])
    out = capsys.readouterr().out
    assert "--resume RUN_DIR" in out and "distill train --resume" not in out
