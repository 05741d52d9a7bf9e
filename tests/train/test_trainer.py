"""distill train: config validation, cache identity, exact resume after kill -9, DDP, view replay."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from distill.cli import main as cli
from distill.config import load_train_config
from distill.errors import DistillError
from tests.gloo import free_port
from tests.shapes import make_shapes_root

REPO = Path(__file__).resolve().parents[2]


def _config(root: Path, cache: Path | None, out: Path, **over) -> dict:
    cfg = {
        "data": {"root": str(root), "source": ["red", "green"], "test_fraction": 0.3},
        "student": {"arch": "test_resnet", "input_size": 16},
        "strategy": {"name": "kd", "temperature": 2.0},
        "optim": {"epochs": 2, "batch_size": 8, "lr": 0.01, "warmup_epochs": 0.5},
        "run": {"out": str(out), "workers": 0, "progress": False, "seed": 1, "device": "cpu"},  # GPU: tests/gpu
    }
    if cache is not None:
        cfg["cache"] = str(cache)
    for key, value in over.items():
        sect, k = key.split("__")
        cfg.setdefault(sect, {})[k] = value
    return cfg


def _write(tmp_path: Path, cfg: dict, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "best" / "model.safetensors"))


# ---------------------------------------------------------------------------- config
@pytest.mark.parametrize("override, needle", [
    ("optim.lrr=0.1", "unknown key 'optim.lrr'"),
    ("optim.lr=fast", "'optim.lr'"),
    ("strategy.name=nonexistent", "unknown strategy 'nonexistent'"),
    ("strategy.temp=3", "unknown key 'strategy.temp'"),
    ("data.source=[purple]", "domain 'purple' not found"),
    ("bogus=1", "unknown key 'bogus'"),
])
def test_config_errors_are_one_line_naming_the_key(tmp_path, tiny_root, tiny_cache, capsys, override, needle):
    p = _write(tmp_path, _config(tiny_root, tiny_cache, tmp_path / "run"))
    rc = cli(["train", "-c", str(p), "--set", override])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert needle in err
    assert len(err.splitlines()) == 1, err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_required_section(tmp_path, tiny_root):
    cfg = _config(tiny_root, None, tmp_path / "run")
    del cfg["strategy"]
    with pytest.raises(DistillError, match="missing required key 'strategy'"):
        load_train_config(_write(tmp_path, cfg))


def test_kd_without_cache_is_refused(tmp_path, tiny_root, capsys):
    p = _write(tmp_path, _config(tiny_root, None, tmp_path / "run"))
    assert cli(["train", "-c", str(p)]) == 1
    assert "needs a teacher cache" in capsys.readouterr().err


# ---------------------------------------------------------------------------- cache identity
def test_cache_mismatch_refused_naming_fields(tmp_path, tiny_root, tiny_cache, capsys):
    # a different split rule changes the data identity the cache was built for
    p = _write(tmp_path, _config(tiny_root, tiny_cache, tmp_path / "run", data__test_fraction=0.5))
    assert cli(["train", "-c", str(p)]) == 1
    err = capsys.readouterr().err
    assert "dataset.fingerprint" in err and len(err.strip().splitlines()) == 1


def test_cache_teacher_mismatch_refused(tmp_path, tiny_root, tiny_cache, capsys):
    cfg = _config(tiny_root, tiny_cache, tmp_path / "run")
    cfg["teacher"] = {"arch": "distill-demo-vit", "pretrained": None, "templates": ["a drawing of a {}."]}
    assert cli(["train", "-c", str(_write(tmp_path, cfg))]) == 1
    err = capsys.readouterr().err
    assert "templates" in err


def test_erm_trains_without_any_teacher(tmp_path, tiny_root, monkeypatch):
    """A labels-only strategy needs neither cache nor teacher, and never builds one."""
    import distill.teacher.clip as clip

    monkeypatch.setattr(clip.Teacher, "__init__", lambda *a, **k: pytest.fail("teacher was built"))
    cfg = _config(tiny_root, None, tmp_path / "run", strategy__name="erm", optim__epochs=1)
    cfg["strategy"] = {"name": "erm"}
    from distill.train import train

    summary = train(load_train_config(_write(tmp_path, cfg)))
    assert set(summary.test_acc) == {"red", "green", "blue"}
    assert (tmp_path / "run" / "metrics.csv").read_text().startswith("epoch,")
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))


def test_rank_0_makes_the_checkpoint_folder_before_the_ranks_start(tmp_path, tiny_root, monkeypatch):
    """The other DDP ranks put their per-sample targets in run.out/checkpoints only if it is there (they do not make
    it: RowFile.create's scratch); rank 0 makes it before the barrier, so their first refresh finds it."""
    import distill.train.run as run_mod
    from distill.train import train

    seen = []

    def trainer(setup):
        seen.append((tmp_path / "run" / "checkpoints").is_dir())
        raise DistillError("stop")

    monkeypatch.setattr(run_mod, "Trainer", trainer)
    cfg = _config(tiny_root, None, tmp_path / "run", optim__epochs=1)
    cfg["strategy"] = {"name": "erm"}
    with pytest.raises(DistillError, match="^stop$"):
        train(load_train_config(_write(tmp_path, cfg)))
    assert seen == [True]


# ---------------------------------------------------------------------------- resume
def _train_subprocess(args: list[str], env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "distill", "train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_kill9_then_resume_is_bit_identical(tmp_path, tiny_root, tiny_cache):
    cfg_full = _config(tiny_root, tiny_cache, tmp_path / "full", optim__epochs=3, run__save_every=1)
    cfg_kill = _config(tiny_root, tiny_cache, tmp_path / "killed", optim__epochs=3, run__save_every=1)
    p_full, p_kill = _write(tmp_path, cfg_full, "full.yaml"), _write(tmp_path, cfg_kill, "kill.yaml")

    full = _train_subprocess(["-c", str(p_full)])
    out_full = full.communicate(timeout=300)[0]
    assert full.returncode == 0, out_full

    # kill -9 in the middle of epoch 2 (there are 2 steps/epoch: kill after global step 3)
    proc = _train_subprocess(["-c", str(p_kill)], {"DISTILL_TRAIN_STEP_DELAY": "0.5"})
    last = tmp_path / "killed" / "checkpoints" / "last.json"
    deadline = time.time() + 240
    while time.time() < deadline:
        if last.is_file() and '"step": 3' in last.read_text():
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert '"step": 3' in last.read_text(), "the run finished or never reached step 3 before the kill"
    assert not (tmp_path / "killed" / "summary.json").exists()

    resumed = _train_subprocess(["--resume", str(tmp_path / "killed")])
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    assert "resumed from" in out

    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    assert (tmp_path / "full" / "metrics.csv").read_text() == (tmp_path / "killed" / "metrics.csv").read_text()


def test_second_run_into_same_dir_refused(tmp_path, tiny_root, tiny_cache, capsys):
    cfg = _config(tiny_root, tiny_cache, tmp_path / "run", optim__epochs=1)
    p = _write(tmp_path, cfg)
    assert cli(["train", "-c", str(p)]) == 0
    assert cli(["train", "-c", str(p)]) == 1
    assert "--resume" in capsys.readouterr().err


# ---------------------------------------------------------------------------- DDP
# SGD (timm's: Nesterov momentum) without weight decay or clipping: the update is linear in the
# reduced gradient, so a reduction that sums instead of averaging (or skips a rank) moves the
# weights by a different amount. (AdamW and clipping normalise the gradient's scale away and would
# hide that.)
_SGD = dict(optim__optimizer="sgd", optim__weight_decay=0.0, optim__grad_clip=None,
            optim__lr=0.1, optim__warmup_epochs=0)


_EXIT_PROBE = """import atexit, os, sys


def _probe():
    d = sys.modules.get("torch.distributed")
    if "RANK" in os.environ:
        with open(os.path.join(os.environ["EXIT_PROBE"], "rank" + os.environ["RANK"]), "w") as f:
            f.write(str(bool(d is not None and d.is_available() and d.is_initialized())))


atexit.register(_probe)
"""


def _one_vs_two(tmp_path: Path, cfg_one: dict, cfg_two: dict, port: int) -> float:
    """Train cfg_one in one process and cfg_two under torchrun with 2 gloo ranks; max weight difference."""
    p1 = _write(tmp_path, cfg_one, "one.yaml")
    p2 = _write(tmp_path, cfg_two, "two.yaml")
    one = subprocess.run([sys.executable, "-m", "distill", "train", "-c", str(p1)], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    torchrun = Path(sys.executable).with_name("torchrun")
    probe = tmp_path / "probe"  # each rank writes, at its exit, whether its process group was still up
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(_EXIT_PROBE)
    path = os.pathsep.join(p for p in (str(probe), os.environ.get("PYTHONPATH", "")) if p)
    two = subprocess.run([str(torchrun), "--nproc_per_node=2", f"--master_port={port}", "-m", "distill", "train", "-c",
                          str(p2)], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, "EXIT_PROBE": str(probe)})
    assert two.returncode == 0, two.stderr[-3000:]
    # every rank ended its gloo group before exiting: a rank that exits with it up can abort at interpreter shutdown
    # ("terminate called without an active exception", SIGABRT), failing a finished run (CI, under -n 2 load)
    assert {p.name: p.read_text() for p in probe.glob("rank*")} == {"rank0": "False", "rank1": "False"}
    a, b = _weights(Path(cfg_one["run"]["out"])), _weights(Path(cfg_two["run"]["out"]))
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path, tiny_root, tiny_cache):
    """2 gloo ranks x 4 images == 1 process x 8 images, plain SGD (test_vit has no BatchNorm)."""
    over = dict(student__arch="test_vit", optim__epochs=1, optim__batch_size=8, **_SGD)
    worst = _one_vs_two(tmp_path, _config(tiny_root, tiny_cache, tmp_path / "one", **over),
                        _config(tiny_root, tiny_cache, tmp_path / "two", **over), free_port())
    assert worst < 1e-4, f"max weight difference {worst}"  # stated tolerance: float reduction order only


@pytest.mark.slow
def test_ddp_matches_one_process_with_batch_statistics(tmp_path, tiny_root):
    """shot's information maximisation takes the entropy of the *batch's* mean prediction: under DDP
    it must be the global batch's (gathered across ranks), or 2 x 4 images train differently than 8."""
    from distill.train import train

    src = _config(tiny_root, None, tmp_path / "erm", student__arch="test_vit", optim__epochs=2)
    src["strategy"] = {"name": "erm"}
    train(load_train_config(_write(tmp_path, src, "erm.yaml")))
    ckpt = tmp_path / "erm" / "checkpoints" / "best"

    def shot(out: str) -> dict:
        cfg = _config(tiny_root, None, tmp_path / out, student__arch="test_vit", optim__epochs=1,
                      optim__batch_size=8, **{**_SGD, "optim__lr": 0.3})
        cfg["data"].update(source=["red"], target=["blue"])
        # IM only (beta 0): its diversity term is the batch statistic under test
        cfg["strategy"] = {"name": "shot", "beta": 0.0, "diversity_weight": 1.0, "freeze_head": True}
        cfg["source_checkpoint"] = str(ckpt)
        return cfg

    worst = _one_vs_two(tmp_path, shot("one"), shot("two"), free_port())
    assert worst < 1e-4, f"max weight difference {worst}"
    start, end = load_file(str(ckpt / "model.safetensors")), _weights(tmp_path / "one")
    assert max(float((start[k].float() - end[k].float()).abs().max()) for k in start) > 1e-4, "shot did not train"


@pytest.mark.slow
def test_ddp_sfda_with_a_batchnorm_student_on_cpu_refreshes_alike_on_every_rank(tmp_path, tiny_root, tiny_cache):
    """gloo has no SyncBatchNorm: after an epoch each rank's BN running statistics are its own (DDP sends rank 0's
    at the next forward only), and sfda's second refresh (eval mode, on every rank) was refused by the ranks'
    digest check. The refresh takes rank 0's buffers first, so a 2-epoch run ends (both refreshes agree)."""
    from distill.train import train

    src = _config(tiny_root, None, tmp_path / "erm", optim__epochs=1)  # test_resnet: BatchNorm
    src["strategy"] = {"name": "erm"}
    train(load_train_config(_write(tmp_path, src, "erm.yaml")))
    cfg = _config(tiny_root, tiny_cache, tmp_path / "two", optim__epochs=2, optim__batch_size=8,
                  **{**_SGD, "optim__lr": 0.3})
    cfg["data"].update(source=["red"], target=["blue"])
    cfg["strategy"] = {"name": "sfda"}
    cfg["source_checkpoint"] = str(tmp_path / "erm" / "checkpoints" / "best")
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun), "--nproc_per_node=2", f"--master_port={free_port()}", "-m", "distill", "train", "-c",
                          str(_write(tmp_path, cfg, "two.yaml"))], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stderr[-3000:]
    assert len((tmp_path / "two" / "metrics.csv").read_text().splitlines()) == 3  # header + 2 epochs


def test_bf16_autocast_trains(tmp_path, tiny_root, tiny_cache):
    """optim.bf16 runs the forward passes under bfloat16 autocast and still trains."""
    from distill.train import train

    cfg = _config(tiny_root, tiny_cache, tmp_path / "run", optim__epochs=1, optim__bf16=True)
    summary = train(load_train_config(_write(tmp_path, cfg)))
    assert all(0.0 <= a <= 1.0 for a in summary.test_acc.values())
    w = _weights(tmp_path / "run")
    assert all(torch.isfinite(t.float()).all() for t in w.values())


def test_training_from_the_pixel_store_equals_decoding(tmp_path, tiny_root, tiny_cache, capsys):
    """A cache with pixels at the student's size: training reads them, says so, and ends bit-identical."""
    import shutil

    from distill.data import DomainFolder
    from distill.teacher.cache import build_pixel_store
    from distill.train import train

    with_px = tmp_path / "cache_px"
    shutil.copytree(tiny_cache, with_px)
    build_pixel_store(DomainFolder(tiny_root, test_fraction=0.3), with_px, (16, 16), "bilinear", num_workers=0,
                      progress=False)
    lines = []
    for name, cache in (("decode", tiny_cache), ("store", with_px)):
        cfg = _config(tiny_root, cache, tmp_path / name, optim__epochs=1)
        train(load_train_config(_write(tmp_path, cfg, f"{name}.yaml")))
        lines.append(next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("input: ")))
    assert "decoding images" in lines[0] and "--store-pixels 16x16" in lines[0]
    assert lines[1].startswith("input: cached pixels 16x16 bilinear")  # test_resnet resizes bilinear
    a, b = _weights(tmp_path / "decode"), _weights(tmp_path / "store")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------- content fingerprint
def test_content_fingerprint_catches_a_same_size_edit(tmp_path, capsys):
    """`cache build --fingerprint content`: an image edited to the same byte count is refused by train;
    the default path+size fingerprint cannot see it."""
    from PIL import Image

    from distill.data import DomainFolder

    root = make_shapes_root(tmp_path / "data", ["red", "green"], per_class=4)
    img = root / "red" / "circle" / "0.png"
    Image.open(img).convert("RGB").save(img, compress_level=0)  # stored deflate: size depends on pixels' count only
    size, paths_fp = img.stat().st_size, DomainFolder(root, test_fraction=0.3).fingerprint()
    cache = tmp_path / "cache"
    assert cli(["cache", "build", "--data", str(root), "--out", str(cache), "--arch", "distill-demo-vit",
                "--pretrained", "none", "--test-fraction", "0.3", "--fingerprint", "content", "--workers", "0",
                "--no-progress"]) == 0
    cfg = _config(root, cache, tmp_path / "run", optim__epochs=1)
    cfg["data"]["source"] = ["red"]
    p = _write(tmp_path, cfg)
    assert load_train_config(p) is not None
    from distill.train import build

    build(load_train_config(p))  # the untouched data set matches

    edited = np.array(Image.open(img))
    edited[0, 0] = 255 - edited[0, 0]
    Image.fromarray(edited).save(img, compress_level=0)
    assert img.stat().st_size == size and DomainFolder(root, test_fraction=0.3).fingerprint() == paths_fp
    capsys.readouterr()
    assert cli(["train", "-c", str(p)]) == 1
    err = capsys.readouterr().err.strip()
    assert "dataset.content_fingerprint" in err and len(err.splitlines()) == 1, err
