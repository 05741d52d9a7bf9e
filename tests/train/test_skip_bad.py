"""A cache built with ``--skip-bad`` is usable downstream: train (with robustness evaluation), eval and export
(calibration + accuracy) leave its skipped images out and list each once; without a cache, ``--skip-bad``
makes the dataset scan skip undecodable files."""
from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from distill.cli import main as cli
from distill.data.folder import split_of
from tests.shapes import COLOURS, draw, make_shapes_root


def _name(domain: str, cls: str, split: str, ext: str) -> str:
    """A file name whose hash puts ``DOMAIN/CLASS/name`` in ``split`` (test 0.3, val 0.1 of train)."""
    for k in range(1000):
        name = f"bad{k}{ext}"
        if split_of(f"{domain}/{cls}/{name}", 0.3, 0, 0.1) == split:
            return name
    raise AssertionError("no name found")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = make_shapes_root(tmp_path_factory.mktemp("skip") / "data", ["red", "green", "blue"], per_class=6)
    empty = f"red/circle/{_name('red', 'circle', 'train', '.png')}"  # a source training image
    (root / empty).write_bytes(b"")
    buf = io.BytesIO()
    draw("square", COLOURS["blue"], 7, 1).save(buf, format="JPEG")
    truncated = f"blue/square/{_name('blue', 'square', 'test', '.jpg')}"  # a target test image
    (root / truncated).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    cache = tmp_path_factory.mktemp("skip_cache") / "c"
    assert cli(["cache", "build", "--data", str(root), "--out", str(cache), "--arch", "distill-demo-vit",
                "--pretrained", "none", "--workers", "0", "--skip-bad", "--shard-size", "32"]) == 0
    skipped = {k["path"] for k in json.loads((cache / "manifest.json").read_text())["skipped"]}
    assert skipped == {empty, truncated}
    return root, cache, empty, truncated


def _train_cfg(root: Path, out: Path, **extra) -> dict:
    return {"data": {"root": str(root), "source": ["red", "green"], "test_fraction": 0.3},
            "student": {"arch": "test_resnet", "input_size": 16},
            "optim": {"epochs": 1, "batch_size": 8}, "run": {"out": str(out), "workers": 0, "progress": False},
            **extra}


def _warnings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("warning:") and "undecodable" in line]


def test_cache_skip_list_is_honoured_by_train_eval_and_export(world, tmp_path, capsys):
    root, cache, empty, truncated = world
    run = tmp_path / "run"
    cfg = _train_cfg(root, run, cache=str(cache), strategy={"name": "kd"},
                     robust={"pgd_eps": ["2/255"], "pgd_steps": 1, "corruptions": ["gaussian_noise"]})
    (tmp_path / "kd.yaml").write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert cli(["train", "-c", str(tmp_path / "kd.yaml")]) == 0, capsys.readouterr().err
    res = capsys.readouterr()
    lines = _warnings(res.err)  # warnings go to stderr, results to stdout
    assert len(lines) == 1 and empty in lines[0] and truncated in lines[0], res.err
    assert not _warnings(res.out), res.out
    summary = json.loads((run / "summary.json").read_text())
    assert {k["path"] for k in summary["skipped_images"]} == {empty, truncated}
    assert set(summary["robust"]["domains"]) == {"red", "green", "blue"}

    # eval on the run's data: the images the run's cache skipped are left out (listed once) without --skip-bad, as
    # the run left them out (QA I, 7), and with it
    ckpt = run / "checkpoints" / "best"
    args = ["eval", str(ckpt), "--data", str(root), "--pgd-eps", "0", "--corruptions", "none", "--json"]
    for extra in ([], ["--skip-bad"]):
        assert cli(args + extra) == 0, capsys.readouterr().err
        res = capsys.readouterr()
        report = json.loads(res.out)
        assert [k["path"] for k in report["skipped_images"]] == [truncated]
        assert len(_warnings(res.err)) == 1 and truncated in res.err
    # on the data as a copy elsewhere (not the run's): no cache speaks for it, the bad image stops eval as before
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    assert cli(["eval", str(ckpt), "--data", str(copy), "--pgd-eps", "0", "--corruptions", "none",
                "--test-fraction", "0.3"]) == 1
    assert "--skip-bad" in capsys.readouterr().err

    # export: data, split and the cache's skip list come from the run; every train image calibrates
    exp = tmp_path / "exp"
    assert cli(["export", str(ckpt), "--out", str(exp), "--precision", "int8", "--calib-count", "1000",
                "--exporter", "torchscript", "--latency-iters", "2", "--no-build-engine"]) == 0
    err = capsys.readouterr().err
    assert len(_warnings(err)) == 1, err
    rep = json.loads((exp / "export.json").read_text())
    assert sorted(rep["data"]["skipped"]) == sorted(str(root / p) for p in (empty, truncated))
    int8 = next(m for m in rep["models"] if m["precision"] == "int8")
    assert set(int8["accuracy"]) == {"red", "green", "blue"}


def test_skip_bad_without_a_cache_scans_the_dataset(world, tmp_path, capsys):
    root, _, empty, truncated = world
    (tmp_path / "erm.yaml").write_text(yaml.safe_dump(_train_cfg(root, tmp_path / "run", strategy={"name": "erm"})))
    capsys.readouterr()
    assert cli(["train", "-c", str(tmp_path / "erm.yaml")]) == 1
    assert "--skip-bad" in capsys.readouterr().err
    assert cli(["train", "-c", str(tmp_path / "erm.yaml"), "--skip-bad"]) == 0
    lines = _warnings(capsys.readouterr().err)
    assert len(lines) == 1 and empty in lines[0] and truncated in lines[0]


def test_bad_image_read_by_a_dataloader_worker_is_one_error_line(world, tmp_path, capsys):
    """run.workers >= 1 (the default is 2): the worker's BadImageError reaches the CLI as itself, one line."""
    root, _, empty, _ = world
    cfg = _train_cfg(root, tmp_path / "run", strategy={"name": "erm"})
    cfg["run"]["workers"] = 1
    (tmp_path / "erm.yaml").write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert cli(["train", "-c", str(tmp_path / "erm.yaml")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "DataLoader worker" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and empty in errors[0] and "bad image (empty file)" in errors[0], err


def test_a_non_utf8_file_name_is_refused_by_train_and_left_out_with_skip_bad(tmp_path, capsys):
    """QA K F2: a Latin-1 file name crashed every command with a UnicodeEncodeError traceback naming no file."""
    root = make_shapes_root(tmp_path / "data", ["red", "green", "blue"], per_class=6)
    name = os.path.join(os.fsencode(root / "red" / "square"), b"caf\xe9.png")
    draw("square", COLOURS["red"], 3, 1).save(os.fsdecode(name))
    shown = name.decode("utf-8", "backslashreplace")
    (tmp_path / "erm.yaml").write_text(yaml.safe_dump(_train_cfg(root, tmp_path / "run", strategy={"name": "erm"})))
    capsys.readouterr()
    assert cli(["train", "-c", str(tmp_path / "erm.yaml")]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: {shown}: file name is not valid UTF-8 (its undecodable bytes shown as \\xNN); rename it, or pass "
        "--skip-bad to leave it out"]
    assert cli(["train", "-c", str(tmp_path / "erm.yaml"), "--skip-bad"]) == 0
    lines = _warnings(capsys.readouterr().err)
    assert lines == [f"warning: 1 undecodable image(s) left out of training and evaluation (paths under {root}): "
                     "red/square/caf\\xe9.png (file name is not valid UTF-8)"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())  # ROOT-relative, as an undecodable image's
    assert summary["skipped_images"] == [{"path": "red/square/caf\\xe9.png", "reason": "file name is not valid UTF-8"}]
