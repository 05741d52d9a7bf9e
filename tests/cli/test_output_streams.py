"""What the CLI writes where (distill/cli/__init__.py's conventions): a reader that stops early (`| head`) gets no
traceback, and libraries' log warnings (timm's) read `warning: ...` like the project's own."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.shapes import make_shapes_root

REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return {**env, "PYTHONPATH": str(REPO), **extra}


@pytest.mark.parametrize("unbuffered", ["1", ""])  # print() fails at once, or the interpreter's last flush does
def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path, unbuffered: str) -> None:
    """`distill data summary ROOT | head -2`: once head has its lines, the command ends quietly (as in the Python
    docs' "Note on SIGPIPE"), not with a BrokenPipeError traceback, and with exit status 141 (128 + SIGPIPE, what
    the shell reports for `yes | head -1`), not 1, the status of a failed run."""
    root = make_shapes_root(tmp_path / "d", ["red"], per_class=1)
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written
    try:
        res = subprocess.run([sys.executable, "-m", "distill", "data", "summary", str(root)], stdout=write,
                             stderr=subprocess.PIPE, text=True, timeout=120, cwd=REPO,
                             env=_env(PYTHONUNBUFFERED=unbuffered))
    finally:
        os.close(write)
    assert "Traceback" not in res.stderr and "BrokenPipeError" not in res.stderr, res.stderr
    assert res.returncode == 141


def test_a_closed_pipe_reads_like_any_program_sigpipe_ended(tmp_path: Path) -> None:
    """In a shell pipeline with pipefail, a distill command whose reader has gone fails with the status `yes | head -1`
    fails with (141), not with 1, which a script would take for an error in the run. The reader is `true`, gone
    before distill (seconds to start) writes: `head -1` may read all of a short output before it exits."""
    root = make_shapes_root(tmp_path / "d", ["red"], per_class=1)
    script = (f"set -o pipefail; yes | true; echo yes=$?; "
              f"{shlex.quote(sys.executable)} -m distill data summary {shlex.quote(str(root))} | true; echo distill=$?")
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO, env=_env())
    assert res.stdout.split() == ["yes=141", "distill=141"], res.stderr


_HOST = """
import os, stat, subprocess, sys
import distill.cli.data
from distill.cli import main
def other_pipe(args):  # writes to a child that has exited: its stdin's pipe is broken, stdout is not
    print("working...")
    child = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.PIPE)
    child.wait()
    try:
        child.stdin.write(b"x" * 1_000_000)
        child.stdin.flush()
    finally:
        child.stdin = None  # no second BrokenPipeError when the child object is collected
    return 0
def stdout_pipe(args):
    print("a line\\n" * 10_000)
    return 0
distill.cli.data._summary = other_pipe if sys.argv[1] == "other" else stdout_pipe
try:
    rc = main(["data", "summary", "unused"])
except BrokenPipeError:
    rc = "raised"
print("main:", rc, "stdout is a pipe:", stat.S_ISFIFO(os.fstat(1).st_mode), file=sys.stderr)
if sys.argv[1] == "other":
    print("host output after main()")
else:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the host's own choice: no "Exception ignored" at its exit
"""


def test_another_pipes_broken_pipe_is_an_error_and_stdout_stays(tmp_path: Path) -> None:
    """Review 25 M2: any BrokenPipeError was taken for stdout's reader being gone: a command that wrote to a child
    process that had exited ended with exit 1 and nothing said, and fd 1 was pointed at /dev/null for good, so a
    program that called main() lost its later output. It propagates now, and stdout is left as it is."""
    res = subprocess.run([sys.executable, "-c", _HOST, "other"], capture_output=True, text=True, timeout=120,
                         cwd=REPO, env=_env())
    assert res.returncode == 0, res.stderr[-2000:]
    assert "main: raised stdout is a pipe: True" in res.stderr.splitlines(), res.stderr
    assert res.stdout == "working...\nhost output after main()\n"


def test_in_process_a_broken_stdout_returns_141_and_leaves_fd_1(tmp_path: Path) -> None:
    """main([...]) in another program whose stdout reader is gone: exit status 141, quietly; fd 1 stays the host's
    (only the entry point, main() without argv, points it at /dev/null)."""
    read, write = os.pipe()
    os.close(read)
    try:
        res = subprocess.run([sys.executable, "-c", _HOST, "stdout"], stdout=write, stderr=subprocess.PIPE,
                             text=True, timeout=120, cwd=REPO, env=_env())
    finally:
        os.close(write)
    assert res.stderr.splitlines() == ["main: 141 stdout is a pipe: True"], res.stderr
    assert res.returncode == 0


def test_library_log_warnings_read_warning(tmp_path: Path) -> None:
    """timm's one-step cosine schedule (optim.epochs=1, one step an epoch) logs a warning; the command prints it as
    `warning: cosine ...`, not bare as logging's last resort does, nor as `WARNING:timm...` after open_clip's
    module-level `logging.warning()` has set up logging's default handler."""
    res = _summary_running(  # the command `data summary` runs, with the trainer's scheduler
        "import logging, torch\n"
        "from timm.scheduler import CosineLRScheduler\n"
        "def body(args):\n"
        "    logging.warning('No pretrained weights loaded for model %r.', 'x')  # open_clip's; calls basicConfig\n"
        "    CosineLRScheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), t_initial=1)\n"
        "    return 0\n")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stderr.splitlines() == ["warning: no pretrained weights loaded for model 'x'.",
                                       "warning: cosine annealing scheduler will have no effect on the learning rate "
                                       "since t_initial = t_mul = eta_mul = 1."]


def test_a_log_line_a_library_prints_itself_is_not_printed_twice() -> None:
    """A library that gives its logger a stderr handler of its own prints its lines itself: each came out again as
    ``warning: ...`` (huggingface_hub's retries did, 22 lines twice, before its handler was taken off while a command
    runs; review 2). A library logger with only a NullHandler (prints nothing) still gets its line."""
    res = _summary_running(
        "import logging, sys\n"
        "def body(args):\n"
        "    own = logging.getLogger('loudlib')\n"
        "    own.addHandler(logging.StreamHandler(sys.stderr))\n"
        "    logging.getLogger('loudlib.http').warning('Retrying in 1s [Retry 1/5].')\n"
        "    logging.getLogger('quietlib').addHandler(logging.NullHandler())\n"
        "    logging.getLogger('quietlib').warning('Slow path')\n"
        "    return 0\n")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stderr.splitlines() == ["Retrying in 1s [Retry 1/5].", "warning: slow path"], res.stderr


def _summary_running(body: str, **env: str) -> subprocess.CompletedProcess:
    """``distill data summary`` in a fresh process whose command body is ``body``'s function ``body(args)`` (its
    environment's ``env`` set)."""
    code = ("import sys\nimport distill.cli.data\nfrom distill.cli import main\n" + body +
            "distill.cli.data._summary = body\nsys.exit(main(['data', 'summary', 'unused']))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=_env(**env))


def test_warnings_warn_reads_warning_on_one_line(tmp_path: Path) -> None:
    """distill's own warnings.warn (a view-policy cache built with another kornia) printed Python's two-line
    `.../trainer.py:196: UserWarning: ...` + source line; it reads `warning: ...` now. A library's shown warning
    (torch's, more DataLoader workers than cores) is one `warning:` line naming its category and place, once though
    torch warns of it twice (at the loader, at its iterator)."""
    res = _summary_running(
        "import types, torch\n"
        "from distill.data.view_policy import PolicyRender\n"
        "def body(args):\n"
        "    old = types.SimpleNamespace(views=types.SimpleNamespace(policy={'kornia_version': '0.0.1'}),\n"
        "                                preprocess=types.SimpleNamespace(size=(32, 32), interpolation='bicubic'))\n"
        "    PolicyRender.for_manifest(old)\n"
        "    loader = torch.utils.data.DataLoader(range(2), num_workers=64)\n"
        "    iter(loader)._shutdown_workers()\n"
        "    return 0\n")
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stderr.splitlines()
    assert lines[0] == ("warning: this view-policy cache was built with kornia 0.0.1, this is kornia "
                        f"{version('kornia')}: views decoded here may differ from the teacher's by rounding (a pixel "
                        "store replays exactly)"), res.stderr
    assert len(lines) == 2 and lines[1].startswith("warning: this DataLoader will create 64 worker processes"), \
        res.stderr
    assert re.search(r" \[UserWarning, torch/utils/data/dataloader\.py:\d+\]$", lines[1]), lines[1]


def test_lower_first_keeps_acronyms() -> None:
    from distill.cli._log import lower_first

    assert lower_first("Cosine annealing") == "cosine annealing"
    assert lower_first("ONNX opset 17") == "ONNX opset 17" and lower_first("A") == "a" and lower_first("") == ""
    # review 3 L4 (session 26): names with capitals inside were rewritten ("pyTorch", "typedStorage")
    assert lower_first("PyTorch 2.13 is here") == "PyTorch 2.13 is here"
    assert lower_first("TypedStorage is deprecated") == "TypedStorage is deprecated"
    assert lower_first("X must be 4-D") == "X must be 4-D"


def test_a_caller_recording_warnings_still_records_them(capsys: pytest.CaptureFixture[str]) -> None:
    """Review 3 M1: inside catch_warnings(record=True) (pytest.warns) the CLI's printer took the warning, so the
    caller recorded nothing."""
    import warnings

    from distill.cli._log import warning_lines

    with pytest.warns(UserWarning, match="recorded"):  # a caller (a test) recording what distill.cli.main warns
        with warning_lines():
            warnings.warn("recorded", UserWarning, stacklevel=1)
    assert capsys.readouterr().err == ""


def test_library_log_errors_read_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A library's logging.error() under the CLI's handler is an ``error:`` line, a warning a ``warning:`` line."""
    import logging

    from distill.cli._log import warning_lines

    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = []  # as in a fresh `distill` process: no handler configured
    try:
        with warning_lines():
            logging.getLogger("somelib").error("Engine build failed")
            logging.getLogger("somelib").warning("Slow path")
    finally:
        root.handlers = saved
    assert capsys.readouterr().err.splitlines() == ["error: engine build failed", "warning: slow path"]


def test_huggingface_hub_log_lines_read_warning_once_with_what_the_wait_is() -> None:
    """A new user's offline `distill cache build --pretrained laion2b_s34b_b79k` waited ~50 s while huggingface_hub
    retried, its handler printing each line bare (and the root's handler again as `warning: ...`), and nothing said
    what the wait was. huggingface_hub's own retry loop here (no network: a refused local port, 10 ms waits)."""
    res = _summary_running(
        "def body(args):\n"
        "    from huggingface_hub.utils import http_backoff\n"
        "    try:\n"
        "        http_backoff('HEAD', 'http://127.0.0.1:9/x', max_retries=2, base_wait_time=0.01, timeout=2)\n"
        "    except Exception as e:\n"
        "        print(type(e).__name__)\n"
        "    return 0\n", HF_HUB_OFFLINE="0")  # conftest's 1 would stop it before the request
    assert res.returncode == 0 and res.stdout == "ConnectError\n", res.stderr[-2000:]
    lines = res.stderr.splitlines()
    failed = lines[0]  # the refusal's text is the platform's ('[Errno 111] Connection refused' on Linux)
    assert re.fullmatch(r"warning: '.+' thrown while requesting HEAD http://127\.0\.0\.1:9/x", failed), failed
    assert lines == [
        failed,
        "warning: the Hugging Face hub cannot be reached; huggingface_hub retries each file before it gives up (set "
        "HF_HUB_OFFLINE=1 to fail at once offline)",
        "warning: retrying in 0.01s [Retry 1/2].", failed, "warning: retrying in 0.02s [Retry 2/2].", failed]


def test_the_hub_handler_is_lent_only_while_a_command_runs_and_only_when_logging_is_ours() -> None:
    """The hub's own handler is back after the command; a program that configured logging (root handler) or asked
    the hub for more (HF_HUB_VERBOSITY=info) keeps the hub's lines as they were."""
    import logging

    import huggingface_hub.utils.logging  # noqa: F401  (adds the hub's handler)

    from distill.cli._log import warning_lines

    root, hub = logging.getLogger(), logging.getLogger("huggingface_hub")
    saved, hub_level, own = root.handlers[:], hub.level, hub.handlers[:]
    assert any(type(h) is logging.StreamHandler for h in own)
    try:
        root.handlers = []  # as in a fresh `distill` process: no handler configured
        with warning_lines():
            assert not any(type(h) is logging.StreamHandler for h in hub.handlers)
        assert hub.handlers == own
        hub.setLevel(logging.INFO)  # HF_HUB_VERBOSITY=info
        with warning_lines():
            assert hub.handlers == own
        hub.setLevel(hub_level)
        root.handlers = [logging.NullHandler()]  # the program's own logging setup
        with warning_lines():
            assert hub.handlers == own
    finally:
        root.handlers, hub.handlers = saved, own
        hub.setLevel(hub_level)
