"""Training speed of a finished run, read from its TensorBoard events (``RUN/tb``).

Uses each ``train/loss`` event's step number and wall time, so it holds whether the trainer
logs every step or every N steps: the median of (time / steps) between consecutive events
gives the steady-state step; first to last event gives the rate with epoch boundaries
(evaluation, loader restarts) included.

    python benchmarks/train_steps.py RUN_DIR BATCH [NAME]
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from distill.records import RUN_TENSORBOARD


def main() -> None:
    run, batch = Path(sys.argv[1]), int(sys.argv[2])
    name = sys.argv[3] if len(sys.argv) > 3 else run.name
    ev = EventAccumulator(str(run / RUN_TENSORBOARD))
    ev.Reload()
    s = ev.Scalars("train/loss")
    if len(s) < 2:
        print(f"TRAIN {name}: only {len(s)} logged step(s) in {run / RUN_TENSORBOARD}; run longer")
        return
    per_step = [(b.wall_time - a.wall_time) / (b.step - a.step) for a, b in zip(s, s[1:]) if b.step > a.step]
    med = statistics.median(per_step)
    steps = s[-1].step - s[0].step
    total = s[-1].wall_time - s[0].wall_time
    print(f"TRAIN {name}: {s[-1].step} steps, median step {med * 1000:.1f} ms -> {batch / med:.0f} img/s; "
          f"with epoch boundaries {batch * steps / total:.0f} img/s")


if __name__ == "__main__":
    main()
