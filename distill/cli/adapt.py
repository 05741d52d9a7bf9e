"""``distill adapt``: source-free domain adaptation of a trained student to unlabeled target domains."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distill.cli.train import NO_PROGRESS, resume_hint, resumed_config
from distill.errors import DistillError
from distill.records import RUN_CONFIG, pct


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adapt",
        help="source-free adaptation of a trained student to unlabeled target domains (sfda, shot, teacher_pl)",
        description="Adapt a source-trained student (RUN/checkpoints/best of `distill train`) to target domains "
        "whose labels are never used, without reading any source image: the run trains on the targets' train split "
        "(labels hidden) and reports accuracy on their test split. Strategies:\n"
        "  sfda        teacher zero-shot + source model fused, kNN-denoised pseudo-labels; IM + KD + PL (default)\n"
        "  shot        SHOT (Liang et al. 2020): IM + centroid pseudo-labels, frozen head; needs no cache\n"
        "  teacher_pl  cross-entropy on the teacher's zero-shot pseudo-labels\n"
        "Several --cache (one per teacher) are fused per image by reliability (sfda). The split rule is the first "
        "cache's; without one (shot), the source checkpoint's run's (its config.yaml); a rule other than the source "
        "run's is one warning line (its target test images differ). Examples:\n"
        "  distill adapt --source-checkpoint runs/erm/checkpoints/best --target mnist_m \\\n"
        "      --cache demo_out/cache --data demo_out/data/digits-full-seed0 --out runs/sfda-mnist_m\n"
        "  distill adapt ... --strategy shot --set optim.epochs=15 --set strategy.beta=0.5\n"
        "  distill adapt --resume runs/sfda-mnist_m      # continue an interrupted adaptation",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source-checkpoint", type=Path, metavar="CKPT",
                   help="source-trained student checkpoint folder (RUN/checkpoints/best) (required)")
    p.add_argument("--target", metavar="DOMAIN[,DOMAIN]", help="target domain(s), comma-separated (required)")
    p.add_argument("--data", type=Path, metavar="ROOT", help="dataset root (ROOT/DOMAIN/CLASS/image) (required)")
    p.add_argument("--cache", action="append", default=[], type=Path, metavar="DIR",
                   help="teacher cache (repeat for several teachers); required by sfda and teacher_pl")
    p.add_argument("--strategy", default="sfda", help="sfda (default), shot or teacher_pl; each brings its own "
                   "optimizer defaults where it needs them (shot: lr 5e-4; the others: lr 3e-3)")
    p.add_argument("--out", type=Path, metavar="RUN", help="run directory (default runs/adapt-STRATEGY-TARGETS)")
    p.add_argument("--source-domains", metavar="a,b",
                   help="the checkpoint's source domains, if its student.json does not record them")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave undecodable target images out (listed once); a cache's skipped images always are")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. optim.epochs=20 or strategy.teacher_weight=0.5 (repeatable)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help=f"continue the adaptation in RUN_DIR from its last checkpoint (uses RUN_DIR/{RUN_CONFIG}; "
                        "no other option with it but --no-progress)")
    p.set_defaults(func=_run, _parser=p)


#: the options that define an adaptation (not allowed with --resume, required without it)
DEFINING = ("source_checkpoint", "target", "data")


def _run(args: argparse.Namespace) -> int:
    # lazy: torch, timm and the strategies load only when this command runs, not at every `distill` start-up
    from distill.train import train
    from distill.train.adapt import adapt_strategy, adapt_train_config

    progress = [NO_PROGRESS] if args.no_progress else []
    if args.resume is not None:
        given = [f"--{k.replace('_', '-')}" for k in (*DEFINING, "out", "source_domains") if getattr(args, k)]
        given += [flag for flag, on in (("--cache", args.cache), ("--set", args.overrides), ("--skip-bad", args.skip_bad),
                                         ("--strategy", args.strategy != "sfda")) if on]
        if given:
            raise DistillError(f"--resume continues the adaptation exactly as configured (RUN_DIR/{RUN_CONFIG}); "
                               f"{', '.join(given)} not allowed with it")
        args.interrupt_hint = resume_hint("adapt", args.resume)
        summary = train(resumed_config(args.resume, progress), resume=True, out_flag="--resume", command="adapt")
    else:
        missing = [f"--{k.replace('_', '-')}" for k in DEFINING if getattr(args, k) is None]
        if missing:
            args._parser.error(f"the following arguments are required: {', '.join(missing)} (or --resume RUN_DIR)")
        strategy_cls = adapt_strategy(args.strategy)
        sources = [d.strip() for d in args.source_domains.split(",") if d.strip()] if args.source_domains else None
        cfg = adapt_train_config(args.source_checkpoint, args.target, args.data, cache=args.cache,
                                 strategy=args.strategy, out=args.out, source_domains=sources,
                                 items=args.overrides + (["data.skip_bad=true"] if args.skip_bad else []) + progress)
        if strategy_cls.optim_defaults:
            own = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in strategy_cls.optim_defaults.items())
            print(f"strategy '{args.strategy}' brings its own optim defaults: {own} (--set optim.KEY=VALUE overrides)",
                  file=sys.stderr)
        args.interrupt_hint = resume_hint("adapt", cfg.run.out)
        summary = train(cfg, out_flag="--out")
    if summary is not None:
        accs = "  ".join(f"{d} {pct(v)}" for d, v in summary.test_acc.items())
        print(f"adapted checkpoint: {summary.checkpoint}  (kept: last epoch, {summary.best_epoch}; no labels "
              f"to select on; target test accuracy: {accs})")
    return 0
