"""Reading back a bench file's last line without its newline (edge_runner._unended_last_line): before vs now.

    PYTHONPATH=. .venv/bin/python benchmarks/last_line_readback.py --sizes 1,8,32

Every append to a bench file first looks at its last line (``end_last_line``). Before, the read-back glued each
64 KiB block in front of the tail read so far and searched the whole tail again per block (quadratic in the line's
length) and read a line of any length whole; now each block is read and searched once and no more than
``LONGEST_LINE`` (1 MiB) and a block is read (a longer line is cut off). The file: one record, then a line of SIZE
MiB with no newline (a cut-off write of something huge). Both run side by side, alternately, on the same file; the
figure is each one's best time of ``--repeats`` and their ratio, and that both call the line cut off.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.bench import edge_runner  # noqa: E402


def before(path: Path) -> bytes | None:
    """The read-back as it was (commit 4cd3469)."""
    with open(path, "rb") as f:
        tail, at = b"", f.seek(0, os.SEEK_END)
        while at > 0:
            step = min(65536, at)
            at -= step
            f.seek(at)
            tail = f.read(step) + tail
            if tail.endswith(b"\n"):
                return None
            if (cut := tail.rfind(b"\n")) >= 0:
                return tail[cut + 1:]
        return tail or None


def cut_off(tail: bytes | None) -> bool:
    return tail is not None and (len(tail) > edge_runner.LONGEST_LINE or not edge_runner._parses(tail))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="1,8,32", help="MiB of the unended last line, comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    print(f"{'MiB':>5s} {'before s':>9s} {'now s':>9s} {'ratio':>7s}  cut off (before, now)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.jsonl"
        for mib in (int(s) for s in args.sizes.split(",")):
            path.write_bytes(b'{"schema": "distill.bench/1"}\n{"pad": "' + b"x" * (mib << 20))
            best = {"before": float("inf"), "now": float("inf")}
            said = {}
            for _ in range(args.repeats):
                for name, fn in (("before", before), ("now", edge_runner._unended_last_line)):
                    t = time.perf_counter()
                    tail = fn(path)
                    best[name] = min(best[name], time.perf_counter() - t)
                    said[name] = cut_off(tail)
            print(f"{mib:5d} {best['before']:9.4f} {best['now']:9.4f} {best['before'] / best['now']:6.0f}x  "
                  f"{said['before']}, {said['now']}")


if __name__ == "__main__":
    main()
