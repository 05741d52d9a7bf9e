"""What it costs a checkpoint to make sure a loaded RowFile tensor still holds its file's bytes.

A resumed run maps its checkpoint's per-sample targets copy-on-write (``distill.utils.rowfile.RowFile.open``); the
next checkpoint hard-links that file, which is right only while the tensor was never written. ``RowFile.backing``
asks Linux's /proc/self/pagemap whether any page of the mapping became the process's own (8 bytes read per 4 kB
page), and where that cannot tell, compares the tensor with the file byte by byte. This times both on one file of
``--mb`` MiB in ``--folder``, beside what a checkpoint costs without the check (the link) and what reading the rows
or copying the file costs, untouched (no page mapped yet) and after every page was read.

    PYTHONPATH=. .venv/bin/python benchmarks/rowfile_check.py [--mb 300] [--folder /work/tmp] [--repeat 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    import numpy as np
    import torch

    from distill.utils import rowfile
    from distill.utils.rowfile import RowFile
    from distill.utils.state import save_state

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=300, help="the file's size in MiB (rows of 1,000 float32)")
    ap.add_argument("--folder", default=None, help="where the file goes (default: the system's temp folder)")
    ap.add_argument("--repeat", type=int, default=5, help="timings per figure (the median is printed)")
    args = ap.parse_args()
    shape = ((args.mb << 20) // 4000, 1000)
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        folder = Path(tmp)
        rows = RowFile.create(shape, np.float32, folder)
        for s in range(0, shape[0], 4096):
            rows[s:s + 4096] = torch.rand(min(4096, shape[0] - s), shape[1])
        RowFile.backing(rows).save_to(folder / "a.bin")
        del rows
        t = RowFile.open(folder / "a.bin", shape, np.float32)
        nbytes, n = t.numel() * 4, [0]
        print(f"file: {nbytes / 2**20:.0f} MiB {tuple(shape)} float32 in {folder}; pagemap usable: "
              f"{rowfile._pagemap_works()}")

        def save() -> None:
            n[0] += 1
            (folder / f"s{n[0]}").mkdir()
            save_state(folder / f"s{n[0]}" / "state", {"t": t})

        def compare() -> None:
            assert not RowFile.backing(t)._diverged(t)

        real = rowfile.written
        print(f"untouched mapping: pagemap check {_ms(lambda: real(t.data_ptr(), nbytes), args.repeat):.2f} ms")
        print(f"read every row once (t.sum()): {_ms(lambda: float(t.sum()), 1):.1f} ms")
        print(f"every page mapped: pagemap check {_ms(lambda: real(t.data_ptr(), nbytes), args.repeat):.2f} ms, "
              f"backing() {_ms(lambda: RowFile.backing(t), args.repeat):.2f} ms, "
              f"save_state (check + link) {_ms(save, args.repeat):.2f} ms")
        rowfile.written = lambda address, size: None  # as where /proc/self/pagemap cannot tell
        try:
            print(f"without pagemap: byte comparison with the file {_ms(compare, args.repeat):.1f} ms")
        finally:
            rowfile.written = real
        copy = folder / "copy.bin"
        print(f"for scale: copying the file (the fallback where no link is possible) "
              f"{_ms(lambda: RowFile.backing(t)._copy(copy), args.repeat):.1f} ms")


if __name__ == "__main__":
    main()
