"""Running a test's child process on the other kind of x86 CPU: scripts/as_avx2.sh (this CPU with AVX-512, VNNI and
AMX hidden from CPUID, native speed) and QEMU's emulated Haswell. Each entry says why it cannot run here, or None."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

AS_AVX2 = Path(__file__).resolve().parents[1] / "scripts" / "as_avx2.sh"


def as_avx2_unavailable() -> str | None:
    """None where scripts/as_avx2.sh runs; else its reason (no CPUID faulting, no gcc, not x86-64)."""
    done = subprocess.run(["bash", str(AS_AVX2), "true"], capture_output=True, text=True)
    return None if done.returncode == 0 else f"scripts/as_avx2.sh cannot run here: {done.stderr.strip()}"


# command prefix -> the reason it cannot run here (None: it can). -U: a program emulated by QEMU must not load the
# CPUID mask that scripts/as_avx2.sh passes on in LD_PRELOAD (it is for the host CPU)
OTHER_CPUS: dict[str, tuple[list[str], str | None]] = {
    "qemu-haswell": (["qemu-x86_64", "-U", "LD_PRELOAD", "-cpu", "Haswell"], None if shutil.which("qemu-x86_64") else
                     "qemu-x86_64 not installed (Debian: apt install qemu-user): no emulated AVX2 CPU to run on"),
    "as-avx2": (["bash", str(AS_AVX2)], as_avx2_unavailable()),
}
