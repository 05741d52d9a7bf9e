"""``distill teacher bootstrap|eval --skip-bad`` (QA K F3): a bad image's error says "or pass --skip-bad", and both
commands take it: the image is left out with a warning (and so is a file whose name is not UTF-8)."""
from __future__ import annotations

import os
from pathlib import Path

from distill.cli import main
from distill.data.folder import split_of
from tests.shapes import COLOURS, draw, make_shapes_root

POOL = 0.5


def _name(rel: str, split: str) -> str:
    """``rel``/badK.png such that the bootstrap's split rule (test 0.3, val 0.1, pool POOL) puts it in ``split``."""
    return next(f"{rel}/bad{k}.png" for k in range(1000) if split_of(f"{rel}/bad{k}.png", 0.3, 0, 0.1, POOL) == split)


def test_bootstrap_and_eval_take_skip_bad(tmp_path: Path, capsys) -> None:
    root = make_shapes_root(tmp_path / "data", ["red", "green"], per_class=8)
    pool_bad, test_bad = _name("red/circle", "pretrain"), _name("green/square", "test")
    for rel in (pool_bad, test_bad):
        (root / rel).write_bytes(b"")
    args = ["teacher", "bootstrap", "--data", str(root), "--out", str(tmp_path / "t"), "--quick", "--no-progress",
            "--pretrain-fraction", str(POOL), "--epochs", "1"]
    assert main(args) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: {root / pool_bad}: bad image (empty file); fix or remove it, or pass --skip-bad"]
    assert main(args + ["--skip-bad"]) == 0
    got = capsys.readouterr()
    assert [ln for ln in got.err.splitlines() if ln.startswith("warning: 1 bad")] == [
        f"warning: 1 bad image(s) left out of the bootstrap (paths under {root}): {pool_bad} (empty file)"]
    ckpt = tmp_path / "t" / "open_clip_model.safetensors"
    assert f"teacher checkpoint: {ckpt}" in got.out
    assert f"check it:           distill teacher eval --pretrained {ckpt} --data {root} --skip-bad" in got.out
    # a rerun finds it finished (the same images are left out: the same run)
    assert main(args + ["--skip-bad"]) == 0
    assert "teacher already bootstrapped with these parameters" in capsys.readouterr().err

    # teacher eval: the test-split image stops it, --skip-bad leaves it out; a non-UTF-8 name is listed too
    latin1 = os.path.join(os.fsencode(root / "red" / "square"), b"caf\xe9.png")
    draw("square", COLOURS["red"], 1, 1).save(os.fsdecode(latin1))
    shown = latin1.decode("utf-8", "backslashreplace")
    ev = ["teacher", "eval", "--pretrained", str(ckpt), "--data", str(root), "--no-progress"]
    assert main(ev) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: {shown}: file name is not valid UTF-8 (its undecodable bytes shown as \\xNN); rename it, or pass "
        "--skip-bad to leave it out"]
    assert main(ev + ["--skip-bad"]) == 0
    assert capsys.readouterr().err.splitlines() == [  # one form: ROOT-relative, ROOT named once (was a full path
        f"warning: 2 bad image(s) left out (paths under {root}): red/square/caf\\xe9.png (file name is not valid "
        f"UTF-8), {test_bad} (empty file)"]  # beside a relative one)
    os.remove(latin1)
    assert main(ev) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: {root / test_bad}: bad image (empty file); fix or remove it, or pass --skip-bad"]


def _pool_names(rel: str, count: int) -> list[str]:
    """``count`` names ``rel``/badK.png that the bootstrap's split rule puts in the pretraining pool."""
    names = [f"{rel}/bad{k}.png" for k in range(5000) if split_of(f"{rel}/bad{k}.png", 0.3, 0, 0.1, POOL) == "pretrain"]
    return names[:count]


def test_the_bootstrap_schedule_counts_only_the_images_it_trains_on(tmp_path: Path, capsys) -> None:
    """The schedule (batch size, steps) was picked from the pool's count before --skip-bad left the bad images out:
    here 48 empty files of 71 pool images gave batch 16 to a run on 23 images (batch 8 for 23)."""
    from distill.data.folder import DomainFolder
    from distill.data.split import SplitRule
    from distill.records import TeacherManifest
    from distill.teacher.bootstrap.presets import QUICK, choose_schedule

    root = make_shapes_root(tmp_path / "data", ["red", "green"], per_class=8)
    bad = _pool_names("red/circle", 48)
    for rel in bad:
        (root / rel).write_bytes(b"")
    pool = DomainFolder(root, SplitRule.of("t", pretrain_fraction=POOL)).select(split="pretrain")
    assert main(["teacher", "bootstrap", "--data", str(root), "--out", str(tmp_path / "t"), "--quick", "--no-progress",
                 "--pretrain-fraction", str(POOL), "--epochs", "1", "--skip-bad"]) == 0
    manifest = TeacherManifest.read(tmp_path / "t")
    n = manifest.dataset.train_images
    assert n == len(pool) - len(bad)  # (the pool is too small for a validation hold-out)
    used, before = choose_schedule(n, QUICK, 1)[1], choose_schedule(len(pool), QUICK, 1)[1]
    assert (used, before) == (8, 16)  # the premise: the two counts pick different batches
    assert manifest.training["batch_size"] == used
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("bootstrap: "))
    assert line.startswith(f"bootstrap: {n} pretraining-pool images") and f"x {n // used} steps at batch {used}" in line


def test_bootstrap_and_eval_name_only_misnamed_files_of_the_domains_they_read(tmp_path: Path, capsys) -> None:
    """Review 4 L4: --skip-bad's warning named every file under ROOT whose name is not UTF-8, also in domains the
    bootstrap's pool or teacher eval --domains never read."""
    root = make_shapes_root(tmp_path / "data", ["red", "green"], per_class=8)
    blue = root / "blue" / "square"  # a domain with no pool image: the bootstrap never reads it
    blue.mkdir(parents=True)
    draw("square", COLOURS["blue"], 1, 1).save(blue / _name("blue/square", "test").split("/")[-1])
    for folder in (root / "red" / "square", blue):
        draw("square", COLOURS["red"], 1, 1).save(os.fsdecode(os.path.join(os.fsencode(folder), b"caf\xe9.png")))
    out = tmp_path / "t"
    assert main(["teacher", "bootstrap", "--data", str(root), "--out", str(out), "--quick", "--no-progress",
                 "--pretrain-fraction", str(POOL), "--epochs", "1", "--skip-bad"]) == 0
    warned = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning: ") and "bad image" in ln]
    assert warned == [f"warning: 1 bad image(s) left out of the bootstrap (paths under {root}): red/square/caf\\xe9.png "
                      "(file name is not valid UTF-8)"]
    assert main(["teacher", "eval", "--pretrained", str(out / "open_clip_model.safetensors"), "--data", str(root),
                 "--no-progress", "--skip-bad", "--domains", "blue"]) == 0
    warned = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning: ")]
    assert warned == [f"warning: 1 bad image(s) left out (paths under {root}): blue/square/caf\\xe9.png (file name is "
                      "not valid UTF-8)"]


def _release_run_key(root: Path, epochs: int) -> str:
    """The run key the release before the decoded-count schedule gave a --quick bootstrap: the pool's counts as
    listed (bad images included) and the schedule picked from them (written out here, not taken from distill, so a
    change of the formula shows)."""
    import hashlib
    import json

    import open_clip

    from distill.data.folder import DomainFolder
    from distill.data.split import SplitRule
    from distill.teacher.bootstrap import presets
    from distill.teacher.bootstrap.data import split_validation, train_samples
    from distill.teacher.clip import register_model_configs
    from distill.teacher.pool import pool_of

    ds = DomainFolder(root, SplitRule.of("t", pretrain_fraction=POOL))
    train, val = split_validation(train_samples(ds, presets.QUICK.max_per_domain, 0), 0)
    register_model_configs()
    params = {
        "format": presets.FORMAT, "arch": presets.DEMO_ARCH, "model_config": open_clip.get_model_config(presets.DEMO_ARCH),
        "dataset_fingerprint": ds.fingerprint(), "classes": ds.classes, "domains": ds.domains,
        "pretrain": pool_of(ds).model_dump(mode="json"), "train_images": len(train), "val_images": len(val),
        "templates": list(presets.DEMO_TEMPLATES), "caption_templates": list(presets.CAPTION_TEMPLATES),
        "epochs": epochs, "batch_size": presets.choose_schedule(len(train), presets.QUICK, epochs)[1],
        "lr": presets.QUICK.lr, "weight_decay": presets.WEIGHT_DECAY, "warmup_fraction": presets.WARMUP_FRACTION,
        "max_per_domain": presets.QUICK.max_per_domain, "seed": 0, "augment": presets.AUGMENT,
        "loss": "UniCL multi-positive CLIP loss"}
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def test_a_teacher_bootstrapped_by_the_release_before_is_still_recognized(tmp_path: Path, capsys) -> None:
    """Review 1 H1: the run key hashed the counts and schedule after --skip-bad's decode, so the same command refused
    a teacher the previous release bootstrapped (and restarted an interrupted one from epoch 0). The key names the
    listed pool again; teacher.json's schedule is the one it trained with."""
    import json

    from distill.records import TeacherManifest

    root = make_shapes_root(tmp_path / "data", ["red", "green"], per_class=8)
    for rel in _pool_names("red/circle", 48):
        (root / rel).write_bytes(b"")
    args = ["teacher", "bootstrap", "--data", str(root), "--out", str(tmp_path / "t"), "--quick", "--no-progress",
            "--pretrain-fraction", str(POOL), "--epochs", "1", "--skip-bad"]
    assert main(args) == 0
    capsys.readouterr()
    manifest = TeacherManifest.read(tmp_path / "t")
    assert manifest.run_key == _release_run_key(root, 1)  # so is the state file's: a resume of either release's run
    assert manifest.training["batch_size"] == 8  # the schedule of the images it trained on (16 for the listed pool)

    # teacher.json as the release before wrote it: the listed pool's schedule
    path = tmp_path / "t" / "teacher.json"
    path.write_text(json.dumps({**json.loads(path.read_text()),
                                "training": {**manifest.training, "batch_size": 16}}))
    assert main(args) == 0
    assert "teacher already bootstrapped with these parameters" in capsys.readouterr().err
    # another lr is refused naming lr alone, not the schedule the two counts pick differently
    for batch in (16, 8):
        path.write_text(json.dumps({**json.loads(path.read_text()),
                                    "training": {**manifest.training, "batch_size": batch}}))
        assert main(args + ["--lr", "0.001"]) == 1
        err = capsys.readouterr().err
        assert "training.lr: 0.002 vs 0.001" in err and "batch_size" not in err, err


def test_skip_bad_recognizes_a_finished_teacher_before_decoding_the_pool(tmp_path: Path, monkeypatch, capsys) -> None:
    """Review 1 M1: with --skip-bad the model was built and the whole pool decoded before a finished teacher was
    recognized (or a different one refused): the rerun's answer waited on a decode whose result it did not use."""
    from distill.teacher.bootstrap import train

    root = make_shapes_root(tmp_path / "data", ["red", "green"], per_class=8)
    (root / _name("red/circle", "pretrain")).write_bytes(b"")
    args = ["teacher", "bootstrap", "--data", str(root), "--out", str(tmp_path / "t"), "--quick", "--no-progress",
            "--pretrain-fraction", str(POOL), "--epochs", "1", "--skip-bad"]
    assert main(args) == 0
    capsys.readouterr()
    calls = []
    monkeypatch.setattr(train, "load_uint8", lambda *a, **k: calls.append("decode") or _raise())
    monkeypatch.setattr(train, "create_model", lambda *a, **k: calls.append("model") or _raise())
    assert main(args) == 0
    assert "teacher already bootstrapped with these parameters" in capsys.readouterr().err
    assert main(args + ["--seed", "1"]) == 1  # a different teacher is refused as soon
    assert "a teacher bootstrapped with other parameters is here" in capsys.readouterr().err
    assert calls == []


def _raise() -> None:
    raise AssertionError("called")
