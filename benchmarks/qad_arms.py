"""``distill qad`` settings side by side: int8 disagreement with fp32 and accuracy, per arm, on the same runs.

    PYTHONPATH=. .venv/bin/python benchmarks/qad_arms.py EDGE_OUT [EDGE_OUT ...] --out /tmp/qad_arms \
        --arm default: --arm lr1e-4:lr=1e-4 --arm all-int8:quantize_all=true

EDGE_OUT: a ``benchmarks/edge_students.py --out`` folder (``runs/TAG``, ``export/TAG``, ``records/TAG.json``): trained
students and their ``distill export`` (fp32 + int8 ort-cpu with the float fallback). An arm (``--arm``, repeated) is
``NAME:KEY=VALUE,...`` (``distill qad`` config keys, checked before anything runs; numbers, true/false). Per run and arm, ``distill qad``
runs as the demo runs it (``distill.demo_ship``): against the export's int8 file (``--export``), on calibration
images of the run's source and target domains, the arm's settings over the defaults, into ``OUT/NAME/TAG``
(reused when there). Then every file is scored on the whole test split of every domain of the run:

- disagreement with the fp32 ONNX (top-1 differs), points: mean over domains and the worst domain;
- test accuracy minus fp32's, points, worst domain (issue 21: within 0.5 of fp32 on every domain), and how many
  domains lose accuracy beyond chance (McNemar's exact test against fp32 on that domain's images, p < 0.05): a
  domain's test split of a few hundred images moves by a point when a few images flip either way;
- QAD's own figures from qad.json: the worst calibration domain (issue 21: <= 1 point), whether its training loss
  rose (last epoch's mean loss above the first's) and which file the no-harm rule shipped;
- the int8 weight values QAD's training changed, percent: the student and QAD's tuned checkpoint on the same
  per-channel grids (every layer quantized), recomputed from the checkpoints so folders of any age compare.

The first arm is compared with each other arm, paired: the same runs and the same test images. Per run, McNemar's exact test
on the images where exactly one QAD file flips; over runs, a paired t-test of the mean test disagreement. Prints
Markdown tables; paste them into benchmarks/RESULTS.md with the command and the machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from int8_students import cpu_flags  # noqa: E402

from distill import api  # noqa: E402
from distill.export.data import load_export_data  # noqa: E402
from distill.export.evaluate import ort_session, predict_onnx  # noqa: E402
from distill.export.fakequant import fake_quant_model  # noqa: E402
from distill.export.fq_state import calibrate_ranges  # noqa: E402
from distill.export.images import ImageSet  # noqa: E402
from distill.export.log import ExportLog  # noqa: E402
from distill.export.onnx import export_onnx  # noqa: E402
from distill.export.qad import export_config, export_int8  # noqa: E402
from distill.export.qad_config import QADConfig, QADRecord  # noqa: E402
from distill.export.qad_moves import changed_share, int8_weights  # noqa: E402
from distill.export.quantize import FLAVOURS, SATURATION_FREE_WEIGHT, Int8Flavour, with_weight_range  # noqa: E402
from distill.export.training_run import TrainingRun  # noqa: E402
from distill.report.stats import mcnemar, mean_std, paired  # noqa: E402
from distill.student.model import load_student  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Scored:
    """One int8 file of one run on the whole test split."""

    flips: np.ndarray    # [N] bool: top-1 differs from fp32
    correct: np.ndarray  # [N] bool: top-1 is the label
    disagree_mean: float  # points, mean over domains
    disagree_worst: float
    acc_drop_worst: float  # points: max over domains of (fp32 accuracy - this file's)
    drops_beyond_chance: int  # domains whose accuracy is below fp32's with McNemar p < 0.05


def runs_of(edge_out: Path) -> list[tuple[str, Path, Path, list[str]]]:
    """(tag, checkpoint, export folder, target domains) of each finished run of an edge_students.py folder."""
    found = []
    for rec in sorted((edge_out / "records").glob("*.json")):
        tag = rec.stem
        ckpt, exp = edge_out / "runs" / tag / "checkpoints" / "best", edge_out / "export" / tag
        if ckpt.is_dir() and exp.is_dir():
            found.append((tag, ckpt, exp, list(json.loads(rec.read_text()).get("targets") or [])))
    if not found:
        raise SystemExit(f"{edge_out}: no finished run (records/TAG.json with runs/TAG and export/TAG)")
    return found


def _value(raw: str) -> object:
    """true/false, an int, a float, else the string."""
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def arm_specs(texts: list[str], value: Callable[[str], Any] = _value) -> dict[str, dict[str, Any]]:
    """``["a:", "b:lr=1e-4,quantize_all=true"]`` -> {"a": {}, "b": {"lr": 0.0001, "quantize_all": True}} (each raw
    value through ``value``); an arm without a name of its own is refused in one line."""
    arms: dict[str, dict[str, Any]] = {}
    for spec in texts:
        name, _, body = spec.strip().partition(":")
        options: dict[str, Any] = {}
        for item in filter(None, body.split(",")):
            key, _, raw = item.partition("=")
            options[key.strip()] = value(raw.strip())
        if not name.strip() or name.strip() in arms:
            raise SystemExit(f"--arm {spec!r}: each arm needs a name of its own (NAME:KEY=VALUE,...)")
        arms[name.strip()] = options
    return arms


def parse_arms(texts: list[str]) -> dict[str, dict[str, Any]]:
    """:func:`arm_specs` of ``distill qad`` settings; a bad key or value is refused in one line (QADConfig's)
    before anything runs."""
    arms = arm_specs(texts)
    for options in arms.values():
        # DistillError names the key; every arm runs with --export (run_qad), so quantize_all applies
        QADConfig.from_options({"checkpoint": ".", "out_dir": ".", "export_dir": ".", **options})
    return arms


def run_qad(ckpt: Path, exp: Path, targets: list[str], options: dict[str, object], out: Path) -> QADRecord:
    if QADRecord.exists_in(out) and QADRecord.read(out).ship is not None:
        return QADRecord.read(out)
    log(f"qad {ckpt} {options} -> {out}")
    return api.qad(checkpoint=ckpt, out_dir=out, export_dir=exp, target_domains=tuple(targets), **options)


def test_split(record: QADRecord) -> ImageSet:
    """Every test image of every domain under the run's data root (labelled), as qad.json's run picks data."""
    cfg = QADConfig.model_validate(record.qad_config)
    checkpoint = Path(cfg.checkpoint)
    student = load_student(checkpoint)
    ecfg = export_config(cfg, TrainingRun.of_checkpoint(checkpoint, ExportLog(lambda m: None)), ExportLog(lambda m: None))
    tcfg = ecfg.model_copy(update={"eval_count": None, "eval_domains": None, "calib_domains": None})
    return load_export_data(tcfg, student.spec, [], ExportLog(lambda m: None)).eval_images


def score(files: dict[str, Path], checkpoint: Path, images: ImageSet) -> dict[str, Scored]:
    names = list(images.domain_names)
    with tempfile.TemporaryDirectory(prefix="qad-arms-") as work:
        fp32 = Path(work) / "model.fp32.onnx"  # the reference QAD scores against: the TorchScript export
        export_onnx(load_student(checkpoint), fp32, opset=18, exporter="torchscript")
        top1 = {k: predict_onnx(ort_session(p), images).argmax(1) for k, p in {**files, "fp32": fp32}.items()}
    flipped = {k: top1[k] != top1["fp32"] for k in files}  # each file run once: flips and correctness from it
    right = {k: v == images.labels for k, v in top1.items()}
    return {k: figures(flipped[k], right[k], right["fp32"], images.domains, names) for k in files}


def figures(flips: np.ndarray, correct: np.ndarray, fp32_correct: np.ndarray, domains: np.ndarray,
           names: list[str]) -> Scored:
    """One file's figures from its per-image flips and correctness and fp32's, per domain of ``names``."""
    per = [100.0 * flips[domains == d].mean() for d in names]
    drop = [100.0 * (fp32_correct[domains == d].mean() - correct[domains == d].mean()) for d in names]
    beyond = sum(drop[i] > 0 and mcnemar(fp32_correct[domains == d].tolist(), correct[domains == d].tolist()).p < 0.05
                 for i, d in enumerate(names))
    return Scored(flips, correct, float(np.mean(per)), float(max(per)), float(max(drop)), beyond)


def file_flavour(record: QADRecord, qad_dir: Path) -> Int8Flavour:
    """The flavour QAD wrote ``qad_dir``'s int8 file with, its weight range read off the file (no int8 weight beyond
    +-64: 7-bit). Records do not say it, and the registry's ort-cpu default went from 8-bit to 7-bit in session 22:
    a folder of an older session must be rebuilt with the range it ran with."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(qad_dir / record.qad_file))
    top = max((int(np.abs(numpy_helper.to_array(t).astype(np.int32)).max()) for t in model.graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and t.dims), default=0)
    return with_weight_range(FLAVOURS[record.flavour], top <= SATURATION_FREE_WEIGHT)


def weights_moved(checkpoint: Path, tuned: Path, flavour: Int8Flavour) -> float:
    """Percent of the int8 weight values that differ between ``checkpoint`` and QAD's tuned one (folded BatchNorm,
    per-channel grids of ``flavour``: what the file holds for an int8 layer)."""
    grids = []
    for ck in (checkpoint, tuned):
        student = load_student(ck)
        fq = fake_quant_model(student, flavour)
        grids.append(int8_weights(calibrate_ranges(fq, [torch.zeros(1, 3, *student.spec.input_size)])))
    return changed_share(*grids)


def beyond(rows: list[dict], file: str) -> str:
    """Domains (over ``rows``' runs) where ``file`` loses accuracy to fp32 beyond chance, of all."""
    return f"{sum(r['scored'][file].drops_beyond_chance for r in rows)}/{sum(r['domains'] for r in rows)}"


def by_student(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by their ``student``, in first-seen order (the per-student tables' rows)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["student"], []).append(r)
    return groups


def fmt(values: list[float]) -> str:
    m, s = mean_std(values)
    return f"{m:.2f} ± {s:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("edge_outs", nargs="+", type=Path, help="benchmarks/edge_students.py --out folders")
    ap.add_argument("--out", type=Path, required=True, help="QAD folders go to OUT/NAME/TAG")
    ap.add_argument("--arm", action="append", default=None,
                    help="NAME:KEY=VALUE,... (distill qad settings), repeated; the first is compared with each other "
                         "(default: one arm, QAD's defaults)")
    args = ap.parse_args()
    settings = parse_arms(args.arm or ["default:"])
    arms = list(settings)
    rows: list[dict] = []
    for edge_out in args.edge_outs:
        for tag, ckpt, exp, targets in runs_of(edge_out):
            records = {arm: run_qad(ckpt, exp, targets, settings[arm], args.out / arm / tag) for arm in arms}
            files = {"ptq": export_int8(exp, ckpt, FLAVOURS["ort-cpu"]).path,
                     **{arm: args.out / arm / tag / r.qad_file for arm, r in records.items()}}
            images = test_split(next(iter(records.values())))
            scored = score(files, ckpt, images)
            moved = {arm: weights_moved(ckpt, args.out / arm / tag / r.tuned_checkpoint,
                                        file_flavour(r, args.out / arm / tag)) for arm, r in records.items()}
            rows.append({"tag": tag, "student": tag.rsplit("-e", 1)[0], "images": len(images), "scored": scored,
                         "records": records, "moved": moved, "domains": len(images.domain_names)})
            log(f"{tag}: " + ", ".join(f"{k} {v.disagree_mean:.2f}" for k, v in scored.items()))
    model, flags = cpu_flags()
    print(f"{model}; SIMD flags: {' '.join(flags)}; arms: "
          + "; ".join(f"{a} {settings[a] or 'defaults'}" for a in arms) + "\n")
    print("| run | test images | PTQ: test disagreement mean / worst (pts), acc drop worst | "
          + " | ".join(f"QAD {a}: calib worst / test mean / test worst (pts), acc drop worst, loss rose, ships, "
                       "int8 weights moved" for a in arms) + " |")
    print("|---|---:|---|" + "---|" * len(arms))
    for r in rows:
        s, recs = r["scored"], r["records"]
        cells = []
        for a in arms:
            q = recs[a]
            rose = q.losses[-1] > q.losses[0]
            cells.append(f"{q.qad.worst_calibration:.2f} / {s[a].disagree_mean:.2f} / {s[a].disagree_worst:.2f}, "
                         f"{s[a].acc_drop_worst:+.2f}, {'yes' if rose else 'no'}, {q.ship}, {r['moved'][a]:.2f} %")
        print(f"| {r['tag']} | {r['images']} | {s['ptq'].disagree_mean:.2f} / {s['ptq'].disagree_worst:.2f}, "
              f"{s['ptq'].acc_drop_worst:+.2f} | "
              + " | ".join(cells) + " |")
    print("\n| student | runs | PTQ: test mean (pts), acc drop worst (pts), domains losing beyond chance | " + " | ".join(
        f"{a}: test mean (pts), calib worst (pts), acc drop worst (pts), loss rose, ships QAD, domains losing beyond "
        "chance" for a in arms) + " |")
    print("|---|---:|---|" + "---|" * len(arms))
    for student, mine in by_student(rows).items():
        cells = [f"{fmt([r['scored'][a].disagree_mean for r in mine])}, "
                 f"{fmt([r['records'][a].qad.worst_calibration for r in mine])}, "
                 f"{fmt([r['scored'][a].acc_drop_worst for r in mine])}, "
                 f"{sum(r['records'][a].losses[-1] > r['records'][a].losses[0] for r in mine)}/{len(mine)}, "
                 f"{sum(r['records'][a].ship == 'qad' for r in mine)}/{len(mine)}, {beyond(mine, a)}" for a in arms]
        print(f"| {student} | {len(mine)} | {fmt([r['scored']['ptq'].disagree_mean for r in mine])}, "
              f"{fmt([r['scored']['ptq'].acc_drop_worst for r in mine])}, {beyond(mine, 'ptq')} | "
              + " | ".join(cells) + " |")
    print(f"\nEach arm against the export's int8 file (PTQ), paired over {len(rows)} runs (test disagreement mean):")
    for a in arms:
        t = paired([r["scored"][a].disagree_mean for r in rows], [r["scored"]["ptq"].disagree_mean for r in rows])
        better = sum(r["scored"][a].disagree_mean < r["scored"]["ptq"].disagree_mean for r in rows)
        print(f"- {a} minus PTQ: {t.diff:+.2f} pts (paired t-test p = {t.p:.3g}); lower than PTQ on {better} of "
              f"{len(rows)} runs")
    for b in arms[1:]:
        a = arms[0]
        print(f"\n{a} vs {b}, paired (same runs, same test images):")
        for r in rows:
            x, y = r["scored"][a].flips, r["scored"][b].flips
            p = mcnemar((~x).tolist(), (~y).tolist()).p
            print(f"- {r['tag']}: only {a} flips {int((x & ~y).sum())}, only {b} flips {int((y & ~x).sum())}, "
                  f"McNemar p = {p:.3g}")
        t = paired([r["scored"][a].disagree_mean for r in rows], [r["scored"][b].disagree_mean for r in rows])
        print(f"- over {len(rows)} runs, test disagreement mean {a} minus {b}: {t.diff:+.2f} pts "
              f"(paired t-test p = {t.p:.3g})")


if __name__ == "__main__":
    main()
