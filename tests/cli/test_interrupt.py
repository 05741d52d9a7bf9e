"""Ctrl-C: each command's ``interrupted:`` line says how to go on, and what it says works. A run (train, adapt)
is continued by ``--resume RUN`` (rerunning the same command refuses a folder holding a run); an export restarts;
the commands whose rerun picks up where they stopped keep "rerun the same command to resume"."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

import distill.cli.data
import distill.cli.export
import distill.train
from distill.cli import EXIT_ERROR, EXIT_INTERRUPTED, main
from distill.student.model import Student, default_spec, save_student
from distill.train import Checkpoints
from tests.shapes import CLASSES, make_shapes_root

COMMON = ["--set", "run.workers=0", "--set", "run.device=cpu", "--set", "optim.batch_size=4", "--no-progress"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_shapes_root(tmp_path_factory.mktemp("interrupt") / "data", ["red", "blue"], per_class=6)


def _interrupt_after_the_first_checkpoint(monkeypatch) -> None:
    save = Checkpoints.save

    def save_then_interrupt(self, step, strategy, state):
        save(self, step, strategy, state)  # the first checkpoint is on disk
        monkeypatch.setattr(Checkpoints, "save", save)
        raise KeyboardInterrupt
    monkeypatch.setattr(Checkpoints, "save", save_then_interrupt)


def _hinted_argv(err: str, command: str, run: Path) -> list[str]:
    line, = [ln for ln in err.splitlines() if ln.startswith("interrupted:")]
    assert line == f"interrupted: continue it with: distill {command} --resume {shlex.quote(str(run))}", err
    return shlex.split(line.split(": ", 2)[2])[1:]


def test_interrupted_train_names_the_resume_that_continues_it(root, tmp_path, monkeypatch, capsys):
    run = tmp_path / "my run"  # quoted in the hint
    recipe = tmp_path / "erm.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"root": str(root), "source": ["red"], "target": ["blue"]},
                                      "student": {"arch": "test_resnet", "input_size": 16},
                                      "strategy": {"name": "erm"}, "optim": {"epochs": 2}, "run": {"out": str(run)}}))
    argv = ["train", "-c", str(recipe), *COMMON]
    _interrupt_after_the_first_checkpoint(monkeypatch)
    assert main(argv) == EXIT_INTERRUPTED
    hinted = _hinted_argv(capsys.readouterr().err, "train", run)
    assert main(argv) == EXIT_ERROR  # the same command refuses the folder, as it should
    assert capsys.readouterr().err.strip().endswith("or choose another run.out")
    assert main(hinted + ["--no-progress"]) == 0 and (run / "summary.json").is_file()


def test_interrupted_adapt_names_the_resume_and_its_refusal_names_out(root, tmp_path, monkeypatch, capsys):
    ckpt = save_student(Student(default_spec("test_resnet", CLASSES, 16)), tmp_path / "src" / "best",
                        extra_provenance={"source_domains": ["red"]})
    run = tmp_path / "adapted"
    argv = ["adapt", "--source-checkpoint", str(ckpt), "--target", "blue", "--data", str(root), "--strategy", "shot",
            "--out", str(run), "--set", "optim.epochs=2", *COMMON]
    _interrupt_after_the_first_checkpoint(monkeypatch)
    assert main(argv) == EXIT_INTERRUPTED
    hinted = _hinted_argv(capsys.readouterr().err, "adapt", run)
    assert main(argv) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.endswith("or choose another --out") and "run.out" not in err  # adapt's flag is --out
    assert main(hinted + ["--no-progress"]) == 0 and (run / "summary.json").is_file()


def test_a_run_interrupted_before_it_wrote_anything_says_to_rerun(tmp_path, monkeypatch, capsys):
    def interrupted(cfg, resume=False, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(distill.train, "train", interrupted)
    assert main(["train", "-c", "erm", "--set", f"run.out={tmp_path / 'r'}"]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip() == "interrupted: nothing was written yet: rerun the same command"


def test_only_rank_0_prints_the_interrupted_line(tmp_path, monkeypatch, capsys):
    """Under torchrun every rank is interrupted: one line, not one per rank (QA I finding 4)."""
    def interrupted(cfg, resume=False, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(distill.train, "train", interrupted)
    argv = ["train", "-c", "erm", "--set", f"run.out={tmp_path / 'r'}"]
    for name, value in {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert main(argv) == EXIT_INTERRUPTED
    assert capsys.readouterr().err.startswith("interrupted: ")


def test_a_run_interrupted_before_its_first_checkpoint_says_its_resume_starts_over(root, tmp_path, monkeypatch,
                                                                                  capsys):
    """Its resume trains from epoch 1, as it should, and says so (QA I finding 8: it did so in silence)."""
    run = tmp_path / "early"
    recipe = tmp_path / "erm.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"root": str(root), "source": ["red"], "target": ["blue"]},
                                      "student": {"arch": "test_resnet", "input_size": 16},
                                      "strategy": {"name": "erm"}, "optim": {"epochs": 1}, "run": {"out": str(run)}}))

    def interrupt(self, step, strategy, state):
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(Checkpoints, "save", interrupt)
        assert main(["train", "-c", str(recipe), *COMMON]) == EXIT_INTERRUPTED
    assert Checkpoints(run).last() is None
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0 and (run / "summary.json").is_file()
    out = capsys.readouterr().out.splitlines()
    assert f"{run}: no checkpoint yet (interrupted before the first): training it from epoch 1" in out, out


def test_export_says_it_restarts_and_other_commands_keep_the_resume_hint(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(distill.cli.export, "run", interrupted)
    assert main(["export", "CKPT", "--out", "x"]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip() == ("interrupted: the export did not finish; rerun the same command to "
                                               "export again from the start")

    monkeypatch.setattr(distill.cli.data, "_materialize", interrupted)
    assert main(["data", "materialize", "--out", "x"]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip() == "interrupted: rerun the same command to resume"


def test_commands_that_start_over_do_not_promise_a_resume(monkeypatch, capsys):
    """qad, bench, eval, report and teacher eval keep nothing of an interrupted run: their line says a rerun
    starts over (the review found them still saying "to resume")."""
    import distill.cli.bench
    import distill.cli.eval
    import distill.cli.qad
    import distill.cli.report
    import distill.cli.teacher

    def interrupted(args):
        raise KeyboardInterrupt

    for module, name, argv in [(distill.cli.qad, "run", ["qad", "CKPT", "--out", "x"]),
                               (distill.cli.bench, "run", ["bench", "x.onnx"]),
                               (distill.cli.eval, "_run", ["eval", "CKPT", "--data", "x"]),
                               (distill.cli.report, "run", ["report", "x"]),
                               (distill.cli.teacher, "_eval", ["teacher", "eval", "--data", "x"])]:
        monkeypatch.setattr(module, name, interrupted)
        assert main(argv) == EXIT_INTERRUPTED, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("interrupted: ") and "starts over" in err and "resume" not in err, (argv, err)


def test_a_run_with_a_relative_out_resumes_from_another_working_folder(root, tmp_path, monkeypatch, capsys):
    """config.yaml keeps run.out as typed ("runs/int"): `--resume /abs/runs/int` from elsewhere said "no
    config.yaml there" (review 2); the folder given to --resume is the run's folder."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    recipe = tmp_path / "erm.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"root": str(root), "source": ["red"], "target": ["blue"]},
                                      "student": {"arch": "test_resnet", "input_size": 16},
                                      "strategy": {"name": "erm"}, "optim": {"epochs": 2}, "run": {"out": "runs/int"}}))
    monkeypatch.chdir(tmp_path / "a")
    _interrupt_after_the_first_checkpoint(monkeypatch)
    assert main(["train", "-c", str(recipe), *COMMON]) == EXIT_INTERRUPTED
    capsys.readouterr()
    monkeypatch.chdir(tmp_path / "b")
    run = tmp_path / "a" / "runs" / "int"
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0, capsys.readouterr().err
    assert (run / "summary.json").is_file() and not (tmp_path / "b" / "runs").exists()


# A Ctrl-C (SIGINT to the whole process group, as a terminal sends it) just after the second of a DataLoader's two
# workers has been started (argv[1]: the multiprocessing start method): the parent is inside the iterator's
# construction (one worker on its list, the rest of its state not yet set), the new worker in its first instants.
_CTRL_C_AS_WORKERS_START = """
import multiprocessing, sys
multiprocessing.set_start_method(sys.argv.pop(1), force=True)
import multiprocessing.process as mp, os, signal
start, started = mp.BaseProcess.start, []
def start_then_ctrl_c(self):
    start(self)
    started.append(self)
    if len(started) == 2:
        mp.BaseProcess.start = start
        os.killpg(0, signal.SIGINT)
mp.BaseProcess.start = start_then_ctrl_c
from distill.cli import main
sys.exit(main())
"""


def _ctrl_c_as_workers_start(root: Path, tmp_path: Path, command: str, start_method: str):
    """The command (cache build or train, 2 workers) run in a subprocess of its own process group, Ctrl-C'd as its
    workers start: (exit status, stderr, its lines less the `prompt templates:`/`warning:` ones)."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    if command == "cache":
        argv = ["cache", "build", "--data", str(root), "--out", str(tmp_path / "c"), "--arch", "distill-demo-vit",
                "--pretrained", "none", "--device", "cpu", "--workers", "2", "--no-progress"]
    else:
        recipe = tmp_path / "erm.yaml"
        recipe.write_text(yaml.safe_dump({"data": {"root": str(root), "source": ["red"], "target": ["blue"]},
                                          "student": {"arch": "test_resnet", "input_size": 16},
                                          "strategy": {"name": "erm"}, "optim": {"epochs": 1},
                                          "run": {"out": str(tmp_path / "r")}}))
        argv = ["train", "-c", str(recipe), "--set", "run.workers=2", "--set", "run.device=cpu", "--set",
                "optim.batch_size=4", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    res = subprocess.run([sys.executable, "-c", _CTRL_C_AS_WORKERS_START, start_method, *argv], capture_output=True,
                         text=True, timeout=300, env=env, start_new_session=True)  # its own group: the SIGINT stays in it
    lines = [ln for ln in res.stderr.splitlines() if not ln.startswith(("prompt templates:", "warning: "))]
    return res.returncode, res.stderr, lines


@pytest.mark.parametrize("command", ["cache", "train"])
def test_ctrl_c_while_workers_start_prints_one_line(root, tmp_path, command):
    """Review: Ctrl-C in a command's first seconds, while a DataLoader started its workers, printed torch's
    "Exception ignored in: <function _MultiProcessingDataLoaderIter.__del__ ...>" traceback after the
    `interrupted:` line (the half-built iterator's __del__), or a worker died in its first instants and the command
    failed with "DataLoader worker ... exited unexpectedly" (exit 1). The interrupt now waits until the workers are
    up: one line, exit 130."""
    rc, err, lines = _ctrl_c_as_workers_start(root, tmp_path, command, "fork")
    assert rc == EXIT_INTERRUPTED and len(lines) == 1 and lines[0].startswith("interrupted: "), err


@pytest.mark.slow
def test_ctrl_c_while_spawned_workers_start_prints_one_line(root, tmp_path):
    """Review 3 (L3): the interrupt was held off only in forked workers. With ``spawn`` workers (macOS's default; a
    Python API user's ``set_start_method``) a worker, a fresh interpreter still importing torch, died of the Ctrl-C,
    and torch's SIGCHLD handler made it "RuntimeError: DataLoader worker (pid ...) is killed by signal: Interrupt":
    exit 1 and ~50 lines of traceback. With the workers deaf to it, the persistent train loader's were then
    terminated mid-import at exit ("... killed by signal: Terminated", in an atexit traceback). Now: exit 130, the
    one `interrupted:` line, no traceback. (train: its persistent loader is the one left to the exit; cache build
    behaves alike, 17 s here against 12.)"""
    rc, err, lines = _ctrl_c_as_workers_start(root, tmp_path, "train", "spawn")
    assert "Traceback" not in err and "DataLoader worker" not in err, err
    assert rc == EXIT_INTERRUPTED and len(lines) == 1 and lines[0].startswith("interrupted: "), err
