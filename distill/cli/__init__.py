"""The ``distill`` command line: argument parsing only.

Each stage adds its subcommands from its own module in this package (``distill/cli/*.py``,
each exposing ``register(subparsers)``); the handler it sets as ``func`` receives the parsed
namespace, builds typed configs and calls stage functions. Adding a command means adding a
module here, not editing a central list.

Conventions shared by every command (as in pip, git and argparse itself):

- exit status 0 on success; 2 for bad usage (an unknown flag, a missing argument: argparse's
  own code); 1 for an error in the user's input or the run (a :class:`~distill.errors.DistillError`,
  printed as one ``error:`` line); 130 (128 + SIGINT) when interrupted, with one line saying how to go on (see
  :func:`interrupt_hint`; under torchrun rank 0's alone, and torchrun itself then exits 1 with its own traceback);
  141 (128 + SIGPIPE) when stdout's reader went away.
- results on stdout (a run's per-epoch metric lines included); warnings, errors and progress
  bars on stderr. Warnings read ``warning: ...``, libraries' log warnings and ``warnings.warn`` included
  (:mod:`distill.cli._log`).
- ``--no-progress`` (alias ``--quiet``) on every command turns progress bars off.
- a reader of stdout that stops early (``distill data summary ROOT | head -2``) ends the command quietly, no
  traceback (:func:`main`, as in the Python docs' "Note on SIGPIPE"), with exit status 141: what the shell reports
  for a program the closed pipe's SIGPIPE ended (``yes | head -1``), so ``set -o pipefail`` scripts and callers
  tell it apart from a failed run (1) as they do for ``git log | head``; another pipe's BrokenPipeError is not
  taken for it.
- building the parser imports no torch: each command imports its stage lazily, so ``distill
  --help`` and a mistyped flag answer at once.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import select
import sys
from collections.abc import Iterator

from distill import __version__
from distill.cli._log import warning_lines
from distill.errors import DistillError
from distill.utils.ctrl_c import one_command
from distill.utils.launch import end_process_group, main_rank, process_group_exists

#: exit status of a DistillError (bad input or a failed run); argparse exits 2 on bad usage
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a program Ctrl-C ended
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: stdout's reader went away (`| head`), as `yes | head -1` reports


#: what an interrupted command says unless it brings its own ``interrupt_hint``: right for the commands whose
#: rerun picks up where they stopped (cache build, teacher bootstrap, data materialize)
RESUME_HINT = "rerun the same command to resume"


def interrupt_hint(args: argparse.Namespace) -> str:
    """The line after ``interrupted:``. A command supplies its own as ``interrupt_hint``, in its parser's defaults
    (``set_defaults(interrupt_hint=...)``) or on ``args`` once it knows more (its run folder): a string, or a
    callable asked at the interrupt (so it can say what is on disk by then)."""
    hint = getattr(args, "interrupt_hint", None) or RESUME_HINT
    return hint() if callable(hint) else hint


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    """``--no-progress`` / ``--quiet``: the one spelling every command takes (progress bars off)."""
    if any("--no-progress" in a.option_strings for a in parser._actions):
        return
    parser.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true",
                        help="no progress bars (warnings and results are still printed)")


def _leaf_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser under ``parser`` that runs a command (has no subcommands of its own)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
    for action in subs:
        for child in dict.fromkeys(action.choices.values()):
            yield from _leaf_parsers(child)


def _command_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``argv`` names (``cache build``), ``parser`` itself for none."""
    for token in argv:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or token not in subs[0].choices:
            break
        parser = subs[0].choices[token]
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill",
        description="Distil open_clip teachers into small timm students: cache the teacher "
        "once, train students with KD / feature / adversarial / SFDA strategies, export to "
        "ONNX and TensorRT, benchmark latency.",
    )
    parser.add_argument("--version", action="version", version=f"distill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"distill.cli.{info.name}")
        module.register(sub)
    for leaf in _leaf_parsers(parser):
        if leaf is not parser:
            add_progress_flag(leaf)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` (default: ``sys.argv[1:]``); returns its exit status.

    A reader of stdout that stops early (``| head``) ends the command quietly with exit status 141
    (:data:`EXIT_BROKEN_PIPE`), in-process too. Only stdout's own
    broken pipe does (:func:`_stdout_gone`): a BrokenPipeError of another pipe (a child process's stdin) is an error
    like any other and propagates. Without ``argv`` main is the process's entry point (the console script,
    ``python -m distill``), and then points fd 1 at /dev/null, so the interpreter's last flush at exit prints no
    "Exception ignored ... BrokenPipeError"; an in-process caller's (``main([...])``) stdout is left as it is.
    """
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # a closed pipe fails here, not in the interpreter's last flush (after main returns)
    except BrokenPipeError:
        if not _stdout_gone():
            raise
        if argv is None:
            try:
                fd = sys.stdout.fileno()
            except (OSError, ValueError):  # stdout is no file (redirected in-process): nothing to flush at exit
                return EXIT_BROKEN_PIPE
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
        return EXIT_BROKEN_PIPE


def _stdout_gone() -> bool:
    """Whether stdout's reader is gone: flushing what is still buffered fails with EPIPE, or (an unbuffered stdout
    drops what it could not write, so its flush has nothing to fail on) fd 1 polls as an error, as the write end of
    a pipe whose read end is closed does."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):  # closed, or no file: not a broken pipe
        return False
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):  # redirected in-process (a StringIO): it has no reader to lose
        return False
    if not hasattr(select, "poll"):
        return False
    poll = select.poll()
    poll.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))


def _stop_workers() -> None:
    """An interrupted command's DataLoader workers stop before it exits (:func:`distill.utils.loaders.stop_workers`);
    a command that imported no loader started none (and this imports no torch)."""
    loaders = sys.modules.get("distill.utils.loaders")
    if loaders is not None:
        loaders.stop_workers()


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # the command's own usage, not the top-level one (`distill report --runs`)
        _command_parser(parser, sys.argv[1:] if argv is None else argv).error(
            f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        # `distill` or `distill cache` alone: show the relevant help.
        (getattr(args, "_parser", None) or parser).print_help()
        return 0
    quiet = getattr(args, "no_progress", False)
    before = os.environ.get("TQDM_DISABLE")
    if quiet:
        # tqdm reads TQDM_DISABLE: bars a command does not pass its flag to (teacher loading,
        # export, eval) stay off too, in this process and in the workers it starts
        os.environ["TQDM_DISABLE"] = "1"
    existed = process_group_exists()  # an in-process caller's group (tests, the Python API) is not the command's
    try:
        with warning_lines(), one_command():  # libraries' log warnings (timm's) as `warning: ...` lines
            rc = args.func(args)
            if not rc:  # finished well: the ranks end the process group together (only then: see end_process_group)
                end_process_group(existed)
    except DistillError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        _stop_workers()
        if main_rank():  # under torchrun every rank is interrupted: one line, not one per rank
            print(f"interrupted: {interrupt_hint(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if quiet:  # main() is also called in-process (tests, the Python API): leave the environment as found
            if before is None:
                os.environ.pop("TQDM_DISABLE", None)
            else:
                os.environ["TQDM_DISABLE"] = before
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
