"""``distill export`` settings side by side on trained students: int8 disagreement with fp32, accuracy and latency.

    PYTHONPATH=. .venv/bin/python benchmarks/export_arms.py EDGE_OUT [EDGE_OUT ...] --out /tmp/export_arms \
        --arm source: --arm all-domains:target_domains=@targets

EDGE_OUT: a ``benchmarks/edge_students.py --out`` folder (``runs/TAG``, ``export/TAG``, ``records/TAG.json``). An arm
(``--arm``, repeated) is ``NAME:KEY=VALUE,...``: ``distill export`` config keys (checked before anything runs;
numbers, true/false, lists separated by ``+``), over the settings of the run's own export (export.json ``config``).
``@targets`` stands for the run's target domains (records/TAG.json), so ``target_domains=@targets`` calibrates on
the unlabeled train images of the domains the student is meant for as well, as ``distill qad`` does in the demo.
Each run is exported once per arm into ``OUT/NAME/TAG`` (reused when finished); the int8 files are scored on the
whole test split of every domain against the fp32 ONNX (``qad_arms.score``): top-1 disagreement (points, mean over
domains and worst domain) and the worst test accuracy drop; with the number of layers the float fallback kept and
int8/fp32 latency (fp32 and every arm's int8 file timed together: ``int8_students.interleaved_ratios``, batch 1,
1 thread, median of ``--repeats``). The first arm is compared with each other, paired: per run McNemar's exact test
on the images exactly one file flips, over runs a paired t-test of the mean disagreement. Prints Markdown for
benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from float_fallback import int8_model, kept, test_split  # noqa: E402
from int8_students import cpu_flags, interleaved_ratios  # noqa: E402
from qad_arms import _value, arm_specs, by_student, fmt, log, runs_of, score  # noqa: E402

from distill import api  # noqa: E402
from distill.export.config import ExportConfig  # noqa: E402
from distill.records import ExportReport  # noqa: E402
from distill.report.stats import mcnemar, paired  # noqa: E402

TARGETS = "@targets"


def _raw(raw: str) -> Any:
    """``@targets`` as is, ``a+b`` a list, else a number, true/false or the string."""
    return raw if raw == TARGETS else (raw.split("+") if "+" in raw else _value(raw))


def parse_arms(texts: list[str]) -> dict[str, dict[str, Any]]:
    """``["a:", "b:calib_count=512,target_domains=@targets"]`` -> {"a": {}, "b": {...}}; a bad key or value is
    refused in one line (ExportConfig's) before anything runs."""
    arms = arm_specs(texts, _raw)
    for options in arms.values():
        ExportConfig.from_options({k: ("x" if v == TARGETS else v) for k, v in options.items()})
    return arms


def arm_config(base: ExportConfig, options: dict[str, Any], targets: list[str]) -> ExportConfig:
    """The run's export settings with the arm's options over them (``@targets``: the run's target domains)."""
    resolved = {k: (targets if v == TARGETS else v) for k, v in options.items()}
    return base.with_updates(**resolved)


def export_arm(ckpt: Path, cfg: ExportConfig, out: Path) -> ExportReport:
    if ExportReport.exists_in(out) and ExportReport.read(out).status == "ok":
        return ExportReport.read(out)
    log(f"export {ckpt} -> {out}")
    return api.export(ckpt, out, cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("edge_outs", nargs="+", type=Path, help="benchmarks/edge_students.py --out folders")
    ap.add_argument("--out", type=Path, required=True, help="exports go to OUT/NAME/TAG")
    ap.add_argument("--arm", action="append", required=True, help="NAME:KEY=VALUE,... (distill export settings), "
                    "repeated; the first is compared with each other")
    ap.add_argument("--iters", type=int, default=50, help="timed runs per file per interleaved comparison")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved comparisons per run (median reported)")
    args = ap.parse_args()
    settings = parse_arms(args.arm)
    arms = list(settings)
    rows = []
    for edge_out in args.edge_outs:
        for tag, ckpt, exp, targets in runs_of(edge_out):
            config = ExportReport.read(exp).config  # keys of another distill version's export are left out
            base = ExportConfig.model_validate({k: v for k, v in config.items() if k in ExportConfig.model_fields})
            reps = {a: export_arm(ckpt, arm_config(base, settings[a], targets), args.out / a / tag) for a in arms}
            files = {a: args.out / a / tag / int8_model(r).file for a, r in reps.items()}
            scored = score(files, ckpt, test_split(base, ckpt))
            fp32 = args.out / arms[0] / tag / next(m for m in reps[arms[0]].models if m.precision == "fp32").file
            ratio = {a: v[0] for a, v in interleaved_ratios({"fp32": fp32, **files}, 1, 1, args.iters,
                                                             args.repeats).items()}
            rows.append({"tag": tag, "student": tag.rsplit("-e", 1)[0], "reps": reps, "scored": scored,
                         "ratio": ratio, "images": len(scored[arms[0]].flips)})
            log(f"{tag}: " + ", ".join(f"{a} {len(kept(reps[a]))} layer(s), {s.disagree_mean:.2f}"
                                       for a, s in scored.items()))
    model, flags = cpu_flags()
    print(f"{model}; SIMD flags: {' '.join(flags)}; arms: "
          + "; ".join(f"{a} {settings[a] or 'the run export settings'}" for a in arms) + "\n")
    print("| run | test images | " + " | ".join(f"{a}: kept layers, test disagreement mean / worst (pts), acc drop "
                                                "worst (pts), int8/fp32 latency" for a in arms) + " |")
    print("|---|---:|" + "---|" * len(arms))
    for r in rows:
        cells = [f"{len(kept(r['reps'][a]))}, {r['scored'][a].disagree_mean:.2f} / {r['scored'][a].disagree_worst:.2f}"
                 f", {r['scored'][a].acc_drop_worst:+.2f}, {r['ratio'][a]:.2f}x" for a in arms]
        print(f"| {r['tag']} | {r['images']} | " + " | ".join(cells) + " |")
    print("\n| student | runs | " + " | ".join(f"{a}: test disagreement mean (pts), acc drop worst (pts), "
                                              "int8/fp32 latency" for a in arms) + " |")
    print("|---|---:|" + "---|" * len(arms))
    for student, mine in by_student(rows).items():
        cells = [f"{fmt([r['scored'][a].disagree_mean for r in mine])}, "
                 f"{fmt([r['scored'][a].acc_drop_worst for r in mine])}, {fmt([r['ratio'][a] for r in mine])}x"
                 for a in arms]
        print(f"| {student} | {len(mine)} | " + " | ".join(cells) + " |")
    first = arms[0]
    for b in arms[1:]:
        print(f"\n{b} vs {first}, paired (same runs, same test images):")
        for r in rows:
            x, y = r["scored"][b].flips, r["scored"][first].flips
            print(f"- {r['tag']}: only {b} flips {int((x & ~y).sum())}, only {first} flips {int((y & ~x).sum())}, "
                  f"McNemar p = {mcnemar((~x).tolist(), (~y).tolist()).p:.3g}")
        for label, key in (("test disagreement mean", "disagree_mean"), ("acc drop worst", "acc_drop_worst")):
            t = paired([getattr(r["scored"][b], key) for r in rows], [getattr(r["scored"][first], key) for r in rows])
            print(f"- over {len(rows)} runs, {label} {b} minus {first}: {t.diff:+.2f} pts (paired t-test p = {t.p:.3g})")
        t = paired([r["ratio"][b] for r in rows], [r["ratio"][first] for r in rows])
        print(f"- int8/fp32 latency {b} minus {first}: {t.diff:+.3f} (paired t-test p = {t.p:.3g})")


if __name__ == "__main__":
    main()
