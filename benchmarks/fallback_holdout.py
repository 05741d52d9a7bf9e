"""Should the export's float fallback check its layers on hold-out images? Three rules side by side on trained students.

    PYTHONPATH=. .venv/bin/python benchmarks/fallback_holdout.py EDGE_OUT [EDGE_OUT ...] --out /tmp/fallback_holdout

EDGE_OUT: a ``benchmarks/edge_students.py --out`` folder (``runs/TAG``, ``export/TAG``, ``records/TAG.json``). The
greedy fallback accepts a layer when it lowers the worst calibration domain by one image, so on 256 calibration
images some of its gains may be chance. Each run is exported again with its export's own settings (export.json
``config``), three ways:

- ``calibration``: the product (``distill export``): the search's last accepted model ships.
- ``holdout``: the same search, then all-int8 and each model it accepted are measured on ``--holdout-count`` (256)
  train images that are not calibration images (``distill.export.data.holdout_samples``, as ``distill qad``'s
  hold-out), and the lowest mean disagreement over domains ships (ties: fewer layers in float).
- ``no-harm``: the search's pick ships only when its mean hold-out disagreement is below all-int8's (QAD's rule,
  ``distill.export.qad_ship``), else all-int8.

The two checks live here (:func:`checked`, wrapping the product's ``greedy_fallback``), not in the product: measured
(benchmarks/RESULTS.md, "The fallback's hold-out check"), neither beat the product's rule. Runs whose all-int8 model
meets ``--max-drop`` never run the fallback (every arm the same file) and are skipped. The shipped int8 files are
scored on the whole test split of every domain against the fp32 ONNX: top-1 disagreement (points, mean over domains
and worst domain), the worst test accuracy drop, and int8/fp32 latency: fp32 and the three int8 files timed
interleaved in one process (``int8_students.interleaved_ratios``: batch 1, 1 thread, median of ``--repeats``;
``compare_latency`` creates the sessions in both orders, since the one created last runs 1-2.5 % faster: RESULTS.md,
"onnxruntime sessions created later run faster"); where two arms ship the same file, their ratios show the noise. Per run McNemar's exact
test against ``calibration`` on the images exactly one file flips; over runs paired t-tests. Prints Markdown for benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from float_fallback import int8_model, kept, test_split  # noqa: E402
from int8_students import cpu_flags, interleaved_ratios  # noqa: E402
from qad_arms import fmt, log, runs_of, score  # noqa: E402

import distill.export.int8_step as int8_step  # noqa: E402
from distill import api  # noqa: E402
from distill.export.config import ExportConfig  # noqa: E402
from distill.export.data import load_export_data, load_holdout_images  # noqa: E402
from distill.export.evaluate import disagreement_by_domain, predict_onnx  # noqa: E402
from distill.export.log import ExportLog  # noqa: E402
from distill.export.qad_ship import TIE_PTS  # noqa: E402
from distill.records import ExportReport  # noqa: E402
from distill.report.stats import mcnemar, paired  # noqa: E402

ARMS = ("calibration", "holdout", "no-harm")
HOLDOUT_FILE = "holdout.json"  # OUT/ARM/TAG/holdout.json: each candidate's hold-out figures and the pick


def pick(rule: str, means: list[float]) -> int:
    """The candidate that ships (candidates: all-int8, then each model the search accepted, in order)."""
    if rule == "no-harm":
        return len(means) - 1 if means[-1] < means[0] - TIE_PTS else 0
    best = 0
    for i, m in enumerate(means):
        if m < means[best] - TIE_PTS:
            best = i
    return best


def _holdout_images(step: Any, count: int):
    """``count`` train images of the step's calibration (and target) domains that are not its calibration images."""
    info = step.ctx.data.info
    cfg = step.cfg.model_copy(update={"calib_domains": tuple(info["calib_domains"]),
                                      "target_domains": tuple(info["target_domains"])})
    quiet = ExportLog(lambda m: None)
    data = load_export_data(cfg, step.ctx.spec, [], quiet, keep_folder=True)
    return load_holdout_images(cfg, step.ctx.spec, data, count)


def checked(rule: str, count: int, record: Path):
    """The product's ``greedy_fallback`` followed by the ``rule``'s hold-out check; writes ``record``."""
    search = int8_step.greedy_fallback

    def fallback(quantize_excluding, ranked, measure, baseline, max_drop, max_layers, **kw):
        res, chosen = search(quantize_excluding, ranked, measure, baseline, max_drop, max_layers, **kw)
        if chosen is None:
            return res, chosen
        step = quantize_excluding.__self__  # the Int8Step running this fallback
        holdout = _holdout_images(step, count)
        accepted = [s for s in res.steps if s["accepted"]]
        kept_lists = [[]] + [list(s["kept_float"]) for s in accepted]
        excluded = [[]] + [list(s["excluded"]) for s in accepted]  # the layers and their float outputs' activations
        outputs = [[]] + [list(s["float_outputs"]) for s in accepted]
        pts = [dict(baseline)] + [dict(s["disagreement_pts"]) for s in accepted]
        # every prefix quantized again (deterministic: the same model the search measured); the pick is its file
        paths = [quantize_excluding(k) for k in excluded[:-1]] + [chosen]
        ref = predict_onnx(step.reference.path, holdout)
        per_domain = [disagreement_by_domain(ref, predict_onnx(p, holdout), holdout) for p in paths]
        means = [float(np.mean(list(d.values()))) for d in per_domain]
        best = pick(rule, means)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"rule": rule, "images": len(holdout), "shipped": best, "candidates": [
            {"kept_float": k, "holdout_pts": d, "mean_pts": m} for k, d, m in zip(kept_lists, per_domain, means)]}))
        res.kept_float, res.disagreement_pts = kept_lists[best], pts[best]
        res.float_outputs, res.excluded = outputs[best], excluded[best]
        res.satisfied = max(pts[best].values(), default=0.0) <= max_drop
        return res, (paths[best] if best else None)

    return fallback


def export_arm(ckpt: Path, cfg: ExportConfig, arm: str, out: Path, count: int) -> ExportReport:
    """``distill export`` of ``ckpt`` with ``cfg`` into ``out`` (reused when finished), the arm's rule patched in."""
    if ExportReport.exists_in(out) and ExportReport.read(out).status == "ok":
        return ExportReport.read(out)
    log(f"export ({arm}) {ckpt} -> {out}")
    real = int8_step.greedy_fallback
    if arm != "calibration":
        int8_step.greedy_fallback = checked(arm, count, out / HOLDOUT_FILE)  # type: ignore[assignment]
    try:
        return api.export(ckpt, out, cfg)
    finally:
        int8_step.greedy_fallback = real  # type: ignore[assignment]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("edge_outs", nargs="+", type=Path, help="benchmarks/edge_students.py --out folders")
    ap.add_argument("--out", type=Path, required=True, help="exports go to OUT/ARM/TAG")
    ap.add_argument("--holdout-count", type=int, default=256, help="hold-out images of the checks (default 256)")
    ap.add_argument("--iters", type=int, default=50, help="timed runs per file per interleaved comparison")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved comparisons per run (median reported)")
    args = ap.parse_args()
    rows = []
    for edge_out in args.edge_outs:
        for tag, ckpt, exp, _ in runs_of(edge_out):
            config = ExportReport.read(exp).config  # keys of another distill version's export are left out
            cfg = ExportConfig.model_validate({k: v for k, v in config.items() if k in ExportConfig.model_fields})
            reps = {arm: export_arm(ckpt, cfg, arm, args.out / arm / tag, args.holdout_count) for arm in ARMS}
            if not ((int8_model(reps["calibration"]).model_extra or {}).get("fallback") or {}).get("triggered"):
                log(f"{tag}: all-int8 meets --max-drop, the fallback did not run (skipped)")
                continue
            files = {arm: args.out / arm / tag / int8_model(r).file for arm, r in reps.items()}
            scored = score(files, ckpt, test_split(cfg, ckpt))
            held = {arm: json.loads((args.out / arm / tag / HOLDOUT_FILE).read_text()) for arm in ARMS[1:]}
            fp32 = args.out / "calibration" / tag / next(m for m in reps["calibration"].models
                                                        if m.precision == "fp32").file
            rows.append({"tag": tag, "reps": reps, "scored": scored, "held": held,
                         "ratio": {a: v[0] for a, v in interleaved_ratios({"fp32": fp32, **files}, 1, 1, args.iters,
                                                                          args.repeats).items()},
                         "images": len(scored["calibration"].flips)})
            log(f"{tag}: " + ", ".join(f"{a} {len(kept(reps[a]))} layer(s), {s.disagree_mean:.2f}"
                                       for a, s in scored.items()))
    if not rows:
        raise SystemExit("no run whose export ran the fallback")
    model, flags = cpu_flags()
    print(f"{model}; SIMD flags: {' '.join(flags)}\n")
    print("| run | test images | hold-out mean disagreement, all-int8 then each accepted step (pts; holdout's pick "
          "bold) | " + " | ".join(f"{a}: kept layers, test disagreement mean / worst (pts), acc drop worst (pts), "
                                  "int8/fp32 latency (interleaved)" for a in ARMS)
          + " | McNemar vs calibration: holdout, no-harm (only it flips / only calibration flips, p) |")
    print("|---|---:|---|" + "---|" * (len(ARMS) + 1))
    for r in rows:
        h = r["held"]["holdout"]
        steps = ", ".join((f"**{c['mean_pts']:.2f}**" if i == h["shipped"] else f"{c['mean_pts']:.2f}")
                          for i, c in enumerate(h["candidates"]))
        cells = []
        for a in ARMS:
            s, ratio = r["scored"][a], r["ratio"][a]
            cells.append(f"{len(kept(r['reps'][a]))}, {s.disagree_mean:.2f} / {s.disagree_worst:.2f}, "
                         f"{s.acc_drop_worst:+.2f}, " + (f"{ratio:.2f}x" if ratio else "–"))
        y = r["scored"]["calibration"].flips
        tests = []
        for a in ARMS[1:]:
            x = r["scored"][a].flips
            tests.append(f"{int((x & ~y).sum())} / {int((y & ~x).sum())}, p = "
                         f"{mcnemar((~x).tolist(), (~y).tolist()).p:.3g}")
        print(f"| {r['tag']} | {r['images']} | {steps} | " + " | ".join(cells) + " | " + "; ".join(tests) + " |")
    means = {a: [r["scored"][a].disagree_mean for r in rows] for a in ARMS}
    layers = {a: sum(len(kept(r["reps"][a])) for r in rows) for a in ARMS}
    print(f"\nOver {len(rows)} runs, test disagreement mean: " + ", ".join(f"{a} {fmt(means[a])}" for a in ARMS)
          + " pts; layers kept in float in all: " + ", ".join(f"{a} {layers[a]}" for a in ARMS))
    ratios = {a: [r["ratio"][a] for r in rows] for a in ARMS}
    for a in ARMS[1:]:
        t = paired(means[a], means["calibration"])
        lower = sum(x < y for x, y in zip(means[a], means["calibration"]))
        higher = sum(x > y for x, y in zip(means[a], means["calibration"]))
        beyond = [r["tag"] for r in rows if mcnemar((~r["scored"][a].flips).tolist(),
                                                    (~r["scored"]["calibration"].flips).tolist()).p < 0.05]
        line = (f"- {a} minus calibration: {t.diff:+.2f} pts (paired t-test p = {t.p:.3g}); lower on {lower}, higher "
                f"on {higher} of {len(rows)} runs; McNemar p < 0.05 on {len(beyond)} ({', '.join(beyond) or 'none'})")
        lt = paired(ratios[a], ratios["calibration"])
        line += f"; int8/fp32 latency {fmt(ratios[a])}x vs {fmt(ratios['calibration'])}x ({lt.diff:+.3f}, p = {lt.p:.3g})"
        print(line)
    print(json.dumps({r["tag"]: {a: [len(kept(r["reps"][a])), r["scored"][a].disagree_mean] for a in ARMS}
                      for r in rows}))


if __name__ == "__main__":
    main()
