"""``distill export --format timm``: timm loads the checkpoint by its own key names, and its logits are the student's."""
from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import load_file

from distill.cli import main as cli
from distill.errors import DistillError
from distill.export.timm_format import export_timm
from distill.student.model import Student, default_spec, save_student

CLASSES = ["a", "b", "c", "d", "e", "f"]


def _student(arch: str, tmp_path, **spec) -> tuple[Student, object]:
    torch.manual_seed(0)
    student = Student(default_spec(arch, CLASSES, 32, **spec)).eval()
    for m in student.modules():  # non-trivial BatchNorm statistics, so a lost buffer would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return student, save_student(student, tmp_path / "ckpt")


@pytest.mark.parametrize("arch, classifier", [("test_resnet", "fc"), ("mobilenetv3_small_050", "classifier"),
                                              ("test_vit", "head")])
def test_timm_loads_it_with_pretrained_cfg_overlay_and_gives_the_students_logits(tmp_path, arch, classifier):
    student, ckpt = _student(arch, tmp_path, embed_dim=8)  # with a projector: not part of timm's model
    path = export_timm(ckpt, tmp_path / "timm")
    keys = load_file(str(path)).keys()
    assert f"{classifier}.weight" in keys and not any(k.startswith(("backbone.", "projector.")) for k in keys)
    kw = {"img_size": 32} if "vit" in arch else {}  # a ViT's position embedding is sized for the student's input
    model = timm.create_model(arch, pretrained=True, num_classes=len(CLASSES),
                              pretrained_cfg_overlay=dict(file=str(path), num_classes=len(CLASSES)), **kw).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), student(x))
        local = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()  # timm's HF layout
        assert torch.equal(local(x), student(x))
    config = json.loads((tmp_path / "timm" / "config.json").read_text())
    assert config["label_names"] == CLASSES and config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert config["pretrained_cfg"]["mean"] == list(student.spec.mean)


def test_the_cli_writes_it(tmp_path, capsys):
    _, ckpt = _student("test_resnet", tmp_path)
    assert cli(["export", str(ckpt), "--out", str(tmp_path / "t"), "--format", "timm"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "t" / "model.safetensors")
    assert (tmp_path / "t" / "config.json").is_file()


def test_a_text_head_student_is_refused_in_one_line(tmp_path):
    student = Student(default_spec("test_resnet", CLASSES, 32, embed_dim=8, head="text", logit_scale=10.0),
                      text_embeddings=torch.randn(len(CLASSES), 8))
    ckpt = save_student(student, tmp_path / "ckpt")
    with pytest.raises(DistillError, match="text head"):
        export_timm(ckpt, tmp_path / "t")
