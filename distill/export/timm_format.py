"""``distill export --format timm``: a student checkpoint as timm's own checkpoint (no ``backbone.``/``head.`` keys).

A distill student is a timm backbone (``num_classes=0``) plus a linear head. timm names the same
weights without the ``backbone.`` prefix and the head by its ``pretrained_cfg['classifier']``
(``fc`` for ResNets, ``classifier`` for MobileNets, ``head`` for ViTs). The folder written here is
timm's Hugging Face layout (:func:`timm.models.save_for_hf`): ``model.safetensors`` + ``config.json``
with the student's classes (``label_names``) and preprocessing, so both of these load it::

    timm.create_model(arch, pretrained=True, num_classes=N,
                      pretrained_cfg_overlay=dict(file="OUT/model.safetensors", num_classes=N))
    timm.create_model("local-dir:OUT")

(``num_classes`` in the overlay too: timm drops a classifier whose size differs from the pretrained
config's, 1000 for most models.) The projector of a student trained with one is not part of a timm
model and is left out; a text-head student (open vocabulary) has no linear classifier to export.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch

from distill.errors import DistillError
from distill.outputs import TIMM, refuse_stage_folder
from distill.records import TIMM_WEIGHTS
from distill.student.model import Student, load_student
from distill.utils.io import check_out_dir


def timm_model_of(student: Student) -> torch.nn.Module:
    """An eval-mode timm model of ``student.spec.arch`` with ``num_classes`` classes holding the student's weights."""
    spec = student.spec
    if student.head is None:
        raise DistillError(f"student '{spec.arch}' has a text head (open vocabulary): timm models have a linear "
                           "classifier; export it to ONNX, or train with student.head=linear")
    kwargs: dict[str, Any] = {"pretrained": False, "num_classes": spec.num_classes}
    try:
        model = timm.create_model(spec.arch, **kwargs, img_size=spec.input_size)
    except TypeError:  # CNNs take no img_size (as the student's own construction)
        model = timm.create_model(spec.arch, **kwargs)
    # timm types create_model as returning nn.Module; its models carry a pretrained_cfg dict
    classifier = model.pretrained_cfg.get("classifier")  # type: ignore[union-attr, operator]
    if not isinstance(classifier, str):
        raise DistillError(f"student '{spec.arch}': timm names its classifier {classifier!r}, not one module; "
                           "--format timm supports models with a single classifier")
    state = {k[len("backbone."):]: v for k, v in student.state_dict().items() if k.startswith("backbone.")}
    state[f"{classifier}.weight"], state[f"{classifier}.bias"] = student.head.weight, student.head.bias
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DistillError(f"student '{spec.arch}': its weights do not map onto timm's model (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]})")
    return model.eval()


def export_timm(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write ``out_dir/model.safetensors`` + ``out_dir/config.json`` (timm's layout); returns the weights file."""
    checkpoint, out_dir = Path(checkpoint), check_out_dir(out_dir)  # --out naming a file: one line
    refuse_stage_folder(out_dir, "the timm export", "exports", TIMM)  # its model.safetensors: a checkpoint's name too
    student = load_student(checkpoint.parent if checkpoint.is_file() else checkpoint)
    spec = student.spec
    model = timm_model_of(student)
    # the student's eval preprocessing: shorter side resized to min(input_size), center crop (crop_pct 1)
    data = {"input_size": (3, *spec.input_size), "mean": tuple(spec.mean), "std": tuple(spec.std),
            "interpolation": spec.interpolation, "crop_pct": 1.0, "crop_mode": "center"}
    timm.models.save_for_hf(model, str(out_dir),  # timm types it str, then takes Path(it)
                            model_config={"label_names": list(spec.class_names)},
                            safe_serialization=True, data_config=data)
    return out_dir / TIMM_WEIGHTS
