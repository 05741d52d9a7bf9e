"""Bootstrap a small open_clip teacher offline, for demos and tests.

No pretrained CLIP can be downloaded offline, so the demo trains one: an open_clip ``CLIP``
built from one of this package's plain JSON configs (both towers, random init) is trained
contrastively on the *train split* of a ``ROOT/DOMAIN/CLASS`` dataset, with captions made from
domain and class names ("a mnist m image of a seven."). The result is saved as
``OUT/open_clip_model.safetensors`` and loads through exactly the code path of a downloaded
CLIP::

    Teacher(DEMO_ARCH, pretrained="OUT/open_clip_model.safetensors",
            class_names=ds.classes, templates=DEMO_TEMPLATES)

``OUT/teacher.json`` records the architecture, the zero-shot templates to use with it
(:data:`DEMO_TEMPLATES`, free of domain words), classes, dataset fingerprint, training
hyper-parameters, train-image count and the checkpoint's sha256.

Architecture: :data:`DEMO_ARCH` is ``distill-demo-rn``, CLIP's own ModifiedResNet image tower
(as in open_clip's ``RN50``) at width 16 with a 2-layer text transformer. On the built-in digits
suite the ViT config ``distill-demo-vit`` (or wider/finer-patch ViTs) trained from scratch
plateaued near 80% within the time budget, where the convolutional tower reaches ~90% in a
third of the compute: ViTs are data-hungry, and ~5k images are not enough. ``distill-demo-vit``
stays the tiny random-weight teacher of unit tests; pass ``arch=`` to bootstrap it anyway.

Cannot fail silently: the schedule is chosen from the data size (:func:`choose_schedule`: a
small set gets smaller batches and more epochs), :data:`VAL_FRACTION` of the train split is held
out to validate, every epoch prints the loss and the train / validation zero-shot accuracy, and a
teacher near chance ends with a ``WARNING:`` line (also stored in ``teacher.json``) that gives
the numbers and what to change.

Resumable: after every epoch the model and AdamW state are written atomically to one
safetensors file (``OUT/bootstrap-state.safetensors``, no pickle); rerunning the same call
continues from there, and since every random draw (shuffle, captions, augmentation) comes from
a generator seeded by ``(seed, epoch)``, a resumed run on CPU gives bit-identical weights to an
uninterrupted one. A finished run with the same parameters returns at once; changed
parameters (or data) retrain from scratch.

Meant for small images and datasets: train images are decoded once and held in memory as
``uint8`` at the model's input size (3 KB each at 32x32).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.data.folder import DomainFolder, Sample
from distill.data.images import load_rgb
from distill.errors import DistillError
from distill.teacher.clip import Teacher, register_model_configs
from distill.utils.io import atomic_write, atomic_write_json, read_json, sha256_file

DEMO_ARCH = "distill-demo-rn"
CHECKPOINT_NAME = "open_clip_model.safetensors"
MANIFEST_NAME = "teacher.json"
STATE_NAME = "bootstrap-state.safetensors"
FORMAT = "distill-demo-teacher/1"

#: Zero-shot templates for the demo teacher: no domain words, so one head serves every domain.
#: Half of the training captions use them (see :data:`CAPTION_TEMPLATES`).
DEMO_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "an image of a {}.",
    "a picture of the {}.",
    "a {}.",
)

#: Training captions that name the domain (``{domain}`` with '_' -> ' ', ``{cls}`` the class name).
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a {domain} image of a {cls}.",
    "a {domain} picture of the {cls}.",
    "a {cls} in {domain} style.",
    "a {cls} from the {domain} set.",
)


@dataclass(frozen=True)
class BootstrapPreset:
    """Training defaults. ``max_per_domain`` caps train images per domain (0: all of them).

    ``epochs`` and ``batch_size`` are what a large set gets; :func:`choose_schedule` adapts them
    to a small one (``min_steps`` optimizer steps at least, a batch of at most
    ``1 / MIN_BATCHES_PER_EPOCH`` of the images).
    """

    epochs: int
    batch_size: int
    lr: float
    max_per_domain: int = 0
    min_steps: int = 0


#: Full run on the built-in digits suite (4745 train images, 233 of them held out to validate): ~2 min
#: of one CPU core, test-split zero-shot accuracy 98 / 89 / 85 / 99 % on mnist / mnist_c / mnist_m /
#: optdigits (mean 92.9; 93.6 before the hold-out, one seed each: benchmarks/RESULTS.md).
#: On a small set it trains longer and with smaller batches (:func:`choose_schedule`): with the fixed
#: 14 epochs x batch 64, 187 photos (5 classes) got 28 steps, the loss stayed at ln(64) and the
#: teacher scored below chance; ~500 steps at batch 16-32 gave ~90 %.
FULL = BootstrapPreset(epochs=14, batch_size=64, lr=2e-3, min_steps=600)
#: A few seconds: tests and ``distill demo --quick``. It exercises the real code path but stays
#: near chance (and says so): from random init both towers first collapse to one embedding, and
#: escaping that takes a few hundred steps (about two full-preset epochs).
QUICK = BootstrapPreset(epochs=6, batch_size=32, lr=2e-3, max_per_domain=64)

#: A batch is at most this fraction of the train images (so every epoch has several steps).
MIN_BATCHES_PER_EPOCH = 4
#: Smallest batch :func:`choose_schedule` picks (a contrastive batch needs negatives).
MIN_AUTO_BATCH = 8
#: Share of the train split held out (by a hash of the path) to validate zero-shot accuracy while
#: training; the test split is never opened. Only when the train split has at least
#: ``MIN_VAL_IMAGES / VAL_FRACTION`` images.
VAL_FRACTION = 0.1
MIN_VAL_IMAGES = 10
#: ... and at most this many (enough to tell a teacher from chance within a few points): on the
#: digits suite a full 10% (444 images) gave 91.6 % mean zero-shot accuracy, 256 gave 92.9, none 93.6
#: (one seed each), so a large set gives up little.
MAX_VAL_IMAGES = 256
#: Train images scored each epoch for the printed train zero-shot accuracy (un-augmented).
TRAIN_EVAL_IMAGES = 512


def choose_schedule(n_train: int, preset: BootstrapPreset, epochs: int | None = None,
                    batch_size: int | None = None) -> tuple[int, int]:
    """(epochs, batch_size) for ``n_train`` images: the preset's, adapted to a small set.

    An explicit ``epochs`` / ``batch_size`` is kept. Otherwise the batch is halved (not below
    :data:`MIN_AUTO_BATCH`) until it is at most ``n_train / MIN_BATCHES_PER_EPOCH``, and the epochs
    are raised until the run takes at least ``preset.min_steps`` optimizer steps.
    """
    if batch_size is None:
        batch_size = preset.batch_size
        while batch_size > MIN_AUTO_BATCH and batch_size * MIN_BATCHES_PER_EPOCH > n_train:
            batch_size //= 2
        batch_size = max(2, min(batch_size, n_train))
    if epochs is None:
        steps_per_epoch = max(1, n_train // batch_size)
        epochs = max(preset.epochs, math.ceil(preset.min_steps / steps_per_epoch))
    return int(epochs), int(batch_size)


def near_chance(accuracy: float, num_classes: int) -> bool:
    """True when ``accuracy`` is below twice chance (capped halfway between chance and 1)."""
    chance = 1.0 / max(num_classes, 1)
    return accuracy < min(2 * chance, (1 + chance) / 2)

WEIGHT_DECAY = 0.1
WARMUP_FRACTION = 0.1
#: Light augmentation: no flips (digits and text are not mirror-symmetric).
AUGMENT = {"max_rotate_deg": 10.0, "scale": (0.9, 1.1), "max_translate": 0.1,
           "brightness": 0.15, "contrast": 0.2}


# ---------------------------------------------------------------------------- loss
class MultiPositiveClipLoss(nn.Module):
    """UniCL (Yang et al. 2022): CLIP's symmetric InfoNCE where every true caption is a positive.

    Captions here come from (domain, class) labels, so with ten classes each image in a batch of
    64 has about six same-class partners, and often the very same caption. Plain
    ``open_clip.ClipLoss`` would push an image of a seven away from "a photo of a seven."
    attached to the *other* sevens: false negatives in ~10% of every row, and exactly the ones
    the model should match. Masking them out of the softmax would only stop that; treating them
    as positives (the target is uniform over every caption true of the image) also uses them as
    signal, which is what UniCL does with label-derived captions. A caption is true of an image
    when the class matches and the caption names the image's domain or no domain at all. Logits
    come from open_clip's ``ClipLoss.get_logits``. On the built-in digits suite (full preset,
    seed 0) this gave 93.6% mean zero-shot test accuracy against 91.2% for plain ``ClipLoss``.
    """

    def __init__(self) -> None:
        super().__init__()
        import open_clip

        self._clip = open_clip.ClipLoss()

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor,
                positives: Tensor) -> Tensor:
        """image/text features [B, D] (L2-normalized), positives [B, B] bool: caption j is true of
        image i (the diagonal must be True, so no row or column is empty). Returns a scalar."""
        logits_per_image, logits_per_text = self._clip.get_logits(image_features, text_features, logit_scale)
        p = positives.float()
        target_i = p / p.sum(dim=1, keepdim=True)
        target_t = p.T / p.T.sum(dim=1, keepdim=True)
        return (F.cross_entropy(logits_per_image, target_i) + F.cross_entropy(logits_per_text, target_t)) / 2


# ---------------------------------------------------------------------------- captions
@dataclass(frozen=True)
class CaptionTable:
    """Every training caption, tokenized once.

    Ids: domain templates first (``(t * n_domains + d) * n_classes + c``), then domain-free
    ones (``offset + t * n_classes + c``).
    """

    tokens: Tensor  # [K, context_length] int64
    domain: Tensor  # [K] int64, -1 for captions without a domain word
    label: Tensor  # [K] int64
    n_domain_templates: int
    n_free_templates: int

    def ids(self, template: Tensor, domain: Tensor, label: Tensor, n_domains: int, n_classes: int) -> Tensor:
        """[B] template index in [0, n_domain + n_free) -> [B] caption ids."""
        free = template >= self.n_domain_templates
        dom_id = (template * n_domains + domain) * n_classes + label
        free_id = self.n_domain_templates * n_domains * n_classes + (template - self.n_domain_templates) * n_classes + label
        return torch.where(free, free_id, dom_id)


def build_captions(domains: Sequence[str], classes: Sequence[str], tokenizer,
                   caption_templates: Sequence[str] = CAPTION_TEMPLATES,
                   free_templates: Sequence[str] = DEMO_TEMPLATES) -> tuple[list[str], CaptionTable]:
    """All captions (domain '_' -> ' ') and their tokenized table."""
    texts, doms, labels = [], [], []
    for t in caption_templates:
        for d, domain in enumerate(domains):
            for c, cls in enumerate(classes):
                texts.append(t.format(domain=domain.replace("_", " "), cls=cls))
                doms.append(d)
                labels.append(c)
    for t in free_templates:
        for c, cls in enumerate(classes):
            texts.append(t.format(cls))
            doms.append(-1)
            labels.append(c)
    table = CaptionTable(tokenizer(texts), torch.tensor(doms), torch.tensor(labels),
                         len(caption_templates), len(free_templates))
    return texts, table


# ---------------------------------------------------------------------------- images
def augment(images: Tensor, generator: torch.Generator, cfg: dict = AUGMENT) -> Tensor:
    """Light random affine + brightness/contrast. [B, 3, H, W] uint8 -> [B, 3, H, W] float in [0, 1].

    Draws only from ``generator`` (kornia draws from the global RNG), so a resumed run replays
    the same augmentations.
    """
    x = images.float() / 255.0
    b = x.shape[0]
    rnd = torch.rand(b, 6, generator=generator)
    angle = (rnd[:, 0] * 2 - 1) * math.radians(cfg["max_rotate_deg"])
    lo, hi = cfg["scale"]
    scale = lo + rnd[:, 1] * (hi - lo)
    shift = (rnd[:, 2:4] * 2 - 1) * cfg["max_translate"] * 2  # affine_grid coords span [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = 1 + (rnd[:, 4] * 2 - 1) * cfg["contrast"]
    brightness = (rnd[:, 5] * 2 - 1) * cfg["brightness"]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast[:, None, None, None] + mean + brightness[:, None, None, None]
    return x.clamp_(0, 1)


def _geometry_transform(preprocess):
    """open_clip's eval transform without its final Normalize: PIL -> [3, H, W] float in [0, 1]."""
    from torchvision import transforms as T

    steps = [t for t in preprocess.transforms if not isinstance(t, T.Normalize)]
    norm = [t for t in preprocess.transforms if isinstance(t, T.Normalize)]
    if len(norm) != 1:
        raise RuntimeError(f"expected one Normalize in open_clip's transform, got {preprocess}")
    return T.Compose(steps), torch.tensor(norm[0].mean).view(1, 3, 1, 1), torch.tensor(norm[0].std).view(1, 3, 1, 1)


def _load_uint8(dataset: DomainFolder, samples: list[Sample], geometry, progress: bool) -> Tensor:
    """Decode the train images once: [N, 3, H, W] uint8, exactly what the eval transform sees."""
    from tqdm.auto import tqdm

    out = []
    for s in tqdm(samples, desc="loading train images", disable=not progress, leave=False):
        x = geometry(load_rgb(dataset.path(s)))
        out.append((x * 255).round().to(torch.uint8))
    return torch.stack(out)


def _split_validation(samples: list[Sample], seed: int) -> tuple[list[Sample], list[Sample]]:
    """(train, validation): :data:`VAL_FRACTION` of ``samples`` (at most about :data:`MAX_VAL_IMAGES`) by a
    hash of the path, or none when there are too few."""
    if len(samples) * VAL_FRACTION < MIN_VAL_IMAGES:
        return samples, []
    fraction = min(VAL_FRACTION, MAX_VAL_IMAGES / len(samples))
    val = {s.index for s in samples
           if int.from_bytes(hashlib.sha1(f"val{seed}:{s.relpath}".encode()).digest()[:8], "big") / 2**64 < fraction}
    return [s for s in samples if s.index not in val], [s for s in samples if s.index in val]


@torch.no_grad()
def _zero_shot_in_memory(model, images: Tensor, labels: Tensor, head_tokens: Tensor, n_classes: int,
                         mean: Tensor, std: Tensor, device: str, batch_size: int = 256) -> float:
    """Zero-shot top-1 of ``model`` on uint8 images [N, 3, H, W] with the :data:`DEMO_TEMPLATES` head
    (``head_tokens`` [n_classes * T, L], class-major). The model is put back in train mode."""
    if len(images) == 0:
        return float("nan")
    model.eval()
    try:
        txt = F.normalize(model.encode_text(head_tokens.to(device)), dim=-1)
        head = F.normalize(txt.view(n_classes, -1, txt.shape[-1]).mean(dim=1), dim=-1)
        correct = 0
        for i in range(0, len(images), batch_size):
            x = (images[i:i + batch_size].to(device).float() / 255.0 - mean) / std
            pred = (F.normalize(model.encode_image(x), dim=-1) @ head.T).argmax(dim=1).cpu()
            correct += int((pred == labels[i:i + batch_size]).sum())
        return correct / len(images)
    finally:
        model.train()


def _train_samples(dataset: DomainFolder, max_per_domain: int, seed: int) -> list[Sample]:
    """Train-split samples; with a cap, a hash-ordered (class-balanced in expectation) subset per domain."""
    samples = dataset.select(split="train")
    if not samples:
        raise DistillError(f"{dataset.root}: no train-split images to bootstrap a teacher from")
    if max_per_domain <= 0:
        return samples
    keep: list[Sample] = []
    for d in dataset.domains:
        dom = [s for s in samples if s.domain == d]
        dom.sort(key=lambda s: hashlib.sha1(f"{seed}:{s.relpath}".encode()).digest())
        keep.extend(dom[:max_per_domain])
    return sorted(keep, key=lambda s: s.index)


# ---------------------------------------------------------------------------- state
def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's convention: no weight decay on gains, biases, norms, embeddings-as-vectors, logit scale."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "ln" in n or "bias" in n or "logit_scale" in n else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _adamw(model: nn.Module, lr: float) -> torch.optim.AdamW:
    """AdamW with CLIP's betas/eps; the fused kernel where available (8x faster on CPU here:
    the 49408-row token embedding dominates the update)."""
    groups = _param_groups(model, WEIGHT_DECAY)
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(_param_groups(model, WEIGHT_DECAY), lr=lr, betas=(0.9, 0.98), eps=1e-6)


def _save_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                run_key: str, history: list[float]) -> None:
    """Model + AdamW state in one safetensors file (one atomic write: never half old, half new)."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    sd = optimizer.state_dict()
    for i, st in sd["state"].items():
        for name, v in st.items():
            tensors[f"optim.{i}.{name}"] = torch.as_tensor(v).contiguous().clone()
    meta = {"run_key": run_key, "epoch": str(epoch), "history": json.dumps(history),
            "param_groups": json.dumps(sd["param_groups"])}
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))


def _load_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                run_key: str) -> tuple[int, list[float]] | None:
    """Restore a matching epoch checkpoint; return (epochs done, loss history) or None."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("run_key") != run_key:
                return None
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception:  # unreadable leftovers are not worth failing for: start over
        return None
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    state: dict[int, dict[str, Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    return int(meta["epoch"]), json.loads(meta["history"])


def _lr_at(step: int, total: int, base: float) -> float:
    """Linear warmup then cosine decay to 0."""
    warm = max(1, int(WARMUP_FRACTION * total))
    if step < warm:
        return base * (step + 1) / warm
    return base * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def _create_model(arch: str, seed: int):
    import open_clip

    register_model_configs()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        log = logging.getLogger()
        level = log.level
        log.setLevel(logging.ERROR)  # "No pretrained weights loaded": random init is the point here
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None)
        except RuntimeError as e:
            if "not found" in str(e):
                raise DistillError(f"unknown open_clip architecture '{arch}' (see open_clip.list_models())") from None
            raise
        finally:
            log.setLevel(level)
    if type(model).__name__ not in ("CLIP", "CustomTextCLIP"):
        raise DistillError(f"'{arch}' is a {type(model).__name__}; bootstrap_teacher trains plain CLIP models")
    return model, preprocess, open_clip.get_tokenizer(arch)


# ---------------------------------------------------------------------------- entry point
def bootstrap_teacher(
    dataset: DomainFolder,
    out_dir: str | Path,
    *,
    arch: str = DEMO_ARCH,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    max_per_domain: int | None = None,
    quick: bool = False,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """Train an open_clip CLIP from scratch on ``dataset``'s train split; return the checkpoint path.

    Args:
        dataset: ``ROOT/DOMAIN/CLASS`` images; only its ``train`` split is ever opened.
        out_dir: gets ``open_clip_model.safetensors`` and ``teacher.json`` (and, while
            training, ``bootstrap-state.safetensors``).
        arch: an open_clip CLIP config name (default this package's ``distill-demo-rn``).
        epochs, batch_size, lr, max_per_domain: override the preset (:data:`FULL`, or
            :data:`QUICK` when ``quick``); ``max_per_domain`` 0 means every train image.
        quick: use the :data:`QUICK` preset (seconds; for tests and quick demos).
        seed: model init, shuffling, caption choice and augmentation.
        device: torch device (bit-identical resume is promised on CPU).
        progress: show tqdm bars with the live loss.

    Returns:
        ``out_dir / "open_clip_model.safetensors"``, a state_dict open_clip loads strictly
        (``open_clip.create_model_and_transforms(arch, pretrained=path)``).
    """
    from tqdm.auto import tqdm

    import open_clip

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

    out_dir = Path(out_dir)
    ckpt, manifest_path, state_path = out_dir / CHECKPOINT_NAME, out_dir / MANIFEST_NAME, out_dir / STATE_NAME
    samples, val_samples = _split_validation(_train_samples(dataset, max_per_domain, seed), seed)
    if len(samples) < 2:
        raise DistillError(f"{dataset.root}: {len(samples)} train-split image(s); a contrastive bootstrap needs at least 2")
    epochs, batch_size = choose_schedule(len(samples), preset, epochs, batch_size)
    register_model_configs()
    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise DistillError(f"unknown open_clip architecture '{arch}' (see open_clip.list_models())")
    params = {
        "format": FORMAT, "arch": arch, "model_config": model_cfg,
        "dataset_fingerprint": dataset.fingerprint(), "classes": dataset.classes, "domains": dataset.domains,
        "train_images": len(samples), "val_images": len(val_samples), "templates": list(DEMO_TEMPLATES), "caption_templates": list(CAPTION_TEMPLATES),
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": WEIGHT_DECAY,
        "warmup_fraction": WARMUP_FRACTION, "max_per_domain": max_per_domain, "seed": seed,
        "augment": AUGMENT, "loss": "UniCL multi-positive CLIP loss",
    }
    run_key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()

    if manifest_path.is_file() and ckpt.is_file():
        try:
            old = read_json(manifest_path)
        except DistillError:
            old = {}
        if old.get("run_key") == run_key and old.get("checkpoint_sha256") == sha256_file(ckpt):
            if progress:
                print(f"teacher already bootstrapped with these parameters: {ckpt}")
            if old.get("warning"):
                import sys

                print(f"WARNING: {old['warning']}", file=sys.stderr, flush=True)
            return ckpt

    t0 = time.perf_counter()
    manifest_path.unlink(missing_ok=True)  # a stale manifest must never describe the new checkpoint
    model, preprocess, tokenizer = _create_model(arch, seed)
    from distill.utils.runtime import resolve_device

    device = resolve_device(device, what="bootstrap device")  # "auto"/"cuda" -> an indexed device
    model.to(device).train()
    geometry, mean, std = _geometry_transform(preprocess)
    mean, std = mean.to(device), std.to(device)
    _, captions = build_captions(dataset.domains, dataset.classes, tokenizer)
    cap_tokens = captions.tokens.to(device)
    images = _load_uint8(dataset, samples, geometry, progress)
    val_images = _load_uint8(dataset, val_samples, geometry, progress) if val_samples else images[:0]
    val_labels = torch.tensor([s.label for s in val_samples], dtype=torch.long)
    probe = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))[:TRAIN_EVAL_IMAGES].sort().values
    head_tokens = tokenizer([t.format(c) for c in dataset.classes for t in DEMO_TEMPLATES])
    dom_index = {d: i for i, d in enumerate(dataset.domains)}
    s_domain = torch.tensor([dom_index[s.domain] for s in samples])
    s_label = torch.tensor([s.label for s in samples])
    n, n_dom, n_cls = len(samples), len(dataset.domains), len(dataset.classes)
    n_templates = captions.n_domain_templates + captions.n_free_templates

    optimizer = _adamw(model, lr)
    loss_fn = MultiPositiveClipLoss()
    start_epoch, history = 0, []
    resumed = _load_state(state_path, model, optimizer, run_key)
    if resumed is not None:
        start_epoch, history = resumed
    steps_per_epoch = max(1, n // batch_size)  # full batches only (BatchNorm towers); reshuffled every epoch
    total = epochs * steps_per_epoch
    max_log_scale = math.log(100.0)

    bar = tqdm(total=total, initial=start_epoch * steps_per_epoch, desc="bootstrap teacher",
               disable=not progress, dynamic_ncols=True)
    say = bar.write if progress else print
    if progress or start_epoch == 0:
        say(f"bootstrap: {n} train images ({len(val_samples)} more held out to validate), {n_cls} classes; "
            f"{epochs} epochs x {steps_per_epoch} steps at batch {batch_size} = {total} steps, lr {lr:g}; "
            f"chance: loss ln({batch_size}) = {math.log(batch_size):.3f}, accuracy {100 / n_cls:.1f}%")
    if start_epoch:
        say(f"resuming from {state_path} after epoch {start_epoch}/{epochs}")
    accuracy: dict[str, float] = {}
    for epoch in range(start_epoch, epochs):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=gen)
        templates = torch.randint(n_templates, (n,), generator=gen)
        running, seen = 0.0, 0
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            step = epoch * steps_per_epoch + b
            x = (augment(images[idx], gen).to(device) - mean) / std
            cap = captions.ids(templates[idx], s_domain[idx], s_label[idx], n_dom, n_cls)
            uniq, inverse = torch.unique(cap, return_inverse=True)
            positives = (s_label[idx][:, None] == captions.label[cap][None, :]) & (
                (captions.domain[cap][None, :] < 0) | (captions.domain[cap][None, :] == s_domain[idx][:, None]))
            for g in optimizer.param_groups:
                g["lr"] = _lr_at(step, total, lr)
            img = F.normalize(model.encode_image(x), dim=-1)
            txt = F.normalize(model.encode_text(cap_tokens[uniq.to(device)]), dim=-1)[inverse.to(device)]
            loss = loss_fn(img, txt, model.logit_scale.exp(), positives.to(device))
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
        accuracy = {"train": _zero_shot_in_memory(model, images[probe], s_label[probe], head_tokens, n_cls, mean, std,
                                                  device),
                    "val": _zero_shot_in_memory(model, val_images, val_labels, head_tokens, n_cls, mean, std, device)}
        val = "-" if math.isnan(accuracy["val"]) else f"{100 * accuracy['val']:.1f}%"
        say(f"bootstrap epoch {epoch + 1}/{epochs}: loss {history[-1]:.3f}  zero-shot train "
            f"{100 * accuracy['train']:.1f}%  val {val}")
        if epoch + 1 < epochs:
            _save_state(state_path, model, optimizer, epoch + 1, run_key, history)
    bar.close()

    from safetensors.torch import save_file

    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(ckpt, lambda p: save_file(weights, str(p)))
    manifest = {
        "format": FORMAT,
        "arch": arch,
        "checkpoint": CHECKPOINT_NAME,
        "checkpoint_sha256": sha256_file(ckpt),
        "templates": list(DEMO_TEMPLATES),
        "classes": dataset.classes,
        "domains": dataset.domains,
        "dataset": {"root": str(dataset.root), "fingerprint": params["dataset_fingerprint"],
                    "train_images": len(samples), "test_fraction": dataset.test_fraction,
                    "split_seed": dataset.split_seed, "class_map": dataset.class_map_source},
        "training": {k: params[k] for k in ("epochs", "batch_size", "lr", "weight_decay", "warmup_fraction",
                                              "max_per_domain", "seed", "augment", "loss", "caption_templates")},
        "model_config": model_cfg,
        "loss_history": [round(v, 5) for v in history],
        "zero_shot": {k: (None if math.isnan(v) else round(v, 5)) for k, v in accuracy.items()},
        "train_seconds": round(time.perf_counter() - t0, 1),
        "versions": {"open_clip": open_clip.__version__, "torch": torch.__version__},
        "run_key": run_key,
    }
    warning = _near_chance_warning(accuracy, history, n_cls, epochs, steps_per_epoch, batch_size, quick)
    if warning:
        manifest["warning"] = warning
    atomic_write_json(manifest_path, manifest)  # written last: its presence marks a finished run
    state_path.unlink(missing_ok=True)
    if warning:
        import sys

        print(f"WARNING: {warning}", file=sys.stderr, flush=True)
    return ckpt


def _near_chance_warning(accuracy: dict[str, float], history: list[float], n_classes: int, epochs: int,
                         steps_per_epoch: int, batch_size: int, quick: bool) -> str | None:
    """One line saying the teacher learned (almost) nothing, with the numbers and what to do; else None.

    Judged on validation accuracy (train accuracy when too few images were held out).
    """
    which = "val" if not math.isnan(accuracy.get("val", float("nan"))) else "train"
    acc = accuracy.get(which, float("nan"))
    if math.isnan(acc) or not near_chance(acc, n_classes):
        return None
    todo = ("expected of --quick, a smoke-test preset; drop --quick for a usable teacher" if quick else
            f"train longer or with smaller batches, e.g. --epochs {max(2 * epochs, 100)} --batch-size "
            f"{max(2, batch_size // 2)}, and check it with `distill teacher eval`")
    return (f"the bootstrapped teacher is near chance: zero-shot {which} accuracy {100 * acc:.1f}% "
            f"(chance {100 / n_classes:.1f}% with {n_classes} classes), final loss {history[-1]:.3f} "
            f"(ln(batch {batch_size}) = {math.log(batch_size):.3f} means nothing learned) after {epochs} epochs x "
            f"{steps_per_epoch} steps; {todo}")


# ---------------------------------------------------------------------------- evaluation
@torch.no_grad()
def zero_shot_accuracy(teacher: Teacher, dataset: DomainFolder, split: str | None = "test",
                       domains: Sequence[str] | None = None, batch_size: int = 256,
                       progress: bool = False) -> dict[str, float]:
    """Zero-shot top-1 accuracy per domain: argmax of ``teacher(images)`` logits vs. labels.

    The teacher's ``class_names`` must be ``dataset.classes`` (same order). Returns
    ``{domain: accuracy in [0, 1]}`` for the domains with images in ``split``.
    """
    from tqdm.auto import tqdm

    if list(teacher.class_names) != list(dataset.classes):
        raise DistillError("zero_shot_accuracy: teacher class_names differ from the dataset's classes")
    device = teacher.text_embeddings.device
    correct: dict[str, int] = {}
    count: dict[str, int] = {}
    samples = dataset.select(domains, split)
    for i in tqdm(range(0, len(samples), batch_size), desc="zero-shot eval", disable=not progress, leave=False):
        chunk = samples[i:i + batch_size]
        x = torch.stack([teacher.preprocess(load_rgb(dataset.path(s))) for s in chunk]).to(device)
        _, logits = teacher(x)
        pred = logits.argmax(dim=1).cpu()
        for s, p in zip(chunk, pred.tolist()):
            count[s.domain] = count.get(s.domain, 0) + 1
            correct[s.domain] = correct.get(s.domain, 0) + int(p == s.label)
    return {d: correct[d] / count[d] for d in dataset.domains if d in count}
