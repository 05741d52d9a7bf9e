"""Repeats of a seed in the report, in words: which run of a seed counted and why
(:func:`distill.report.runs.distinct_seeds` chose it), and what two repeats' differing results are put down to."""
from __future__ import annotations

from distill.records import pct
from distill.report.runs import Run, RunGroup, target_mean


def repeat_notes(g: RunGroup) -> list[str]:
    """One line per repeat left out of ``g``: ``seed 0 of LABEL counted once, from runs/b (runs/a repeats it, left
    out)``, with both target means where their results differ: training that is not deterministic (their configs
    are equal but for bookkeeping, :data:`~distill.report.configs.BOOKKEEPING`), or data that changed between them
    (their data.json differ)."""
    notes = []
    for r in g.repeats:
        kept = g.kept_for(r)
        why = "the data differ (data.json)" if None not in (kept.data, r.data) and kept.data != r.data else \
            "training is not deterministic"
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
