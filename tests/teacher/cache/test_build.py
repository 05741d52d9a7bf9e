"""Teacher cache: layout, identity checks, resume after kill -9, torchrun, bad images, view replay.

One small tree (30 PNGs, 3 domains x 2 classes) and the random-weight ``distill-demo-vit``
teacher (32 px). Builds use one torch thread, as torchrun ranks do.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from distill.cli import main as cli
from distill.data.folder import DomainFolder
from distill.data.images import BadImageError
from distill.errors import DistillError
from distill.teacher.cache_format import SPLIT_CODES
from distill.teacher.cache import (
    BUILD_PLAN, MANIFEST, SHARD_DELAY_ENV, CacheMismatchError, TeacherCache, ViewConfig, build_cache,
    expected_identity, shard_name,
)
from distill.teacher.clip import Teacher
from distill.teacher.prompts import DEFAULT_TEMPLATES

REPO = Path(__file__).resolve().parents[2]
PACS_MINI = REPO.parent / "shared/data/pacs_mini"
# The reference build; the CLI runs below use the same settings.
SETTINGS = dict(views=2, seed=0, batch_size=4, shard_size=3, dtype="float16")
CLI_SETTINGS = ["--arch", "distill-demo-vit", "--pretrained", "none", "--views", "2", "--seed", "0",
                "--batch-size", "4", "--shard-size", "3", "--dtype", "float16",
                "--device", "cpu"]  # like the in-process reference: CPU results are bitwise (GPU: tests/gpu)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def make_tree(root: Path, seed: int = 0) -> Path:
    """30 noise PNGs of varied sizes and aspect ratios: 3 domains x 2 classes x 5."""
    rng = np.random.default_rng(seed)
    for d in ("art", "photo", "sketch"):
        for c in ("cat", "dog"):
            (root / d / c).mkdir(parents=True)
            for i in range(5):
                h, w = (int(v) for v in rng.integers(24, 64, 2))
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / d / c / f"{i}.png")
    return root


def demo_teacher(classes: list[str]) -> Teacher:
    torch.manual_seed(0)  # what `--pretrained none` does
    return Teacher("distill-demo-vit", None, classes, DEFAULT_TEMPLATES)


def assert_same_cache(a: Path, b: Path) -> None:
    """Bit-identical shards and text embeddings; manifests equal but for the creation time."""
    ma, mb = (json.loads((p / MANIFEST).read_text()) for p in (a, b))
    for m in (ma, mb):
        m.pop("created"), m["dataset"].pop("root")
    assert ma == mb
    for shard in ma["shards"]:
        ta, tb = load_file(str(a / shard["file"])), load_file(str(b / shard["file"]))
        assert ta.keys() == tb.keys()
        for k in ta:
            assert ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]), (shard["file"], k)
        assert (a / shard["file"]).read_bytes() == (b / shard["file"]).read_bytes()
    assert torch.equal(load_file(str(a / "text_embeddings.safetensors"))["text_embeddings"],
                       load_file(str(b / "text_embeddings.safetensors"))["text_embeddings"])


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree") / "data")


@pytest.fixture(scope="module")
def dataset(tree) -> DomainFolder:
    return DomainFolder(tree)


@pytest.fixture(scope="module")
def teacher(dataset) -> Teacher:
    return demo_teacher(dataset.classes)


@pytest.fixture(scope="module")
def reference(dataset, teacher, tmp_path_factory) -> Path:
    return build_cache(dataset, teacher, tmp_path_factory.mktemp("ref") / "cache", num_workers=0, progress=False,
                       **SETTINGS)


# ---------------------------------------------------------------------- layout and reader
def test_layout_manifest_and_rows(reference, dataset, teacher):
    m = json.loads((reference / MANIFEST).read_text())
    assert m["teacher"] == teacher.identity()
    assert m["templates"] == list(DEFAULT_TEMPLATES) and m["classes"] == ["cat", "dog"]
    assert m["preprocess"] == teacher.preprocess_info.to_dict()
    assert m["dataset"]["fingerprint"] == dataset.fingerprint()
    assert m["dataset"]["domains"] == ["art", "photo", "sketch"]
    assert (m["dataset"]["test_fraction"], m["dataset"]["split_seed"]) == (0.3, 0)
    assert m["views"] == {"count": 2, "seed": 0, "augment": ViewConfig().to_dict()}
    assert m["dtype"] == "float16" and m["rows"] == 60 and m["skipped"] == []
    assert m["shapes"]["image_emb"] == [60, 128] and m["shapes"]["logits"] == [60, 2]
    assert m["teacher_flops_per_image"] == teacher.image_flops() > 0
    assert m["created"] and m["distill_version"]
    assert [s["file"] for s in m["shards"]] == [shard_name(k) for k in range(10)]
    assert m["shards"][3]["samples"] == [9, 12] and m["shards"][3]["rows"] == 6

    cache = TeacherCache.open(reference)
    r = cache.rows
    assert r["image_emb"].dtype == torch.float16 and r["logits"].shape == (60, 2)
    assert (r["sample_index"].dtype, r["view"].dtype, r["domain"].dtype, r["label"].dtype, r["split"].dtype) == (
        torch.int64, torch.int16, torch.int16, torch.int16, torch.uint8)
    assert r["view_params"].shape == (60, 5) and r["view_params"].dtype == torch.float32
    key = r["sample_index"] * 2 + r["view"].long()
    assert torch.equal(key, torch.arange(60))  # sorted by (sample, view); every sample has 2 views
    for s in dataset.samples:
        row = 2 * s.index
        assert (int(r["label"][row]), cache.domains[int(r["domain"][row])], int(r["split"][row])) == (
            s.label, s.domain, SPLIT_CODES[s.split])
    assert torch.equal(cache.text_embeddings, teacher.text_embeddings.float())
    assert cache.text_embeddings.dtype == torch.float32

    # the stored rows are the teacher's outputs on view 0 (clean, open_clip's transform)
    x = torch.stack([teacher.preprocess(Image.open(dataset.path(s)).convert("RGB")) for s in dataset.samples[:4]])
    emb, logits = teacher(x)
    got = cache.lookup(torch.arange(4), torch.zeros(4, dtype=torch.long))
    assert got["image_emb"].dtype == torch.float32
    torch.testing.assert_close(got["image_emb"], emb, atol=2e-3, rtol=0)
    torch.testing.assert_close(got["logits"], logits, atol=3e-2, rtol=0)


def test_lookup_row_ids_and_accuracy(reference, dataset):
    cache = TeacherCache.open(reference)
    si, v = torch.tensor([5, 0, 29, 5]), torch.tensor([1, 0, 1, 0])
    got = cache.lookup(si, v)
    rows = si * 2 + v
    assert torch.equal(got["logits"], cache.rows["logits"][rows].float())
    assert torch.equal(got["view_params"], cache.rows["view_params"][rows])
    assert got["label"].tolist() == [dataset.samples[i].label for i in si.tolist()]
    with pytest.raises(DistillError, match="sample 3 view 2"):
        cache.lookup(torch.tensor([1, 3]), torch.tensor([0, 2]))
    with pytest.raises(DistillError, match="sample 30 view 0"):
        cache.lookup(torch.tensor([30]), torch.tensor([0]))

    test_photo = cache.row_ids(split="test", domains=["photo"], view=0)
    want = [2 * s.index for s in dataset.select(["photo"], "test")]
    assert test_photo.tolist() == want and len(want) > 0
    assert len(cache.row_ids()) == 60 and len(cache.row_ids(view=1)) == 30
    with pytest.raises(DistillError, match="domain 'clipart'"):
        cache.row_ids(domains=["clipart"])

    acc = cache.zero_shot_accuracy()
    logits, labels = cache.rows["logits"].float(), cache.rows["label"].long()
    for d, splits in dataset.summary().items():
        for split in ("train", "test"):
            ids = [2 * s.index for s in dataset.select([d], split)]
            if ids:
                want = (logits[ids].argmax(1) == labels[ids]).float().mean().item()
                assert acc[d][split] == pytest.approx(want)


def test_expectations_and_stale_manifest(reference, dataset, teacher):
    ok = expected_identity({**teacher.identity(), "torch_version": "0.0"}, teacher.preprocess_info.to_dict(),
                           dataset.classes, dataset.fingerprint(), DEFAULT_TEMPLATES)
    assert len(TeacherCache.open(reference, expect=ok)) == 60  # library versions are not compared

    stale = expected_identity({"arch": "ViT-B-32", "pretrained": "openai"},
                              {**teacher.preprocess_info.to_dict(), "mean": [0.5, 0.5, 0.5]},
                              ["cat", "dog", "horse"], "0" * 64, ["a photo of a {}."])
    with pytest.raises(CacheMismatchError) as e:
        TeacherCache.open(reference, expect=stale)
    msg = str(e.value)
    assert "\n" not in msg and str(reference / MANIFEST) in msg
    for field in ("teacher.arch", '"distill-demo-vit" vs "ViT-B-32"', "teacher.pretrained", "preprocess.mean",
                  "classes: 2 vs 3 items", '"horse"', "dataset.fingerprint", "templates"):
        assert field in msg, field
    assert len(e.value.fields) == 6 and "preprocess.std" not in msg


def test_changed_shard_is_caught_on_open(reference, tmp_path):
    """A shard whose bytes changed after the build (bit rot, a partial copy, a hand edit) still parses as
    safetensors; its sha256, recorded in the manifest, is now checked when the cache is opened."""
    cache = tmp_path / "c"
    shutil.copytree(reference, cache)
    shard = cache / shard_name(1)
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF  # inside the last tensor's payload: the header, and so the parse, are intact
    shard.write_bytes(bytes(data))
    with pytest.raises(DistillError) as e:
        TeacherCache.open(cache)
    msg = str(e.value)
    assert "\n" not in msg and str(shard) in msg and "sha256" in msg and "rebuild" in msg
    assert len(TeacherCache.open(cache, verify=False)) == 60  # the bytes were readable: only the hash tells
    shutil.copy(reference / shard_name(1), shard)
    (cache / "text_embeddings.safetensors").write_bytes(
        (reference / "text_embeddings.safetensors").read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(DistillError, match="text_embeddings.safetensors: sha256"):
        TeacherCache.open(cache)


def test_rerun_returns_at_once_and_other_plan_is_refused(reference, dataset, teacher, tmp_path):
    mtimes = {p.name: p.stat().st_mtime_ns for p in reference.iterdir()}
    assert build_cache(dataset, teacher, reference, num_workers=0, progress=False, **SETTINGS) == reference
    assert {p.name: p.stat().st_mtime_ns for p in reference.iterdir()} == mtimes

    other = {**SETTINGS, "views": 3, "dtype": "float32"}
    with pytest.raises(DistillError, match=r"views\.count: 2 vs 3; dtype: \"float16\" vs \"float32\""):
        build_cache(dataset, teacher, reference, num_workers=0, progress=False, **other)
    # an unfinished build (build.json, no manifest) with another plan is refused too
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(reference / BUILD_PLAN, partial / BUILD_PLAN)
    with pytest.raises(DistillError, match=f"{BUILD_PLAN}.*views.count: 2 vs 3"):
        build_cache(dataset, teacher, partial, num_workers=0, progress=False, **other)
    with pytest.raises(DistillError, match="unfinished teacher cache"):
        TeacherCache.open(partial)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DistillError, match="not empty"):
        build_cache(dataset, teacher, tmp_path / "busy", num_workers=0, progress=False, **SETTINGS)


# ---------------------------------------------------------------------- resume, distributed
def test_kill_9_then_resume_is_bit_identical(reference, tree, tmp_path):
    out = tmp_path / "cache"
    argv = ["cache", "build", "--data", str(tree), "--out", str(out), "--workers", "1", *CLI_SETTINGS]
    proc = subprocess.Popen([sys.executable, "-m", "distill", *argv], env=_env(**{SHARD_DELAY_ENV: "0.5"}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / shard_name(2)).exists():
            assert proc.poll() is None, "build exited before it could be killed"
            assert time.time() < deadline, "build too slow"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (out / BUILD_PLAN).exists() and not (out / MANIFEST).exists()
    assert len(list(out.glob("shard-*.safetensors"))) < 10  # killed mid-way (normally during shard 2's delay)
    mtime = (out / shard_name(0)).stat().st_mtime_ns
    assert cli(argv) == 0  # the same command resumes
    assert (out / shard_name(0)).stat().st_mtime_ns == mtime  # kept, not rebuilt
    assert not list(out.glob(".*.tmp"))
    assert_same_cache(out, reference)


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tmp_path):
    """2 ranks (gloo) build alternate shards; rank 0 gathers the skipped images of rank 1's shards."""
    data = make_tree(tmp_path / "data")
    bad = data / "photo" / "cat" / "4_bad.jpg"  # sample 15 -> shard 5 -> rank 1
    bad.write_bytes(b"")
    adv = dict(adv_views=1, adv_steps=2, adv_seed=5)  # adversarial views too: every rank crafts its shards
    one = build_cache(DomainFolder(data), demo_teacher(DomainFolder(data).classes), tmp_path / "one",
                      num_workers=0, progress=False, skip_bad=True, store_pixels=[(16, 16)], **SETTINGS, **adv)
    assert json.loads((one / MANIFEST).read_text())["skipped"][0]["sample_index"] // 3 % 2 == 1
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    cmd = [*launcher, "--standalone", "--nproc_per_node=2", "-m", "distill", "cache", "build",
           "--data", str(data), "--out", str(tmp_path / "two"), "--workers", "0", "--skip-bad", *CLI_SETTINGS,
           "--adv-views", "1", "--adv-steps", "2", "--adv-seed", "5", "--store-pixels", "16"]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, [line for line in res.stderr.splitlines() if "error" in line.lower()][:5]
    assert res.stdout.count("teacher cache written") == 1  # rank 0 reports
    assert_same_cache(tmp_path / "two", one)
    m = json.loads((tmp_path / "two" / MANIFEST).read_text())
    assert m["skipped"] == [{"path": "photo/cat/4_bad.jpg", "sample_index": 15, "reason": "empty file"}]

    # the adversarial views: several shards, split over the two ranks, byte-identical to one process's
    a1, a2 = (json.loads((p / "adversarial" / MANIFEST).read_text()) for p in (one, tmp_path / "two"))
    a1.pop("created"), a2.pop("created")
    assert a1 == a2 and len(a1["shards"]) >= 2 and a1["rows"] > 0
    for shard in a1["shards"]:
        assert (one / "adversarial" / shard["file"]).read_bytes() == \
            (tmp_path / "two" / "adversarial" / shard["file"]).read_bytes()

    # the pixel store: its shards split over the two ranks too, byte-identical to one process's
    px1, px2 = one / "pixels-16x16-bicubic", tmp_path / "two" / "pixels-16x16-bicubic"
    p1, p2 = (json.loads((p / MANIFEST).read_text()) for p in (px1, px2))
    p1.pop("created"), p2.pop("created")
    assert p1 == p2 and len(p1["shards"]) == len(m["shards"]) == 11
    for shard in p1["shards"]:
        assert (px1 / shard["file"]).read_bytes() == (px2 / shard["file"]).read_bytes()


# ---------------------------------------------------------------------- bad images
def _truncated_jpeg(path: Path) -> None:
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path, quality=90)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("kind,reason", [
    ("truncated", "cannot decode"), ("empty", "empty file"), ("not_image", "not a readable image"),
])
def test_bad_image_stops_or_is_skipped(kind, reason, tree, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tree, data)
    bad = data / "sketch" / "dog" / "3_bad.jpg"  # sorts into the last shards
    {"truncated": _truncated_jpeg, "empty": lambda p: p.write_bytes(b""),
     "not_image": lambda p: p.write_text("<html>not an image</html>")}[kind](bad)
    ds = DomainFolder(data)
    t = demo_teacher(ds.classes)
    out = tmp_path / "cache"
    with pytest.raises(BadImageError) as e:  # decoded in a DataLoader worker
        build_cache(ds, t, out, num_workers=1, progress=False, **SETTINGS)
    assert str(bad) in str(e.value) and reason in str(e.value) and "--skip-bad" in str(e.value)
    index = next(s.index for s in ds.samples if s.relpath == "sketch/dog/3_bad.jpg")
    kept = sorted(p.name for p in out.glob("shard-*.safetensors"))
    assert kept == [shard_name(k) for k in range(index // 3)]  # shards before the bad image are kept
    assert index // 3 == 9 and not (out / MANIFEST).exists()

    build_cache(ds, t, out, num_workers=0, progress=False, skip_bad=True, **SETTINGS)  # resumes
    m = json.loads((out / MANIFEST).read_text())
    assert len(m["skipped"]) == 1 and m["skipped"][0]["path"] == "sketch/dog/3_bad.jpg"
    assert m["skipped"][0]["sample_index"] == index and reason in m["skipped"][0]["reason"]
    cache = TeacherCache.open(out)
    assert len(cache) == m["rows"] == 60 and index not in cache.rows["sample_index"].tolist()
    with pytest.raises(DistillError, match=f"sample {index} view 0.*3_bad.jpg"):
        cache.lookup(torch.tensor([0, index]), torch.tensor([0, 0]))


# ---------------------------------------------------------------------- views
def test_augmented_views_replay_the_teachers_input(dataset, teacher, tmp_path):
    from distill.teacher.cache_build import _ImageViews

    cfg = ViewConfig(scale=(0.3, 0.9), hflip=0.5)
    out = build_cache(dataset, teacher, tmp_path / "mv", views=4, seed=5, augment=cfg, dtype="float32",
                      shard_size=8, batch_size=8, num_workers=0, progress=False)
    cache = TeacherCache.open(out)
    info = teacher.preprocess_info
    samples = [(s.index, s.relpath) for s in dataset.samples]
    views = _ImageViews(dataset.root, samples, 4, 5, cfg, teacher.preprocess, info)
    flips = set()
    for s in dataset.samples[::3]:
        img = Image.open(dataset.path(s)).convert("RGB")
        W, H = img.size
        _, x, params, _ = views[s.index]  # what the teacher received
        rows = cache.lookup(torch.full((4,), s.index), torch.arange(4))
        assert torch.equal(rows["view_params"], params)
        assert torch.allclose(rows["view_params"][0, :4], torch.tensor(
            [(1 - min(W, H) / W) / 2, (1 - min(W, H) / H) / 2, min(W, H) / W, min(W, H) / H]), atol=1e-6)
        for v in range(1, 4):
            x0, y0, w, h, flip = rows["view_params"][v].tolist()
            flips.add(flip)
            # replay with torchvision from the stored params alone
            crop = TF.resized_crop(img, round(y0 * H), round(x0 * W), round(h * H), round(w * W), list(info.size),
                                   InterpolationMode.BICUBIC, antialias=True)
            replay = TF.normalize(TF.to_tensor(TF.hflip(crop) if flip else crop), info.mean, info.std)
            assert torch.equal(replay, x[v])
            emb, _ = teacher(replay[None])
            torch.testing.assert_close(rows["image_emb"][v], emb[0], atol=1e-4, rtol=0)
    assert flips == {0.0, 1.0}


def test_uint8_hand_off_gives_the_teacher_the_same_floats(dataset, teacher):
    """Workers hand over 8-bit pixels; normalized on the device they equal open_clip's floats bit for bit."""
    from distill.teacher.cache_build import _ImageViews, teacher_input

    info = teacher.preprocess_info
    samples = [(s.index, s.relpath) for s in dataset.samples]
    cfg = ViewConfig(scale=(0.3, 0.9), hflip=0.5)
    floats = _ImageViews(dataset.root, samples, 3, 5, cfg, teacher.preprocess, info)
    pixels = _ImageViews(dataset.root, samples, 3, 5, cfg, teacher.preprocess, info, uint8=True)
    assert pixels.split is not None  # open_clip's transform ends in ToTensor + Normalize
    mean, std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in (info.mean, info.std))
    for pos in range(0, len(samples), 3):
        _, a, pa, _ = floats[pos]
        _, b, pb, _ = pixels[pos]
        assert b.dtype == torch.uint8 and b.shape == a.shape and torch.equal(pa, pb)
        assert torch.equal(teacher_input(b, mean, std), a)


# ---------------------------------------------------------------------- CLI
def test_cli_inspect_json_and_text(reference, capsys):
    assert cli(["cache", "inspect", str(reference), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    m = json.loads((reference / MANIFEST).read_text())
    assert s["teacher"]["arch"] == "distill-demo-vit" and s["rows"] == 60 and s["views"] == 2
    assert s["size_bytes"] == sum(p.stat().st_size for p in reference.iterdir())
    assert set(s["zero_shot_accuracy"]) == {"art", "photo", "sketch"}
    assert s["train_rows"] == int((TeacherCache.open(reference).rows["split"] == 0).sum())
    assert s["teacher_flops_saved_per_epoch"] == m["teacher_flops_per_image"] * s["train_rows"]
    assert s["skipped"] == [] and s["classes"] == ["cat", "dog"] and s["dtype"] == "float16"
    assert s["adversarial"] is None  # no adversarial views in this cache
    assert cli(["cache", "inspect", str(reference)]) == 0
    text = capsys.readouterr().out
    assert "distill-demo-vit" in text and "zero-shot accuracy" in text and "compute saved" in text
    assert cli(["cache", "inspect", str(reference.parent)]) == 2
    assert "not a teacher cache" in capsys.readouterr().err


def test_cli_build_options(tree, tmp_path, capsys):
    templates = tmp_path / "t.txt"
    templates.write_text("# mine\na {} here.\n\nthe {}.\n")
    out = tmp_path / "c"
    argv = ["cache", "build", "--data", str(tree), "--out", str(out), "--arch", "distill-demo-vit",
            "--pretrained", "none", "--templates-file", str(templates), "--domains", "photo,art", "--views", "2",
            "--hflip", "0", "--crop-scale", "0.5,1", "--dtype", "float32", "--workers", "0", "--test-fraction", "0.5"]
    assert cli(argv) == 0
    assert f"teacher cache written: {out}" in capsys.readouterr().out
    m = json.loads((out / MANIFEST).read_text())
    assert m["templates"] == ["a {} here.", "the {}."] and m["dataset"]["domains"] == ["art", "photo"]
    assert m["views"]["augment"] == {"scale": [0.5, 1.0], "ratio": [0.75, 4 / 3], "hflip": 0.0}
    assert m["dtype"] == "float32" and m["dataset"]["test_fraction"] == 0.5 and m["rows"] == 40
    assert (TeacherCache.open(out).rows["view_params"][:, 4] == 0).all()
    assert cli(argv) == 0 and "already complete" in capsys.readouterr().out
    assert cli([*argv[:-1], "0.3"]) == 2
    assert "dataset.test_fraction: 0.5 vs 0.3" in capsys.readouterr().err
    assert cli([*argv[:5], str(tmp_path / "d"), *argv[6:], "--crop-scale", "1"]) == 2
    assert "--crop-scale expects" in capsys.readouterr().err


# ---------------------------------------------------------------------- real images
def test_pacs_mini_all_domains(tmp_path):
    if not PACS_MINI.is_dir():
        pytest.skip(f"PACS-mini not found at {PACS_MINI}")
    ds = DomainFolder(PACS_MINI)
    out = build_cache(ds, demo_teacher(ds.classes), tmp_path / "pacs", num_workers=1, progress=False)
    cache = TeacherCache.open(out)
    assert cache.domains == ["art_painting", "cartoon", "photo", "sketch"] and len(cache.classes) == 7
    assert len(cache) == len(ds) and cache.manifest["skipped"] == []
    giraffe, photo = cache.classes.index("giraffe"), cache.domains.index("photo")
    assert not ((cache.rows["domain"] == photo) & (cache.rows["label"] == giraffe)).any()
    assert ((cache.rows["label"] == giraffe).sum() > 0)
    assert set(cache.zero_shot_accuracy()) == set(cache.domains)
