"""The export's float fallback with and without its hold-out check, side by side on trained students.

    PYTHONPATH=. .venv/bin/python benchmarks/fallback_holdout.py EDGE_OUT [EDGE_OUT ...] --out /tmp/fallback_holdout

EDGE_OUT: a ``benchmarks/edge_students.py --out`` folder (``runs/TAG``, ``export/TAG``, ``records/TAG.json``). Each run
is exported again with its export's own settings (export.json ``config``), two ways:

- ``holdout``: this code. The greedy search picks layers on the calibration images; then all-int8 and each model it
  accepted are measured on ``--holdout-count`` (256) train images that are not calibration images, and the lowest
  mean disagreement ships (ties: fewer layers; :func:`distill.export.fallback.pick_on_holdout`).
- ``calibration``: ``--holdout-count 0``: the search's last accepted model ships (the rule before the check).

Runs whose all-int8 model meets ``--max-drop`` never run the fallback (both arms the same file) and are skipped. The
shipped int8 files are scored on the whole test split of every domain against the fp32 ONNX: top-1 disagreement
(points, mean over domains and worst domain) and the worst test accuracy drop, with each export's own int8/fp32
latency ratio (interleaved, batch 1). Per run McNemar's exact test on the images exactly one file flips; over runs
a paired t-test of the mean disagreement, and of the latency ratio. Prints Markdown for benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from float_fallback import int8_model, kept, latency_ratio, test_split  # noqa: E402
from int8_students import cpu_flags  # noqa: E402
from qad_arms import fmt, log, runs_of, score  # noqa: E402

from distill import api  # noqa: E402
from distill.export.config import ExportConfig  # noqa: E402
from distill.records import ExportReport  # noqa: E402
from distill.report.stats import mcnemar, paired  # noqa: E402

ARMS = ("holdout", "calibration")


def export_arm(ckpt: Path, cfg: ExportConfig, arm: str, out: Path) -> ExportReport:
    """``distill export`` of ``ckpt`` with ``cfg`` (``--holdout-count 0`` for the calibration arm) into ``out``
    (reused when finished)."""
    if ExportReport.exists_in(out) and ExportReport.read(out).status == "ok":
        return ExportReport.read(out)
    log(f"export ({arm}) {ckpt} -> {out}")
    return api.export(ckpt, out, cfg.model_copy(update={"holdout_count": 0}) if arm == "calibration" else cfg)


def holdout_block(rep: ExportReport) -> dict:
    return ((int8_model(rep).model_extra or {}).get("fallback") or {}).get("holdout") or {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("edge_outs", nargs="+", type=Path, help="benchmarks/edge_students.py --out folders")
    ap.add_argument("--out", type=Path, required=True, help="exports go to OUT/ARM/TAG")
    ap.add_argument("--holdout-count", type=int, default=256, help="the holdout arm's --holdout-count (default 256)")
    args = ap.parse_args()
    rows = []
    for edge_out in args.edge_outs:
        for tag, ckpt, exp, _ in runs_of(edge_out):
            original = ExportReport.read(exp)
            cfg = ExportConfig.model_validate({**original.config, "holdout_count": args.holdout_count})
            reps = {arm: export_arm(ckpt, cfg, arm, args.out / arm / tag) for arm in ARMS}
            if not ((int8_model(reps["calibration"]).model_extra or {}).get("fallback") or {}).get("triggered"):
                log(f"{tag}: all-int8 meets --max-drop, the fallback did not run (skipped)")
                continue
            files = {arm: args.out / arm / tag / int8_model(r).file for arm, r in reps.items()}
            scored = score(files, ckpt, test_split(cfg, ckpt))
            rows.append({"tag": tag, "reps": reps, "scored": scored, "images": len(scored["holdout"].flips)})
            log(f"{tag}: " + ", ".join(f"{a} {len(kept(reps[a]))} layer(s), {s.disagree_mean:.2f}"
                                       for a, s in scored.items()))
    if not rows:
        raise SystemExit("no run whose export ran the fallback")
    model, flags = cpu_flags()
    print(f"{model}; SIMD flags: {' '.join(flags)}\n")
    print("| run | test images | hold-out: mean disagreement per step of the search (pts; first: all-int8) | "
          + " | ".join(f"{a}: kept layers, test disagreement mean / worst (pts), acc drop worst (pts), int8/fp32 "
                       "latency" for a in ARMS) + " | McNemar: only holdout flips / only calibration flips, p |")
    print("|---|---:|---|" + "---|" * (len(ARMS) + 1))
    for r in rows:
        held = holdout_block(r["reps"]["holdout"])
        steps = ", ".join((f"**{v['mean_pts']:.2f}**" if i == held.get("shipped") else f"{v['mean_pts']:.2f}")
                          for i, v in enumerate(held.get("variants") or []))
        cells = []
        for a in ARMS:
            s, ratio = r["scored"][a], latency_ratio(r["reps"][a])
            cells.append(f"{len(kept(r['reps'][a]))}, {s.disagree_mean:.2f} / {s.disagree_worst:.2f}, "
                         f"{s.acc_drop_worst:+.2f}, " + (f"{ratio:.2f}x" if ratio else "–"))
        x, y = r["scored"]["holdout"].flips, r["scored"]["calibration"].flips
        p = mcnemar((~x).tolist(), (~y).tolist()).p
        print(f"| {r['tag']} | {r['images']} | {steps or '–'} | " + " | ".join(cells)
              + f" | {int((x & ~y).sum())} / {int((y & ~x).sum())}, p = {p:.3g} |")
    means = {a: [r["scored"][a].disagree_mean for r in rows] for a in ARMS}
    layers = {a: [len(kept(r["reps"][a])) for r in rows] for a in ARMS}
    print(f"\nOver {len(rows)} runs, test disagreement mean: "
          + ", ".join(f"{a} {fmt(means[a])}" for a in ARMS) + " pts; layers kept in float: "
          + ", ".join(f"{a} {sum(layers[a])}" for a in ARMS))
    t = paired(means["holdout"], means["calibration"])
    lower = sum(x < y for x, y in zip(means["holdout"], means["calibration"]))
    higher = sum(x > y for x, y in zip(means["holdout"], means["calibration"]))
    beyond = [r["tag"] for r in rows if mcnemar((~r["scored"]["holdout"].flips).tolist(),
                                                (~r["scored"]["calibration"].flips).tolist()).p < 0.05]
    print(f"- holdout minus calibration: {t.diff:+.2f} pts (paired t-test p = {t.p:.3g}); lower on {lower}, higher "
          f"on {higher} of {len(rows)} runs; McNemar p < 0.05 on {len(beyond)} ({', '.join(beyond) or 'none'})")
    ratios = {a: [latency_ratio(r["reps"][a]) for r in rows] for a in ARMS}
    if all(v is not None for vs in ratios.values() for v in vs):
        lt = paired(ratios["holdout"], ratios["calibration"])  # type: ignore[arg-type]
        print("- int8/fp32 latency (each export's own interleaved measurement): "
              + ", ".join(f"{a} {fmt(ratios[a])}x" for a in ARMS)  # type: ignore[arg-type]
              + f"; holdout minus calibration {lt.diff:+.3f} (paired t-test p = {lt.p:.3g})")
    print(json.dumps({r["tag"]: {a: [len(kept(r["reps"][a])), r["scored"][a].disagree_mean] for a in ARMS}
                      for r in rows}))


if __name__ == "__main__":
    main()
