"""timm students: shapes, the self-describing checkpoint, zero-shot head init, user-facing errors."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from distill.errors import DistillError
from distill.student.model import Student, StudentSpec, default_spec, load_student, save_student

CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SIZE, EMBED_DIM = 32, 16


@pytest.mark.parametrize("arch", ["test_resnet", "test_vit"])  # a CNN and a ViT (img_size set from the spec)
def test_shapes(arch):
    torch.manual_seed(0)
    student = Student(default_spec(arch, CLASSES, SIZE, embed_dim=EMBED_DIM)).eval()
    assert student.spec.input_size == (SIZE, SIZE)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        out = student.forward_all(x)
        logits = student(x)
    assert out["features"].shape == (2, student.num_features)
    assert out["logits"].shape == logits.shape == (2, len(CLASSES))
    assert out["embedding"].shape == (2, EMBED_DIM)
    assert torch.allclose(out["logits"], logits)
    assert "embedding" not in Student(default_spec(arch, CLASSES, SIZE)).forward_all(x)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    student = Student(default_spec("test_resnet", CLASSES, SIZE, embed_dim=EMBED_DIM)).eval()
    with torch.no_grad():  # move BatchNorm statistics away from their init so buffers are tested too
        student.train()(torch.randn(4, 3, SIZE, SIZE))
    student.eval()
    save_student(student, tmp_path / "ckpt", extra_provenance={"strategy": "kd"})
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"model.safetensors", "student.json"}
    x = torch.randn(3, 3, SIZE, SIZE)
    for path in (tmp_path / "ckpt", tmp_path / "ckpt" / "model.safetensors"):
        loaded = load_student(path)
        assert not loaded.training
        assert loaded.spec.to_dict() == student.spec.to_dict() and loaded.spec.provenance == {"strategy": "kd"}
        with torch.no_grad():
            assert torch.equal(loaded(x), student(x))
            assert torch.equal(loaded.forward_all(x)["embedding"], student.forward_all(x)["embedding"])


def test_zero_shot_init_puts_the_teachers_rule_in_the_head():
    torch.manual_seed(0)
    student = Student(default_spec("test_resnet", CLASSES, SIZE, embed_dim=EMBED_DIM)).eval()
    text = F.normalize(torch.randn(len(CLASSES), EMBED_DIM), dim=-1)  # [C, D]
    scale = 12.5
    student.zero_shot_init(text, scale)
    with torch.no_grad():
        f = student.features(torch.randn(4, 3, SIZE, SIZE))
        expected = scale * student.projector(f) @ text.T  # s · T · (W_p f + b_p)
        assert torch.allclose(student.head(f), expected, rtol=1e-4, atol=1e-4)


def test_zero_shot_init_errors():
    no_projector = Student(default_spec("test_resnet", CLASSES, SIZE))
    with pytest.raises(DistillError, match="embed_dim"):
        no_projector.zero_shot_init(torch.randn(len(CLASSES), EMBED_DIM), 10.0)
    student = Student(default_spec("test_resnet", CLASSES, SIZE, embed_dim=EMBED_DIM))
    with pytest.raises(DistillError, match="do not match"):
        student.zero_shot_init(torch.randn(len(CLASSES), EMBED_DIM + 1), 10.0)


def test_unknown_arch_is_a_distill_error():
    with pytest.raises(DistillError, match="no_such_arch"):
        Student(StudentSpec(arch="no_such_arch", class_names=CLASSES, input_size=(SIZE, SIZE)))


def test_bad_checkpoints_are_distill_errors(tmp_path):
    with pytest.raises(DistillError, match="no student.json"):
        load_student(tmp_path)
    with pytest.raises(DistillError, match="unknown key"):
        StudentSpec.from_dict({"arch": "test_resnet", "class_names": CLASSES, "colour": "red"})


# ------------------------------------------------------------------ text head (open vocabulary)
def _text_student(classes=CLASSES, seed=0) -> tuple[Student, torch.Tensor]:
    torch.manual_seed(seed)
    text = F.normalize(torch.randn(len(classes), EMBED_DIM), dim=-1)
    spec = default_spec("test_resnet", classes, SIZE, embed_dim=EMBED_DIM, head="text", logit_scale=20.0)
    return Student(spec, text_embeddings=text).eval(), text


def test_text_head_is_scale_times_cosine_with_a_frozen_buffer():
    student, text = _text_student()
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        f = student.features(x)
        expected = 20.0 * F.normalize(student.projector(f), dim=-1) @ text.T
        assert torch.allclose(student(x), expected, rtol=1e-5, atol=1e-5)
        assert torch.allclose(student.forward_all(x)["logits"], expected, rtol=1e-5, atol=1e-5)
    assert student.head is None
    assert "text_head" in dict(student.named_buffers())
    assert not any("text_head" in name for name, _ in student.named_parameters())  # the optimizer never sees it


def test_set_classes_swaps_names_and_classifier():
    student, _ = _text_student()
    new = ["cat", "dog"]
    new_text = F.normalize(torch.randn(2, EMBED_DIM), dim=-1)
    student.set_classes(new, new_text)
    assert student.spec.class_names == new and student.spec.num_classes == 2
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = 20.0 * F.normalize(student.projector(student.features(x)), dim=-1) @ new_text.T
        assert torch.allclose(student(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(DistillError, match="do not match"):
        student.set_classes(["a", "b"], torch.randn(2, EMBED_DIM + 1))
    with pytest.raises(DistillError, match="do not match"):
        student.set_classes(["a", "b", "c"], torch.randn(2, EMBED_DIM))
    assert student.spec.class_names == new, "a refused re-target changes nothing"


def test_text_head_checkpoint_round_trip_after_retarget(tmp_path):
    student, _ = _text_student()
    student.set_classes(["cat", "dog", "eel"], F.normalize(torch.randn(3, EMBED_DIM), dim=-1))
    save_student(student, tmp_path / "ckpt")
    loaded = load_student(tmp_path / "ckpt")
    assert loaded.spec.head == "text" and loaded.spec.logit_scale == 20.0
    assert loaded.spec.class_names == ["cat", "dog", "eel"]
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(loaded(x), student(x))


def test_linear_student_json_is_unchanged_and_old_checkpoints_load(tmp_path):
    student = Student(default_spec("test_resnet", CLASSES, SIZE))
    assert "head" not in student.spec.to_dict() and "logit_scale" not in student.spec.to_dict()
    save_student(student, tmp_path / "old")
    assert load_student(tmp_path / "old").spec.head == "linear"


def test_linear_head_refuses_set_classes_and_text_head_refuses_linear_only_uses():
    linear = Student(default_spec("test_resnet", CLASSES, SIZE, embed_dim=EMBED_DIM))
    with pytest.raises(DistillError, match="linear head"):
        linear.set_classes(["a"], torch.randn(1, EMBED_DIM))
    student, text = _text_student()
    with pytest.raises(DistillError, match="head=text") as e:
        student.zero_shot_init(text, 10.0)
    assert "\n" not in str(e.value)
    with pytest.raises(DistillError, match="needs the teacher's embedding width"):
        Student(default_spec("test_resnet", CLASSES, SIZE, head="text"))


@pytest.mark.parametrize("name", ["customkd", "vl2v"])  # both read or fold the linear head's weights
def test_linear_head_strategies_refuse_a_text_head_student(name):
    from distill.strategies import StrategyContext, create_strategy

    student, text = _text_student()
    ctx = StrategyContext(num_classes=len(CLASSES), class_names=CLASSES, embed_dim=EMBED_DIM, text_embeddings=text,
                          logit_scale=20.0)
    with pytest.raises(DistillError, match=f"strategy '{name}'.*head=text") as e:
        create_strategy(name, student, {}, ctx)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("damage", [lambda b: b[:len(b) // 2], lambda b: b[:5], lambda b: b""],
                         ids=["truncated", "header-cut", "empty"])
def test_damaged_checkpoint_is_one_line(tmp_path, damage):
    """A truncated or empty model.safetensors raised a raw SafetensorError traceback in `distill export`."""
    from distill.cli import main as cli
    save_student(Student(default_spec("test_resnet", CLASSES, SIZE)), tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(DistillError) as e:
        load_student(tmp_path / "ckpt")
    msg = str(e.value)
    assert "\n" not in msg and str(weights) in msg and "retrain" in msg
    assert cli(["export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "exp")]) == 1  # a DistillError


@pytest.mark.parametrize("key,value", [
    ("input_size", 224), ("input_size", [224, 224, 3]), ("mean", [0.5]),
    # the right count of the wrong things: a TypeError in the transform later, or NaN inputs (std 0)
    ("input_size", [224.5, 224]), ("input_size", ["224", 224]), ("input_size", [0, 224]), ("input_size", [True, 1]),
    ("mean", ["0.5", "0.5", "0.5"]), ("std", [0, 0, 0]), ("std", [0.2, -0.2, 0.2]), ("std", [None, 0.2, 0.2])])
def test_misshapen_spec_values_are_one_line(tmp_path, key, value):
    """A student.json whose input_size is a bare number raised a raw TypeError ('int' object is not iterable) out
    of load_student; three sizes or one mean loaded without a word (the mistake surfaced later, or never)."""
    save_student(Student(default_spec("test_resnet", CLASSES, SIZE)), tmp_path / "ckpt")
    spec_file = tmp_path / "ckpt" / "student.json"
    spec_file.write_text(json.dumps({**json.loads(spec_file.read_text()), key: value}))
    with pytest.raises(DistillError) as e:
        load_student(tmp_path / "ckpt")
    assert "\n" not in str(e.value) and str(spec_file) in str(e.value) and key in str(e.value)
