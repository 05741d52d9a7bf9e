"""``distill teacher eval --threads N`` puts torch's thread count back after it, on success and on error
(:func:`distill.utils.runtime.torch_threads`): ``distill.cli.main`` called in-process, as a notebook or a test does,
leaves the caller's count as it found it.

Before: the command called ``torch.set_num_threads`` and never restored it (``distill teacher bootstrap``, through
:func:`distill.api.bootstrap_teacher`, already did).
"""
from __future__ import annotations

import pytest
import torch

from distill.cli import main
from distill.teacher.bootstrap.presets import DEMO_ARCH
from tests.shapes import make_shapes_root


def _other_count() -> int:
    return 2 if torch.get_num_threads() == 1 else 1


def test_a_finished_eval_puts_the_thread_count_back(tmp_path, capsys):
    root = make_shapes_root(tmp_path / "data", ["red"], per_class=2)
    before = torch.get_num_threads()
    assert main(["teacher", "eval", "--arch", DEMO_ARCH, "--data", str(root), "--split", "all",
                 "--threads", str(_other_count()), "--no-progress", "--device", "cpu"]) == 0
    assert "zero-shot top-1" in capsys.readouterr().out
    assert torch.get_num_threads() == before


def test_a_failed_eval_puts_the_thread_count_back(tmp_path, capsys):
    root = make_shapes_root(tmp_path / "data", ["red"], per_class=1)
    before = torch.get_num_threads()
    # no --arch and no teacher.json to take it from: refused after the threads were set
    assert main(["teacher", "eval", "--data", str(root), "--threads", str(_other_count()), "--no-progress"]) == 1
    assert capsys.readouterr().err.strip() == \
        "error: --arch is required (no teacher.json beside --pretrained to take it from)"
    assert torch.get_num_threads() == before


def test_torch_threads_restores_after_an_exception():
    from distill.utils.runtime import torch_threads  # new with this test: the old tree fails here, not at collection

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="inside"), torch_threads(_other_count()):
        assert torch.get_num_threads() != before
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
