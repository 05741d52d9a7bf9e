"""``distill demo``: the main job, end to end and offline."""
from __future__ import annotations

import argparse
from pathlib import Path

from distill.api import require_onnxruntime


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run the whole pipeline offline on the built-in digits suite",
        description="Materialize the built-in digits suite, bootstrap an honest demo teacher (a small open_clip CLIP, "
        "pretrained on a pool no student sees, that stands in for a real one), cache its outputs on augmented views, "
        "train erm, function-matching (source only, + unlabeled target images) and open-vocabulary students, adapt "
        "source-free, export, benchmark and report. Rerunning skips finished stages and resumes interrupted ones.")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="where every artifact goes (default demo_out)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: seconds, for tests and smoke checks")
    p.add_argument("--adversarial", action="store_true",
                   help="also craft PGD views against the teacher and train adv_cached (robustness table; minutes)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    require_onnxruntime()  # the demo exports and benchmarks: say so now, not after its training stages
    from distill.demo import run_demo  # lazy: the demo imports torch and open_clip; `distill --help` stays fast

    run_demo(args.out, quick=args.quick, progress=not args.no_progress, adversarial=args.adversarial)
    return 0
