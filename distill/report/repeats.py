"""Repeats in the report, in words.

- A seed run twice: which run of a seed counted and why (:func:`distill.report.runs.distinct_seeds` chose it), and
  what two repeats' differing results are put down to.
- A file benched twice at the same settings (its sha256, runtime, batch, device, threads; benched again, or a bench
  file copied with its tree): one measurement taken twice, not two models, so one point, by the same rule as a seed's
  repeats: the newest record counts (within one bench file the line appended last, whatever its ``timestamp`` says;
  across bench files the later ``timestamp``, and on a tie the one read last, as before), the repeats are
  left out of the points and said, with every record's p50, in a warning and by the measurements table
  (:func:`counted`, :func:`bench_repeat_notes`); report.html's table of all records still lists each, marked.
"""
from __future__ import annotations

from datetime import datetime

from distill.records import pct
from distill.report.data import Measurement, Point
from distill.report.runs import Run, RunGroup, target_mean


def repeat_notes(g: RunGroup) -> list[str]:
    """One line per repeat left out of ``g``: ``seed 0 of LABEL counted once, from runs/b (runs/a repeats it, left
    out)``, with both target means where their results differ: training that is not deterministic (their configs
    are equal but for bookkeeping, :data:`~distill.report.configs.BOOKKEEPING`), or data that changed between them
    (their data.json differ). Runs on different numbers of ranks or nodes (launch.json) are not repeats
    (:func:`~distill.report.runs.group_runs`); where a run does not record them, that is named as a cause too."""
    notes = []
    for r in g.repeats:
        kept = g.kept_for(r)
        why = "the data differ (data.json)" if None not in (kept.data, r.data) and kept.data != r.data else \
            "training is not deterministic" if None not in (kept.ranks, r.ranks) else \
            "training is not deterministic, or the two ran on different numbers of torchrun ranks or nodes (a run " \
            "without launch.json does not record them)"
        differ = "" if kept.accuracy == r.accuracy else \
            f"; target mean {pct(target_mean(kept))} % vs {pct(target_mean(r))} %: {why}"
        notes.append(f"seed {r.seed} of {g.label} counted once, from {kept.dir} ({r.dir} repeats it, left out; "
                     f"{_why_kept(kept, r)}{differ})")
    return notes


def _why_kept(kept: Run, repeat: Run) -> str:
    """Which rule of :func:`distinct_seeds` chose ``kept`` over ``repeat``."""
    if kept.written == repeat.written:
        return "the same finish time: the first by path counts"
    if kept.by_mtime or repeat.by_mtime:
        return "the later summary.json counts, by its modification time (no finish time recorded)"
    return "the later finish time counts (the run's finished_at)"


def repeats_warning(groups: list[RunGroup]) -> str | None:
    """The one warning line for every repeat left out (:func:`distinct_seeds`); None when there is none."""
    notes = [n for g in groups for n in repeat_notes(g)]
    if not notes:
        return None
    return (f"{len(notes)} run(s) repeat the seed of another run of the same configuration (a rerun into another "
            "run.out, a copied folder) and are left out: n counts distinct seeds, the run of each that finished last "
            "counts: " + "; ".join(notes))


def counted(timed: list[tuple[Measurement, Point]]) -> Point:
    """The point of one file's records at one setting (in the order read): the newest record's, the others kept on
    it as its repeats (:attr:`Measurement.repeat`), newest first. Within one bench file the line appended last is
    the newest (a device whose clock went back, no RTC after a reboot, writes an older timestamp on a newer line);
    timestamps order only bench files, each by its last record here (on a tie, the file read last)."""
    last = {m.source: i for i, (m, _) in enumerate(timed)}  # each bench file's last record here

    def newest(i: int) -> tuple[float, int, int]:
        end = last[timed[i][0].source]
        return _when(timed[end][0]), end, i

    order = sorted(range(len(timed)), key=newest, reverse=True)
    measured, point = timed[order[0]]
    point.measured = measured
    point.repeats = [timed[i][0] for i in order[1:]]
    for m in point.repeats:
        m.repeat = True
    return point


def _when(m: Measurement) -> float:
    """A record's ``timestamp`` as seconds since the epoch; -inf when it does not read as a time (counts as oldest)."""
    try:
        return datetime.fromisoformat(m.record.timestamp).timestamp()
    except (TypeError, ValueError):
        return float("-inf")


def bench_repeat_notes(points: list[Point]) -> list[str]:
    """One line per point timed more than once: ``NAME, batch 1, ort-cpu, 4 thread(s) on DEVICE: timed 2 times,
    counted once: the record of TIME in FILE (p50 1.02 ms); left out: the record of TIME in FILE (p50 1.1 ms); the
    later timestamp counts``."""
    notes = []
    for p in points:
        if not p.repeats or p.measured is None:
            continue
        threads = "default threads" if p.threads is None else f"{p.threads} thread(s)"
        why = _why_counted(p.measured, p.repeats[0])
        left = "; ".join(_record(m) for m in p.repeats)
        notes.append(f"{p.named}, batch {p.batch}, {threads} on {p.device}: timed {1 + len(p.repeats)} times, counted "
                     f"once: {_record(p.measured)}; left out: {left}; {why}")
    return notes


def _why_counted(kept: Measurement, repeat: Measurement) -> str:
    """Which rule of :func:`counted` chose ``kept`` over ``repeat``."""
    if kept.source == repeat.source:
        went_back = " (its timestamp is earlier: the device's clock went back?)" if _when(kept) < _when(repeat) else ""
        return f"in one bench file the line appended last counts{went_back}"
    if _when(kept) == _when(repeat) == float("-inf"):
        return "no readable timestamp: the one read last counts"
    if _when(kept) == _when(repeat):
        return "the same timestamp: the one read last counts"
    return "the later timestamp counts"


def _record(m: Measurement) -> str:
    return f"the record of {m.record.timestamp} in {m.source} (p50 {m.record.latency_ms.p50:.3g} ms)"


def bench_repeats_warning(points: list[Point]) -> str | None:
    """The one warning line for every benchmark record left out as a repeat (:func:`counted`); None when none is."""
    notes = bench_repeat_notes(points)
    if not notes:
        return None
    n = sum(len(p.repeats) for p in points)
    return (f"{n} benchmark record(s) repeat another record of the same file at the same settings (benched again, a "
            "copied bench file) and are left out of the points: each point is the newest record: " + "; ".join(notes))
