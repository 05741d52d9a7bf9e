"""A run's number of ranks (RUN/launch.json): a run interrupted under ``torchrun --nproc_per_node=2`` names the
torchrun command that continues it, and a resume on another number of ranks is refused in one line naming both and
that command (QA I finding 1: the hint named the one-process ``distill train --resume``, which went on silently as
another run).

A real interrupted 2-rank run is slow on a CPU: the 2-rank run's record is written as its rank 0 writes it
(``distill.train.run._write_record`` with ``dist.world`` 2: ``RunLaunch(world_size=2)``, ``{"world_size": 2}``)."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from distill.cli import EXIT_ERROR, EXIT_INTERRUPTED, main
from distill.cli.train import resume_hint
from distill.errors import DistillError
from distill.train import Checkpoints
from distill.train.data_identity import check_same_launch
from distill.train.run import _write_record
from tests.shapes import make_shapes_root

COMMON = ["--set", "run.workers=0", "--set", "run.device=cpu", "--set", "optim.batch_size=4", "--no-progress"]
TORCHRUN_2 = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_shapes_root(tmp_path_factory.mktemp("launch") / "data", ["red", "blue"], per_class=6)


def _recipe(tmp_path: Path, root: Path, run: Path) -> Path:
    recipe = tmp_path / "erm.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"root": str(root), "source": ["red"], "target": ["blue"]},
                                      "student": {"arch": "test_resnet", "input_size": 16},
                                      "strategy": {"name": "erm"}, "optim": {"epochs": 2}, "run": {"out": str(run)}}))
    return recipe


def _interrupt_after_the_first_checkpoint(monkeypatch) -> None:
    save = Checkpoints.save

    def save_then_interrupt(self, step, strategy, state):
        save(self, step, strategy, state)
        monkeypatch.setattr(Checkpoints, "save", save)
        raise KeyboardInterrupt
    monkeypatch.setattr(Checkpoints, "save", save_then_interrupt)


def test_the_interrupted_line_of_a_torchrun_run_names_the_torchrun_resume(tmp_path, monkeypatch):
    run = tmp_path / "my run"
    run.mkdir()
    (run / "config.yaml").write_text("{}")
    for name, value in TORCHRUN_2.items():
        monkeypatch.setenv(name, value)
    assert resume_hint("train", run)() == \
        f"continue it with: torchrun --nproc_per_node=2 -m distill train --resume {shlex.quote(str(run))}"
    assert resume_hint("adapt", run)().startswith("continue it with: torchrun --nproc_per_node=2 -m distill adapt ")
    for name in TORCHRUN_2:
        monkeypatch.delenv(name)
    assert resume_hint("train", run)() == f"continue it with: distill train --resume {shlex.quote(str(run))}"


def test_a_resume_on_another_number_of_ranks_is_refused_naming_both_and_the_command(root, tmp_path, monkeypatch,
                                                                                    capsys):
    run = tmp_path / "ddp"
    argv = ["train", "-c", str(_recipe(tmp_path, root, run)), *COMMON]
    _interrupt_after_the_first_checkpoint(monkeypatch)
    assert main(argv) == EXIT_INTERRUPTED
    capsys.readouterr()
    launch = run / "launch.json"  # RunLaunch (written as a file: the code before had no such record)
    launch.write_text(json.dumps({"world_size": 2}))  # as rank 0 of a 2-rank run writes it (RunLaunch.write)
    assert main(["train", "--resume", str(run), "--no-progress"]) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --resume {run}: the run was trained on 2 torchrun ranks ({run / 'launch.json'}) and this "
                   "resume runs on 1 process; resumed so, it would not be the run it was (each rank takes its share "
                   f"of the batch): continue it with: torchrun --nproc_per_node=2 -m distill train --resume {run}")
    assert not (run / "summary.json").exists()
    launch.write_text(json.dumps({"world_size": 1}))
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0 and (run / "summary.json").is_file()


def test_a_run_from_before_the_record_resumes_as_before(root, tmp_path, monkeypatch, capsys):
    run = tmp_path / "old"
    _interrupt_after_the_first_checkpoint(monkeypatch)
    assert main(["train", "-c", str(_recipe(tmp_path, root, run)), *COMMON]) == EXIT_INTERRUPTED
    launch = run / "launch.json"
    assert json.loads(launch.read_text()) == {"world_size": 1}  # one process, recorded when the run started
    launch.unlink()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0 and (run / "summary.json").is_file()
    assert not (run / "launch.json").exists()  # what it started on is not known: nothing is made up


def test_resuming_a_finished_run_with_more_epochs_names_the_new_run_that_trains_it_on(root, tmp_path, capsys):
    """--resume refuses --set (exact); of a finished run the refusal says how to train it longer, and that works
    (QA I finding 9: nothing said what to do)."""
    run = tmp_path / "done"
    assert main(["train", "-c", str(_recipe(tmp_path, root, run)), *COMMON]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--set", "optim.epochs=3"]) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --resume continues the run exactly as configured"), err
    todo = err.split(f"{run} is finished: to train its student on (more epochs, other settings), start a new run "
                     "from it: ", 1)[1]
    argv = shlex.split(todo.split(" (", 1)[0].replace("NEW_RUN", str(tmp_path / "longer")).replace("=N", "=1"))
    assert argv[0] == "distill"
    assert main(argv[1:] + COMMON) == 0 and (tmp_path / "longer" / "summary.json").is_file()
    started = yaml.safe_load((tmp_path / "longer" / "config.yaml").read_text())
    assert started["source_checkpoint"] == str(run / "checkpoints" / "best")  # it went on from the finished student


TORCHRUN_2_NODES = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}  # 2 nodes x 2 ranks
TWO_NODES = "torchrun --nnodes=2 --nproc_per_node=2 (on each node, with your rendezvous flags) -m distill train"


def test_a_multi_node_run_records_its_nodes_and_a_one_node_run_its_ranks_alone(tmp_path, monkeypatch):
    """launch.json as rank 0 writes it (``_write_record``): ``nnodes`` from torchrun's WORLD_SIZE / LOCAL_WORLD_SIZE
    where over 1; a one-node run's file holds ``world_size`` alone, as the releases before wrote (and read) it."""
    for name, value in TORCHRUN_2_NODES.items():
        monkeypatch.setenv(name, value)
    _write_record([], tmp_path, 4)
    assert json.loads((tmp_path / "launch.json").read_text()) == {"world_size": 4, "nnodes": 2}
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    _write_record([], tmp_path, 4)
    assert json.loads((tmp_path / "launch.json").read_text()) == {"world_size": 4}


def test_a_resume_of_a_multi_node_run_on_other_ranks_names_the_multi_node_command(tmp_path, monkeypatch):
    """QA: the refusal named ``torchrun --nproc_per_node=4``, one node, for a run trained on 2 nodes x 2 ranks."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "launch.json").write_text(json.dumps({"world_size": 4, "nnodes": 2}))
    with pytest.raises(DistillError) as e:
        check_same_launch(run, 1, "train")
    assert str(e.value) == (f"--resume {run}: the run was trained on 4 torchrun ranks on 2 nodes "
                            f"({run / 'launch.json'}) and this resume runs on 1 process; resumed so, it would not be "
                            f"the run it was (each rank takes its share of the batch): continue it with: {TWO_NODES} "
                            f"--resume {run}")
    check_same_launch(run, 4, "train")  # the same number of ranks: resumed
    (run / "launch.json").write_text(json.dumps({"world_size": 4}))  # one node, or a file from before nnodes
    with pytest.raises(DistillError, match=r"4 torchrun ranks \(.*: torchrun --nproc_per_node=4 -m distill train "):
        check_same_launch(run, 2, "train")
    for name, value in TORCHRUN_2_NODES.items():  # the interrupted line of a 2-node run
        monkeypatch.setenv(name, value)
    (run / "config.yaml").write_text("{}")
    assert resume_hint("train", run)() == f"continue it with: {TWO_NODES} --resume {run}"
