"""A command that finished well under torchrun ends the process group it created (the CLI calls
``end_process_group``; the torchrun end to end: tests/train/test_trainer.py::test_ddp_two_processes_match_one, whose
ranks report at exit); a group that was there before the command (an in-process caller's) is left alone."""
from __future__ import annotations

import pytest
import torch.distributed as dist

from distill.cli import main
from distill.utils.launch import end_process_group, process_group_exists


@pytest.fixture
def group(tmp_path):
    """A real one-rank gloo group in this process, ended afterwards if the test left it."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def test_the_group_a_command_created_is_ended(group):
    assert process_group_exists()
    end_process_group(existed=False)
    assert not process_group_exists()


def test_a_group_that_was_there_before_is_left(group, tmp_path, capsys):
    end_process_group(existed=True)
    assert process_group_exists()
    # through the CLI: a command run in-process (tests, the Python API) keeps its caller's group
    assert main(["data", "materialize", "--out", str(tmp_path / "d"), "--quick"]) == 0
    assert process_group_exists()


def test_no_group_no_torch_distributed_needed():
    assert not process_group_exists()
    end_process_group(existed=False)  # nothing to end: returns
    assert not process_group_exists()


def test_ctrl_c_while_the_ranks_end_their_group_is_the_interrupted_line(monkeypatch, tmp_path, capsys):
    """The teardown barrier is part of the command: a Ctrl-C there is the one `interrupted:` line, not a traceback."""
    import distill.cli as cli

    def interrupted(existed: bool) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "end_process_group", interrupted)
    assert main(["data", "materialize", "--out", str(tmp_path / "d"), "--quick"]) == cli.EXIT_INTERRUPTED
    assert "interrupted:" in capsys.readouterr().err
