"""A timm model as a student, and its self-describing checkpoint.

A checkpoint is a folder with ``model.safetensors`` (weights) and ``student.json``
(:class:`StudentSpec`: timm name, classes, preprocessing, provenance). Everything downstream
— evaluation, export, benchmarks — rebuilds the model and its input pipeline from these two
files alone.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import timm
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from distill.errors import DistillError
from distill.records import STUDENT_SPEC, STUDENT_WEIGHTS
from distill.student.transforms import eval_transform
from distill.utils.io import atomic_write, atomic_write_json, read_json


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
    provenance: dict[str, Any] = field(default_factory=dict)  # teacher, strategy, run, metrics

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
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
        spec.input_size = tuple(spec.input_size)
        spec.mean, spec.std = tuple(spec.mean), tuple(spec.std)
        return spec


class Student(nn.Module):
    """timm backbone -> pooled pre-logit features -> classifier head (+ projector).

    Args:
        spec: the student's description (arch, classes, preprocessing, embed_dim).
        pretrained: load timm's pretrained weights (needs internet / HF cache).
    """

    def __init__(self, spec: StudentSpec, pretrained: bool = False):
        super().__init__()
        self.spec = spec
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
        self.num_features = int(getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features)
        self.head = nn.Linear(self.num_features, spec.num_classes)
        self.projector = nn.Linear(self.num_features, spec.embed_dim) if spec.embed_dim else None

    def features(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] -> pooled pre-logit features [B, F]."""
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] -> logits [B, C]."""
        return self.head(self.features(x))

    def forward_all(self, x: Tensor) -> dict[str, Tensor]:
        """Features [B, F], logits [B, C] and, with a projector, embedding [B, D] (unnormalized)."""
        f = self.features(x)
        out = {"features": f, "logits": self.head(f)}
        if self.projector is not None:
            out["embedding"] = self.projector(f)
        return out

    @torch.no_grad()
    def zero_shot_init(self, text_embeddings: Tensor, logit_scale: float) -> None:
        """Initialise the head from teacher text embeddings [C, D] through the projector.

        logits ≈ s · T · (W_p f + b_p) — the teacher's zero-shot rule applied to the projected
        (unnormalised) student feature — so the head starts where the projector points.
        """
        if self.projector is None:
            raise DistillError("zero-shot init needs a projector: set student.embed_dim to the teacher's width")
        t = text_embeddings.to(self.head.weight)
        if t.shape != (self.spec.num_classes, self.projector.out_features):
            raise DistillError(f"text embeddings {tuple(t.shape)} do not match classes x embed_dim "
                               f"({self.spec.num_classes}, {self.projector.out_features})")
        self.head.weight.copy_(logit_scale * t @ self.projector.weight)
        self.head.bias.copy_(logit_scale * t @ self.projector.bias)

    def preprocess(self) -> Callable:
        """torchvision eval transform for PIL images: resize, center crop, normalize (:func:`eval_transform`)."""
        return eval_transform(self.spec)


def default_spec(arch: str, class_names: list[str], input_size: int | tuple[int, int] | None = None,
                 embed_dim: int | None = None) -> StudentSpec:
    """A spec with timm's preprocessing defaults for ``arch`` (input size overridable)."""
    cfg = timm.get_pretrained_cfg(arch)
    cfg = cfg.to_dict() if cfg is not None else {}
    size = input_size or tuple(cfg.get("input_size", (3, 224, 224))[1:])
    size = (size, size) if isinstance(size, int) else tuple(size)
    return StudentSpec(arch=arch, class_names=list(class_names), input_size=size,
                       mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))), std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
                       interpolation=cfg.get("interpolation", "bicubic"), embed_dim=embed_dim)


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


def load_student(path: str | Path, map_location: str = "cpu") -> Student:
    """Rebuild a student from a checkpoint folder (or its ``model.safetensors``)."""
    path = Path(path)
    folder = path.parent if path.suffix == ".safetensors" else path
    if not (folder / STUDENT_SPEC).is_file():
        raise DistillError(f"{folder}: not a student checkpoint (no {STUDENT_SPEC})")
    spec = StudentSpec.from_dict(read_json(folder / STUDENT_SPEC), str(folder / STUDENT_SPEC))
    student = Student(spec)
    state = load_file(str(folder / STUDENT_WEIGHTS), device=map_location)
    missing, unexpected = student.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DistillError(f"{folder / STUDENT_WEIGHTS}: weights do not match '{spec.arch}' "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return student.eval()

