"""distill.utils.loaders: the same batches in the same order, through a fresh set of workers every N images."""
from __future__ import annotations

import os
import signal

import pytest
import torch
from torch.utils.data import Dataset

from distill.utils.loaders import bounded_worker_batches, interrupt_held


class _WhoDecodes(Dataset):
    """Item i -> (i, the pid of the process that produced it)."""

    def __len__(self) -> int:
        return 23

    def __getitem__(self, i: int):
        return torch.tensor(i), torch.tensor(os.getpid())


def _batches(n: int, size: int):
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


@pytest.mark.parametrize("images_per_loader,loaders", [(8, 3), (9, 3), (4, 6), (1000, 1)])
def test_workers_are_replaced_every_so_many_images_and_the_batches_do_not_change(images_per_loader, loaders):
    """23 images in batches of 4 (6 batches): a loader serves images_per_loader // 4 batches (at least one),
    each from its own worker process; the batches and their order are one DataLoader's."""
    out = list(bounded_worker_batches(_WhoDecodes(), _batches(23, 4), 4, workers=1,
                                      images_per_loader=images_per_loader))
    assert [b[0].tolist() for b in out] == _batches(23, 4)
    pids = [int(p) for _, pid in out for p in pid.unique()]
    assert len(set(pids)) == loaders and os.getpid() not in pids


def test_no_workers_decode_in_this_process():
    out = list(bounded_worker_batches(_WhoDecodes(), _batches(23, 4), 4, workers=0, images_per_loader=4))
    assert [b[0].tolist() for b in out] == _batches(23, 4)
    assert {int(p) for _, pid in out for p in pid} == {os.getpid()}


def test_interrupt_held_raises_a_first_ctrl_c_on_leaving_and_a_second_at_once():
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with interrupt_held():
            os.kill(os.getpid(), signal.SIGINT)
            reached.append("after the first")  # held: the body goes on
    assert reached == ["after the first"] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        with interrupt_held():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # a start that hangs can still be stopped
            reached.append("after the second")
    assert reached == ["after the first"] and signal.getsignal(signal.SIGINT) is signal.default_int_handler


_DEAF_CHILDREN = """
import multiprocessing, signal, sys
from distill.utils.ctrl_c import one_command, workers_deaf_to_ctrl_c
for method in ("spawn", "forkserver", "fork"):
    with one_command(), workers_deaf_to_ctrl_c(method):  # the CLI's: its fork server may start deaf
        child = multiprocessing.get_context(method).Process(target=signal.raise_signal, args=(signal.SIGINT,))
        child.start()
    child.join()
    print(method, child.exitcode, sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])))
"""


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no signal mask here (Windows)")
def test_processes_started_deaf_to_ctrl_c_ignore_it_whatever_the_start_method():
    """A child started inside workers_deaf_to_ctrl_c sends itself SIGINT and exits 0 (blocked: never delivered);
    heard, it would die of KeyboardInterrupt (exit 1). In a fresh interpreter: multiprocessing's resource tracker,
    started with the first spawn, unblocks SIGINT in the parent on its way out, and would have left the spawned
    child hearing it. The parent's mask is put back after each start."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-c", _DEAF_CHILDREN], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(repo)})
    assert res.stdout.split("\n") == ["spawn 0 []", "forkserver 0 []", "fork 0 []", ""], res.stdout + res.stderr


def _run(script: str, *args: str):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"})


_USERS_OWN_PROCESS = """
import multiprocessing, signal
from distill.utils.loaders import WorkerLoader
for _ in WorkerLoader(list(range(4)), batch_size=2, num_workers=1, multiprocessing_context="forkserver"):
    pass
child = multiprocessing.get_context("forkserver").Process(target=signal.raise_signal, args=(signal.SIGINT,))
child.start()
child.join()
print(child.exitcode)
"""


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no signal mask here (Windows)")
def test_a_fork_server_started_for_a_loader_leaves_the_users_own_processes_hearing_ctrl_c():
    """Review 1 (2): the fork server (one per process) was started with SIGINT blocked by the first forkserver
    DataLoader, and every process the user's own code later started with the forkserver context began deaf to
    Ctrl-C. Outside the CLI the server now starts hearing it: the user's child that sends itself SIGINT dies of
    KeyboardInterrupt (exit 1; deaf, it exited 0)."""
    res = _run(_USERS_OWN_PROCESS)
    assert res.stdout.strip() == "1", res.stdout + res.stderr


_CAUGHT_AS_A_SPAWN_WORKER_STARTS = """
import multiprocessing.process as mp, os, signal
from distill.utils.loaders import WorkerLoader
start, started = mp.BaseProcess.start, []

def start_then_ctrl_c(self):
    start(self)
    started.append(self)
    if len(started) == 2:
        mp.BaseProcess.start = start
        os.kill(os.getpid(), signal.SIGINT)  # all 4 start (held), still importing at exit

if __name__ == "__main__":
    mp.BaseProcess.start = start_then_ctrl_c
    kept = WorkerLoader(list(range(8)), batch_size=2, num_workers=4, multiprocessing_context="spawn",
                        persistent_workers=True)  # a loader the user's objects keep to the end
    try:
        for _ in kept:
            pass
    except KeyboardInterrupt:
        print("caught", flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no signal mask here (Windows)")
def test_a_python_api_user_who_catches_ctrl_c_exits_without_a_worker_traceback():
    """Review 1 (1): only the CLI stopped the workers of an interrupted pass. A Python API user who caught the
    KeyboardInterrupt got, at exit, multiprocessing's termination of a spawn worker still importing reported by
    torch: "Exception ignored in atexit callback ... RuntimeError: DataLoader worker (pid ...) is killed by signal:
    Terminated". Now the exit is quiet."""
    res = _run(_CAUGHT_AS_A_SPAWN_WORKER_STARTS)
    assert res.stdout.strip() == "caught" and res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and "DataLoader worker" not in res.stderr, res.stderr


_START_METHOD_LEFT_OPEN = """
import multiprocessing
from distill.utils.loaders import WorkerLoader
next(iter(WorkerLoader(list(range(4)), batch_size=2, num_workers=0)))
multiprocessing.set_start_method("spawn")
print(multiprocessing.get_start_method())
"""


def test_a_loader_without_workers_leaves_the_start_method_to_the_user():
    """Review 1 (4): iterating any WorkerLoader, even with no workers, fixed the process's default start method
    (multiprocessing.get_context()), and a user's later set_start_method("spawn") raised "context has already been
    set"."""
    res = _run(_START_METHOD_LEFT_OPEN)
    assert res.returncode == 0 and res.stdout.strip() == "spawn", res.stdout + res.stderr


def test_a_torch_without_its_private_worker_watch_still_imports_the_loaders():
    """The exit hook uses torch's private ``_remove_worker_pids``; a torch without it must not break every command
    at import (review 3): the fault injected by deleting the name before the import."""
    code = ("import torch.utils.data._utils.signal_handling as m; del m._remove_worker_pids; "
            "import distill.utils.loaders as L; assert L._remove_worker_pids is None; L._unwatch_workers(); "
            "print('imported')")
    done = _run(code)
    assert done.returncode == 0 and done.stdout.strip() == "imported", done.stderr
