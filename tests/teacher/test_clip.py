"""The open_clip Teacher wrapper on the tiny random-weight ``distill-demo-vit`` config."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from distill.errors import DistillError
from distill.teacher.clip import Teacher

CLASSES = ["cat", "dog", "bird"]
TEMPLATES = ["a photo of a {}.", "a drawing of a {}.", "a blurry {}."]


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    torch.manual_seed(0)
    return Teacher("distill-demo-vit", None, CLASSES, TEMPLATES)


@pytest.fixture(scope="module")
def images(teacher: Teacher) -> torch.Tensor:
    """[4, 3, 32, 32] through the teacher's own preprocessing."""
    rng = np.random.default_rng(0)
    pil = [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(4)]
    return torch.stack([teacher.preprocess(p) for p in pil])


def test_shapes_and_normalized_embeddings(teacher: Teacher, images: torch.Tensor) -> None:
    assert images.shape == (4, 3, 32, 32)  # 40x48 resized (shortest side) and center-cropped
    emb, logits = teacher(images)
    assert emb.shape == (4, teacher.embed_dim) and logits.shape == (4, len(CLASSES))
    assert teacher.text_embeddings.shape == (len(CLASSES), teacher.embed_dim)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(teacher.text_embeddings.norm(dim=-1), torch.ones(len(CLASSES)))
    assert teacher.preprocess_info.size == (32, 32)


def test_logits_are_scale_times_cosine(teacher: Teacher, images: torch.Tensor) -> None:
    _, logits = teacher(images)
    raw = teacher.model.encode_image(images)  # unnormalized [4, D]
    cos = F.cosine_similarity(raw[:, None, :], teacher.text_embeddings[None, :, :], dim=-1)
    torch.testing.assert_close(logits, teacher.logit_scale * cos, rtol=1e-5, atol=1e-5)
    assert teacher.logit_scale == pytest.approx(float(teacher.model.logit_scale.exp()))


def test_zero_shot_head_is_normalized_mean_over_templates(teacher: Teacher) -> None:
    with torch.no_grad():
        for c, name in enumerate(CLASSES):
            tokens = teacher.tokenizer([t.format(name) for t in TEMPLATES])
            per_template = F.normalize(teacher.model.encode_text(tokens), dim=-1)  # [T, D]
            expected = F.normalize(per_template.mean(dim=0), dim=0)
            torch.testing.assert_close(teacher.text_embeddings[c], expected, rtol=1e-5, atol=1e-6)
            # and not merely the first template's embedding
            assert not torch.allclose(teacher.text_embeddings[c], per_template[0], atol=1e-4)


def test_image_flops_positive(teacher: Teacher) -> None:
    flops = teacher.image_flops()
    assert isinstance(flops, int) and flops > 0
    n_visual = sum(p.numel() for p in teacher.model.visual.parameters())
    assert flops > n_visual  # every weight is used at least once per image (x2 per MAC)


def test_failed_tag_download_is_one_line_pointing_to_local_file(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The CLI's one line: what failed (the file and hub repo open_clip tried), uncut, and what to do; open_clip's own
    log line of the same failure is not a second ``error:`` line before it. It was: ``error: failed to download
    weights for tag 'openai': ...`` from open_clip's logging, then ``... for timm/resnet50_clip.openai. Last error:
    An error happened )`` cut at 160 characters."""
    import huggingface_hub.constants as hf_constants

    from distill.cli._log import warning_lines

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True, raising=False)  # read at import time
    with warning_lines(), pytest.raises(DistillError) as err:  # the CLI's log handler, as a command runs
        Teacher("RN50", "openai", CLASSES)
    msg = str(err.value)
    assert "\n" not in msg
    assert "'openai'" in msg and "RN50" in msg
    assert "--pretrained" in msg and "pass the file" in msg
    # the file, the hub repo and huggingface_hub's own words (its offline or no-connection error), uncut
    assert "(open_clip_pytorch_model.bin of timm/resnet50_clip.openai: " in msg and " ...);" not in msg, msg
    assert "error:" not in capsys.readouterr().err


@pytest.mark.parametrize("cause, shown", [
    # huggingface_hub's GatedRepoError text for a gated repo without a token (several lines, a request id)
    ("401 Client Error. (Request ID: Root=1-abc)\n\nCannot access gated repo for url "
     "https://huggingface.co/timm/resnet50_clip.openai/resolve/main/open_clip_pytorch_model.bin.\n"
     "Access to model timm/resnet50_clip.openai is restricted. You must have access to it and be authenticated to "
     "access it. Please log in.",
     "401 Client Error. Cannot access gated repo for url https://huggingface.co/timm/resnet50_clip.openai/resolve/"
     "main/open_clip_pytorch_model.bin. Access to model timm/resnet50_clip.openai is restricted."),
    ("[Errno 28] No space left on device", "[Errno 28] No space left on device"),
])
def test_a_failed_download_names_its_cause(monkeypatch: pytest.MonkeyPatch, cause: str, shown: str) -> None:
    """Why the download failed, when it is not the network: a gated repo (log in), a full disk. The one line dropped
    huggingface_hub's error (open_clip's ``Last error: ...``), the only place that says it, and told every user
    'without internet ...' (review 2)."""
    import open_clip.pretrained

    def fail(*args, **kwargs):
        raise OSError(cause)

    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", fail)
    with pytest.raises(DistillError) as err:
        Teacher("RN50", "openai", CLASSES)
    msg = str(err.value)
    assert "\n" not in msg and "Request ID" not in msg
    assert ("(open_clip_pytorch_model.bin of timm/resnet50_clip.openai: " + shown) in msg, msg
    assert "--pretrained" in msg


def test_unknown_arch_is_one_line() -> None:
    with pytest.raises(DistillError) as err:
        Teacher("no-such-arch-123", None, CLASSES)
    assert "\n" not in str(err.value) and "unknown open_clip architecture 'no-such-arch-123'" in str(err.value)


def test_missing_checkpoint_is_one_line(tmp_path) -> None:
    missing = tmp_path / "nope" / "open_clip_model.safetensors"
    with pytest.raises(DistillError) as err:
        Teacher("distill-demo-vit", str(missing), CLASSES)
    assert "\n" not in str(err.value) and str(missing) in str(err.value) and "not found" in str(err.value)


def test_checkpoint_of_another_architecture_is_one_line(tmp_path):
    """A demo-rn checkpoint loaded as distill-demo-vit: before, open_clip's raw
    `AssertionError: text pos_embed width changed!`; now a DistillError naming checkpoint and arch."""
    import open_clip
    from safetensors.torch import save_file

    from distill.errors import DistillError
    from distill.teacher.clip import Teacher, register_model_configs

    register_model_configs()
    ckpt = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in open_clip.create_model("distill-demo-rn").state_dict().items()},
              str(ckpt))
    with pytest.raises(DistillError) as e:
        Teacher("distill-demo-vit", str(ckpt), ["a", "b"], ["a {}."])
    msg = str(e.value)
    assert "\n" not in msg and str(ckpt) in msg and "'distill-demo-vit'" in msg


class _NotATensor:  # a pickled object torch's weights-only loader refuses
    pass


def _jpeg(path) -> None:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, format="JPEG")


@pytest.mark.parametrize("name,make,says", [
    ("photo.jpg", _jpeg, "it is neither a safetensors nor a torch.save file"),
    ("empty.pt", lambda p: p.write_bytes(b""), "it is neither a safetensors nor a torch.save file"),
    ("renamed.pt", lambda p: __import__("safetensors.torch").torch.save_file({"w": torch.zeros(2)}, str(p)),
     "it holds safetensors: name it *.safetensors"),
    ("junk.safetensors", lambda p: p.write_text("hello\n"), "it is neither a safetensors nor a torch.save file"),
    ("objects.pt", lambda p: torch.save({"w": _NotATensor()}, p), "weights-only loader refuses"),
])
def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, name, make, says) -> None:
    """Before: a 37-line UnpicklingError (or SafetensorError / EOFError) traceback whose tail advised
    re-running torch.load with weights_only=False, which runs the file's code."""
    path = tmp_path / name
    make(path)
    with pytest.raises(DistillError) as err:
        Teacher("distill-demo-rn", str(path), CLASSES)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ") and says in msg, msg
    assert "weights_only" not in msg
    assert ("expected a safetensors" if name.endswith(".safetensors") else "expected a") in msg
