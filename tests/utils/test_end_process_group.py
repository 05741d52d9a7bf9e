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


def test_ranks_that_cannot_meet_at_the_end_give_one_error_line_and_end_the_group(group, monkeypatch, tmp_path, capsys):
    """A peer that died after its work makes the teardown barrier raise (gloo: "Connection closed by peer"): one
    `error:` line naming it, and this rank's group is ended all the same (no traceback; no gloo threads left up)."""
    import distill.cli as cli
    import distill.utils.runtime as runtime

    def peer_gone(d):
        raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [10.0.0.2]:29500\n"
                           "second line of the backend's message")

    monkeypatch.setattr(runtime, "barrier", peer_gone)
    monkeypatch.setattr(cli, "process_group_exists", lambda: False)  # as under torchrun: the command made the group
    assert main(["data", "materialize", "--out", str(tmp_path / "d"), "--quick"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Connection closed by peer" in lines[0] and "rank 0 finished" in lines[0], err
    assert "Traceback" not in err and "second line" not in err
    assert not process_group_exists()


def test_a_ctrl_c_in_the_teardown_barrier_goes_out_without_destroying_the_group(group, monkeypatch):
    """A Ctrl-C while the ranks meet at the end is the interrupt it was; the group is not destroyed then (NCCL's
    destroy waits for pending work and could block the interrupted rank)."""
    import distill.utils.runtime as runtime

    def interrupted(d):
        raise KeyboardInterrupt

    monkeypatch.setattr(runtime, "barrier", interrupted)
    with pytest.raises(KeyboardInterrupt):
        end_process_group(existed=False)
    assert process_group_exists()
