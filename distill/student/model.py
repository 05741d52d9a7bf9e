"""A timm model as a student, and its self-describing checkpoint.

A checkpoint is a folder with ``model.safetensors`` (weights) and ``student.json``
(:class:`StudentSpec`: timm name, classes, preprocessing, provenance). Everything downstream
— evaluation, export, benchmarks — rebuilds the model and its input pipeline from these two
files alone.

Two heads: ``linear`` (a trained ``nn.Linear`` over the classes) and ``text`` (open vocabulary:
the projected feature, L2-normalised, against a fixed buffer of the teacher's text embeddings,
times the teacher's logit scale). A text head is the teacher's zero-shot rule in the student, so
:meth:`Student.set_classes` swaps in the text embeddings of other class names with no retraining.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import timm
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from distill.errors import DistillError
from distill.records import BEST_CHECKPOINT, CHECKPOINTS_DIR, STUDENT_SPEC, STUDENT_WEIGHTS
from distill.student.transforms import eval_transform
from distill.utils.io import atomic_write, atomic_write_json, read_json

StudentHead = Literal["linear", "text"]


@dataclass
class StudentSpec:
    """Everything needed to rebuild a student and feed it images.

    ``input_size`` is (H, W); ``mean``/``std``/``interpolation`` are the student's own
    preprocessing (resize shortest side to ``input_size``, center crop, normalize).
    """

    arch: str
    class_names: list[str]
    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    embed_dim: int | None = None  # teacher embedding width; None = no projector
    head: StudentHead = "linear"  # text: logit_scale * normalize(projector(f)) @ text_head.T
    logit_scale: float | None = None  # the teacher's (exp'd), text head only
    provenance: dict[str, Any] = field(default_factory=dict)  # teacher, strategy, run, metrics

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.head == "linear":  # a linear student's student.json reads as it always has
            del d["head"], d["logit_scale"]
        d["input_size"], d["mean"], d["std"] = list(self.input_size), list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = STUDENT_SPEC) -> StudentSpec:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise DistillError(f"{source}: unknown key(s) {sorted(unknown)}")
        try:
            spec = cls(**d)
        except TypeError as e:
            raise DistillError(f"{source}: {e}") from None
        if spec.head not in ("linear", "text"):
            raise DistillError(f"{source}: head must be 'linear' or 'text' (got {spec.head!r})")
        spec.input_size = _numbers(spec.input_size, 2, "input_size", source, whole=True, positive=True)
        spec.mean = _numbers(spec.mean, 3, "mean", source)
        spec.std = _numbers(spec.std, 3, "std", source, positive=True)
        return spec


def _numbers(value: object, n: int, key: str, source: str, whole: bool = False,
             positive: bool = False) -> tuple[Any, ...]:
    """``value`` (a list read from ``source``) as a tuple of ``n`` finite numbers (``whole``: integers; ``positive``:
    each > 0), or a one-line error naming the key."""
    kind = (int,) if whole else (int, float)
    if (not isinstance(value, (list, tuple)) or len(value) != n
            or not all(isinstance(v, kind) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            or (positive and not all(v > 0 for v in value))):
        what = "whole numbers" if whole else "numbers"
        raise DistillError(f"{source}: {key} must be a list of {n} {what}{' > 0' if positive else ''} (got {value!r})")
    return tuple(value)


class Student(nn.Module):
    """timm backbone -> pooled pre-logit features -> classifier head (+ projector).

    With ``spec.head == "text"`` there is no ``head`` module: logits are
    ``spec.logit_scale * normalize(projector(f)) @ text_head.T``, ``text_head`` [C, D] a buffer
    (saved, never trained) of the teacher's text embeddings for ``spec.class_names``.

    Args:
        spec: the student's description (arch, classes, preprocessing, embed_dim, head).
        pretrained: load timm's pretrained weights (needs internet / HF cache).
        text_embeddings: [C, D] the text head's start (required for a new text-head student;
            a loaded checkpoint fills the buffer from its weights).
    """

    text_head: Tensor  # [C, D] buffer of a text-head student only (register_buffer leaves it typed Tensor | Module)

    def __init__(self, spec: StudentSpec, pretrained: bool = False, text_embeddings: Tensor | None = None):
        super().__init__()
        self.spec = spec
        embed_dim = spec.embed_dim or 0  # 0: no projector
        if spec.head == "text" and (not embed_dim or not spec.logit_scale):
            raise DistillError("student.head=text needs the teacher's embedding width and logit scale "
                               "(a teacher cache with text embeddings)")
        kwargs: dict[str, Any] = {"pretrained": pretrained, "num_classes": 0}
        try:
            self.backbone = timm.create_model(spec.arch, **kwargs, img_size=spec.input_size)
        except TypeError:  # CNNs take any input size and no img_size kwarg
            try:
                self.backbone = timm.create_model(spec.arch, **kwargs)
            except RuntimeError as e:
                raise DistillError(f"student '{spec.arch}': {str(e).splitlines()[0]}") from None
        except RuntimeError as e:
            raise DistillError(f"student '{spec.arch}': {str(e).splitlines()[0]} (see timm.list_models())") from None
        # pre-logit width: timm models with a head MLP (mobilenetv3) expose head_hidden_size
        # (timm sets num_features as a plain int; nn.Module.__getattr__ types any attribute Tensor | Module)
        self.num_features = int(getattr(self.backbone, "head_hidden_size", None)
                                or self.backbone.num_features)  # type: ignore[arg-type]
        self.projector = nn.Linear(self.num_features, embed_dim) if embed_dim else None
        self.head: nn.Linear | None
        if spec.head == "text":
            self.head = None
            start = torch.zeros(spec.num_classes, embed_dim) if text_embeddings is None else text_embeddings
            self.register_buffer("text_head", self._checked_text(start, spec.num_classes))
        else:
            self.head = nn.Linear(self.num_features, spec.num_classes)

    def _checked_text(self, text_embeddings: Tensor, num_classes: int) -> Tensor:
        """A copy of ``text_embeddings`` (float32, CPU) after checking it is [num_classes, embed_dim]."""
        t = text_embeddings.detach().float().cpu().clone()
        if t.shape != (num_classes, self.spec.embed_dim):
            raise DistillError(f"text embeddings {tuple(t.shape)} do not match classes x embed_dim "
                               f"({num_classes}, {self.spec.embed_dim})")
        return t

    def classify(self, features: Tensor) -> Tensor:
        """Pooled features [B, F] -> logits [B, C] (linear head, or the text head's cosine rule)."""
        if self.head is not None:
            return self.head(features)
        projector, scale = self.projector, self.spec.logit_scale
        if projector is None or scale is None:  # __init__ refuses a text head without them
            raise DistillError("student.head=text needs a projector (student.embed_dim) and the teacher's logit scale")
        emb = projector(features)
        # L2-normalise as sqrt(sum(x^2)): F.normalize exports to ReduceL2 + Expand, which onnxruntime's
        # symbolic shape inference (int8 preprocessing) cannot follow
        emb = emb / (emb * emb).sum(dim=-1, keepdim=True).sqrt().clamp_min(1e-12)
        return scale * emb @ self.text_head.T

    def require_linear_head(self, who: str) -> nn.Linear:
        """The linear head, or a one-line error for ``who`` (a strategy or option that reads its weights)."""
        if self.head is None:
            raise DistillError(f"{who} reads the student's linear head weights: it cannot train a text-head "
                               "student (student.head=text); use student.head=linear")
        return self.head

    @torch.no_grad()
    def set_classes(self, class_names: list[str], text_embeddings: Tensor) -> None:
        """Re-target a text-head student: new class names and their text embeddings [C', D] (no retraining)."""
        if self.spec.head != "text":
            raise DistillError(f"student '{self.spec.arch}' has a linear head: only a text-head student "
                               "(student.head=text) can be re-targeted to other classes")
        text = self._checked_text(text_embeddings, len(class_names)).to(self.text_head.device)
        self.spec.class_names = list(class_names)
        self.text_head = text

    def features(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] -> pooled pre-logit features [B, F]."""
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] -> logits [B, C]."""
        return self.classify(self.features(x))

    def forward_all(self, x: Tensor) -> dict[str, Tensor]:
        """Features [B, F], logits [B, C] and, with a projector, embedding [B, D] (unnormalized)."""
        f = self.features(x)
        out = {"features": f, "logits": self.classify(f)}
        if self.projector is not None:
            out["embedding"] = self.projector(f)
        return out

    @torch.no_grad()
    def zero_shot_init(self, text_embeddings: Tensor, logit_scale: float) -> None:
        """Initialise the head from teacher text embeddings [C, D] through the projector.

        logits ≈ s · T · (W_p f + b_p) — the teacher's zero-shot rule applied to the projected
        (unnormalised) student feature — so the head starts where the projector points.
        """
        head = self.require_linear_head("student.zero_shot_init")
        if self.projector is None:
            raise DistillError("zero-shot init needs a projector: set student.embed_dim to the teacher's width")
        t = text_embeddings.to(head.weight)
        if t.shape != (self.spec.num_classes, self.projector.out_features):
            raise DistillError(f"text embeddings {tuple(t.shape)} do not match classes x embed_dim "
                               f"({self.spec.num_classes}, {self.projector.out_features})")
        head.weight.copy_(logit_scale * t @ self.projector.weight)
        head.bias.copy_(logit_scale * t @ self.projector.bias)

    def preprocess(self) -> Callable:
        """torchvision eval transform for PIL images: resize, center crop, normalize (:func:`eval_transform`)."""
        return eval_transform(self.spec)


def default_spec(arch: str, class_names: list[str], input_size: int | tuple[int, int] | None = None,
                 embed_dim: int | None = None, head: StudentHead = "linear",
                 logit_scale: float | None = None) -> StudentSpec:
    """A spec with timm's preprocessing defaults for ``arch`` (input size overridable)."""
    pretrained = timm.get_pretrained_cfg(arch)
    cfg: dict[str, Any] = pretrained.to_dict() if pretrained is not None else {}
    size = input_size or tuple(cfg.get("input_size", (3, 224, 224))[1:])
    h, w = (size, size) if isinstance(size, int) else size
    return StudentSpec(arch=arch, class_names=list(class_names), input_size=(h, w),
                       mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))), std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
                       interpolation=cfg.get("interpolation", "bicubic"), embed_dim=embed_dim,
                       head=head, logit_scale=logit_scale)


def save_student(student: Student, out_dir: str | Path, extra_provenance: dict[str, Any] | None = None) -> Path:
    """Write ``out_dir/model.safetensors`` + ``out_dir/student.json``; returns ``out_dir``."""
    out_dir = Path(out_dir)
    spec = student.spec
    if extra_provenance:
        spec.provenance = {**spec.provenance, **extra_provenance}
    state = {k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}
    atomic_write(out_dir / STUDENT_WEIGHTS, lambda p: save_file(state, str(p)))
    atomic_write_json(out_dir / STUDENT_SPEC, spec.to_dict())
    return out_dir


def not_a_checkpoint(folder: str | Path) -> DistillError:
    """The error for a folder without ``student.json``. A run folder (``RUN/checkpoints/best`` holds one) is the
    usual mistake for ``RUN/checkpoints/best``: the hint then names the folder to pass."""
    folder = Path(folder)
    best = folder / CHECKPOINTS_DIR / BEST_CHECKPOINT
    hint = (f"a training run's folder: pass {best}" if (best / STUDENT_SPEC).is_file()
            else f"pass RUN/{CHECKPOINTS_DIR}/{BEST_CHECKPOINT} of a `distill train` run")
    return DistillError(f"{folder}: not a student checkpoint (no {STUDENT_SPEC}); {hint}")


def load_student(path: str | Path, map_location: str = "cpu") -> Student:
    """Rebuild a student from a checkpoint folder (or its ``model.safetensors``).

    Raises:
        DistillError: not a checkpoint, or weights missing, damaged (truncated, empty) or of another model;
            one line naming the file and what to do.
    """
    path = Path(path)
    folder = path.parent if path.suffix == ".safetensors" else path
    if not (folder / STUDENT_SPEC).is_file():
        raise not_a_checkpoint(folder)
    spec = StudentSpec.from_dict(read_json(folder / STUDENT_SPEC), str(folder / STUDENT_SPEC))
    student = Student(spec)
    try:  # loading reads every byte anyway: a damaged file costs nothing extra to catch here
        state = load_file(str(folder / STUDENT_WEIGHTS), device=map_location)
    except FileNotFoundError:
        raise DistillError(f"{folder / STUDENT_WEIGHTS}: missing (the checkpoint folder has only {STUDENT_SPEC}); "
                           "retrain with `distill train` or copy the checkpoint again") from None
    except Exception as e:  # safetensors' own error types: truncated, empty, or not safetensors
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DistillError(f"{folder / STUDENT_WEIGHTS}: unreadable, truncated or not safetensors ({why}); "
                           "retrain with `distill train` or copy the checkpoint again") from None
    missing, unexpected = student.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DistillError(f"{folder / STUDENT_WEIGHTS}: weights do not match '{spec.arch}' "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return student.eval()

