"""Tiny offline fixtures: a 3-domain, 4-class 32x32 image tree and a quickly trained student.

Imported by tests/export/conftest.py and (by file path) tests/report/conftest.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["checker", "hstripes", "square", "vstripes"]
DOMAINS = {"clean": (1.0, 0.0, 8), "dark": (0.55, 0.0, 16), "noisy": (1.0, 0.1, 40)}  # contrast, tint, noise


def _pattern(cls: str, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:32, 0:32]
    period = int(rng.integers(4, 9))
    phase = int(rng.integers(0, period))
    if cls == "hstripes":
        m = ((yy + phase) // (period // 2 or 1)) % 2
    elif cls == "vstripes":
        m = ((xx + phase) // (period // 2 or 1)) % 2
    elif cls == "checker":
        m = (((yy + phase) // period) + ((xx + phase) // period)) % 2
    else:  # a filled square somewhere
        s = int(rng.integers(10, 18))
        y0, x0 = rng.integers(0, 32 - s, size=2)
        m = np.zeros((32, 32), int)
        m[y0:y0 + s, x0:x0 + s] = 1
    return m.astype(np.float32)


def make_tree(root: Path, per_class: int = 24, seed: int = 0) -> Path:
    """ROOT/DOMAIN/CLASS/i.png with a visible domain shift (contrast, tint, noise)."""
    rng = np.random.default_rng(seed)
    for d, (contrast, tint, noise) in DOMAINS.items():
        for c in CLASSES:
            folder = root / d / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                m = _pattern(c, rng)
                color = rng.uniform(0.5, 1.0, size=3)
                color[0] = min(1.0, color[0] + tint * 5)
                img = 255 * contrast * m[..., None] * color[None, None, :] + 20
                img = img + rng.normal(0, noise, size=img.shape)
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


def train_student(root: Path, out_dir: Path, arch: str = "test_resnet", steps: int = 30, seed: int = 0,
                  domains: list[str] | None = None) -> Path:
    """Train ``arch`` at 32 px for ``steps`` Adam steps on the train split; save a checkpoint."""
    import torch

    from distill.data.folder import DomainFolder
    from distill.export.images import load_images
    from distill.student.model import Student, default_spec, save_student

    torch.manual_seed(seed)
    folder = DomainFolder(root)
    spec = default_spec(arch, folder.classes, input_size=32)
    spec.interpolation = "bilinear"
    student = Student(spec)
    imgs = load_images(folder, folder.select(domains or ["clean", "dark"], "train"), spec)
    x_all = torch.from_numpy(imgs.normalize(imgs.images))
    y_all = torch.from_numpy(imgs.labels)
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    student.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x_all), (32,), generator=g)
        loss = torch.nn.functional.cross_entropy(student(x_all[idx]), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    student.eval()
    save_student(student, out_dir, extra_provenance={"strategy": "erm", "teacher": {"arch": "none (test)"},
                                                     "run": str(out_dir.parent.parent)})
    return out_dir


def make_run_dir(root: Path, run_dir: Path, arch: str = "test_resnet", steps: int = 30) -> Path:
    """RUN_DIR/checkpoints/best + summary.json + config + metrics.csv like a training run writes them."""
    from distill.records import RUN_CONFIG, RUN_METRICS, RunSummary

    ckpt = train_student(root, run_dir / "checkpoints" / "best", arch=arch, steps=steps)
    RunSummary.from_dict({
        "strategy": "erm", "student": arch, "teacher": {"arch": "ViT-test", "pretrained": "none"},
        "source_domains": ["clean", "dark"], "target_domains": ["noisy"], "trained_on": ["clean", "dark"],
        "best_epoch": 1, "selected_on": "source validation accuracy",
        "test_acc": {"clean": 0.9, "dark": 0.8, "noisy": 0.6},
        "teacher_zero_shot": {"clean": 0.5, "dark": 0.4, "noisy": 0.3},
        "params": 1000, "flops": 100000, "checkpoint": str(ckpt), "train_seconds_this_session": 1.0,
    }).write(run_dir)
    (run_dir / RUN_CONFIG).write_text(json.dumps({"data": {"root": str(root), "source": ["clean", "dark"],
                                                           "target": ["noisy"], "test_fraction": 0.3,
                                                           "split_seed": 0}}))  # JSON is YAML
    (run_dir / RUN_METRICS).write_text("step,loss\n1,1.0\n")
    return ckpt


def edge_out(run_ckpt: Path, edge: Path, tag: str = "test_resnet-e1-s0",
             targets: tuple[str, ...] = ()) -> tuple[Path, str]:
    """A ``benchmarks/edge_students.py --out`` folder holding ``run_ckpt``'s run as ``tag`` (runs/TAG, records/TAG.json
    naming ``targets``); the caller writes its export into ``edge/export/TAG``. Returns (edge, tag)."""
    import json

    (edge / "runs").mkdir(parents=True)
    (edge / "runs" / tag).symlink_to(run_ckpt.parents[1])
    (edge / "records").mkdir()
    (edge / "records" / f"{tag}.json").write_text(json.dumps({"targets": list(targets)}))
    return edge, tag


def text_student(folder: Path, classes: tuple[str, ...] = ("checker", "hstripes", "square"),
                 templates: tuple[str, ...] = ("a photo of a {}.",)) -> tuple[Path, Path]:
    """A random distill-demo-vit saved to ``folder`` and a text-head test_resnet student of it saved as training saves
    one (its provenance names the teacher file in ``teacher_pretrained``, which re-targeting loads); returns (teacher
    file, checkpoint folder). tests/export/test_retarget.py's fixtures build the same."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from distill.student.model import Student, default_spec, save_student
    from distill.teacher import Teacher, register_model_configs

    register_model_configs()
    torch.manual_seed(0)
    teacher_file = folder / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in open_clip.create_model("distill-demo-vit").state_dict().items()},
              str(teacher_file))
    teacher = Teacher("distill-demo-vit", str(teacher_file), list(classes), list(templates))
    spec = default_spec("test_resnet", list(classes), 32, embed_dim=teacher.embed_dim, head="text",
                        logit_scale=teacher.logit_scale)
    spec.provenance = {"teacher": teacher.identity(), "teacher_pretrained": str(teacher_file),
                       "templates": list(templates)}
    torch.manual_seed(1)
    student = Student(spec, text_embeddings=teacher.text_embeddings)
    with torch.no_grad():
        student.train()(torch.randn(8, 3, 32, 32))
    return teacher_file, save_student(student.eval(), folder / "student" / "best")
