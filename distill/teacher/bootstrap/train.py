"""Bootstrap a small open_clip teacher offline, for demos and tests.

No pretrained CLIP can be downloaded offline, so the demo trains one: an open_clip ``CLIP``
built from one of this package's plain JSON configs (both towers, random init) is trained
contrastively on the *pretraining pool* of a ``ROOT/DOMAIN/CLASS`` dataset (its ``pretrain`` split,
``pretrain_fraction`` of each domain by the same path hash as test and val), with captions made from
domain and class names ("a mnist m image of a seven."). Like real CLIP, whose web pretraining did not
include your evaluation images, it never sees a student's train, val or test image, so its zero-shot
numbers rest on no student-side label. The result is saved as
``OUT/open_clip_model.safetensors`` and loads through exactly the code path of a downloaded
CLIP::

    Teacher(DEMO_ARCH, pretrained="OUT/open_clip_model.safetensors",
            class_names=ds.classes, templates=DEMO_TEMPLATES)

``OUT/teacher.json`` records the architecture, the zero-shot templates to use with it
(:data:`~distill.teacher.bootstrap.presets.DEMO_TEMPLATES`, free of domain words), classes, dataset fingerprint, training
hyper-parameters, the pool (``dataset.pretrain``: fraction, split rule, image count; cache builds and
training runs refuse a split rule that would move pool images into the students' splits,
:mod:`distill.teacher.pool`), train-image count and the checkpoint's sha256.

Architecture: :data:`DEMO_ARCH` is ``distill-demo-rn``, CLIP's own ModifiedResNet image tower
(as in open_clip's ``RN50``) at width 16 with a 2-layer text transformer. On the built-in digits
suite the ViT config ``distill-demo-vit`` (or wider/finer-patch ViTs) trained from scratch
plateaued near 80% within the time budget, where the convolutional tower reaches ~90% in a
third of the compute: ViTs are data-hungry, and ~5k images are not enough. ``distill-demo-vit``
stays the tiny random-weight teacher of unit tests; pass ``arch=`` to bootstrap it anyway.

Cannot fail silently: the schedule is chosen from the data size
(:func:`~distill.teacher.bootstrap.presets.choose_schedule`: a
small set gets smaller batches and more epochs), ``VAL_FRACTION`` of the pool is held
out to validate, an epoch prints the loss and the train / validation zero-shot accuracy (each epoch of up to
``EPOCH_LINES``, else every :func:`~distill.teacher.bootstrap.presets.epoch_stride`-th, the first and the last), and a
teacher near chance ends with a ``warning:`` line (also stored in ``teacher.json``) that gives
the numbers and what to change.

Resumable: after each printed epoch, and each epoch ending ``STATE_EVERY_S`` after the last write, the model and
AdamW state are written atomically to one
safetensors file (``OUT/bootstrap-state.safetensors``, no pickle); rerunning the same call
continues from there, and since every random draw (shuffle, captions, augmentation) comes from
a generator seeded by ``(seed, epoch)``, a resumed run on CPU gives bit-identical weights to an
uninterrupted one. A finished run with the same parameters returns at once (saying so on stderr);
one with changed parameters (or data) is refused, naming the fields, never overwritten: caches
built from it rest on its checkpoint. So is a teacher whose ``teacher.json`` cannot be read (damaged, or
another distill version's format) or no longer matches its checkpoint (sha256): the way out is another
``--out``, or deleting ``teacher.json`` to retrain there. An unfinished run's state of other parameters is ignored.

Meant for small images and datasets: train images are decoded once and held in memory as
``uint8`` at the model's input size (3 KB each at 32x32).

One job per module: the recipe (:mod:`~distill.teacher.bootstrap.presets`), the data
(:mod:`~distill.teacher.bootstrap.data`), the model, loss and epoch state
(:mod:`~distill.teacher.bootstrap.model`), and this module's training loop.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision import transforms as T
from tqdm.auto import tqdm

from distill.data.folder import DomainFolder, Sample
from distill.data.listing import left_out_line
from distill.errors import DistillError
from distill.outputs import TEACHER, refuse_stage_folder
from distill.records import (
    TEACHER_BOOTSTRAP_STATE,
    TEACHER_CHECKPOINT,
    TEACHER_MANIFEST,
    TeacherManifest,
    TeacherTrainingData,
)
from distill.student.transforms import normalize
from distill.teacher.bootstrap.data import (
    augment,
    build_captions,
    geometry_transform,
    load_uint8,
    split_validation,
    train_samples,
)
from distill.teacher.bootstrap.model import (
    MultiPositiveClipLoss,
    adamw,
    create_model,
    load_state,
    save_state,
    zero_shot_in_memory,
)
from distill.teacher.bootstrap.presets import (
    AUGMENT,
    CAPTION_TEMPLATES,
    DEMO_TEMPLATES,
    FORMAT,
    FULL,
    QUICK,
    STATE_EVERY_S,
    TRAIN_EVAL_IMAGES,
    WARMUP_FRACTION,
    WEIGHT_DECAY,
    BootstrapSettings,
    choose_schedule,
    epoch_stride,
    is_reported,
    near_chance_warning,
)
from distill.teacher.cache.identity import diff_fields
from distill.teacher.clip import register_model_configs
from distill.teacher.pool import pool_of
from distill.utils.io import atomic_write, check_out_dir, sha256_file
from distill.utils.runtime import resolve_device
from distill.utils.schedule import warmup_cosine_lr


def bootstrap_teacher(dataset: DomainFolder, out_dir: str | Path, settings: BootstrapSettings | None = None, *,
                      quick: bool = False, device: str = "cpu", progress: bool = True, skip_bad: bool = False) -> Path:
    """Train an open_clip CLIP from scratch on ``dataset``'s pretraining pool; return the checkpoint path.

    Args:
        dataset: ``ROOT/DOMAIN/CLASS`` images with ``pretrain_fraction`` > 0; only its ``pretrain``
            split is ever opened (a pool of 0 is refused).
        out_dir: gets ``open_clip_model.safetensors`` and ``teacher.json`` (and, while
            training, ``bootstrap-state.safetensors``).
        settings: arch, seed and overrides of the preset (default :class:`BootstrapSettings`).
        quick: use the ``QUICK`` preset (seconds; for tests and quick demos), else ``FULL``.
        device: torch device (bit-identical resume is promised on CPU).
        progress: show tqdm bars with the live loss.
        skip_bad: leave undecodable pool images out with a warning (and the files ``dataset`` left out for
            names that are not UTF-8, of the domains the pool draws on) instead of stopping; the same files are left
            out on a resume. The epochs and batch size it trains with (and ``teacher.json`` records) are picked
            from the images it trains on; the run key names the pool as listed and the schedule picked from that
            count (the dataset fingerprint fixes which files decode), so a finished teacher is recognized, or a
            different one refused, before the pool is decoded.

    Returns:
        ``out_dir / "open_clip_model.safetensors"``, a state_dict open_clip loads strictly
        (``open_clip.create_model_and_transforms(arch, pretrained=path)``).
    """
    settings = settings or BootstrapSettings()
    arch, epochs, batch_size, seed = settings.arch, settings.epochs, settings.batch_size, settings.seed
    lr, max_per_domain = settings.lr, settings.max_per_domain
    preset = QUICK if quick else FULL
    lr = preset.lr if lr is None else float(lr)
    max_per_domain = preset.max_per_domain if max_per_domain is None else int(max_per_domain)
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value is not None and value < 1:
            raise DistillError(f"bootstrap: {name} must be >= 1, got {value}")
    if batch_size is not None and batch_size < 2:
        raise DistillError(f"bootstrap: batch_size must be >= 2 for a contrastive loss, got {batch_size}")
    if not lr > 0:
        raise DistillError(f"bootstrap: lr must be > 0, got {lr}")

    out_dir = check_out_dir(out_dir)
    refuse_stage_folder(out_dir, "the bootstrap", "teacher", TEACHER)  # its own (a resume, a rerun) it continues
    ckpt, manifest_path = out_dir / TEACHER_CHECKPOINT, out_dir / TEACHER_MANIFEST
    state_path = out_dir / TEACHER_BOOTSTRAP_STATE
    samples, val_samples = split_validation(train_samples(dataset, max_per_domain, seed), seed)
    if len(samples) < 2:
        raise DistillError(f"{dataset.root}: {len(samples)} pretraining-pool image(s); a contrastive bootstrap needs "
                           "at least 2 (raise --pretrain-fraction)")
    pool = pool_of(dataset)
    register_model_configs()
    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise DistillError(f"unknown open_clip architecture '{arch}' (see open_clip.list_models())")
    asked = epochs, batch_size
    # The run key names what was asked for: the pool as listed and the schedule picked from that count (every key
    # written before --skip-bad's schedule counted decoded images stays valid). It is still an exact identity: the
    # dataset fingerprint fixes which files decode, and so the schedule used, which training and teacher.json take
    # from the images it trains on.
    listed_epochs, listed_batch = choose_schedule(len(samples), preset, *asked)
    params = {
        "format": FORMAT, "arch": arch, "model_config": model_cfg,
        "dataset_fingerprint": dataset.fingerprint(), "classes": dataset.classes, "domains": dataset.domains,
        "pretrain": pool.model_dump(mode="json"),  # another pool retrains
        "train_images": len(samples), "val_images": len(val_samples), "templates": list(DEMO_TEMPLATES),
        "caption_templates": list(CAPTION_TEMPLATES),
        "epochs": listed_epochs, "batch_size": listed_batch, "lr": lr, "weight_decay": WEIGHT_DECAY,
        "warmup_fraction": WARMUP_FRACTION, "max_per_domain": max_per_domain, "seed": seed,
        "augment": AUGMENT, "loss": "UniCL multi-positive CLIP loss",
    }
    run_key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()

    if manifest_path.is_file() and ckpt.is_file():  # never overwrite a finished teacher (caches rest on it)
        old = _finished_teacher(manifest_path, ckpt)
        if old.run_key != run_key:
            differences = _differences(old, params, dataset, lambda n: choose_schedule(n, preset, *asked))
            raise DistillError(f"{manifest_path}: a teacher bootstrapped with other parameters is here (that teacher "
                               f"vs this run: {'; '.join(differences)}); remove the "
                               "directory to retrain, or choose another --out")
        if old.checkpoint_sha256 != sha256_file(ckpt):
            raise DistillError(f"{ckpt}: not the checkpoint {manifest_path.name} describes (checkpoint_sha256 differs: "
                               "replaced or damaged since its bootstrap); it is left as it is: choose another --out, or "
                               f"delete {manifest_path} to retrain over it")
        print(f"teacher already bootstrapped with these parameters: {ckpt}", file=sys.stderr, flush=True)
        if old.warning:
            print(f"warning: {old.warning}", file=sys.stderr, flush=True)
        return ckpt

    t0 = time.perf_counter()
    manifest_path.unlink(missing_ok=True)  # a stale manifest must never describe the new checkpoint
    model, preprocess, tokenizer = create_model(arch, seed)
    dev = resolve_device(device, what="bootstrap device")  # "auto"/"cuda" -> an indexed device
    model.to(dev).train()
    geometry, mean, std = geometry_transform(preprocess)
    mean, std = mean.to(dev), std.to(dev)
    _, captions = build_captions(dataset.domains, dataset.classes, tokenizer)
    cap_tokens = captions.tokens.to(dev)
    images, samples, val_images, val_samples = _decode(dataset, samples, val_samples, preprocess, progress, skip_bad)
    epochs, batch_size = choose_schedule(len(samples), preset, *asked)  # the images it trains on
    val_labels = torch.tensor([s.label for s in val_samples], dtype=torch.long)
    probe = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))[:TRAIN_EVAL_IMAGES].sort().values
    head_tokens = tokenizer([t.format(c) for c in dataset.classes for t in DEMO_TEMPLATES])
    dom_index = {d: i for i, d in enumerate(dataset.domains)}
    s_domain = torch.tensor([dom_index[s.domain] for s in samples])
    s_label = torch.tensor([s.label for s in samples])
    n, n_dom, n_cls = len(samples), len(dataset.domains), len(dataset.classes)
    n_templates = captions.n_domain_templates + captions.n_free_templates

    optimizer = adamw(model, lr)
    loss_fn = MultiPositiveClipLoss()
    start_epoch = 0
    history: list[float] = []
    resumed = load_state(state_path, model, optimizer, run_key)
    if resumed is not None:
        start_epoch, history = resumed
    steps_per_epoch = max(1, n // batch_size)  # full batches only (BatchNorm towers); reshuffled every epoch
    total = epochs * steps_per_epoch
    warmup = max(1, int(WARMUP_FRACTION * total))  # linear warmup to the peak, then cosine to 0
    max_log_scale = math.log(100.0)

    bar = tqdm(total=total, initial=start_epoch * steps_per_epoch, desc="bootstrap teacher",
               disable=not progress, dynamic_ncols=True)
    say = bar.write if progress else print
    if progress or start_epoch == 0:
        raised = (f" (epochs raised to reach the {preset.min_steps}-step minimum; --epochs N sets them)"
                  if asked[0] is None and epochs > preset.epochs else "")  # choose_schedule's floor, said once
        stride = epoch_stride(epochs)
        say(f"bootstrap: {n} pretraining-pool images ({len(val_samples)} more held out to validate; pool = "
            f"{100 * pool.fraction:g}% of each domain, no student split opened), {n_cls} classes; "
            f"{epochs} epochs x {steps_per_epoch} steps at batch {batch_size} = {total} steps{raised}, lr {lr:g}; "
            f"chance: loss ln({batch_size}) = {math.log(batch_size):.3f}, accuracy {100 / n_cls:.1f}%"
            + (f"; a line every {stride} epochs" if stride > 1 else ""))
    if start_epoch:
        say(f"resuming from {state_path} after epoch {start_epoch}/{epochs}")
    accuracy: dict[str, float] = {}
    saved = time.monotonic()
    for epoch in range(start_epoch, epochs):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=gen)
        templates = torch.randint(n_templates, (n,), generator=gen)
        running, seen = 0.0, 0
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            step = epoch * steps_per_epoch + b
            x = normalize(augment(images[idx], gen).to(dev), mean, std)
            cap = captions.ids(templates[idx], s_domain[idx], s_label[idx], n_dom, n_cls)
            uniq, inverse = torch.unique(cap, return_inverse=True)
            positives = (s_label[idx][:, None] == captions.label[cap][None, :]) & (
                (captions.domain[cap][None, :] < 0) | (captions.domain[cap][None, :] == s_domain[idx][:, None]))
            for g in optimizer.param_groups:
                g["lr"] = warmup_cosine_lr(step, base_lr=lr, warmup_steps=warmup, decay_steps=max(1, total - warmup))
            img = F.normalize(model.encode_image(x), dim=-1)
            txt = F.normalize(model.encode_text(cap_tokens[uniq.to(dev)]), dim=-1)[inverse.to(dev)]
            loss = loss_fn(img, txt, model.logit_scale.exp(), positives.to(dev))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, max_log_scale)
            value = loss.item()
            running += value * len(idx)
            seen += len(idx)
            bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{value:.3f}")
            bar.update(1)
        history.append(running / max(seen, 1))
        if is_reported(epoch, start_epoch, epochs):  # bounded lines and scorings; the last one judges the teacher
            accuracy = {"train": zero_shot_in_memory(model, images[probe], s_label[probe], head_tokens, n_cls, mean,
                                                     std, dev),
                        "val": zero_shot_in_memory(model, val_images, val_labels, head_tokens, n_cls, mean, std, dev)}
            val = "-" if math.isnan(accuracy["val"]) else f"{100 * accuracy['val']:.1f}%"
            say(f"bootstrap epoch {epoch + 1}/{epochs}: loss {history[-1]:.3f}  zero-shot train "
                f"{100 * accuracy['train']:.1f}%  val {val}")
        if epoch + 1 < epochs and (is_reported(epoch, start_epoch, epochs) or time.monotonic() - saved >= STATE_EVERY_S):
            save_state(state_path, model, optimizer, epoch + 1, run_key, history)
            saved = time.monotonic()
    bar.close()

    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(ckpt, lambda p: save_file(weights, str(p)))
    warning = near_chance_warning(accuracy, history, n_cls, epochs, steps_per_epoch, batch_size, quick, n)
    manifest = TeacherManifest(
        format=FORMAT, arch=arch, checkpoint=TEACHER_CHECKPOINT, checkpoint_sha256=sha256_file(ckpt),
        templates=list(DEMO_TEMPLATES), classes=dataset.classes, domains=dataset.domains,
        dataset=TeacherTrainingData(root=str(dataset.root), fingerprint=params["dataset_fingerprint"],
                                    train_images=len(samples), test_fraction=dataset.test_fraction,
                                    split_seed=dataset.split_seed, class_map=dataset.class_map_source,
                                    pretrain=pool),
        training={**{k: params[k] for k in _TRAINING}, "epochs": epochs, "batch_size": batch_size},
        open_clip_config=model_cfg,
        loss_history=[round(v, 5) for v in history],
        zero_shot={k: (None if math.isnan(v) else round(v, 5)) for k, v in accuracy.items()},
        train_seconds=round(time.perf_counter() - t0, 1),
        versions={"open_clip": open_clip.__version__, "torch": torch.__version__},
        run_key=run_key, **({"warning": warning} if warning else {}))
    manifest.write(out_dir)  # written last: its presence marks a finished run
    state_path.unlink(missing_ok=True)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    return ckpt


def _decode(dataset: DomainFolder, samples: Sequence[Sample], val_samples: Sequence[Sample], preprocess: T.Compose,
            progress: bool,
            skip_bad: bool) -> tuple[torch.Tensor, list[Sample], torch.Tensor, list[Sample]]:
    """The pool decoded once: (train images, their samples, validation images, theirs). The files ``skip_bad`` left
    out are named in one warning line: the undecodable ones, and those whose names are not UTF-8 in the domains the
    pool draws on (not the others: the bootstrap never reads them)."""
    geometry = geometry_transform(preprocess)[0]
    used = {s.domain for s in (*samples, *val_samples)}
    images, samples, bad = load_uint8(dataset, samples, geometry, progress, skip_bad)
    val_images, val_samples, bad_val = load_uint8(dataset, val_samples, geometry, progress, skip_bad)
    bad = dataset.left_out(used) + bad + bad_val
    if bad:
        print(f"warning: {left_out_line('bad image(s) left out of the bootstrap', dataset.root, bad)}", file=sys.stderr,
              flush=True)
    if len(samples) < 2:
        raise DistillError(f"{dataset.root}: {len(samples)} decodable pretraining-pool image(s); a contrastive "
                           "bootstrap needs at least 2")
    return images, samples, val_images, val_samples


def _finished_teacher(manifest_path: Path, ckpt: Path) -> TeacherManifest:
    """The ``teacher.json`` of the finished teacher at ``ckpt``. One that cannot be read (damaged, or written by a
    distill whose format differs) cannot say which parameters trained that teacher, so nothing may overwrite it:
    a one-line refusal naming the file and the ways out, instead of a retrain over the checkpoint."""
    try:
        return TeacherManifest.read(manifest_path)
    except DistillError as e:
        why = str(e).removeprefix(f"{manifest_path}: ")
        raise DistillError(f"{manifest_path}: cannot tell which parameters trained the teacher {ckpt.name} here ({why}:"
                           " unreadable, or written by another distill version); it is left as it is: choose "
                           f"another --out, or delete {manifest_path} to retrain over it") from None


_TRAINING = ("epochs", "batch_size", "lr", "weight_decay", "warmup_fraction", "max_per_domain", "seed", "augment",
             "loss", "caption_templates")


def _differences(old: TeacherManifest, params: dict, dataset: DomainFolder,
                 schedule: Callable[[int], tuple[int, int]]) -> list[str]:
    """``"field: that teacher's vs this run's"`` for each parameter ``teacher.json`` records that differs.
    ``teacher.json`` records the schedule its run trained with, which ``params`` (picked from the listed pool) need
    not be: one that this run's ``schedule`` would also pick for that teacher's images is not named as a difference."""
    pool = old.dataset.pretrain
    have = {"arch": old.arch, "model_config": old.open_clip_config,
            "pretrain": pool.model_dump(mode="json") if pool else None,
            "classes": old.classes, "domains": old.domains, "templates": old.templates,
            "training": {k: old.training.get(k) for k in _TRAINING}}
    want = {"arch": params["arch"], "model_config": params["model_config"],
            "pretrain": params["pretrain"],
            "classes": params["classes"], "domains": params["domains"], "templates": params["templates"],
            "training": {k: params[k] for k in _TRAINING}}
    trained = old.training.get("epochs"), old.training.get("batch_size")
    if trained == schedule(old.dataset.train_images):
        want["training"].update(epochs=trained[0], batch_size=trained[1])
    diffs = diff_fields(have, want)
    if old.dataset.fingerprint != params["dataset_fingerprint"]:
        if old.dataset.root != str(dataset.root):  # named in full: the one difference a user reads as a path
            diffs.insert(0, f"--data: {old.dataset.root} vs {dataset.root}")
        elif not diffs:
            diffs.append(f"--data: the images under {dataset.root} changed (dataset fingerprint)")
    return diffs or ["format or held-out split (teacher.json run_key)"]
