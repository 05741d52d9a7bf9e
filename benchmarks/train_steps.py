"""Training speed of a finished run, read from its TensorBoard events (``RUN/tb``).

The trainer reads losses back once per log point (``run.log_every`` steps; one host sync), so the
events of the steps since the last log point are written together, with one wall time. A log point
is a group of events written within 5 ms; the median of (time / steps) between consecutive log
points gives the steady-state step, first to last event the rate with epoch boundaries (evaluation,
loader restarts) included. (Reading consecutive events instead gave a 0.3 ms "step" on an H200.)

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
    points = [s[0]]  # the last event of each log point
    for ev in s[1:]:
        if ev.wall_time - points[-1].wall_time < 0.005:
            points[-1] = ev
        else:
            points.append(ev)
    per_step = [(b.wall_time - a.wall_time) / (b.step - a.step) for a, b in zip(points, points[1:]) if b.step > a.step]
    if not per_step:
        print(f"TRAIN {name}: one log point only in {run / RUN_TENSORBOARD}; run longer or lower run.log_every")
        return
    med = statistics.median(per_step)
    steps = s[-1].step - s[0].step
    total = s[-1].wall_time - s[0].wall_time
    print(f"TRAIN {name}: {s[-1].step} steps, {len(points)} log points, median step {med * 1000:.1f} ms -> "
          f"{batch / med:.0f} img/s; "
          f"with epoch boundaries {batch * steps / total:.0f} img/s")


if __name__ == "__main__":
    main()
