"""A frozen open_clip model as a teacher: normalized image embeddings + zero-shot logits.

Any open_clip model works: ``arch`` is an open_clip model name (``ViT-B-32``, or this
package's ``distill-demo-vit``) and ``pretrained`` is a tag (``laion2b_s34b_b79k``), a local
checkpoint path, or ``None``; an ``hf-hub:org/repo`` or ``local-dir:/path`` id goes in ``arch``
(open_clip's own convention) or ``pretrained``. Preprocessing and tokenizer are open_clip's.
"""
from __future__ import annotations

import contextlib
import logging
import pickle
import re
import textwrap
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import Tensor, nn

from distill.errors import DistillError
from distill.teacher.prompts import DEFAULT_TEMPLATES, check_templates
from distill.utils.flops import count_flops
from distill.utils.io import sha256_file
from distill.utils.runtime import autocast, check_precision

_CONFIG_DIR = Path(__file__).parent / "model_configs"
_registered = False


def register_model_configs() -> None:
    """Register this package's open_clip JSON model configs (e.g. ``distill-demo-vit``)."""
    global _registered
    if not _registered:
        import open_clip  # lazy: open_clip (+ timm) costs seconds; `distill --help` imports this module

        open_clip.add_model_config(_CONFIG_DIR)
        _registered = True


@dataclass(frozen=True)
class Preprocess:
    """What the teacher's image pipeline does; recorded in caches and checked by readers."""

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    resize_mode: str
    crop: str = "center"
    exif_transpose: bool = True  # images are read upright (distill.data.images.load_rgb); older caches lack it

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size)
        d["mean"] = [round(float(v), 8) for v in self.mean]
        d["std"] = [round(float(v), 8) for v in self.std]
        return d


def _split_id(arch: str, pretrained: str | None) -> tuple[str, str | None]:
    """open_clip takes hub / local-dir ids as the model name; accept them in either slot."""
    if pretrained and (pretrained.startswith("hf-hub:") or pretrained.startswith("local-dir:")):
        return pretrained, None
    return arch, pretrained


def _download_failure(msg: str) -> str:
    """What failed and why, from open_clip's download error, for the one line: the file and hub repo open_clip tried
    and huggingface_hub's error (open_clip's ``Last error: ...``: a gated repo's 401, a full disk, no network), its
    lines joined, request ids left out, cut at a word to 400 characters. Less open_clip's own ``Failed to download
    weights for tag 'X': `` (the line names the tag)."""
    text = re.sub(r"^Failed to download weights for tag '[^']*': ", "", msg.strip())
    text = re.sub(r"Failed to download file \(([^)]*)\) for (\S+)\. Last error: ", r"\1 of \2: ", text)
    text = re.sub(r"\s*\(Request ID: [^)]*\)", "", text)
    return textwrap.shorten(text.rstrip("."), 400, placeholder=" ...")  # shorten joins the lines


class _DroppedDownloadLog(logging.Filter):
    """Drops open_clip's own ``logging.error`` of a failed download, which it logs just before raising the same text
    (the CLI printed it as a second ``error:`` line before the one :class:`Teacher` raises)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and "open_clip" in record.pathname
                    and record.getMessage().startswith("Failed to download weights"))


@contextlib.contextmanager
def _without_download_log() -> Iterator[None]:
    root, dropped = logging.getLogger(), _DroppedDownloadLog()
    root.addFilter(dropped)  # open_clip logs through the root logger (logging.error)
    try:
        yield
    finally:
        root.removeFilter(dropped)


def _format_of(path: Path) -> str:
    """What ``path`` holds, from its first bytes: ``safetensors``, ``torch`` (a torch.save zip or pickle), or
    ``other``. Sniffed, never unpickled."""
    with open(path, "rb") as f:
        head = f.read(9)
    size = path.stat().st_size
    if len(head) == 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size:
        return "safetensors"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"
    return "other"


def _unloadable(tag: str, arch: str, e: BaseException) -> str:
    """The one line for a ``--pretrained`` file open_clip could not load: not a checkpoint of the kind its name
    says (a JPEG, a safetensors file named .pt, an empty file), objects torch's safe loader refuses, or weights
    of another architecture."""
    path = Path(tag)
    named = "safetensors" if path.suffix == ".safetensors" else "torch"
    found = _format_of(path)
    expected = ("a safetensors state dict (open_clip reads *.safetensors as safetensors)" if named == "safetensors"
                else "a torch.save state dict (.pt/.pth/.bin), or a *.safetensors file")
    if found != named:
        what = {"safetensors": "it holds safetensors: name it *.safetensors",
                "torch": "it holds a torch.save file: do not name it *.safetensors",
                "other": "it is neither a safetensors nor a torch.save file"}[found]
        return f"{tag}: not an open_clip checkpoint; expected {expected} ({what})"
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
    if isinstance(e, pickle.UnpicklingError):  # never retried with weights_only=False: that runs the file's code
        return (f"{tag}: torch's weights-only loader refuses this checkpoint (it holds objects besides tensors); "
                "expected an open_clip state dict of tensors: save model.state_dict() and pass that")
    # open_clip's loading asserts/raises on shapes that do not fit (e.g. "text pos_embed width changed!",
    # "size mismatch for ..."): name both ends
    return (f"{tag}: checkpoint does not fit open_clip architecture '{arch}' ({first}); "
            f"set the architecture it was trained with (--arch / teacher.arch)")


class Teacher(nn.Module):
    """Frozen open_clip teacher with a prompt-ensembled zero-shot head.

    Args:
        arch: open_clip model name or ``hf-hub:``/``local-dir:`` id.
        pretrained: tag, local checkpoint path, or None (random init; tests and timing only).
        class_names: the words put in prompts, in label order.
        templates: prompt templates with one ``{}``.
        device: torch device string (resolved by :func:`distill.utils.runtime.resolve_device`).
        precision: inference dtype of the image tower: ``fp32``, ``bf16`` or ``fp16`` (autocast;
            fp16 on CUDA only). Part of :meth:`identity`, so a cache built at one precision is not
            mistaken for another's. The zero-shot head is always computed in fp32.
    """

    text_embeddings: Tensor  # [C, D] buffer (register_buffer leaves it typed Tensor | Module)

    def __init__(
        self,
        arch: str,
        pretrained: str | None,
        class_names: Sequence[str],
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        device: str = "cpu",
        precision: str = "fp32",
    ):
        super().__init__()
        import open_clip  # lazy: as in register_model_configs

        check_precision(precision, torch.device(device), what="teacher precision")
        self.precision = precision

        register_model_configs()
        self.arch, self.pretrained = arch, pretrained
        self.class_names = list(class_names)
        self.templates = check_templates(templates)
        model_name, tag = _split_id(arch, pretrained)
        if tag and Path(tag).suffix in (".safetensors", ".bin", ".pt", ".pth") and not Path(tag).is_file():
            raise DistillError(f"{tag}: teacher checkpoint not found")
        try:
            with _without_download_log():
                model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=tag, device=device)
        except (RuntimeError, AssertionError, KeyError, ValueError, EOFError, pickle.UnpicklingError,
                SafetensorError) as e:
            msg = str(e)
            if tag and Path(tag).is_file():
                raise DistillError(_unloadable(tag, arch, e)) from None
            if not isinstance(e, RuntimeError):
                raise
            if "Failed to download" in msg or "HF Hub" in msg:
                raise DistillError(
                    f"could not download open_clip weights '{pretrained}' for '{arch}' ({_download_failure(msg)}); "
                    f"without internet, download them elsewhere and pass the file: --pretrained /path/to/open_clip_model.safetensors"
                ) from None
            if "not found in built-ins" in msg:
                raise DistillError(f"unknown open_clip architecture '{arch}' (see open_clip.list_models())") from None
            if "not a known tag" in msg:
                tags = open_clip.list_pretrained_tags_by_model(model_name)
                raise DistillError(
                    f"pretrained '{pretrained}' is neither a known tag of '{arch}' (known: {', '.join(tags) or 'none'}) "
                    f"nor an existing file"
                ) from None
            raise
        self.model = model.eval().requires_grad_(False)
        # frozen: read once (not a GPU->CPU sync per forward); float64 on the CPU, the same number on any device
        self._logit_scale = float(self.model.logit_scale.detach().double().cpu().exp())
        self.preprocess = preprocess  # open_clip's eval transform: PIL -> [3, H, W]
        self.tokenizer = open_clip.get_tokenizer(model_name)
        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg["size"] if isinstance(cfg["size"], (list, tuple)) else (cfg["size"], cfg["size"])
        self.preprocess_info = Preprocess(
            size=(int(size[0]), int(size[1])), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
            interpolation=cfg.get("interpolation", "bicubic"), resize_mode=cfg.get("resize_mode", "shortest"),
        )
        self.register_buffer("text_embeddings", self._zero_shot_head(), persistent=False)

    # ------------------------------------------------------------------ identity
    def identity(self) -> dict:
        """What makes this teacher this teacher (stored in cache manifests)."""
        import open_clip  # lazy: as in register_model_configs (loaded already once a Teacher exists)

        ident = {"arch": self.arch, "pretrained": self.pretrained, "checkpoint_sha256": None,
                 "open_clip_version": open_clip.__version__, "torch_version": torch.__version__,
                 "logit_scale": round(self.logit_scale, 6), "precision": self.precision}
        if self.pretrained and Path(self.pretrained).is_file():
            ident["pretrained"] = Path(self.pretrained).name
            ident["checkpoint_sha256"] = sha256_file(self.pretrained)
        return ident

    @property
    def embed_dim(self) -> int:
        return int(self.text_embeddings.shape[1])

    @property
    def logit_scale(self) -> float:
        """exp of the learned log-scale, computed once in float64 on the CPU: the same number on every
        device (a CUDA exp differs from the CPU's in the last bit: 14.285715 vs 14.285714)."""
        return self._logit_scale

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast context of the teacher's precision on its device (a no-op for fp32)."""
        return autocast(self.text_embeddings.device, self.precision)

    # ------------------------------------------------------------------ compute
    @torch.no_grad()
    def _zero_shot_head(self) -> Tensor:
        """[C, D]: per class, the normalized mean of normalized prompt embeddings."""
        device = next(self.model.parameters()).device
        prompts = [t.format(c) for c in self.class_names for t in self.templates]
        emb = F.normalize(self.model.encode_text(self.tokenizer(prompts).to(device)).float(), dim=-1)
        emb = emb.view(len(self.class_names), len(self.templates), -1).mean(dim=1)
        return F.normalize(emb, dim=-1)

    @torch.no_grad()
    def encode_image(self, images: Tensor) -> Tensor:
        """[B, 3, H, W] preprocessed images -> [B, D] L2-normalized fp32 embeddings (tower at ``precision``)."""
        with self.autocast():
            feats = self.model.encode_image(images)
        return F.normalize(feats.float(), dim=-1)

    @torch.no_grad()
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """[B, 3, H, W] -> (embeddings [B, D], zero-shot logits [B, C] incl. logit scale)."""
        emb = self.encode_image(images)
        with torch.autocast(emb.device.type, enabled=False):  # fp32 logits even inside a caller's autocast
            return emb, self.logit_scale * emb @ self.text_embeddings.T

    def image_flops(self) -> int:
        """FLOPs of one image through the image tower (x2 per MAC, attention included)."""
        return count_flops(self.model.visual, self.preprocess_info.size)
