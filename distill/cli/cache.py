"""``distill cache build|inspect``: run the teacher once over a dataset; look at the result."""
from __future__ import annotations

import argparse
import json
import os
import shlex

from distill.cli._split import add_split_arguments, split_keys_of
from distill.config import parse_eps
from distill.data.listing import shown
from distill.errors import DistillError
from distill.records import CACHE_ADVERSARIAL_DIR, CACHE_MANIFEST, AdversarialManifest, CacheManifest
from distill.utils.io import check_out_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("cache", help="build and inspect teacher caches",
                              description="Teacher caches: the frozen teacher's outputs on disk.")
    p.set_defaults(_parser=p)
    sub = p.add_subparsers(dest="cache_command", metavar="ACTION")

    b = sub.add_parser(
        "build", help="run the teacher over a dataset and write a cache (resumable; torchrun-aware)",
        description="Run an open_clip teacher over ROOT/DOMAIN/CLASS/image and write its embeddings and "
        "zero-shot logits to DIR. Rerun the same command to resume an interrupted build; launch with "
        "`torchrun --nproc_per_node=N -m distill cache build ...` to split the shards over N processes.",
    )
    b.add_argument("--data", required=True, metavar="ROOT", help="dataset root (ROOT/DOMAIN/CLASS/image)")
    b.add_argument("--out", required=True, metavar="DIR", help="cache directory (new, or this same build to resume)")
    b.add_argument("--arch", required=True, help="open_clip model name, e.g. ViT-B-32")
    b.add_argument("--pretrained", required=True,
                   help="open_clip tag, checkpoint file, or 'none' (random weights seeded with 0; tests/timing only)")
    b.add_argument("--templates-file", metavar="F",
                   help="prompt templates with one '{}': a text file (one per line) or JSON (a list, or an object "
                        "with a 'templates' list such as teacher.json) (default: the teacher.json beside a "
                        "bootstrapped --pretrained checkpoint, else 12 built-in templates)")
    b.add_argument("--domains", metavar="a,b", help="comma-separated domains to cache (default: all)")
    b.add_argument("--unlabeled", action="append", default=[], metavar="DIR",
                   help="also cache a folder of unlabeled images outside ROOT (a path, or a folder's name here; any "
                        "image files, flat or nested; "
                        "no class folders), for a run's data.unlabeled pool; its file list is in the cache's "
                        "identity, so a changed folder is refused. Repeat for several folders")
    add_split_arguments(b, unset=("pretrain_fraction",), unset_from="the pool teacher.json beside --pretrained records")
    b.add_argument("--views", type=int, default=1, metavar="K", help="rows per image: 1 clean + K-1 augmented (1)")
    b.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the augmented views (0)")
    b.add_argument("--crop-scale", default="0.25,1.0", metavar="LO,HI", help="random crop area range (0.25,1.0)")
    b.add_argument("--crop-ratio", default="0.75,1.3333333333333333", metavar="LO,HI",
                   help="random crop aspect-ratio range (3/4,4/3)")
    b.add_argument("--hflip", type=float, default=None, metavar="P",
                   help="horizontal flip probability of augmented views; 0 for digits/text (0.5; fm policy: 0)")
    b.add_argument("--policy", choices=("crops", "fm"), default="crops",
                   help="augmented views: crops (crops + flips) or fm (function matching: strong photometric "
                        "ops + mixup/cutmix pairs, replayed exactly from the cache) (crops)")
    b.add_argument("--mixup", type=float, default=None, metavar="A",
                   help="mixup Beta(A, A) of the view policy; 0 turns mixup off (fm: 0.4)")
    b.add_argument("--cutmix", type=float, default=None, metavar="A",
                   help="cutmix Beta(A, A) of the view policy; 0 turns cutmix off (fm: 1.0)")
    b.add_argument("--batch-size", type=int, default=64, metavar="B", help="image views per teacher forward (64)")
    b.add_argument("--adv-views", type=int, default=0, metavar="K",
                   help="also craft K PGD views per image against the teacher and store them with its outputs "
                        "(CACHE/adversarial; for the adv_cached strategy); adds them to a complete cache too (0)")
    b.add_argument("--adv-eps", default="8/255", metavar="EPS", help="their L-inf radius in pixel units (8/255)")
    b.add_argument("--adv-steps", type=int, default=5, metavar="N", help="their PGD steps (5)")
    b.add_argument("--adv-step-size", default=None, metavar="A", help="their PGD step (default 2.5*eps/steps)")
    b.add_argument("--adv-seed", type=int, default=None, metavar="S", help="seed of their random starts (--seed)")
    b.add_argument("--adv-split", choices=("train", "test", "all"), default="train",
                   help="which split gets adversarial views (train)")
    b.add_argument("--adv-domains", metavar="a,b",
                   help="domains (or --unlabeled folders, by their cached name) that get adversarial views "
                        "(default: all cached)")
    b.add_argument("--store-pixels", default=None, metavar="S[,S]",
                   help="also store every view as uint8 pixels at these sizes (224 or 224x192), so training "
                        "at that input size never decodes a JPEG (3*H*W bytes per row)")
    b.add_argument("--pixel-interpolation", default="bicubic",
                   help="resize filter of the stored pixels: the student's (bicubic)")
    b.add_argument("--pixel-codec", default="raw", metavar="CODEC",
                   help="how --store-pixels keeps each view: raw (exact uint8, 3*H*W bytes, no decode), jpeg or "
                        "webp (encoded at the student's size, ~5-15x smaller, decoded by the training workers; "
                        "lossy: training is then not byte-identical to raw) (raw)")
    b.add_argument("--pixel-quality", type=int, default=None, metavar="Q",
                   help="quality 1..100 of --pixel-codec jpeg/webp (90)")
    b.add_argument("--shard-size", type=int, default=1024, metavar="S", help="images per shard (1024)")
    b.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="stored dtype (float16)")
    b.add_argument("--fingerprint", choices=("paths", "content"), default="paths",
                   help="dataset identity recorded in the manifest and checked by every run: paths + file sizes "
                        "(paths, reads no image), or also every image's bytes hashed (content: catches an image "
                        "re-encoded or edited to the same size, costs one read of the data set per build and run)")
    b.add_argument("--logits", choices=("full", "topk", "none"), default="full",
                   help="teacher logits per row: full (C values), topk (the --topk largest + their classes, TinyViT "
                        "style; the rest filled so the softmax keeps their mass) or none (recomputed from the "
                        "embedding and the text head: exact up to --dtype) (full)")
    b.add_argument("--topk", type=int, default=None, metavar="K", help="K of --logits topk (e.g. 100)")
    b.add_argument("--no-embeddings", action="store_true",
                   help="do not store image embeddings (only for strategies that read logits alone: kd, erm, ...)")
    b.add_argument("--skip-bad", action="store_true", help="skip undecodable images (listed in the manifest)")
    b.add_argument("--workers", type=int, default=None, metavar="N",
                   help="decode workers per process (cores - 1; 0 for a set of one --batch-size batch)")
    b.add_argument("--device", default="auto",
                   help="auto | cpu | cuda | cuda:N (auto: cuda:LOCAL_RANK under torchrun, else cuda:0, else cpu)")
    b.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="the teacher's inference dtype (autocast; fp16 on CUDA only). Recorded in the cache's "
                        "identity (teacher.precision): a run with an online teacher must use the same (fp32)")
    b.set_defaults(func=_build)

    i = sub.add_parser("inspect", help="show a cache's teacher, rows, size, zero-shot accuracy, compute saved",
                       description="Show what a teacher cache holds.")
    i.add_argument("dir", metavar="DIR", help="cache directory")
    i.add_argument("--json", action="store_true", help="print the same as JSON")
    i.set_defaults(func=_inspect)


# ---------------------------------------------------------------------- build
def _pair(text: str, flag: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise DistillError(f"{flag} expects two comma-separated numbers LO,HI, got '{text}'") from None
    return lo, hi


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(d.strip() for d in text.split(",") if d.strip()) if text else None


def _build(args: argparse.Namespace) -> int:
    # lazy: the cache package pulls torch and torchvision (seconds); `distill --help` does not need them
    from distill.teacher.cache import AdversarialOptions, CacheOptions, PixelOptions, parse_sizes, pixel_dir_name
    from distill.teacher.cache.job import CacheBuildConfig, run_cache_build  # lazy: as above
    from distill.teacher.cache.view_options import view_settings  # lazy: as above (kornia)

    if args.views < 1:
        raise DistillError(f"--views must be >= 1, got {args.views}")
    pixel_sizes = parse_sizes(args.store_pixels or "")
    pixels = PixelOptions(tuple(pixel_sizes), args.pixel_interpolation, args.pixel_codec, args.pixel_quality)
    if pixels.codec != "raw" and not pixel_sizes:
        raise DistillError(f"--pixel-codec {pixels.codec}: needs --store-pixels SIZE (the store it encodes)")
    # the flags as CacheOptions' augment and policy, by the function the Python API's mappings go through
    augment, policy = view_settings({"scale": _pair(args.crop_scale, "--crop-scale"),
                                     "ratio": _pair(args.crop_ratio, "--crop-ratio"), "hflip": args.hflip},
                                    {"name": args.policy, "mixup": args.mixup, "cutmix": args.cutmix})
    if args.adv_views < 0:
        raise DistillError(f"--adv-views must be >= 0, got {args.adv_views}")
    out = check_out_dir(args.out)  # before the teacher loads: --out a file is one line at once
    was_complete = CacheManifest.exists_in(out)
    options = CacheOptions(domains=_names(args.domains), views=args.views, seed=args.seed, augment=augment,
                           policy=policy,
                           batch_size=args.batch_size, shard_size=args.shard_size, dtype=args.dtype,
                           fingerprint=args.fingerprint, logits=args.logits, topk=args.topk,
                           embeddings=not args.no_embeddings)
    adversarial = AdversarialOptions(
        views=args.adv_views, epsilon=parse_eps(args.adv_eps), steps=args.adv_steps,
        step_size=None if args.adv_step_size is None else parse_eps(args.adv_step_size), seed=args.adv_seed,
        split=None if args.adv_split == "all" else args.adv_split, domains=_names(args.adv_domains))
    run_cache_build(CacheBuildConfig(
        data=args.data, out=out, arch=args.arch, pretrained=args.pretrained, templates_file=args.templates_file,
        split=split_keys_of(args), unlabeled=tuple(args.unlabeled), options=options, adversarial=adversarial, pixels=pixels,
        skip_bad=args.skip_bad, workers=args.workers, progress=not args.no_progress, device=args.device,
        precision=args.precision))
    if int(os.environ.get("RANK", 0)) == 0:
        m = CacheManifest.read(out)
        state = "already complete" if was_complete else "written"
        skipped = f", {len(m.skipped)} image(s) skipped (listed in {CACHE_MANIFEST})" if m.skipped else ""
        images = f"({m.dataset.cached_images} images - {len(m.skipped)} skipped)" if m.skipped else \
            f"{m.dataset.cached_images} images"
        print(f"teacher cache {state}: {out} ({m.rows} rows = {images} x "
              f"{m.views.count} view(s), {len(m.shards)} shard(s){skipped})")
        for f in m.dataset.unlabeled_folders or []:
            print(f"unlabeled folder {shown(f.path)}: {f.images} images, cached as '{f.name}' (a run pools it "
                  f"with data.unlabeled=[{shown(f.path)}])")  # shown: a path that is not UTF-8 as \\xNN
        if m.views.policy is not None:
            print(f"view policy: {_policy_line(m.views.policy)}")
        if args.adv_views:
            a = AdversarialManifest.read(out / CACHE_ADVERSARIAL_DIR)
            print(f"adversarial views: {out / CACHE_ADVERSARIAL_DIR} ({a.rows} = {a.images} {a.split or 'all'} "
                  f"images x {a.views}; eps {a.epsilon:.4f}, {a.steps} PGD steps, seed {a.seed})")
        for size in pixel_sizes:
            how = "uint8" if pixels.codec == "raw" else f"{pixels.codec} quality {pixels.quality}, lossy"
            print(f"pixel store: {out / pixel_dir_name(size, args.pixel_interpolation)} (each row's view, "
                  f"{size[0]}x{size[1]} {how})")
        print(f"inspect it with: distill cache inspect {shlex.quote(str(out))}")
    return 0


# ---------------------------------------------------------------------- inspect
def _si(value: float, unit: str) -> str:
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _policy_line(policy: dict) -> str:
    """One line of a view policy: its name, the photometric ops that can fire, the mix."""
    ph, mix = policy.get("photometric", {}), policy.get("mix", {})
    ops = [f"{k} {ph[k]:g}" for k in ("jitter", "grayscale", "invert", "solarize", "blur", "noise", "jpeg")
           if ph.get(k)]
    mixes = [f"{k} {mix[k]:g}" for k in ("mixup_alpha", "cutmix_alpha") if mix.get(k)]
    return (f"{policy.get('name')}: photometric {', '.join(ops) or 'none'}; mix "
            f"{(', '.join(mixes) + ', prob ' + format(mix.get('prob', 0), 'g')) if mixes else 'none'}; "
            f"hflip {policy.get('crop', {}).get('hflip', 0):g} (kornia {policy.get('kornia_version')})")


def _inspect(args: argparse.Namespace) -> int:
    from distill.teacher.cache import TeacherCache  # lazy: as in _build

    s = TeacherCache.open(args.dir).summary()
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    t = s["teacher"]
    pretrained = t["pretrained"] + (f" (sha256 {t['checkpoint_sha256'][:12]})" if t.get("checkpoint_sha256") else "") \
        if t["pretrained"] else "none (random weights)"
    print(f"cache     {s['path']}  ({_si(s['size_bytes'], 'B')} on disk, {s['shards']} shard(s), "
          f"created {s['created']})")
    print(f"teacher   {t['arch']}  pretrained {pretrained}  {t.get('precision', 'fp32')}  (open_clip {t['open_clip_version']}, "
          f"torch {t['torch_version']}, {s['templates']} prompt templates)")
    print(f"classes   {len(s['classes'])}: {', '.join(s['classes'])}")
    minus = f" - {len(s['skipped'])} skipped" if s["skipped"] else ""
    lay = s["layout"]
    held = [f"image_emb {s['shapes']['image_emb']}"] if lay["embeddings"] else ["no image_emb"]
    held.append({"full": f"logits {s['shapes'].get('logits')}", "topk": f"top-{lay['topk']} logits",
                 "none": "logits recomputed from image_emb"}[lay["logits"]])
    print(f"rows      {s['rows']} = ({s['images']} images{minus}) x {s['views']} view(s); dtype {s['dtype']}; "
          + ", ".join(held))
    rule = s["split"]
    pool = (f"teacher pool: pretrain_fraction {rule['pretrain_fraction']:g} of each domain held out, never cached"
            if rule["pretrain_fraction"] > 0 else "no teacher pool")
    print(f"split     test_fraction {rule['test_fraction']:g}, val_fraction {rule['val_fraction']:g}, split_seed "
          f"{rule['split_seed']}; {pool}")
    if s["bytes_per_row"] is not None:
        print(f"row size  {s['bytes_per_row']:.0f} B per row on disk (mapped; in memory: the index columns, "
              f"~23 B per row)")
    if s["policy"] is not None:
        print(f"views     policy {_policy_line(s['policy'])}")
    print(f"skipped   {len(s['skipped'])}" + "".join(f"\n            {k['path']}: {k['reason']}" for k in s["skipped"]))
    for f in s.get("unlabeled_folders", []):
        print(f"unlabeled {f['name']}: {f['images']} images from {f['path']} (no labels; files_sha256 "
              f"{f['files_sha256'][:12]})")
    print("zero-shot accuracy of the teacher (view 0):")
    print(f"  {'domain':<20} {'train':>8} {'test':>8}")
    for d in s["domains"]:
        acc = s["zero_shot_accuracy"].get(d, {})
        cells = [f"{100 * acc[k]:7.1f}%" if k in acc else f"{'-':>8}" for k in ("train", "test")]
        print(f"  {d:<20} {cells[0]} {cells[1]}")
    adv = s["adversarial"]
    if adv is not None and not adv["complete"]:
        print(f"adversarial views: unfinished build in {adv['path']} (rerun `distill cache build ... --adv-views K` "
              "to resume)")
    elif adv is not None:
        eps = f"{adv['epsilon'] * 255:g}/255"
        print(f"adversarial views: {adv['rows']} rows = {adv['images']} images x {adv['views']} "
              f"({', '.join(adv['domains'])}, {adv['split'] or 'all'} split; PGD-{adv['steps']} eps {eps}; "
              f"{_si(adv['size_bytes'], 'B')})")
        print(f"  teacher accuracy on those images: clean {100 * adv['teacher_accuracy_clean']:.1f}%, "
              f"adversarial {100 * adv['teacher_accuracy_adversarial']:.1f}%")
    if s["teacher_flops_per_image"] is not None:
        print(f"teacher compute saved per training epoch: {_si(s['teacher_flops_per_image'], 'FLOP')}/image x "
              f"{s['train_rows']} train rows = {_si(s['teacher_flops_saved_per_epoch'], 'FLOP')}")
    return 0
