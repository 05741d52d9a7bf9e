"""Shared pytest fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# One intra-op thread per process: the suite runs on 2 cores, often beside other processes
# (DataLoader workers, torchrun ranks, subprocess trainings); oversubscribed OpenMP threads
# made small steps ~30x slower there. Subprocesses inherit the variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub: fail fast instead of retrying


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test starts with one torch thread (a test that changes it cannot leak the change)."""
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def builtin_quick_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROOT of the quick built-in digits suite (seed 0), materialized once per test session.

    4 domains (mnist, optdigits, mnist_m, mnist_c) x 10 classes x 8 images, 32x32 RGB PNG,
    laid out as ROOT/DOMAIN/CLASS/*.png with ROOT/classnames.yaml (zero..nine), suite.json and
    index.csv. Shared by many tests: treat it as read-only.
    """
    from distill.data.builtin import materialize

    return materialize(tmp_path_factory.mktemp("builtin_quick"), quick=True, seed=0)


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(OUT, what it printed) of one `distill demo --quick --adversarial --out OUT --no-progress`, once per session.

    OUT holds the quick digits suite (OUT/data/digits-quick-seed0), the bootstrapped teacher
    (OUT/teacher), its policy cache with pixels and adversarial views (OUT/cache), trained runs
    (OUT/runs/erm, fm, fm_unlabeled, openvocab, sfda, adv_cached), exports, bench records and the
    report. Shared: treat it as read-only.
    """
    import contextlib
    import io

    from distill.cli import main as cli

    out = tmp_path_factory.mktemp("quick_demo") / "demo_out"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli(["demo", "--quick", "--adversarial", "--out", str(out), "--no-progress"])  # + adv views for adv_cached.yaml
    assert rc == 0, buf.getvalue()[-4000:]
    return out, buf.getvalue()
