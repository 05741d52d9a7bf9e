"""`distill cache build` says what it wrote, skipped images included (as `cache inspect` does)."""
from __future__ import annotations

from pathlib import Path

from distill.cli import main as cli
from distill.teacher.cache import TeacherCache
from tests.shapes import make_shapes_root


def test_skip_bad_build_line_counts_the_skipped_images(tmp_path: Path, capsys) -> None:
    root = make_shapes_root(tmp_path / "data", ["red"], per_class=2)  # 3 classes x 2 = 6 images
    for i in range(2):
        (root / "red" / "circle" / f"bad{i}.png").write_bytes(b"")
    out = tmp_path / "c"
    assert cli(["cache", "build", "--data", str(root), "--out", str(out), "--arch", "distill-demo-vit",
                "--pretrained", "none", "--views", "2", "--skip-bad", "--workers", "0", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (f"teacher cache written: {out} (12 rows = (8 images - 2 skipped) x 2 view(s), 1 shard(s), "
            "2 image(s) skipped (listed in manifest.json))") in lines
    assert cli(["cache", "inspect", str(out)]) == 0
    inspected = capsys.readouterr().out.splitlines()
    assert any(ln.startswith("rows      12 = (8 images - 2 skipped) x 2 view(s)") for ln in inspected)
    # its shard count as the build line says it ("1 shards" before)
    assert ", 1 shard(s), created " in next(ln for ln in inspected if ln.startswith("cache     ")), inspected


def test_policy_build_prints_its_policy_and_never_mixes_in_a_skipped_image(tmp_path: Path, capsys) -> None:
    root = make_shapes_root(tmp_path / "data", ["red"], per_class=2)
    for i in range(2):
        (root / "red" / "circle" / f"bad{i}.png").write_bytes(b"")
    out = tmp_path / "c"
    assert cli(["cache", "build", "--data", str(root), "--out", str(out), "--arch", "distill-demo-vit",
                "--pretrained", "none", "--views", "4", "--policy", "fm", "--mixup", "1.0", "--skip-bad",
                "--test-fraction", "0", "--val-fraction", "0", "--workers", "0", "--no-progress"]) == 0
    assert any(ln.startswith("view policy: fm: photometric jitter 0.8") for ln in capsys.readouterr().out.splitlines())
    assert cli(["cache", "inspect", str(out)]) == 0
    assert any("mixup_alpha 1, cutmix_alpha 1, prob 0.5" in ln for ln in capsys.readouterr().out.splitlines())
    cache = TeacherCache.open(out)
    assert cache.view_policy.mix.mixup_alpha == 1.0 and cache.view_policy.crop.hflip == 0.0
    partners = cache.rows["mix_partner"]
    assert (partners >= 0).any()
    skipped = {s.sample_index for s in cache.skipped}
    assert len(skipped) == 2 and not skipped & set(partners.tolist())


def test_pixel_codec_flags_are_checked_in_one_line(tmp_path: Path, capsys) -> None:
    """Bad --pixel-codec / --pixel-quality: exit 1 and one line naming the flag and value, before any work."""
    base = ["cache", "build", "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "c"), "--arch",
            "distill-demo-vit", "--pretrained", "none", "--store-pixels", "32"]
    for extra, words in ((["--pixel-codec", "png"], "'png' is not one of raw, jpeg, webp"),
                         (["--pixel-codec", "jpeg", "--pixel-quality", "0"], "--pixel-quality: 0 is not"),
                         (["--pixel-codec", "webp", "--pixel-quality", "101"], "--pixel-quality: 101 is not"),
                         (["--pixel-quality", "80"], "applies to --pixel-codec jpeg or webp, not raw")):
        assert cli(base + extra) == 1, extra
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, (extra, err)
    assert cli(base[:-2] + ["--pixel-codec", "jpeg"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs --store-pixels" in err
    assert not (tmp_path / "c").exists()


def test_jpeg_pixel_store_from_the_cli(tmp_path: Path, capsys) -> None:
    root = make_shapes_root(tmp_path / "data", ["red"], per_class=2)
    out = tmp_path / "c"
    assert cli(["cache", "build", "--data", str(root), "--out", str(out), "--arch", "distill-demo-vit",
                "--pretrained", "none", "--store-pixels", "32", "--pixel-codec", "jpeg", "--pixel-quality", "80",
                "--workers", "0", "--no-progress"]) == 0
    assert f"pixel store: {out / 'pixels-32x32-bicubic'} (each row's view, 32x32 jpeg quality 80, lossy)" in \
        capsys.readouterr().out.splitlines()
    from distill.teacher.cache import find_pixel_store

    store, line = find_pixel_store(TeacherCache.open(out), (32, 32), "bicubic")  # no flag: the manifest says
    assert (store.codec, store.quality) == ("jpeg", 80) and "jpeg q80" in line


def test_adv_split_all_reaches_the_build_as_none(tmp_path: Path, monkeypatch) -> None:
    """`--adv-split all` is split=None (both splits); check_types refused it (the field's default is 'train')."""
    from distill.teacher.cache import job

    seen: list[job.CacheBuildConfig] = []

    def fake_build(cfg: job.CacheBuildConfig) -> None:
        seen.append(cfg)
        raise KeyboardInterrupt  # stop before the summary reads a manifest

    monkeypatch.setattr(job, "run_cache_build", fake_build)
    try:
        cli(["cache", "build", "--data", str(tmp_path), "--out", str(tmp_path / "c"), "--arch", "distill-demo-vit",
             "--pretrained", "none", "--adv-views", "1", "--adv-split", "all"])
    except KeyboardInterrupt:
        pass
    assert len(seen) == 1 and seen[0].adversarial is not None and seen[0].adversarial.split is None


def test_a_store_pixels_size_given_twice_names_the_flag(tmp_path: Path, capsys) -> None:
    """Review 25b L3: `--store-pixels 32,32` failed with PixelOptions' Python message ((H, W) tuple syntax)."""
    base = ["cache", "build", "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "c"), "--arch",
            "distill-demo-vit", "--pretrained", "none", "--store-pixels"]
    for sizes in ("32,32", "32,32x32"):
        assert cli(base + [sizes]) == 1
        assert capsys.readouterr().err.strip() == f"error: --store-pixels {sizes}: 32x32 listed twice (each size is one store)"
    assert not (tmp_path / "c").exists()
