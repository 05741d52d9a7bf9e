"""How many layers must stay float for int8 to reach the 1-point target, and what does int8 then cost? (issue 21)

    PYTHONPATH=. .venv/bin/python benchmarks/fallback_frontier.py --run s0=RUN0 --run s1=RUN1 --run s2=RUN2 \\
        --data-root DEMO_OUT/data/digits-full-seed0 --cache DEMO_OUT/cache --out /tmp/frontier

RUN: a training run folder (``summary.json``, ``checkpoints/best``), e.g. ``make demo``'s ``runs/fm_unlabeled`` or
one trained the same way with another ``run.seed`` (``distill.demo.demo_recipe`` + ``train_or_resume``).
``--data-root`` / ``--cache`` name the run's data and teacher cache (a run's saved paths may point at a folder that
moved; given here, they win). Each run is exported once with the demo's settings (``distill.demo_ship.
export_settings``: fp32 + int8 ort-cpu, MinMax on 256 calibration images of the source *and* target domains, float
fallback up to 10 layers) through ``distill.api.export``; the product's ``greedy_fallback`` is wrapped (as
benchmarks/fallback_holdout.py does), so inside the export, with the export's own calibration, ranking
(``rank_layers``: KL on 128 calibration images, one candidate float at a time) and quantization:

- the frontier: for each k of ``--ks`` (``all``: every candidate), the int8 ort-cpu file with the top-k ranked layers
  kept float (``Int8Step.quantize_excluding``, what the export would ship with them), and its worst-domain top-1
  disagreement with fp32 on the calibration images (``Int8Step.disagreement``, the export's measure);
- with ``--fallback-outputs`` (the product's option; the demo's export: off) also ``every-candidate``: every node
  any candidate leaves float (every layer, and every hardswish/SiLU after one), the end of the fallback's reach;
- the product's greedy search with ``--search-cap`` (40) layers, once, and where it stops; then the search as the
  demo runs it (cap 10), whose file the export ships.

Each file is then scored on every test image of the 4 domains against the export's fp32 ONNX (top-1 disagreement,
points: mean over domains and worst domain, ``qad_arms.figures``), its Q/DQ nodes counted, and fp32 and every file
timed interleaved (``int8_students.interleaved_ratios`` over ``distill.bench.compare.compare_latency``: batch 1 and
32, 1 thread, median of ``--repeats``). Prints per-run and mean ± std tables (Markdown for benchmarks/RESULTS.md) and
the smallest k reaching ``--target`` points on the calibration and on the test worst domain. A run's figures go to
``OUT/TAG/frontier.json``; a rerun reuses them (``--records-only`` prints what is there).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from float_fallback import test_split  # noqa: E402
from int8_students import cpu_flags, interleaved_ratios  # noqa: E402
from qad_arms import figures, fmt, log  # noqa: E402

import distill.export.int8_step as int8_step  # noqa: E402
from distill import api  # noqa: E402
from distill.demo_ship import export_settings  # noqa: E402
from distill.export.evaluate import predict_onnx  # noqa: E402
from distill.export.fallback import FallbackResult, best_variants  # noqa: E402
from distill.export.float_outputs import excluded_nodes  # noqa: E402
from distill.records import ExportReport  # noqa: E402

RECORD = "frontier.json"
GREEDY = ("greedy-demo", "greedy-cap")  # the search as the demo runs it (its cap), and with --search-cap


def ks_of(text: str, candidates: int) -> list[int]:
    """``"0,1,2,all"`` -> [0, 1, 2, candidates], each at most ``candidates``, sorted, no repeats."""
    ks = {candidates if t == "all" else min(int(t), candidates) for t in text.split(",") if t}
    return sorted(ks)


def qdq_nodes(path: Path) -> int:
    """QuantizeLinear + DequantizeLinear nodes in an ONNX file."""
    return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in onnx.load(str(path)).graph.node)


def frontier_hook(out: Path, ks_text: str, cap: int, record: dict[str, Any]) -> Callable[..., Any]:
    """A stand-in for ``int8_step.greedy_fallback``: the frontier files and the cap search, then the product's own
    search (its file ships); files go to ``out``, figures to ``record``."""
    search = int8_step.greedy_fallback

    def fallback(quantize_excluding: Callable[[list[str]], Path], ranked: list[dict[str, Any]],
                 measure: Callable[[Path], dict[str, float]], baseline: dict[str, float], max_drop: float,
                 max_layers: int, **kw: Any) -> tuple[FallbackResult, Path | None]:
        out.mkdir(parents=True, exist_ok=True)
        order = best_variants(ranked)
        rows = []
        for k in ks_of(ks_text, len(order)):
            path = quantize_excluding([n for c in order[:k] for n in excluded_nodes(c)])
            dst = out / f"k{k}.onnx"
            shutil.copyfile(path, dst)
            rows.append({"name": f"k{k}", "k": k, "file": str(dst), "kept_float": [c["node"] for c in order[:k]],
                         "calib_pts": measure(path)})
            log(f"  frontier k={k}: calibration worst {max(rows[-1]['calib_pts'].values()):.2f} pts")
        if any(c.get("float_output") for c in ranked):  # every node any candidate leaves float: the reach's end
            nodes = list(dict.fromkeys(n for c in ranked for n in excluded_nodes(c)))
            path = quantize_excluding(nodes)
            dst = out / "every-candidate.onnx"
            shutil.copyfile(path, dst)
            rows.append({"name": "every-candidate", "k": len(order), "file": str(dst), "excluded": nodes,
                         "calib_pts": measure(path)})
        greedy, shipped = {}, None
        for name, layers in zip(GREEDY, (max_layers, cap)):
            res, chosen = search(quantize_excluding, ranked, measure, baseline, max_drop, layers)
            shipped = shipped or (res, chosen)  # the first: the demo's search, whose file the export ships
            dst = out / f"{name}.onnx"
            shutil.copyfile(chosen if chosen is not None else quantize_excluding([]), dst)
            greedy[name] = {"cap": layers, "satisfied": res.satisfied, "kept_float": res.kept_float,
                            "trials": len(res.steps), "calib_pts": res.disagreement_pts, "file": str(dst),
                            "worst_after_each_accept": [max(s["disagreement_pts"].values())
                                                        for s in res.steps if s["accepted"]]}
            log(f"  greedy cap {layers}: {len(res.kept_float)} layer(s) kept after {len(res.steps)} trials, "
                f"calibration worst {max(res.disagreement_pts.values()):.2f} pts, satisfied {res.satisfied}")
        record.update({"candidates": len(order), "ranked": [c["node"] for c in order], "baseline_pts": baseline,
                       "frontier": rows, "greedy": greedy})
        assert shipped is not None
        return shipped

    return fallback


def export_with_frontier(ckpt: Path, out: Path, cfg: Any, ks_text: str, cap: int) -> tuple[ExportReport, dict]:
    record: dict[str, Any] = {}
    real = int8_step.greedy_fallback
    int8_step.greedy_fallback = frontier_hook(out / "frontier", ks_text, cap, record)  # type: ignore[assignment]
    try:
        rep = api.export(ckpt, out / "export", cfg)
    finally:
        int8_step.greedy_fallback = real  # type: ignore[assignment]
    if not record:
        raise SystemExit(f"{ckpt}: all-int8 met --max-drop, the fallback never ran (no frontier to draw)")
    return rep, record


def one_run(tag: str, run: Path, args: argparse.Namespace) -> dict[str, Any]:
    rec_file = args.out / tag / RECORD
    if rec_file.is_file():
        log(f"{tag}: {rec_file} exists (reused)")
        old = dict(json.loads(rec_file.read_text()))
        if args.retime:
            old.setdefault("fp32_file", str(args.out / tag / "export" / "model.fp32.onnx"))
            old["latency"] = timed(old, args)
            rec_file.write_text(json.dumps(old, indent=1))
        return old
    ckpt = run / "checkpoints" / "best"
    summary = json.loads((run / "summary.json").read_text())
    cfg = export_settings(quick=False, targets=summary["target_domains"]).with_updates(
        data_root=str(args.data_root), caches=(str(args.cache),), fallback_outputs=args.fallback_outputs)
    log(f"{tag}: export {ckpt}")
    rep, record = export_with_frontier(ckpt, args.out / tag, cfg, args.ks, args.search_cap)
    fp32 = args.out / tag / "export" / next(m for m in rep.models if m.precision == "fp32").file
    files = {r["name"]: Path(r["file"]) for r in record["frontier"]}
    files.update({name: Path(g["file"]) for name, g in record["greedy"].items()})
    images = test_split(cfg, ckpt)
    names = list(images.domain_names)
    ref = predict_onnx(fp32, images).argmax(1)
    fp32_right = ref == images.labels
    test = {}
    for name, path in files.items():
        top1 = predict_onnx(path, images).argmax(1)
        s = figures(top1 != ref, top1 == images.labels, fp32_right, images.domains, names)
        test[name] = {"mean": s.disagree_mean, "worst": s.disagree_worst, "acc_drop_worst": s.acc_drop_worst,
                      "qdq": qdq_nodes(path)}
    result = {"tag": tag, "run": str(run), "summary_test_acc": summary.get("test_acc"), "test_images": len(images),
              "calib_count": rep.config.get("calib_count"), "fp32_file": str(fp32), **record, "test": test}
    result["latency"] = timed(result, args)
    rec_file.write_text(json.dumps(result, indent=1))
    return result


def timed(r: dict[str, Any], args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]]]:
    """fp32 and every file of a run timed interleaved, per batch size: ``iters`` timed runs each at every batch."""
    files = {f["name"]: Path(f["file"]) for f in r["frontier"]}
    files.update({name: Path(g["file"]) for name, g in r["greedy"].items()})
    latency = {}
    for batch in args.batches:
        # interleaved_ratios times a third of ``iters`` above batch 1: ask for 3x, so every batch gets ``iters``
        got = interleaved_ratios({"fp32": Path(r["fp32_file"]), **files}, batch, 1,
                                 args.iters if batch == 1 else 3 * args.iters, args.repeats)
        latency[str(batch)] = {name: {"ratio": v[0], "fp32_ms": v[1], "ms": v[2]} for name, v in got.items()}
        log(f"{r['tag']}: batch {batch} ratios " + ", ".join(f"{n} {v[0]:.2f}" for n, v in got.items()))
    return latency


def smallest_k(r: dict[str, Any], key: str, target: float) -> str | None:
    """The frontier's first file (fewest layers float) whose worst domain is within ``target`` points (``key``:
    calib or test), by name."""
    for row in r["frontier"]:
        worst = max(row["calib_pts"].values()) if key == "calib" else r["test"][row["name"]]["worst"]
        if worst <= target:
            return str(row["name"])
    return None


def render(rows: list[dict[str, Any]], target: float, batches: list[str]) -> str:
    lines = []
    names = [f["name"] for f in rows[0]["frontier"]] + list(GREEDY)
    head = ("| run | file | layers float | calib worst (pts) | test mean / worst (pts) | test acc drop worst (pts) | "
            "Q/DQ nodes | " + " | ".join(f"int8/fp32 b{b}" for b in batches) + " |")
    lines += [head, "|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(batches)]
    for r in rows:
        by = {f["name"]: f for f in r["frontier"]}
        for n in names:
            f = by.get(n) or r["greedy"][n]
            k = f["k"] if "k" in f else len(f["kept_float"])
            t = r["test"][n]
            lines.append(f"| {r['tag']} | {n} | {k} | {max(f['calib_pts'].values()):.2f} | {t['mean']:.2f} / "
                         f"{t['worst']:.2f} | {t['acc_drop_worst']:+.2f} | {t['qdq']} | "
                         + " | ".join(f"{r['latency'][b][n]['ratio']:.2f}x" for b in batches) + " |")
    lines += ["", f"Mean ± std over {len(rows)} run(s) ({', '.join(r['tag'] for r in rows)}):", ""]
    lines += ["| file | layers float | calib worst (pts) | test mean (pts) | test worst (pts) | Q/DQ nodes | "
              + " | ".join(f"int8/fp32 b{b}" for b in batches) + " |",
              "|---|---:|---:|---:|---:|---:|" + "---:|" * len(batches)]
    common = [n for n in names if all(n in r["test"] for r in rows)]
    for n in common:
        fs = [next((f for f in r["frontier"] if f["name"] == n), None) or r["greedy"][n] for r in rows]
        lay = [float(f["k"] if "k" in f else len(f["kept_float"])) for f in fs]
        lines.append(f"| {n} | {fmt(lay)} | {fmt([max(f['calib_pts'].values()) for f in fs])} | "
                     f"{fmt([r['test'][n]['mean'] for r in rows])} | {fmt([r['test'][n]['worst'] for r in rows])} | "
                     f"{fmt([float(r['test'][n]['qdq']) for r in rows])} | "
                     + " | ".join(f"{fmt([r['latency'][b][n]['ratio'] for r in rows])}x" for b in batches) + " |")
    lines += [""]
    for r in rows:
        parts = []
        for key in ("calib", "test"):
            k = smallest_k(r, key, target)
            lat = (", int8/fp32 " + ", ".join(f"b{b} {r['latency'][b][k]['ratio']:.2f}x" for b in batches)
                   if k is not None else "")
            parts.append(f"{key} worst <= {target}: " + (f"{k} of {r['candidates']} candidates{lat}" if k is not None
                                                         else f"none of the frontier ({r['candidates']} candidates)"))
        g = r["greedy"]["greedy-cap"]
        parts.append(f"greedy cap {g['cap']}: {len(g['kept_float'])} kept after {g['trials']} trials, calib worst "
                     f"{max(g['calib_pts'].values()):.2f}, satisfied {g['satisfied']} (worst after each accept: "
                     + ", ".join(f"{w:.1f}" for w in g["worst_after_each_accept"]) + ")")
        lines.append(f"- {r['tag']}: " + "; ".join(parts))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, help="TAG=RUN_FOLDER (repeated)")
    ap.add_argument("--data-root", type=Path, required=True, help="the runs' data root (the demo's data/digits-...)")
    ap.add_argument("--cache", type=Path, required=True, help="the runs' teacher cache (the demo's cache/)")
    ap.add_argument("--out", type=Path, required=True, help="OUT/TAG/{export,frontier,frontier.json}")
    ap.add_argument("--ks", default="0,1,2,4,8,16,32,all", help="layers kept float, top of the product's ranking")
    ap.add_argument("--search-cap", type=int, default=40, help="max_fallback_layers of the extra greedy search")
    ap.add_argument("--target", type=float, default=1.0, help="points of worst-domain disagreement (issue 21: 1)")
    ap.add_argument("--batches", default="1,32", help="latency batch sizes")
    ap.add_argument("--iters", type=int, default=50, help="timed runs per file per comparison at batch 1")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved comparisons per batch (median reported)")
    ap.add_argument("--fallback-outputs", action="store_true", help="distill export --fallback-outputs (candidates "
                    "with their output and activation float too; the demo: off)")
    ap.add_argument("--retime", action="store_true", help="time the files of finished runs again")
    ap.add_argument("--records-only", action="store_true", help="print the tables of OUT/TAG/frontier.json")
    args = ap.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    runs = []
    for spec in args.run:
        tag, sep, folder = spec.partition("=")
        if not sep or not (Path(folder) / "summary.json").is_file():
            ap.error(f"--run {spec!r}: want TAG=RUN_FOLDER, a finished run (RUN_FOLDER/summary.json)")
        runs.append((tag, Path(folder)))
    rows = []
    for tag, run in runs:
        f = args.out / tag / RECORD
        if args.records_only:
            if f.is_file():
                rows.append(json.loads(f.read_text()))
        else:
            rows.append(one_run(tag, run, args))
    if not rows:
        raise SystemExit(f"no {RECORD} under {args.out}")
    model, flags = cpu_flags()
    print(f"{model}; SIMD flags: {' '.join(flags)}; {rows[0]['test_images']} test images; latency 1 thread, "
          f"{args.iters} runs per file per batch size, median of {args.repeats} interleaved comparisons\n")
    print(render(rows, args.target, [str(b) for b in args.batches]))


if __name__ == "__main__":
    main()
