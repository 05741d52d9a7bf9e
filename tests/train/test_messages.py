"""Messages of a training run that point at the right thing: cache mismatches name the field
that differs, no target domains reads n/a, and a source-free run says which epoch it keeps."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distill.cli import main as cli
from tests.shapes import make_shapes_root
from tests.train.test_trainer import _config, _write


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_shapes_root(tmp_path_factory.mktemp("msg"), ["red", "green", "blue"], per_class=6)


@pytest.fixture(scope="module")
def cache(root, tmp_path_factory) -> Path:
    """A cache built with --test-fraction 0.5 (the recipes say 0.3)."""
    out = tmp_path_factory.mktemp("msgcache") / "c"
    torch.manual_seed(0)
    assert cli(["cache", "build", "--data", str(root), "--out", str(out), "--arch", "distill-demo-vit",
                "--pretrained", "none", "--test-fraction", "0.5", "--workers", "0", "--no-progress"]) == 0
    return out


def test_another_test_fraction_names_the_field(tmp_path, root, cache, capsys):
    manifest = json.loads((cache / "manifest.json").read_text())
    p = _write(tmp_path, _config(root, cache, tmp_path / "run"))  # test_fraction 0.3
    assert cli(["train", "-c", str(p)]) == 1
    fp = manifest["dataset"]["fingerprint"]
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {cache / 'manifest.json'}: teacher cache does not match this run (cache vs expected: "
                          f"dataset.test_fraction: 0.5 vs 0.3; dataset.fingerprint: \"{fp[:36]}... vs ")
    assert len(err.splitlines()) == 1, err


def test_another_data_sets_cache_is_a_cache_mismatch(tmp_path, root, cache, capsys):
    mine = make_shapes_root(tmp_path / "mine", ["red"], per_class=3)  # a data set without green and blue
    p = _write(tmp_path, _config(mine, cache, tmp_path / "run", data__source=["red"]))
    assert cli(["train", "-c", str(p)]) == 1
    built = json.loads((cache / "manifest.json").read_text())["dataset"]["root"]
    assert capsys.readouterr().err.strip() == (
        f"error: {cache}: teacher cache does not match this run (cache vs expected: dataset.domains: "
        f"[\"blue\", \"green\", \"red\"] vs [\"red\"] (the cache was built from {built}; this run's data.root is "
        f"{mine})); rebuild it with `distill cache build` or point to the matching cache")


def test_no_target_domains_prints_n_a(tmp_path, root, capsys):
    cfg = _config(root, None, tmp_path / "run", optim__epochs=1)
    cfg["strategy"] = {"name": "erm"}
    cfg["data"].update(source=["red", "green", "blue"], target=[])
    assert cli(["train", "-c", str(_write(tmp_path, cfg))]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("epoch 1:"))
    assert "  target n/a  |" in line and "target 0.0" not in out
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["target_acc"] is None
    assert f"best checkpoint: {tmp_path / 'run' / 'checkpoints' / 'best'}  (source " in out
    assert out.rstrip().endswith(", target n/a)")


def test_a_batch_larger_than_the_training_images_says_what_to_set(tmp_path, root, capsys):
    """The recipes' optim.batch_size 64 on a small source: the error names the largest batch that fits."""
    from distill.data import DomainFolder

    cfg = _config(root, None, tmp_path / "run", optim__batch_size=64)
    cfg["strategy"] = {"name": "erm"}
    n = len(DomainFolder(root, test_fraction=0.3).select(["red", "green"], "train"))
    assert cli(["train", "-c", str(_write(tmp_path, cfg))]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{n} training images is fewer than optim.batch_size=64" in err
    assert err.endswith(f"set optim.batch_size <= {n} (--set optim.batch_size={n})")


def test_a_non_empty_folder_that_holds_no_run_is_refused(tmp_path, root, cache, capsys):
    """run.out over a user's files or a teacher cache: one line saying what is there, nothing written (QA B5)."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.csv").write_text("a,b\n1,2\n")
    (mine / "summary.json").write_text('{"old": 1}\n')
    before = {p.name: p.read_bytes() for p in cache.iterdir()}
    for out, listed in ((mine, "metrics.csv, summary.json"), (cache, ", ".join(sorted(n for n in before if n[0] != ".")[:4]))):
        cfg = _config(root, None, out, optim__epochs=1)
        cfg["strategy"] = {"name": "erm"}
        assert cli(["train", "-c", str(_write(tmp_path, cfg))]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {out}: directory is not empty and holds no training run ({listed}")
        assert err.endswith("choose an empty or new run.out, or move those files away") and len(err.splitlines()) == 1
    assert (mine / "metrics.csv").read_text() == "a,b\n1,2\n" and sorted(p.name for p in mine.iterdir()) == [
        "metrics.csv", "summary.json"]
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == before


def test_a_run_stopped_before_its_first_checkpoint_starts_over_and_hidden_files_do_not_count(tmp_path, root, capsys):
    import shutil

    cfg = _config(root, None, tmp_path / "run", optim__epochs=1)
    cfg["strategy"] = {"name": "erm"}
    p = _write(tmp_path, cfg)
    assert cli(["train", "-c", str(p)]) == 0
    shutil.rmtree(tmp_path / "run" / "checkpoints")  # a finished run without its checkpoints: its results stay
    assert cli(["train", "-c", str(p)]) == 1
    assert "holds a finished run (summary.json) without its checkpoints" in capsys.readouterr().err
    (tmp_path / "run" / "summary.json").unlink()  # as if killed before the first checkpoint
    assert cli(["train", "-c", str(p)]) == 0
    assert (tmp_path / "run" / "checkpoints" / "last.json").is_file()
    (tmp_path / "hidden").mkdir()
    (tmp_path / "hidden" / ".DS_Store").write_bytes(b"x")
    cfg["run"]["out"] = str(tmp_path / "hidden")
    assert cli(["train", "-c", str(_write(tmp_path, cfg))]) == 0


def test_an_empty_target_domain_is_named_once(tmp_path, capsys):
    """QA B8: an empty target domain is warned about once, not a silent `target n/a`."""
    data = make_shapes_root(tmp_path / "data", ["red", "green"], per_class=6)
    (data / "empty" / "circle").mkdir(parents=True)
    cfg = _config(data, None, tmp_path / "run", optim__epochs=1)
    cfg["strategy"] = {"name": "erm"}
    cfg["data"].update(source=["red"], target=["green", "empty"])
    assert cli(["train", "-c", str(_write(tmp_path, cfg))]) == 0
    out, err = capsys.readouterr()
    warning = f"warning: data.target: 'empty' hold(s) no test images under {data}; left out of the target accuracy"
    assert err.count(warning) == 1, err
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["target_acc"] is not None


def test_an_empty_source_domain_says_it_holds_no_training_images(tmp_path, capsys):
    data = make_shapes_root(tmp_path / "data", ["red"], per_class=6)
    (data / "empty" / "circle").mkdir(parents=True)
    cfg = _config(data, None, tmp_path / "run2", optim__epochs=1)
    cfg["strategy"] = {"name": "erm"}
    cfg["data"].update(source=["empty"], target=["red"])
    assert cli(["train", "-c", str(_write(tmp_path, cfg))]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"error: data.source: 'empty' hold(s) no training images under {data} (an empty folder, or none "
                   "in the train split); nothing to train on: add images or choose other domains")
    assert not (tmp_path / "run2").exists()


def test_a_labelled_run_without_validation_images_says_so_not_no_labels(tmp_path, root, capsys):
    """QA-A B8: a labelled source domain with 0 validation images said "no labels to select on" on every line; the
    labels exist, the val split is empty. Warned once at the start, and each kept-last-epoch line says why."""
    cfg = _config(root, None, tmp_path / "run", optim__epochs=2, optim__batch_size=4)
    cfg["strategy"] = {"name": "erm"}
    cfg["data"].update(source=["red"], target=["blue"], val_fraction=0.0)
    assert cli(["train", "-c", str(_write(tmp_path, cfg))]) == 0
    out, err = capsys.readouterr()
    warning = (f"warning: data.source: 'red' hold(s) no validation images under {root} (data.val_fraction 0); "
               "checkpoints/best keeps the last epoch")
    assert err.count(warning) == 1 and err.count("validation images") == 1, err
    assert "no labels" not in out
    epochs = [ln for ln in out.splitlines() if ln.startswith("epoch ")]
    assert len(epochs) == 2 and all(ln.endswith("  (kept: last epoch; no validation images in the source domains)")
                                    for ln in epochs), out
    assert out.splitlines()[-1].startswith(f"checkpoint (kept: last epoch, 2; no validation images in the source "
                                           f"domains): {tmp_path / 'run' / 'checkpoints' / 'best'}")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["selected_on"] == "last_epoch"
    # with validation images: no warning, and the kept epoch is the best one
    cfg["data"]["val_fraction"] = 0.5
    cfg["run"]["out"] = str(tmp_path / "run2")
    assert cli(["train", "-c", str(_write(tmp_path, cfg))]) == 0
    out, err = capsys.readouterr()
    assert "validation images" not in err + out and out.splitlines()[-1].startswith("best checkpoint: ")
