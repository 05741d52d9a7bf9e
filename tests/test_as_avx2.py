"""scripts/as_avx2.sh runs a command as on an x86 CPU with AVX2 and no AVX-512/VNNI/AMX, natively (CPUID faulting,
scripts/cpuid_mask.c): the libraries pick their AVX2 kernels, and the program's own SIGSEGV handling still works.
Skips with the reason where the machine cannot (no cpuid_fault flag, no gcc, not x86-64)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.cpu_kinds import AS_AVX2, OTHER_CPUS

REASON = OTHER_CPUS["as-avx2"][1]
pytestmark = pytest.mark.skipif(REASON is not None, reason=str(REASON))

# onnxruntime's u8 x s8 kernel (benchmarks/int8_cpu_kinds.probe_sum): exact int32 sums with VNNI; pairs saturate
# int16 on AVX2 (VPMADDUBSW)
_PROBE = f"""
import sys, torch
sys.path.insert(0, {str(AS_AVX2.parents[1] / "benchmarks")!r})
from int8_cpu_kinds import probe_sum
print(torch.backends.cpu.get_cpu_capability(), probe_sum())
"""


def _masked(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(AS_AVX2), sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout)


def test_torch_and_onnxruntime_pick_their_avx2_kernels_with_a_sigsegv_handler_installed() -> None:
    # -X faulthandler installs Python's own SIGSEGV handler before onnxruntime and torch read CPUID (as pytest and
    # PyTorch's DataLoader workers do): CPUID must still be answered, masked, not crash the process
    done = _masked("-X", "faulthandler", "-c", _PROBE)
    assert done.returncode == 0, done.stderr[-2000:]
    capability, total = done.stdout.split()
    assert capability == "AVX2"
    assert int(total) != 64 * 255 * 127  # exact would be 2,072,640: the AVX2 kernel's saturated pairs


def test_a_real_segfault_still_reaches_the_programs_handler_and_kills_the_process() -> None:
    done = _masked("-X", "faulthandler", "-c", "import ctypes; ctypes.string_at(0)", timeout=60)
    assert done.returncode == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in done.stderr  # faulthandler ran


def test_a_sent_sigsegv_still_kills_the_process() -> None:
    done = _masked("-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV); print('survived')", timeout=60)
    assert done.returncode == -signal.SIGSEGV and "survived" not in done.stdout


def test_distills_records_list_the_flags_the_process_sees_and_name_the_hidden_ones() -> None:
    # /proc/cpuinfo is not masked: cpu_info() must not claim VNNI/AVX-512 for timings taken on the AVX2 kernels
    done = _masked("-c", "import json; from distill.bench.edge_runner import cpu_info; print(json.dumps(cpu_info()))")
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    cpu = json.loads(done.stdout)
    assert "avx2" in cpu["flags"]
    assert not [f for f in cpu["flags"] if f.startswith(("avx512", "amx")) or f == "avx_vnni"], cpu["flags"]
    assert all(f.startswith(("avx512", "amx")) or f == "avx_vnni" for f in cpu.get("hidden_flags", []))


# each test of the probe suite: which process ran it, and the kernels torch picked there
_WORKER_PROBE = """
import os, pytest, torch
@pytest.mark.parametrize("i", range(4))
def test_probe(i):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "controller")
    with open(os.path.join(os.environ["PROBE_OUT"], worker), "w") as f:
        f.write(f"{os.getpid()} {torch.backends.cpu.get_cpu_capability()}")
"""


def test_xdist_workers_run_masked_too(tmp_path) -> None:
    """.ci/run's AVX2 pass runs `scripts/as_avx2.sh python -m pytest -n 2`: the tests run in xdist's worker processes,
    not in the process as_avx2.sh started. They are masked too (they inherit LD_PRELOAD), else the pass would test
    the AVX-512 kernels again and pass unseen."""
    pytest.importorskip("xdist")
    (tmp_path / "test_probe.py").write_text(_WORKER_PROBE)
    (tmp_path / "out").mkdir()
    done = subprocess.run(["bash", str(AS_AVX2), sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                           "test_probe.py"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PROBE_OUT": str(tmp_path / "out")})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ran = {p.name: p.read_text().split() for p in (tmp_path / "out").iterdir()}
    assert ran and all(name.startswith("gw") for name in ran), ran  # in xdist's workers, not the controller
    assert all(capability == "AVX2" for _, capability in ran.values()), ran
