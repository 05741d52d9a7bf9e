"""benchmarks/gpu_check.sh and its helpers: valid bash, every file it calls exists, step times read right.

The whole script runs in a dry mode on CPU (``GPU_CHECK_DRY=1``), but that takes minutes on
2 cores, so the suite checks what can break silently instead: syntax, the helper files it
names, and the TensorBoard step reader it prints training figures with.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from torch.utils.tensorboard import SummaryWriter

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = [REPO / "benchmarks" / "gpu_check.sh", REPO / "scripts" / "gpu_wheels.sh"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    res = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_every_helper_it_calls_exists():
    text = (REPO / "benchmarks" / "gpu_check.sh").read_text()
    called = set(re.findall(r"\b((?:benchmarks|scripts)/[\w./-]+\.(?:py|sh))\b", text))
    assert {"benchmarks/photos.py", "benchmarks/input_pipeline.py", "benchmarks/train_steps.py",
            "benchmarks/student_ceiling.py", "benchmarks/cache_throughput.py"} <= called
    missing = sorted(c for c in called if not (REPO / c).is_file())
    assert not missing, missing


def test_train_steps_reads_rates_when_logging_every_n_steps(tmp_path):
    w = SummaryWriter(str(tmp_path / "tb"))
    t = 1000.0
    for step in range(2, 41, 2):  # logged every 2 steps, 0.1 s per step, one 3 s epoch gap
        t += 0.2 + (3.0 if step == 22 else 0.0)
        w.add_scalar("train/loss", 1.0, step, walltime=t)
    w.close()
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "train_steps.py"), str(tmp_path), "64", "x"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    # median 0.1 s/step -> 640 img/s; 38 steps in 3.8 + 3 s -> 64 * 38 / 6.8 = 358 img/s
    assert "median step 100.0 ms -> 640 img/s; with epoch boundaries 358 img/s" in res.stdout, res.stdout
