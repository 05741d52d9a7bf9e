"""Ctrl-C while worker processes start: held off in this process (:func:`interrupt_held`), blocked in the workers
(:func:`workers_deaf_to_ctrl_c`). No torch here: the CLI marks its process as one command (:func:`one_command`)
before it loads any.

The fork server (the ``forkserver`` start method's, one per process) is started with SIGINT blocked only inside
:func:`one_command`, the CLI's, whose process ends with the command. Started so from the Python API, every
process the user's own code later starts with the forkserver context (a ``Pool``, a ``ProcessPoolExecutor``)
would begin with SIGINT blocked and ignore the user's Ctrl-C, for the rest of the user's process. From the API the
server is started (when not running yet) before the block, hearing SIGINT: its workers then hear a Ctrl-C in
their first instants, as they did before the block existed.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_ONE_COMMAND = False  # inside one_command(): the fork server may start deaf to Ctrl-C


@contextmanager
def one_command() -> Iterator[None]:
    """Inside: this process runs one distill command (the CLI) and ends with it, so a fork server started for its
    DataLoaders may start with SIGINT blocked (it, and whatever it forks, would keep it)."""
    global _ONE_COMMAND
    before, _ONE_COMMAND = _ONE_COMMAND, True
    try:
        yield
    finally:
        _ONE_COMMAND = before


@contextmanager
def interrupt_held() -> Iterator[None]:
    """Inside: a first SIGINT is noted and raised as KeyboardInterrupt on leaving; a second raises at once. Only
    where Python's own handler is in place, in the main thread (elsewhere: nothing changes)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    noted: list[int] = []

    def note(signum: int, frame: object) -> None:
        if noted:
            raise KeyboardInterrupt
        noted.append(signum)

    signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if noted:
        raise KeyboardInterrupt


@contextmanager
def workers_deaf_to_ctrl_c(start_method: str) -> Iterator[None]:
    """Inside: SIGINT is blocked in this thread, so that the processes started here (``fork``: forked; ``spawn``:
    forked then exec'd) begin with it blocked, and keep it (no library unblocks it). A Ctrl-C that comes meanwhile
    is not lost: the kernel hands it to another thread, whose Python handler then runs in this one at its next
    bytecode, or it waits until the block ends (a blocking system call here is then not interrupted).
    ``forkserver``: the server forks the workers, and they inherit its mask. When it is not running yet it is
    started here: inside the block under :func:`one_command` (the CLI: then every process it later forks starts with
    SIGINT blocked), else before it, hearing SIGINT, so that a Python API user's own forkserver processes are not
    left deaf to Ctrl-C. A server that hears SIGINT forks workers that hear a Ctrl-C in their first instants. Where
    there is no signal mask (Windows): nothing changes."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    if start_method != "fork":
        # multiprocessing starts its resource tracker with the first spawned (or fork server's) process, and
        # unblocks SIGINT (SIG_UNBLOCK, not a restore) on its way out: start it before the block
        from multiprocessing import resource_tracker  # lazy: only spawn and forkserver need it
        resource_tracker.ensure_running()
    if start_method == "forkserver" and not _ONE_COMMAND:
        from multiprocessing import forkserver  # lazy: only the forkserver start method needs it
        forkserver.ensure_running()  # hearing SIGINT: the user's own forkserver processes will too
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        if start_method == "forkserver":
            from multiprocessing import forkserver  # lazy: only the forkserver start method needs it
            forkserver.ensure_running()  # under one_command(): deaf, and so are the workers it forks
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)  # a Ctrl-C that waited is handled here
