"""Teacher cache builder: rerun and other plans, resume after kill -9, torchrun, bad images, the CLI.

Fixtures (``tree``, ``dataset``, ``teacher``, ``reference``) come from this package's conftest.
"""
from __future__ import annotations

import dataclasses
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

from distill.cli import main as cli
from distill.data.folder import DomainFolder
from distill.data.images import BadImageError
from distill.data.unlabeled import add_folders, scan_folders
from distill.data.view_policy import preset
from distill.data.views import view_pixels
from distill.errors import DistillError
from distill.records import CACHE_ADVERSARIAL_DIR, CACHE_BUILD_PLAN, CACHE_MANIFEST
from distill.teacher.cache import (
    SHARD_DELAY_ENV,
    AdversarialOptions,
    PixelOptions,
    TeacherCache,
    build_adversarial_views,
    build_cache,
    build_pixel_store,
    find_pixel_store,
    make_plan,
    pixel_dir_name,
    shard_name,
)
from tests.teacher.cache.common import (
    CLI_SETTINGS,
    PACS_MINI,
    SETTINGS,
    assert_same_cache,
    demo_teacher,
    env,
    make_tree,
)


# ---------------------------------------------------------------------- plan
def test_rerun_returns_at_once_and_other_plan_is_refused(reference, dataset, teacher, tmp_path):
    mtimes = {p.name: p.stat().st_mtime_ns for p in reference.iterdir()}
    assert build_cache(dataset, teacher, reference, SETTINGS, num_workers=0, progress=False) == reference
    assert {p.name: p.stat().st_mtime_ns for p in reference.iterdir()} == mtimes

    other = dataclasses.replace(SETTINGS, views=3, dtype="float32")
    with pytest.raises(DistillError, match=r"views\.count: 2 vs 3; dtype: \"float16\" vs \"float32\""):
        build_cache(dataset, teacher, reference, other, num_workers=0, progress=False)
    # an unfinished build (build.json, no manifest) with another plan is refused too
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(reference / CACHE_BUILD_PLAN, partial / CACHE_BUILD_PLAN)
    with pytest.raises(DistillError, match=f"{CACHE_BUILD_PLAN}.*views.count: 2 vs 3"):
        build_cache(dataset, teacher, partial, other, num_workers=0, progress=False)
    with pytest.raises(DistillError, match="unfinished teacher cache"):
        TeacherCache.open(partial)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DistillError, match="not empty"):
        build_cache(dataset, teacher, tmp_path / "busy", SETTINGS, num_workers=0, progress=False)


# ---------------------------------------------------------------------- a domain added to the root
def test_a_domain_added_before_the_cached_ones_is_refused_by_every_builder_of_rows(tree, teacher, tmp_path):
    """Rows are keyed by sample index, a position among all the root's images; the plan pins only the cached
    domains' files. With 'art' added before 'photo' and 'sketch', adversarial views and pixel stores of the cache
    (keyed as its rows), and the cache's own resumed build, would name other images: each is refused."""
    data = tmp_path / "data"
    shutil.copytree(tree, data)
    (data / "art").rename(tmp_path / "art")
    options = dataclasses.replace(SETTINGS, domains=("photo", "sketch"))
    out = build_cache(DomainFolder(data), teacher, tmp_path / "c", options, num_workers=0, progress=False)
    (tmp_path / "art").rename(data / "art")  # sorts first: every cached index moves by its 10 images
    grown = DomainFolder(data)
    moved = r"domain 'photo' at sample indices 0\.\.9, but .* now numbers its images 10\.\.19: the data root gained"
    with pytest.raises(DistillError, match=moved):
        build_adversarial_views(grown, teacher, out, AdversarialOptions(views=1, steps=1), progress=False)
    with pytest.raises(DistillError, match=moved):
        build_pixel_store(grown, out, (16, 16), num_workers=0, progress=False)
    (out / CACHE_MANIFEST).unlink()  # as if killed before the end: the last shard and the manifest missing
    (out / shard_name(6)).unlink()
    with pytest.raises(DistillError, match=r"shard-00000.safetensors: holds samples 0\.\.2, but data.root now "
                                           r"numbers the images of its positions 10\.\.12: the data root gained"):
        build_cache(grown, teacher, out, options, num_workers=0, progress=False)
    assert not (out / shard_name(6)).exists() and not (out / CACHE_MANIFEST).exists()  # nothing written
    (data / "art").rename(tmp_path / "art")
    assert len(TeacherCache.open(build_cache(DomainFolder(data), teacher, out, options, num_workers=0,
                                             progress=False))) == 40  # resumes as before


# ---------------------------------------------------------------------- unlabeled folders outside the root
def _cam(folder: Path, images: int = 5, seed: int = 7) -> Path:
    """Noise PNGs of varied sizes, flat and nested, no class folders."""
    rng = np.random.default_rng(seed)
    for i in range(images):
        path = folder / ("" if i % 2 else "day") / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        h, w = (int(v) for v in rng.integers(24, 64, 2))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return folder


def _with(tree: Path, *folders: Path) -> DomainFolder:
    ds = DomainFolder(tree)
    add_folders(ds, scan_folders([str(f) for f in folders], tree, "--unlabeled"))
    return ds


def test_an_unlabeled_folder_is_cached_once_after_the_root_with_every_view(reference, tree, teacher, tmp_path):
    cam = _cam(tmp_path / "outside" / "cam")
    ds = _with(tree, cam)
    cache = TeacherCache.open(build_cache(ds, teacher, tmp_path / "c", SETTINGS, num_workers=0, progress=False,
                                          pixels=PixelOptions(((16, 16),))))
    ref = TeacherCache.open(reference)
    n = len(DomainFolder(tree).samples)
    [folder] = cache.folders
    assert (folder.name, folder.path, folder.first_index, folder.images) == ("cam", str(cam.resolve()), n, 5)
    assert folder.files_sha256 == ds.folders["cam"].files_sha256() and folder.content_sha256 is None
    # teacher rows for every view of every folder image, unlabeled, under the folder's own domain id
    index = torch.arange(n, n + 5).repeat_interleave(2)
    rows = cache.lookup(index, torch.arange(2).repeat(5))
    assert (rows["label"] == -1).all() and (rows["domain"] == len(ref.domains)).all()
    assert len(cache) == len(ref) + 10 and cache.manifest.dataset.images == ref.manifest.dataset.images  # the root's
    assert cache.manifest.dataset.cached_images == ref.manifest.dataset.images + 5
    store, _ = find_pixel_store(cache, (16, 16), "bicubic")
    for s in ds.select(["cam"]):  # view 0 is the teacher on the image itself; the pixel store holds its views
        img = Image.open(ds.path(s)).convert("RGB")
        _, logits = teacher(teacher.preprocess(img)[None])
        got = cache.lookup(torch.tensor([s.index, s.index]), torch.tensor([0, 1]))
        torch.testing.assert_close(got["logits"][:1], logits, atol=2e-2, rtol=1e-2)
        for v in (0, 1):
            assert torch.equal(store.get(s.index, v), view_pixels(img, tuple(got["view_params"][v].tolist()), (16, 16),
                                                                  "bicubic"))
    # the root's rows, identity and zero-shot table are the reference's, bit for bit
    for key in ("sample_index", "view", "image_emb", "logits", "label", "domain"):
        assert torch.equal(cache.rows[key][:len(ref)], ref.rows[key]), key
    assert cache.manifest.dataset.fingerprint == ref.manifest.dataset.fingerprint
    assert "unlabeled_folders" not in json.loads((reference / CACHE_MANIFEST).read_text())["dataset"]
    assert cache.zero_shot_accuracy() == ref.zero_shot_accuracy()


def test_a_changed_folder_changes_the_identity_and_is_refused_where_it_was_built(tree, teacher, tmp_path):
    cam = _cam(tmp_path / "cam")
    out = build_cache(_with(tree, cam), teacher, tmp_path / "c", SETTINGS, num_workers=0, progress=False)
    built = TeacherCache.open(out).folders[0].files_sha256
    _cam(cam / "more", images=1, seed=9)  # one image added
    changed = _with(tree, cam)
    assert make_plan(changed, teacher, SETTINGS).dataset.unlabeled_folders[0].files_sha256 != built
    with pytest.raises(DistillError, match=r"a cache built with a different plan.*dataset\.unlabeled_folders"):
        build_cache(changed, teacher, out, SETTINGS, num_workers=0, progress=False)
    content = dataclasses.replace(SETTINGS, fingerprint="content")
    record = make_plan(changed, teacher, content).dataset.unlabeled_folders[0]
    assert record.content_sha256 == changed.folders["cam"].content_sha256()
    # adversarial views (of every cached domain and folder by default) are refused for another folder, or none
    for other in (changed, DomainFolder(tree)):
        with pytest.raises(DistillError, match=r"unlabeled folder 'cam' \(.*\) is not the one the cache was built "
                                               r"with; pass the cache's --unlabeled folders"):
            build_adversarial_views(other, teacher, out, AdversarialOptions(views=1, steps=1), progress=False)


def test_a_folder_mixes_only_with_itself(tree, teacher, tmp_path):
    """fm policy: a folder image's partner is from the same folder, a root image's never from the folder."""
    ds = _with(tree, _cam(tmp_path / "cam", images=6))
    options = dataclasses.replace(SETTINGS, views=4, policy=preset("fm", mixup=1.0, cutmix=1.0))
    cache = TeacherCache.open(build_cache(ds, teacher, tmp_path / "c", options, num_workers=0, progress=False))
    folder = set(range(cache.folders[0].first_index, cache.folders[0].first_index + 6))
    si, partner = cache.rows["sample_index"].tolist(), cache.rows["mix_partner"].tolist()
    mixed = [(s, p) for s, p in zip(si, partner) if p >= 0]
    assert any(s in folder for s, _ in mixed), "some folder views are mixed"
    assert all((s in folder) == (p in folder) for s, p in mixed)


def test_cli_build_with_unlabeled_folders_and_its_errors(tree, tmp_path, capsys, monkeypatch):
    cam = _cam(tmp_path / "cam")
    out = tmp_path / "c"
    monkeypatch.chdir(tmp_path)  # QA K F10: `--unlabeled cam`, a folder here, was "not a folder"; the flag takes folders
    argv = ["cache", "build", "--data", str(tree), "--out", str(out), *CLI_SETTINGS, "--workers", "0",
            "--no-progress", "--unlabeled", "cam"]
    assert cli(argv) == 0
    # the hint names the entry a run's data.unlabeled takes (a bare 'cam' there is a domain name)
    assert (f"unlabeled folder {cam.resolve()}: 5 images, cached as 'cam' (a run pools it with "
            f"data.unlabeled=[{cam.resolve()}])") in capsys.readouterr().out.splitlines()
    assert cli(["cache", "inspect", str(out)]) == 0
    assert f"unlabeled cam: 5 images from {cam.resolve()}" in capsys.readouterr().out
    for entry, message in (("art", "'art' is a domain under ROOT (cached by --domains"),
                           ("purple", "folder 'purple' does not exist"),
                           (str(tmp_path / "nowhere"), f"folder '{tmp_path / 'nowhere'}' does not exist"),
                           (str(tree / "art"), "overlaps the data root")):
        assert cli([*argv[:-1], entry]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: --unlabeled: ") and message in err, err
        assert err.count("\n") == 1, err


# ---------------------------------------------------------------------- resume, distributed
def test_kill_9_then_resume_is_bit_identical(reference, tree, tmp_path):
    out = tmp_path / "cache"
    argv = ["cache", "build", "--data", str(tree), "--out", str(out), "--workers", "1", *CLI_SETTINGS]
    proc = subprocess.Popen([sys.executable, "-m", "distill", *argv], env=env(**{SHARD_DELAY_ENV: "0.5"}),
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
    assert (out / CACHE_BUILD_PLAN).exists() and not (out / CACHE_MANIFEST).exists()
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
    adv = AdversarialOptions(views=1, steps=2, seed=5)  # adversarial views too: every rank crafts its shards
    one = build_cache(DomainFolder(data), demo_teacher(DomainFolder(data).classes), tmp_path / "one", SETTINGS,
                      adversarial=adv, pixels=PixelOptions(((16, 16),)), num_workers=0, progress=False, skip_bad=True)
    assert json.loads((one / CACHE_MANIFEST).read_text())["skipped"][0]["sample_index"] // 3 % 2 == 1
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    cmd = [*launcher, "--standalone", "--nproc_per_node=2", "-m", "distill", "cache", "build",
           "--data", str(data), "--out", str(tmp_path / "two"), "--workers", "0", "--skip-bad", *CLI_SETTINGS,
           "--adv-views", "1", "--adv-steps", "2", "--adv-seed", "5", "--store-pixels", "16"]
    res = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, [line for line in res.stderr.splitlines() if "error" in line.lower()][:5]
    assert res.stdout.count("teacher cache written") == 1  # rank 0 reports
    assert_same_cache(tmp_path / "two", one)
    m = json.loads((tmp_path / "two" / CACHE_MANIFEST).read_text())
    assert m["skipped"] == [{"path": "photo/cat/4_bad.jpg", "sample_index": 15, "reason": "empty file"}]

    # the adversarial views: several shards, split over the two ranks, byte-identical to one process's
    a1, a2 = (json.loads((p / CACHE_ADVERSARIAL_DIR / CACHE_MANIFEST).read_text()) for p in (one, tmp_path / "two"))
    a1.pop("created"), a2.pop("created")
    assert a1 == a2 and len(a1["shards"]) >= 2 and a1["rows"] > 0
    for shard in a1["shards"]:
        assert (one / CACHE_ADVERSARIAL_DIR / shard["file"]).read_bytes() == \
            (tmp_path / "two" / CACHE_ADVERSARIAL_DIR / shard["file"]).read_bytes()

    # the pixel store: its shards split over the two ranks too, byte-identical to one process's
    px1, px2 = one / pixel_dir_name((16, 16), "bicubic"), tmp_path / "two" / pixel_dir_name((16, 16), "bicubic")
    p1, p2 = (json.loads((p / CACHE_MANIFEST).read_text()) for p in (px1, px2))
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
        build_cache(ds, t, out, SETTINGS, num_workers=1, progress=False)
    assert str(bad) in str(e.value) and reason in str(e.value) and "--skip-bad" in str(e.value)
    index = next(s.index for s in ds.samples if s.relpath == "sketch/dog/3_bad.jpg")
    kept = sorted(p.name for p in out.glob("shard-*.safetensors"))
    assert kept == [shard_name(k) for k in range(index // 3)]  # shards before the bad image are kept
    assert index // 3 == 9 and not (out / CACHE_MANIFEST).exists()

    build_cache(ds, t, out, SETTINGS, num_workers=0, progress=False, skip_bad=True)  # resumes
    m = json.loads((out / CACHE_MANIFEST).read_text())
    assert len(m["skipped"]) == 1 and m["skipped"][0]["path"] == "sketch/dog/3_bad.jpg"
    assert m["skipped"][0]["sample_index"] == index and reason in m["skipped"][0]["reason"]
    cache = TeacherCache.open(out)
    assert len(cache) == m["rows"] == 60 and index not in cache.rows["sample_index"].tolist()
    with pytest.raises(DistillError, match=f"sample {index} view 0.*3_bad.jpg"):
        cache.lookup(torch.tensor([0, index]), torch.tensor([0, 0]))


# ---------------------------------------------------------------------- CLI
def test_cli_inspect_json_and_text(reference, capsys):
    assert cli(["cache", "inspect", str(reference), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    m = json.loads((reference / CACHE_MANIFEST).read_text())
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
    assert cli(["cache", "inspect", str(reference.parent)]) == 1
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
    m = json.loads((out / CACHE_MANIFEST).read_text())
    assert m["templates"] == ["a {} here.", "the {}."] and m["dataset"]["domains"] == ["art", "photo"]
    assert m["views"]["augment"] == {"scale": [0.5, 1.0], "ratio": [0.75, 4 / 3], "hflip": 0.0}
    assert m["dtype"] == "float32" and m["dataset"]["test_fraction"] == 0.5 and m["rows"] == 40
    assert (TeacherCache.open(out).rows["view_params"][:, 4] == 0).all()
    assert cli(argv) == 0 and "already complete" in capsys.readouterr().out
    assert cli([*argv[:-1], "0.3"]) == 1
    assert "dataset.test_fraction: 0.5 vs 0.3" in capsys.readouterr().err
    assert cli([*argv[:5], str(tmp_path / "d"), *argv[6:], "--crop-scale", "1"]) == 1
    assert "--crop-scale expects" in capsys.readouterr().err


# ---------------------------------------------------------------------- real images
def test_pacs_mini_all_domains(tmp_path):
    if not PACS_MINI.is_dir():
        pytest.skip(f"PACS-mini not found at {PACS_MINI}")
    ds = DomainFolder(PACS_MINI)
    out = build_cache(ds, demo_teacher(ds.classes), tmp_path / "pacs", num_workers=1, progress=False)
    cache = TeacherCache.open(out)
    assert cache.domains == ["art_painting", "cartoon", "photo", "sketch"] and len(cache.classes) == 7
    assert len(cache) == len(ds) and cache.skipped == []
    giraffe, photo = cache.classes.index("giraffe"), cache.domains.index("photo")
    assert not ((cache.rows["domain"] == photo) & (cache.rows["label"] == giraffe)).any()
    assert ((cache.rows["label"] == giraffe).sum() > 0)
    assert set(cache.zero_shot_accuracy()) == set(cache.domains)
