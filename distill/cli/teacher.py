"""``distill teacher bootstrap|eval``: train the offline demo teacher, check any teacher zero-shot."""
from __future__ import annotations

import argparse
import shlex
import sys
import textwrap
from pathlib import Path

from distill import api_teacher  # light: it loads torch and open_clip only when it runs
from distill.data.folder import DomainFolder
from distill.data.listing import left_out_line
from distill.data.split import SplitRule
from distill.errors import DistillError
from distill.records import TEACHER_MANIFEST, TeacherManifest
from distill.spelling import option_names
from distill.teacher.bootstrap.presets import (
    BOOTSTRAP_POOL,
    DEMO_ARCH,
    FULL,
    MIN_BATCHES_PER_EPOCH,
    QUICK,
)
from distill.teacher.pool import teacher_pool
from distill.teacher.prompts import resolve_templates, teacher_manifest_of


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``distill teacher ...`` to the top-level parser."""
    teacher = subparsers.add_parser(
        "teacher", help="bootstrap the offline demo teacher; zero-shot accuracy of an open_clip teacher",
        description="Teacher utilities. No pretrained CLIP can be downloaded offline, so `bootstrap` trains a "
        "small open_clip CLIP on a pretraining pool of your data that no student sees; `eval` measures any open_clip teacher's zero-shot "
        "accuracy per domain.")
    teacher.set_defaults(_parser=teacher)
    sub = teacher.add_subparsers(dest="teacher_command", metavar="SUBCOMMAND")

    boot = sub.add_parser(
        "bootstrap", help="train a small open_clip CLIP (both towers) on a ROOT/DOMAIN/CLASS dataset",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Train an open_clip CLIP from scratch on the pretraining pool of ROOT/DOMAIN/CLASS images "
            "(--pretrain-fraction of each domain, by the same path hash as the students' train/val/test splits), "
            "with captions built from domain and class names, and save OUT/open_clip_model.safetensors + "
            "OUT/teacher.json. No student train, val or test image is ever opened, so the teacher's zero-shot "
            "accuracy is honest, as a web-pretrained CLIP's is; caches and runs must use the same "
            "--pretrain-fraction (data.pretrain_fraction) and split seed. A killed run resumes from its last saved epoch "
            "when rerun (each printed one, at least every minute); "
            "a finished run with the same parameters returns at once, and one with other parameters or data is refused "
            "(never overwritten). Load the result like any local CLIP "
            "checkpoint: --arch ARCH --pretrained OUT/open_clip_model.safetensors.", 88),
        epilog=f"presets: full = {FULL.epochs} epochs, batch {FULL.batch_size}, lr {FULL.lr:g} (about 2 min of one "
        f"CPU core on the built-in digits suite);\n         on a small set the batch shrinks to "
        f"<= 1/{MIN_BATCHES_PER_EPOCH} of the train images and the epochs grow to >= {FULL.min_steps} steps;\n"
        f"         --quick = {QUICK.epochs} epochs, batch {QUICK.batch_size}, "
        f"at most {QUICK.max_per_domain} pool images per domain (seconds; near-chance teacher, for smoke tests).\n"
        "then: distill teacher eval --pretrained OUT/open_clip_model.safetensors --data ROOT")
    boot.add_argument("--data", required=True, metavar="ROOT", help="dataset root laid out as ROOT/DOMAIN/CLASS/image")
    boot.add_argument("--out", required=True, metavar="DIR", help="output folder for the checkpoint and teacher.json")
    boot.add_argument("--pretrain-fraction", type=float, default=BOOTSTRAP_POOL, metavar="F",
                      help="share of each domain kept as the teacher's pretraining pool, never a student's "
                      f"(> 0; default {BOOTSTRAP_POOL}; the split seed is 0 and test/val are unchanged)")
    boot.add_argument("--arch", default=DEMO_ARCH, help=f"open_clip CLIP config to train (default: {DEMO_ARCH})")
    boot.add_argument("--epochs", type=int, metavar="N", help="training epochs (default: the preset's, more on a small set)")
    boot.add_argument("--batch-size", type=int, metavar="B", help="images per step (default: the preset's, less on a small set)")
    boot.add_argument("--lr", type=float, help="peak AdamW learning rate (default: from the preset)")
    boot.add_argument("--max-per-domain", type=int, metavar="N",
                      help="use at most N pool images per domain, 0 = all (default: from the preset)")
    boot.add_argument("--quick", action="store_true", help="seconds-long preset for smoke tests")
    boot.add_argument("--class-map", metavar="F", help="YAML/JSON 'folder: class name' map "
                      "(default: ROOT/classnames.yaml if present)")
    boot.add_argument("--seed", type=int, default=0, help="seed of init, shuffling, captions and augmentation (default: 0)")
    boot.add_argument("--skip-bad", action="store_true",
                      help="leave undecodable pool images (and files whose names are not UTF-8) out, with a warning")
    boot.add_argument("--device", default="cpu",
                      help="auto | cpu | cuda | cuda:N (default: cpu, where resume is bit-identical)")
    boot.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice; "
                      "1 is best on a busy machine, where extra threads mostly wait on each other)")
    boot.set_defaults(func=_bootstrap)

    ev = sub.add_parser(
        "eval", help="zero-shot accuracy per domain of an open_clip teacher (runs it online)",
        description="Zero-shot top-1 accuracy per domain: images through the teacher's own preprocessing, "
        "argmax over the prompt-ensembled class head. When --pretrained is a file with a teacher.json beside it "
        "(a bootstrapped teacher), its arch and templates are the defaults.")
    ev.add_argument("--arch", help="open_clip model name, e.g. ViT-B-32 (default: from teacher.json beside --pretrained)")
    ev.add_argument("--pretrained", metavar="P", help="open_clip tag or local checkpoint file "
                    "(e.g. OUT/open_clip_model.safetensors); omit for random weights")
    ev.add_argument("--data", required=True, metavar="ROOT", help="dataset root laid out as ROOT/DOMAIN/CLASS/image")
    ev.add_argument("--templates-file", metavar="F", help="prompt templates with one '{}': a text file (one per line) "
                    "or JSON (a list, or an object with a 'templates' list such as teacher.json)")
    ev.add_argument("--split", choices=("test", "val", "train", "all"), default="test", help="which split to score (default: test)")
    ev.add_argument("--domains", nargs="+", metavar="D", help="domains to score (default: all)")
    ev.add_argument("--class-map", metavar="F", help="YAML/JSON 'folder: class name' map "
                    "(default: ROOT/classnames.yaml if present)")
    ev.add_argument("--pretrain-fraction", type=float, metavar="F", help="the split rule's pretraining pool "
                    "(default: the pool teacher.json beside --pretrained records, else 0); test and val do not depend on it")
    ev.add_argument("--batch-size", type=int, default=256, metavar="B", help="images per forward pass (default: 256)")
    ev.add_argument("--skip-bad", action="store_true",
                    help="leave undecodable images (and files whose names are not UTF-8) out, with a warning")
    ev.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    ev.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    ev.set_defaults(func=_eval, interrupt_hint="nothing was saved; rerun the same command (it starts over)")


# bootstrap_teacher's names for the flags and the command (its messages name them so: distill/spelling.py)
BOOTSTRAP_NAMES = {"bootstrap_teacher": "teacher bootstrap", "threads": "--threads", "device": "--device"}


def _bootstrap(args: argparse.Namespace) -> int:
    with option_names(BOOTSTRAP_NAMES):  # the one code path: distill.api.bootstrap_teacher
        manifest = api_teacher.bootstrap_teacher(
            args.data, args.out, pretrain_fraction=args.pretrain_fraction, arch=args.arch, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, max_per_domain=args.max_per_domain, quick=args.quick,
            class_map=args.class_map, seed=args.seed, skip_bad=args.skip_bad, device=args.device,
            threads=args.threads, progress=not args.no_progress)
    ckpt = Path(args.out) / manifest.checkpoint
    print(f"teacher checkpoint: {ckpt}")
    print(f"teacher manifest:   {ckpt.parent / TEACHER_MANIFEST}")
    check = ["distill", "teacher", "eval", "--pretrained", str(ckpt), "--data", str(args.data)]
    check += ["--class-map", str(args.class_map)] if args.class_map else []
    check += ["--skip-bad"] if args.skip_bad else []
    print(f"check it:           {shlex.join(check)}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from distill.utils.runtime import torch_threads  # lazy: `distill --help` does not load torch

    if args.threads is not None and args.threads < 1:
        raise DistillError(f"--threads must be >= 1, got {args.threads}")
    with torch_threads(args.threads):  # put back after it, on error too: main() may be called in-process
        return _zero_shot(args)


def _zero_shot(args: argparse.Namespace) -> int:
    # lazy: torch and open_clip load only when this command runs
    from distill.teacher.clip import Teacher
    from distill.teacher.zero_shot import zero_shot_accuracy
    from distill.utils.runtime import resolve_device

    found = teacher_manifest_of(args.pretrained)
    arch = args.arch or (TeacherManifest.read(found).arch if found is not None else None)
    if not arch:
        raise DistillError("--arch is required (no teacher.json beside --pretrained to take it from)")
    templates, source = resolve_templates(args.templates_file, args.pretrained)
    pool = teacher_pool(args.pretrained, args.data)  # a pool from other data: none here
    fraction = args.pretrain_fraction if args.pretrain_fraction is not None else pool[0].fraction if pool else 0.0
    ds = DomainFolder(args.data, SplitRule.of("teacher eval", class_map=args.class_map, pretrain_fraction=fraction),
                      skip_bad=args.skip_bad)
    domains = ds.check_domains(args.domains) if args.domains else ds.domains
    split = None if args.split == "all" else args.split
    skipped = ds.left_out(domains) + ds.skip_undecodable(domains, split) if args.skip_bad else []
    if skipped:
        print(f"warning: {left_out_line('bad image(s) left out', ds.root, skipped)}", file=sys.stderr)
    teacher = Teacher(arch, args.pretrained, ds.classes, templates, device=str(resolve_device(args.device, what="--device")))
    acc = zero_shot_accuracy(teacher, ds, split=split, domains=domains, batch_size=args.batch_size,
                             progress=not args.no_progress)
    if not acc:
        raise DistillError(f"{ds.root}: no {args.split}-split images in domains {', '.join(domains)}")
    counts = {d: len(ds.select([d], split)) for d in acc}
    print(f"teacher {arch} ({args.pretrained or 'random init'}), {len(templates)} templates from {source}")
    print(f"zero-shot top-1, {args.split} split, {len(ds.classes)} classes:")
    width = max(len(d) for d in acc)
    for d, a in acc.items():
        print(f"  {d:<{width}}  {100 * a:6.2f}%  (n={counts[d]})")
    mean = sum(acc.values()) / len(acc)
    print(f"  {'mean':<{width}}  {100 * mean:6.2f}%  (unweighted over domains)")
    return 0
