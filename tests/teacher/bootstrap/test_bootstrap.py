"""The demo-teacher bootstrap on a tiny synthetic ROOT/DOMAIN/CLASS tree (colored shapes)."""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from distill.cli import main
from distill.data.folder import DomainFolder
from distill.errors import DistillError
from distill.records import TEACHER_BOOTSTRAP_STATE, TeacherManifest
from distill.teacher.bootstrap import presets as bootstrap_presets
from distill.teacher.bootstrap import train as bootstrap
from distill.teacher.bootstrap.model import MultiPositiveClipLoss, create_model
from distill.teacher.bootstrap.presets import DEMO_ARCH, DEMO_TEMPLATES, BootstrapSettings
from distill.teacher.bootstrap.train import bootstrap_teacher
from distill.teacher.clip import Teacher
from distill.utils.io import sha256_file

SHAPES = {"square": (220, 40, 40), "circle": (40, 200, 40), "triangle": (40, 60, 230)}
DOMAINS = ("plain", "night_sky")
SETTINGS = BootstrapSettings(epochs=3, batch_size=8, lr=2e-3, seed=0)
POOL = 0.5  # the teacher's pretraining pool: half of each domain (~24 of the 48 images)


def _draw(shape: str, domain: str, rng: np.random.Generator) -> Image.Image:
    if domain == "plain":
        img = Image.new("RGB", (32, 32), (245, 245, 245))
    else:  # dark, noisy background
        img = Image.fromarray(rng.integers(0, 60, (32, 32, 3), dtype=np.uint8))
    d = ImageDraw.Draw(img)
    s = int(rng.integers(12, 20))
    x, y = (int(v) for v in rng.integers(2, 30 - s, 2))
    color = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in SHAPES[shape])
    if shape == "square":
        d.rectangle((x, y, x + s, y + s), fill=color)
    elif shape == "circle":
        d.ellipse((x, y, x + s, y + s), fill=color)
    else:
        d.polygon([(x, y + s), (x + s, y + s), (x + s // 2, y)], fill=color)
    return img


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROOT/DOMAIN/CLASS/*.png: 2 domains x 3 classes x 8 images."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for dom in DOMAINS:
        for shape in SHAPES:
            (root / dom / shape).mkdir(parents=True)
            for i in range(8):
                _draw(shape, dom, rng).save(root / dom / shape / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tree: Path, tmp_path_factory: pytest.TempPathFactory):
    """One bootstrap run, keeping the in-memory model and every file it opened."""
    out = tmp_path_factory.mktemp("teacher")
    ds = DomainFolder(tree, pretrain_fraction=POOL)
    opened: list[str] = []
    models: list[torch.nn.Module] = []
    mp = pytest.MonkeyPatch()
    real_open, real_create = Image.open, bootstrap.create_model
    mp.setattr(Image, "open", lambda fp, *a, **k: (opened.append(str(fp)), real_open(fp, *a, **k))[1])
    mp.setattr(bootstrap, "create_model", lambda *a: (lambda r: (models.append(r[0]), r)[1])(real_create(*a)))
    try:
        ckpt = bootstrap_teacher(ds, out, BootstrapSettings(epochs=20, batch_size=8, lr=2e-3, seed=0), progress=False)
    finally:
        mp.undo()
    return ds, ckpt, models[0].eval(), opened


def _loss_on_train(model: torch.nn.Module, ds: DomainFolder) -> float:
    """Contrastive loss on every pool image, un-augmented, with domain-free captions."""
    _, _, preprocess = open_clip.create_model_and_transforms(DEMO_ARCH)
    tok = open_clip.get_tokenizer(DEMO_ARCH)
    samples = ds.select(split="pretrain")
    x = torch.stack([preprocess(Image.open(ds.path(s)).convert("RGB")) for s in samples])
    labels = torch.tensor([s.label for s in samples])
    captions = tok([DEMO_TEMPLATES[i % len(DEMO_TEMPLATES)].format(s.class_name) for i, s in enumerate(samples)])
    with torch.no_grad():
        img = F.normalize(model.encode_image(x), dim=-1)
        txt = F.normalize(model.encode_text(captions), dim=-1)
        loss = MultiPositiveClipLoss()(img, txt, model.logit_scale.exp(), labels[:, None] == labels[None, :])
    return float(loss)


def test_bootstrap_reduces_contrastive_loss(trained) -> None:
    ds, ckpt, model, _ = trained
    initial, _, _ = create_model(DEMO_ARCH, 0)  # the same seeded init the run started from
    before, after = _loss_on_train(initial.eval(), ds), _loss_on_train(model, ds)
    assert after < before - 0.3, (before, after)
    history = json.loads((ckpt.parent / "teacher.json").read_text())["loss_history"]
    assert len(history) == 20 and history[-1] < history[0]


def test_checkpoint_round_trips_through_teacher(trained) -> None:
    ds, ckpt, model, _ = trained
    assert ckpt.name == "open_clip_model.safetensors" and not (ckpt.parent / TEACHER_BOOTSTRAP_STATE).exists()
    teacher = Teacher(DEMO_ARCH, str(ckpt), ds.classes, DEMO_TEMPLATES)  # open_clip loads it strictly
    assert set(load_file(str(ckpt))) == set(model.state_dict())
    x = torch.stack([teacher.preprocess(Image.open(ds.path(s)).convert("RGB")) for s in ds.samples[:6]])
    with torch.no_grad():
        expected = F.normalize(model.encode_image(x), dim=-1)
        head = F.normalize(model.encode_text(teacher.tokenizer([t.format(c) for c in ds.classes for t in DEMO_TEMPLATES])), dim=-1)
        head = F.normalize(head.view(len(ds.classes), len(DEMO_TEMPLATES), -1).mean(1), dim=-1)
    assert torch.equal(teacher.encode_image(x), expected)
    torch.testing.assert_close(teacher.text_embeddings, head, rtol=0, atol=1e-6)

    manifest = json.loads((ckpt.parent / "teacher.json").read_text())
    assert manifest["arch"] == DEMO_ARCH and manifest["templates"] == list(DEMO_TEMPLATES)
    assert manifest["classes"] == ds.classes and manifest["dataset"]["fingerprint"] == ds.fingerprint()
    pool = ds.select(split="pretrain")
    assert manifest["dataset"]["train_images"] == len(pool)  # too few to hold some out to validate
    assert manifest["dataset"]["pretrain"] == {"fraction": POOL, "split_seed": 0, "test_fraction": 0.3,
                                               "val_fraction": 0.1, "images": len(pool)}
    assert manifest["checkpoint_sha256"] == sha256_file(ckpt)
    assert manifest["training"]["epochs"] == 20 and manifest["training"]["batch_size"] == 8
    record = TeacherManifest.read(ckpt.parent)  # the record is the file, key order and "model_config" too
    assert record.to_dict() == manifest and list(record.to_dict()) == list(manifest)
    assert manifest["warning"].startswith("the bootstrapped teacher cannot be judged")  # no image held out
    assert not any(d.replace("_", " ") in t or d in t for t in DEMO_TEMPLATES for d in DOMAINS)


def test_opens_only_the_pretraining_pool(trained) -> None:
    """No student train, val or test image is ever opened: the teacher's zero-shot numbers rest on none."""
    ds, _, _, opened = trained
    split_of = {str(ds.path(s)): s.split for s in ds.samples}
    assert opened, "the loader was not observed"
    assert {split_of[p] for p in opened} == {"pretrain"}
    assert sorted(set(opened)) == sorted(str(ds.path(s)) for s in ds.select(split="pretrain"))
    assert {s.split for s in ds.samples} == {"train", "val", "test", "pretrain"}


def test_no_pool_is_refused(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(DistillError, match=r"pretraining pool only .*pass --pretrain-fraction \(0.3 on the digits suite\)"):
        bootstrap_teacher(DomainFolder(tree), tmp_path, SETTINGS, progress=False)
    # the CLI defaults to a pool (--pretrain-fraction 0.3, tests/data/test_split.py); an explicit 0 is refused
    assert main(["teacher", "bootstrap", "--data", str(tree), "--out", str(tmp_path / "t"), "--quick",
                 "--pretrain-fraction", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--pretrain-fraction" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "t" / "teacher.json").exists()


def test_another_pool_is_refused_not_retrained(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one_epoch = dataclasses.replace(SETTINGS, epochs=1)
    bootstrap_teacher(DomainFolder(tree, pretrain_fraction=POOL), tmp_path, one_epoch, progress=False)
    first, sha = TeacherManifest.read(tmp_path), sha256_file(tmp_path / "open_clip_model.safetensors")
    real_create, created = bootstrap.create_model, []
    monkeypatch.setattr(bootstrap, "create_model", lambda *a: (created.append(1), real_create(*a))[1])
    bootstrap_teacher(DomainFolder(tree, pretrain_fraction=POOL), tmp_path, one_epoch, progress=False)
    assert not created, "the same pool retrained"
    with pytest.raises(DistillError, match=r"teacher.json: a teacher bootstrapped with other parameters is here "
                                           r"\(that teacher vs this run: pretrain.fraction: 0.5 vs 0.4; "
                                           r"pretrain.images: 24 vs 18\); remove"):
        bootstrap_teacher(DomainFolder(tree, pretrain_fraction=0.4), tmp_path, one_epoch, progress=False)
    assert not created and TeacherManifest.read(tmp_path) == first
    assert sha256_file(tmp_path / "open_clip_model.safetensors") == sha


def test_killed_bootstrap_resumes_bit_identical(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = DomainFolder(tree, pretrain_fraction=POOL)
    full = bootstrap_teacher(ds, tmp_path / "full", SETTINGS, progress=False)

    real_save = bootstrap.save_state

    def save_then_die(path, *args, **kwargs):
        real_save(path, *args, **kwargs)
        raise KeyboardInterrupt  # killed right after the epoch-1 checkpoint hit the disk

    monkeypatch.setattr(bootstrap, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        bootstrap_teacher(ds, tmp_path / "killed", SETTINGS, progress=False)
    assert (tmp_path / "killed" / TEACHER_BOOTSTRAP_STATE).is_file()
    assert not (tmp_path / "killed" / "open_clip_model.safetensors").exists()
    monkeypatch.setattr(bootstrap, "save_state", real_save)

    resumed_from: list[int] = []
    real_load = bootstrap.load_state
    monkeypatch.setattr(bootstrap, "load_state", lambda *a: (lambda r: (resumed_from.append(r and r[0]), r)[1])(real_load(*a)))
    resumed = bootstrap_teacher(ds, tmp_path / "killed", SETTINGS, progress=False)
    assert resumed_from == [1]
    a, b = load_file(str(full)), load_file(str(resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sha256_file(full) == sha256_file(resumed)
    assert not (tmp_path / "killed" / TEACHER_BOOTSTRAP_STATE).exists()

    # Finished with the same parameters: returned at once, nothing rebuilt.
    monkeypatch.setattr(bootstrap, "create_model", lambda *a: pytest.fail("retrained a finished teacher"))
    assert bootstrap_teacher(ds, tmp_path / "killed", SETTINGS, progress=False) == resumed


def test_changed_parameters_never_overwrite_a_finished_teacher(tree: Path, tmp_path: Path) -> None:
    ds = DomainFolder(tree, pretrain_fraction=POOL)
    first = bootstrap_teacher(ds, tmp_path, SETTINGS, progress=False)
    sha, manifest = sha256_file(first), (tmp_path / "teacher.json").read_text()
    with pytest.raises(DistillError) as e:  # as `cache build` refuses a cache of another plan
        bootstrap_teacher(ds, tmp_path, dataclasses.replace(SETTINGS, epochs=2, seed=3), progress=False)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'teacher.json'}: a teacher bootstrapped with other parameters is here")
    assert "training.epochs: 3 vs 2; training.seed: 0 vs 3" in msg and "choose another --out" in msg
    assert "\n" not in msg and "fingerprint" not in msg
    other = tmp_path / "other_data"
    (other / "plain" / "square").mkdir(parents=True)
    for p in sorted((tree / "plain" / "square").iterdir()):
        (other / "plain" / "square" / p.name).write_bytes(p.read_bytes())
    with pytest.raises(DistillError, match=rf"that teacher vs this run: --data: {tree} vs {other}; "):
        bootstrap_teacher(DomainFolder(other, pretrain_fraction=POOL), tmp_path, SETTINGS, progress=False)
    assert sha256_file(first) == sha and (tmp_path / "teacher.json").read_text() == manifest


@pytest.mark.parametrize("damage", ["not json", "old format", "binary", "replaced checkpoint"])
def test_an_unreadable_teacher_json_is_refused_not_retrained(tree: Path, tmp_path: Path, damage: str,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    """Review 2 item 7: a teacher.json that cannot be read (or no longer matches its checkpoint) cannot say which
    parameters trained the teacher beside it, so the bootstrap refused nothing and retrained over the checkpoint."""
    one_epoch = dataclasses.replace(SETTINGS, epochs=1)
    ds = DomainFolder(tree, pretrain_fraction=POOL)
    ckpt = bootstrap_teacher(ds, tmp_path, one_epoch, progress=False)
    manifest = tmp_path / "teacher.json"
    if damage == "not json":
        manifest.write_text(manifest.read_text()[:50])
    elif damage == "old format":  # an earlier distill's teacher.json: without the keys this version reads
        manifest.write_text(json.dumps({k: v for k, v in json.loads(manifest.read_text()).items() if k != "run_key"}))
    elif damage == "binary":
        manifest.write_bytes(b"\xff\xfe\x00garbage")
    else:
        ckpt.write_bytes(ckpt.read_bytes()[:-8] + b"\x00" * 8)
    weights, text = ckpt.read_bytes(), manifest.read_bytes()
    monkeypatch.setattr(bootstrap, "create_model", lambda *a: pytest.fail("retrained over the teacher"))
    with pytest.raises(DistillError) as e:
        bootstrap_teacher(ds, tmp_path, one_epoch, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and f"choose another --out, or delete {manifest} to retrain over it" in msg
    if damage == "replaced checkpoint":
        assert msg.startswith(f"{ckpt}: not the checkpoint teacher.json describes (checkpoint_sha256 differs")
    else:
        assert msg.startswith(f"{manifest}: cannot tell which parameters trained the teacher "
                              "open_clip_model.safetensors here (")
    assert ckpt.read_bytes() == weights and manifest.read_bytes() == text  # nothing lost
    args = ["teacher", "bootstrap", "--data", str(tree), "--out", str(tmp_path), "--no-progress",
            "--pretrain-fraction", str(POOL), "--epochs", "1", "--batch-size", "8", "--lr", "2e-3"]
    capsys.readouterr()
    assert main(args) == 1
    assert capsys.readouterr().err.strip() == f"error: {msg}"
    manifest.unlink()  # the way out it names: without teacher.json the folder is retrained
    monkeypatch.undo()
    assert bootstrap_teacher(ds, tmp_path, one_epoch, progress=False) == ckpt
    assert TeacherManifest.read(tmp_path).checkpoint_sha256 == sha256_file(ckpt)


def test_changed_parameters_ignore_stale_state(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = DomainFolder(tree, pretrain_fraction=POOL)
    real_save = bootstrap.save_state

    def save_then_die(path, *args, **kwargs):
        real_save(path, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(bootstrap, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):  # leaves an epoch checkpoint of a 4-epoch run, and no teacher
        bootstrap_teacher(ds, tmp_path, dataclasses.replace(SETTINGS, epochs=4), progress=False)
    monkeypatch.setattr(bootstrap, "save_state", real_save)

    resumed_from: list = []
    real_load = bootstrap.load_state
    monkeypatch.setattr(bootstrap, "load_state", lambda *a: (lambda r: (resumed_from.append(r), r)[1])(real_load(*a)))
    bootstrap_teacher(ds, tmp_path, dataclasses.replace(SETTINGS, epochs=2), progress=False)
    assert resumed_from == [None]  # the 4-epoch state is not resumed by a 2-epoch run
    assert json.loads((tmp_path / "teacher.json").read_text())["training"]["epochs"] == 2


def test_rerun_says_it_skipped_even_without_progress(tree: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    args = ["teacher", "bootstrap", "--data", str(tree), "--out", str(tmp_path), "--quick", "--no-progress",
            "--pretrain-fraction", str(POOL), "--epochs", "1"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"teacher already bootstrapped with these parameters: {tmp_path / 'open_clip_model.safetensors'}" in err
    assert main(args[:-2] + ["--epochs", "2", "--seed", "5"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "training.seed: 0 vs 5" in err


def test_cli_bootstrap_then_eval(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "t"
    assert main(["teacher", "bootstrap", "--data", str(tree), "--out", str(out), "--quick", "--no-progress",
                 "--pretrain-fraction", str(POOL)]) == 0
    text = capsys.readouterr().out
    assert f"teacher checkpoint: {out / 'open_clip_model.safetensors'}" in text
    assert main(["teacher", "eval", "--pretrained", str(out / "open_clip_model.safetensors"), "--data", str(tree)]) == 0
    text = capsys.readouterr().out
    assert "teacher.json" in text  # arch and templates came from the manifest
    for dom in DOMAINS:
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(dom + " "))
        assert 0.0 <= float(line.split()[1].rstrip("%")) <= 100.0
    assert main(["teacher", "eval", "--arch", DEMO_ARCH, "--pretrained", str(tmp_path / "missing.safetensors"),
                 "--data", str(tree)]) == 1
    assert "teacher checkpoint not found" in capsys.readouterr().err


def test_templates_file_formats(tmp_path: Path) -> None:
    from distill.teacher.prompts import read_templates as load_templates

    txt = tmp_path / "t.txt"
    txt.write_text("# prompts\na photo of a {}.\n\n  a {} drawing.\n")
    assert load_templates(txt) == ["a photo of a {}.", "a {} drawing."]
    js = tmp_path / "teacher.json"
    js.write_text(json.dumps({"arch": DEMO_ARCH, "templates": list(DEMO_TEMPLATES)}))
    assert load_templates(js) == list(DEMO_TEMPLATES)
    bad = tmp_path / "bad.txt"
    bad.write_text("no placeholder here\n")
    with pytest.raises(DistillError, match="bad.txt.*exactly one"):
        load_templates(bad)
    with pytest.raises(DistillError, match="not found"):
        load_templates(tmp_path / "missing.txt")


def test_cache_build_and_eval_use_the_bootstrapped_teachers_templates(trained, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """Without --templates-file, cache build takes teacher.json's templates (not the 12 defaults);
    with teacher.json as --templates-file it reads them too (it used to fail on the '{' line)."""
    ds, ckpt, _, _ = trained
    base = ["cache", "build", "--data", str(ds.root), "--arch", DEMO_ARCH, "--pretrained", str(ckpt), "--no-progress",
            "--workers", "0"]
    assert main([*base, "--out", str(tmp_path / "auto")]) == 0
    assert f"prompt templates: 4 from {ckpt.parent / 'teacher.json'}" in capsys.readouterr().out.splitlines()
    assert json.loads((tmp_path / "auto" / "manifest.json").read_text())["templates"] == list(DEMO_TEMPLATES)
    assert main([*base, "--out", str(tmp_path / "file"), "--templates-file", str(ckpt.parent / "teacher.json")]) == 0
    assert json.loads((tmp_path / "file" / "manifest.json").read_text())["templates"] == list(DEMO_TEMPLATES)
    capsys.readouterr()
    assert main(["teacher", "eval", "--pretrained", str(ckpt), "--data", str(ds.root), "--no-progress"]) == 0
    assert f"4 templates from {ckpt.parent / 'teacher.json'}" in capsys.readouterr().out


def test_schedule_adapts_to_the_data_size() -> None:
    # the case: 187 photos -> ~118 train images; 14 epochs x batch 64 was 28 steps, loss stuck at ln(64)
    assert bootstrap_presets.choose_schedule(118, bootstrap_presets.FULL) == (143, 16)  # batch <= 118/4, >= 1000 steps (143 x 7)
    assert bootstrap_presets.choose_schedule(1907, bootstrap_presets.FULL) == (35, 64)  # the digits suite's 30% pool
    assert bootstrap_presets.choose_schedule(4745, bootstrap_presets.FULL) == (14, 64)  # a large set keeps the preset (1036 steps)
    assert bootstrap_presets.choose_schedule(118, bootstrap_presets.FULL, epochs=5, batch_size=32) == (5, 32)  # explicit values are kept
    assert bootstrap_presets.choose_schedule(20, bootstrap_presets.QUICK) == (6, 8)
    assert bootstrap_presets.near_chance(0.25, 5) and not bootstrap_presets.near_chance(0.45, 5) and bootstrap_presets.near_chance(0.7, 2)


def test_warning_judges_held_out_accuracy_never_train_alone():
    """The issue's case: 48 pool images memorised (train 100 %, test 47 %) printed no warning, because the
    near-chance check fell back to train accuracy when no image was held out."""
    warn = functools.partial(bootstrap_presets.near_chance_warning, history=[0.5], n_classes=10, epochs=40,
                             steps_per_epoch=3, batch_size=16, quick=False, n_train=48)
    unjudged = warn({"train": 1.0, "val": float("nan")})
    assert unjudged is not None and unjudged.startswith("the bootstrapped teacher cannot be judged: no held-out "
                                                        "validation: 48 pool images leave none to validate on")
    assert "zero-shot train accuracy 100.0% says nothing about unseen images" in unjudged
    memorised = warn({"train": 1.0, "val": 0.47})
    assert memorised is not None and memorised.startswith(
        "the bootstrapped teacher memorised its pool: zero-shot train accuracy 100.0% but 47.0% on held-out images")
    assert "near chance: zero-shot val accuracy 12.0%" in warn({"train": 1.0, "val": 0.12})  # val, not train
    assert warn({"train": 0.99, "val": 0.93}) is None and warn({"train": 0.8, "val": 0.6}) is None  # generalises
    assert all("\n" not in w for w in (unjudged, memorised))


def test_bootstrap_picks_its_schedule_and_prints_progress(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(bootstrap, "FULL", bootstrap_presets.BootstrapPreset(epochs=2, batch_size=64, lr=2e-3, min_steps=12))
    # train zero-shot 90% (nan: no images held out to validate on this tiny set): not judged on train accuracy
    monkeypatch.setattr(bootstrap, "zero_shot_in_memory", lambda model, images, *a, **k: 0.9 if len(images) else float("nan"))
    ds = DomainFolder(tree, pretrain_fraction=POOL)
    n = len(ds.select(split="pretrain"))
    bootstrap_teacher(ds, tmp_path, BootstrapSettings(seed=0), progress=False)
    training = json.loads((tmp_path / "teacher.json").read_text())["training"]
    steps = n // 8
    assert (training["batch_size"], training["epochs"]) == (8, max(2, -(-12 // steps)))  # 64 -> 8 for ~24 images
    out, err = capsys.readouterr()
    assert f"bootstrap epoch 1/{training['epochs']}: loss " in out and "zero-shot train 90.0%  val -" in out
    assert f"bootstrap: {n} pretraining-pool images (0 more held out to validate;" in out
    # why a tiny pool trains so many epochs, said once (a new user's 9 images got 1000 one-step epochs unexplained)
    assert out.count(f"= {training['epochs'] * steps} steps (epochs raised to reach the 12-step minimum; --epochs N "
                     "sets them), lr ") == 1
    assert err.splitlines() == [
        f"warning: the bootstrapped teacher cannot be judged: no held-out validation: {n} pool images leave none to "
        "validate on (a pool of at least 100 holds 10+ out); its zero-shot train accuracy 90.0% says nothing about "
        "unseen images (a small pool is easily memorised): raise --pretrain-fraction, or measure it with "
        "`distill teacher eval` (the test split)"]


def test_near_chance_teacher_warns_loudly(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    # 3 classes: chance (training to chance for real is slow to make certain)
    monkeypatch.setattr(bootstrap, "zero_shot_in_memory", lambda model, images, *a, **k: 1 / 3 if len(images) else float("nan"))
    ds = DomainFolder(tree, pretrain_fraction=POOL)
    bootstrap_teacher(ds, tmp_path, BootstrapSettings(epochs=1, batch_size=8, seed=0), progress=False)
    manifest = json.loads((tmp_path / "teacher.json").read_text())
    loss = manifest["loss_history"][-1]
    steps = len(ds.select(split="pretrain")) // 8
    n = len(ds.select(split="pretrain"))
    want = (f"warning: the bootstrapped teacher is near chance: zero-shot train accuracy 33.3% (chance 33.3% with 3 "
            f"classes; no held-out validation: {n} pool images leave none to validate on (a pool of at least 100 "
            f"holds 10+ out)), final loss {loss:.3f} (ln(batch 8) = 2.079 means nothing learned) after 1 epochs x {steps} "
            f"steps; train longer or with smaller batches, e.g. --epochs 100 --batch-size 4, and check it with "
            f"`distill teacher eval`")
    assert want in capsys.readouterr().err.splitlines()
    assert "warning: " + manifest["warning"] == want
    bootstrap_teacher(ds, tmp_path, BootstrapSettings(epochs=1, batch_size=8, seed=0), progress=False)  # finished: still says so
    assert want in capsys.readouterr().err.splitlines()


def test_a_long_bootstrap_prints_a_bounded_number_of_epoch_lines(tree: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """A new user's 9-image pool trained 1000 one-step epochs (the 1000-step minimum) and printed 1000 epoch lines;
    now about 20 (every epoch_stride-th, the first and the last), scoring zero-shot only for those; the resume state
    is written after those (and after any epoch a minute past the last write), not after each."""
    scored: list[int] = []
    real_score = bootstrap.zero_shot_in_memory
    monkeypatch.setattr(bootstrap, "zero_shot_in_memory", lambda *a, **k: (scored.append(1), real_score(*a, **k))[1])
    saved: list[int] = []  # the epochs whose resume state was written (not written here: the test's speed)
    monkeypatch.setattr(bootstrap, "save_state", lambda path, model, opt, epoch, *a: saved.append(epoch))
    monkeypatch.setattr(bootstrap, "STATE_EVERY_S", 1e9, raising=False)  # a slow machine's minute does not add writes
    ds = DomainFolder(tree, pretrain_fraction=0.1)
    epochs = 41
    ckpt = bootstrap_teacher(ds, tmp_path, BootstrapSettings(epochs=epochs, batch_size=4, seed=0), progress=False)
    out = capsys.readouterr().out.splitlines()
    printed = [int(line.split()[2].split("/")[0]) for line in out if line.startswith("bootstrap epoch ")]
    assert printed == [1, *range(3, epochs, 3), epochs]  # stride ceil(41 / 20) = 3: 15 lines, not 41
    assert len(scored) == 2 * len(printed)  # train and val, at the printed epochs only
    assert saved == printed[:-1]  # 55 MB of model + AdamW after each of 1000 epochs was 2/3 of a tiny pool's run
    assert out[0].endswith("; a line every 3 epochs") and "epochs raised" not in out[0]  # --epochs given: not raised
    manifest = TeacherManifest.read(tmp_path)
    assert len(manifest.loss_history) == epochs  # every epoch still trains and records its loss
    assert manifest.zero_shot["train"] == float(out[-1].split("zero-shot train ")[1].split("%")[0]) / 100

    # what is trained and saved does not depend on how often it is scored and printed
    monkeypatch.setattr(bootstrap_presets, "EPOCH_LINES", 10 ** 6)
    monkeypatch.setattr(bootstrap, "STATE_EVERY_S", 0.0, raising=False)  # and a minute passed after every epoch: each one saved
    saved.clear()
    every = bootstrap_teacher(ds, tmp_path / "every", BootstrapSettings(epochs=epochs, batch_size=4, seed=0),
                              progress=False)
    assert sum(line.startswith("bootstrap epoch ") for line in capsys.readouterr().out.splitlines()) == epochs
    assert saved == list(range(1, epochs))
    assert sha256_file(every) == sha256_file(ckpt)


def test_the_printed_epochs_are_bounded() -> None:
    for epochs in (1, 3, 20, 21, 35, 143, 1000, 5000):
        shown = [e for e in range(epochs) if bootstrap_presets.is_reported(e, 0, epochs)]
        assert shown[0] == 0 and shown[-1] == epochs - 1 and len(shown) <= bootstrap_presets.EPOCH_LINES + 2
        assert len(shown) == epochs if epochs <= bootstrap_presets.EPOCH_LINES else len(shown) >= 10
    assert bootstrap_presets.is_reported(7, 7, 1000)  # a resumed run prints its first epoch
