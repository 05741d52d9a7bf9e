"""What the CLI writes where (distill/cli/__init__.py's conventions): a reader that stops early (`| head`) gets no
traceback, and libraries' log warnings (timm's) read `warning: ...` like the project's own."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.shapes import make_shapes_root

REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return {**env, "PYTHONPATH": str(REPO), **extra}


@pytest.mark.parametrize("unbuffered", ["1", ""])  # print() fails at once, or the interpreter's last flush does
def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path, unbuffered: str) -> None:
    """`distill data summary ROOT | head -2`: once head has its lines, the command ends quietly (exit 1, as in the
    Python docs' "Note on SIGPIPE"), not with a BrokenPipeError traceback."""
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
    assert res.returncode == 1


def test_library_log_warnings_read_warning(tmp_path: Path) -> None:
    """timm's one-step cosine schedule (optim.epochs=1, one step an epoch) logs a warning; the command prints it as
    `warning: cosine ...`, not bare as logging's last resort does, nor as `WARNING:timm...` after open_clip's
    module-level `logging.warning()` has set up logging's default handler."""
    code = (
        "import logging, sys, torch\n"
        "from timm.scheduler import CosineLRScheduler\n"
        "import distill.cli.data\n"
        "from distill.cli import main\n"
        "def one_step(args):\n"
        "    logging.warning('No pretrained weights loaded for model %r.', 'x')  # open_clip's; calls basicConfig\n"
        "    CosineLRScheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), t_initial=1)\n"
        "    return 0\n"
        "distill.cli.data._summary = one_step  # the command `data summary` runs, with the trainer's scheduler\n"
        "sys.exit(main(['data', 'summary', 'unused']))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO,
                         env=_env())
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stderr.splitlines() == ["warning: no pretrained weights loaded for model 'x'.",
                                       "warning: cosine annealing scheduler will have no effect on the learning rate "
                                       "since t_initial = t_mul = eta_mul = 1."]


def test_lower_first_keeps_acronyms() -> None:
    from distill.cli._log import lower_first

    assert lower_first("Cosine annealing") == "cosine annealing"
    assert lower_first("ONNX opset 17") == "ONNX opset 17" and lower_first("A") == "a" and lower_first("") == ""


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
