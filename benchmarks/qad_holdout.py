"""How big must QAD's hold-out be for the no-harm rule to pick the better int8 file?

    PYTHONPATH=. .venv/bin/python benchmarks/qad_holdout.py QAD_DIR [QAD_DIR ...] [--sizes 256,512,1024,2048]

``distill qad`` decides between its own int8 file and the PTQ baseline on hold-out images (train-split images of
the calibration domains that are neither calibration nor test images): QAD's file only when its mean top-1
disagreement with fp32 is strictly lower (docs/qad.md, "Which int8 file"). With 256 hold-out images over four
domains one image is 1.6 points of a domain, and on near-tie students the two files differ on a handful of
images, so the decision can be a coin flip. This script measures that, per finished ``distill qad`` folder:

1. the same data as the run (its qad.json's settings: data, domains, calibration picks, seed), the same fp32
   reference (the TorchScript export QAD scores against) and the same PTQ arm (the ``--export`` folder's int8
   file, or plain PTQ made again: MinMax on the same calibration images is deterministic);
2. every train-split image the calibration left (the hold-out *pool*) and every test image of the calibration
   domains, scored by fp32, PTQ and QAD;
3. the **verdict of the test split**: which file disagrees less with fp32 there (mean over domains), the difference
   and McNemar's exact p-value on the images where exactly one file flips (pooled over domains);
4. per hold-out size: ``--draws`` random even-per-domain hold-outs of that size from the pool (what other seeds
   would pick), the rule applied to each; reported: how often it ships QAD, how often it agrees with the test
   verdict, and the test disagreement it costs against the better file (points, mean over draws).

Nothing is trained. Prints one Markdown table; paste it into benchmarks/RESULTS.md with the command and machine.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from int8_students import cpu_flags  # noqa: E402
from qad_arms import file_flavour  # noqa: E402

from distill.export.data import load_export_data, load_holdout_images  # noqa: E402
from distill.export.evaluate import ort_session, predict_onnx  # noqa: E402
from distill.export.images import ImageSet  # noqa: E402
from distill.export.log import ExportLog  # noqa: E402
from distill.export.onnx import export_onnx  # noqa: E402
from distill.export.qad import export_config, export_int8, plain_ptq  # noqa: E402
from distill.export.qad_config import QADConfig, QADRecord  # noqa: E402
from distill.export.training_run import TrainingRun, provenance  # noqa: E402
from distill.report.stats import mcnemar  # noqa: E402
from distill.student.model import load_student  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def flips(files: dict[str, Path], fp32: Path, images: ImageSet) -> dict[str, np.ndarray]:
    """Per file, [N] bool: its top-1 differs from the fp32 ONNX's on each image."""
    ref = predict_onnx(ort_session(fp32), images).argmax(1)
    return {name: predict_onnx(ort_session(path), images).argmax(1) != ref for name, path in files.items()}


def domain_mean(flags: np.ndarray, domains: np.ndarray, names: list[str]) -> float:
    """Mean over domains of the per-domain disagreement, points (each domain counts once, as the rule's)."""
    return float(np.mean([100.0 * flags[domains == d].mean() for d in names]))


def draw(pool_domains: np.ndarray, names: list[str], size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of one even-per-domain hold-out of ``size`` from the pool (all of a domain when it has fewer)."""
    out = []
    for i, d in enumerate(names):
        idx = np.flatnonzero(pool_domains == d)
        share = size // len(names) + (1 if i < size % len(names) else 0)
        out.append(rng.choice(idx, min(share, len(idx)), replace=False))
    return np.concatenate(out)


def check_rebuild(record: QADRecord, own: ImageSet, on_own: dict[str, np.ndarray]) -> None:
    """The run's own hold-out (``own``), scored again, gives qad.json's figures: the data, fp32 reference and PTQ
    arm were rebuilt as the run had them (else the study would be of other files or images)."""
    for arm, figures in (("ptq", record.ptq.holdout), ("qad", record.qad.holdout)):
        again = {d: 100.0 * float(on_own[arm][own.domains == d].mean()) for d in own.domain_names}
        if set(again) != set(figures) or any(abs(again[d] - figures[d]) > 1e-6 for d in figures):
            raise SystemExit(f"{record.checkpoint}: the rebuilt {arm} arm disagrees with fp32 on {again} pts of the "
                             f"run's hold-out, its qad.json says {figures}: not the run's data or files")


def study(qad_dir: Path, sizes: list[int], draws: int, seed: int) -> tuple[str, list[str]]:
    """One folder's verdict row and its rows per hold-out size."""
    record = QADRecord.read(qad_dir)
    cfg = QADConfig.model_validate({**record.qad_config, "out_dir": str(qad_dir)})
    say = ExportLog(log)
    checkpoint = Path(cfg.checkpoint)
    student = load_student(checkpoint)
    flavour = file_flavour(record, qad_dir)  # the weight range QAD ran with
    run = TrainingRun.of_checkpoint(checkpoint, say)
    ecfg = export_config(cfg, run, say)
    prov = provenance(checkpoint, student, run)
    data = load_export_data(ecfg, student.spec, list(prov.get("source_domains") or []), say, keep_folder=True)
    assert data.calib_picks is not None and data.calib_images is not None
    names = list(dict.fromkeys(data.calib_picks.domains))
    # the verdict: every test image of the calibration domains; the pool: every train image calibration left
    tcfg = ecfg.model_copy(update={"eval_count": None, "eval_domains": tuple(names)})
    test = load_export_data(tcfg, student.spec, names, say).eval_images
    pool = load_holdout_images(ecfg, student.spec, data, 10 ** 9)
    with tempfile.TemporaryDirectory(prefix="qad-holdout-") as work:
        fp32 = Path(work) / "model.fp32.onnx"
        export_onnx(student, fp32, opset=max(cfg.opset, 17), exporter="torchscript")
        ptq = (export_int8(Path(cfg.export_dir), checkpoint, flavour).path if cfg.export_dir
               else plain_ptq(fp32, Path(work), data.calib_images, flavour))
        files = {"ptq": ptq, "qad": qad_dir / record.qad_file}
        on_test, on_pool = flips(files, fp32, test), flips(files, fp32, pool)
        own = load_holdout_images(ecfg, student.spec, data, record.holdout_images)
        check_rebuild(record, own, flips(files, fp32, own))
    t_ptq, t_qad = (domain_mean(on_test[k], test.domains, names) for k in ("ptq", "qad"))
    p_ptq, p_qad = (domain_mean(on_pool[k], pool.domains, names) for k in ("ptq", "qad"))
    paired = mcnemar((~on_test["qad"]).tolist(), (~on_test["ptq"]).tolist())  # "correct": agrees with fp32
    better = "qad" if t_qad < t_ptq else "ptq" if t_ptq < t_qad else "tie"
    cost = {"qad": t_qad - min(t_ptq, t_qad), "ptq": t_ptq - min(t_ptq, t_qad)}
    rng = np.random.default_rng(seed)
    rows, seen = [], set()
    for size in sizes:
        n = len(draw(pool.domains, names, size, rng))
        if n in seen:  # the pool is smaller than this size: the same as the last row
            continue
        seen.add(n)
        picks = []
        for _ in range(draws):
            idx = draw(pool.domains, names, size, rng)
            p, q = (domain_mean(on_pool[k][idx], pool.domains[idx], names) for k in ("ptq", "qad"))
            picks.append("qad" if q < p - 1e-9 else "ptq")
        shipped_qad = 100.0 * np.mean([x == "qad" for x in picks])
        agree = "n/a (tie)" if better == "tie" else f"{100.0 * np.mean([x == better for x in picks]):.0f} %"
        rows.append(f"| {qad_dir.name} | {n} | {shipped_qad:.0f} % | {agree} | "
                    f"{np.mean([cost[x] for x in picks]):.2f} |")
    only = {k: int((on_test[k] & ~on_test[o]).sum()) for k, o in (("ptq", "qad"), ("qad", "ptq"))}
    verdict = (f"| {qad_dir.name} | {record.student} | {len(names)} | {record.holdout_images}, {record.ship} | "
               f"{len(pool)}: {p_ptq:.2f} / {p_qad:.2f} | {len(test)}: {t_ptq:.2f} / {t_qad:.2f} | "
               f"{only['ptq']} / {only['qad']} | {paired.p:.2f} | {better} |")
    return verdict, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("qad_dirs", nargs="+", type=Path, help="finished `distill qad` output folders")
    ap.add_argument("--sizes", default="256,512,1024,2048", help="hold-out sizes to study (all domains together)")
    ap.add_argument("--draws", type=int, default=2000, help="random hold-outs per size")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    studies = [study(d, sizes, args.draws, args.seed) for d in args.qad_dirs]
    model, flags = cpu_flags()
    print(f"{model}; SIMD flags: {' '.join(flags)}\n")
    print("| QAD folder | student | domains | qad.json: hold-out images, file shipped | whole pool: images, "
          "PTQ / QAD disagreement (pts) | whole test split: images, PTQ / QAD (pts) | test images only PTQ / only "
          "QAD flips | McNemar p (test) | better on test |")
    print("|---|---|---:|---|---|---|---|---:|---|")
    for verdict, _ in studies:
        print(verdict)
    print("\n| QAD folder | hold-out images | rule ships QAD | agrees with the test verdict | test pts lost vs the "
          "better file |")
    print("|---|---:|---:|---:|---:|")
    for _, rows in studies:
        print("\n".join(rows))


if __name__ == "__main__":
    main()
