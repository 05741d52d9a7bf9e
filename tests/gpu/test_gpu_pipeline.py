"""The whole pipeline on a CUDA GPU, end to end, with the tiny models of the CPU suite.

Skipped (with the reason) where torch sees no CUDA device. Run them where one is:
``python -m pytest -m gpu tests/gpu`` (benchmarks/gpu_check.sh does). What they hold:

- ``run.device: auto``/``cuda`` and ``--device auto`` work for train, adapt, eval, cache build
  (adversarial views included), teacher bootstrap and bench, each on ``cuda:<index>``;
  torchrun with more ranks than GPUs stops with the one-line error.
- A cache built on the GPU matches a CPU-built one's identity (float fields within tolerance)
  and its rows within fp16 rounding; checkpoints trained on the GPU export to ONNX with parity.
- "Resume is identical" on a GPU, as the README defines it: a killed and resumed cache build is
  byte-identical to an uninterrupted one on the same GPU; a killed and resumed training run ends
  with bit-identical weights when every op it ran has a deterministic CUDA kernel, and otherwise
  (torch then warns "... does not have a deterministic implementation") within float tolerance.
- bf16 and fp16 (GradScaler) training stay finite; the bench's compiled, CUDA-graph path works.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA GPU (run `python -m pytest -m gpu tests/gpu` on a GPU machine)"),
]

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["circle", "square", "stripes"]
CACHE_FLAGS = ["--arch", "distill-demo-vit", "--pretrained", "none", "--views", "2", "--seed", "3",
               "--test-fraction", "0.25", "--batch-size", "8", "--shard-size", "8", "--templates-file"]
NONDETERMINISTIC = "does not have a deterministic implementation"


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _distill(*args: str, env_extra: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill", *args], cwd=REPO, env=_env(**(env_extra or {})),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def gpu_cache(work) -> Path:
    """A teacher cache built on the GPU (`--device auto`), with one adversarial view per train image."""
    out = work / "cache_gpu"
    res = _distill("cache", "build", "--data", str(work / "data"), "--out", str(out), *CACHE_FLAGS,
                   str(work / "t.txt"), "--device", "auto", "--workers", "0", "--no-progress",
                   "--adv-views", "1", "--adv-steps", "2", "--adv-domains", "red,green")
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def _train_cfg(work: Path, cache: Path, out: Path, **over) -> dict:
    cfg = {"data": {"root": str(work / "data"), "source": ["red", "green"], "test_fraction": 0.25},
           "cache": str(cache), "student": {"arch": "test_resnet", "input_size": 16},
           "strategy": {"name": "kd", "temperature": 2.0},
           "optim": {"epochs": 2, "batch_size": 8, "lr": 0.01, "warmup_epochs": 0.5},
           "run": {"out": str(out), "workers": 2, "progress": False, "seed": 1, "device": "auto", "log_every": 2}}
    for key, value in over.items():
        sect, k = key.split("__")
        cfg.setdefault(sect, {})[k] = value
    return cfg


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "best" / "model.safetensors"))


# ---------------------------------------------------------------------------- device resolution
def test_auto_and_cuda_resolve_to_an_indexed_current_device():
    from distill.utils.runtime import resolve_device

    dev = resolve_device("auto")
    assert dev.type == "cuda" and dev.index == torch.cuda.current_device()
    assert resolve_device("cuda") == dev


def test_torchrun_with_more_ranks_than_gpus_is_one_line(work, gpu_cache, tmp_path):
    n = torch.cuda.device_count()
    cfg = _write(tmp_path / "c.yaml", _train_cfg(work, gpu_cache, tmp_path / "run", optim__epochs=1))
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    res = subprocess.run([*launcher, "--standalone", f"--nproc_per_node={n + 1}", "-m", "distill", "train", "-c",
                          str(cfg)], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert f"LOCAL_RANK={n}, but only {n} GPU(s) are visible" in res.stderr, res.stderr[-2000:]
    assert "invalid device ordinal" not in res.stderr


# ---------------------------------------------------------------------------- cache
def test_gpu_cache_matches_a_cpu_cache(work, gpu_cache, tmp_path):
    from distill.teacher.cache import TeacherCache, check_manifest, expected_identity

    res = _distill("cache", "build", "--data", str(work / "data"), "--out", str(tmp_path / "cpu"), *CACHE_FLAGS,
                   str(work / "t.txt"), "--device", "cpu", "--workers", "0", "--no-progress")
    assert res.returncode == 0, res.stderr[-2000:]
    g, c = TeacherCache.open(gpu_cache), TeacherCache.open(tmp_path / "cpu")
    # identity: each manifest satisfies what the other's teacher expects (floats within tolerance)
    def expect(cache):
        return expected_identity(cache.manifest.teacher.model_dump(), cache.manifest.preprocess.model_dump(),
                                 cache.classes)

    check_manifest(g.manifest, expect(c))
    check_manifest(c.manifest, expect(g))
    assert g.manifest.teacher.precision == "fp32"
    assert torch.equal(g.rows["sample_index"], c.rows["sample_index"])
    assert torch.equal(g.rows["view_params"], c.rows["view_params"])
    assert torch.allclose(g.rows["logits"].float(), c.rows["logits"].float(), atol=5e-2, rtol=1e-2)
    assert torch.allclose(g.rows["image_emb"].float(), c.rows["image_emb"].float(), atol=5e-3)


def test_cache_build_kill9_resume_is_byte_identical_on_the_gpu(work, tmp_path):
    from distill.records.names import CACHE_MANIFEST as MANIFEST
    from distill.teacher.cache import SHARD_DELAY_ENV, shard_name

    args = ["cache", "build", "--data", str(work / "data"), *CACHE_FLAGS, str(work / "t.txt"), "--device", "auto",
            "--workers", "1", "--no-progress", "--shard-size", "3"]
    full = _distill(*args, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-2000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "distill", *args, "--out", str(out)], cwd=REPO,
                            env=_env(**{SHARD_DELAY_ENV: "0.5"}), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not (out / shard_name(2)).exists():
        assert proc.poll() is None and time.time() < deadline, "build ended or stalled before the kill"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / MANIFEST).exists()
    resumed = _distill(*args, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    m = json.loads((tmp_path / "full" / MANIFEST).read_text())
    for shard in m["shards"]:
        assert (out / shard["file"]).read_bytes() == (tmp_path / "full" / shard["file"]).read_bytes(), shard["file"]


def test_bf16_teacher_cache_on_the_gpu(work, tmp_path):
    res = _distill("cache", "build", "--data", str(work / "data"), "--out", str(tmp_path / "bf16"), *CACHE_FLAGS,
                   str(work / "t.txt"), "--device", "auto", "--precision", "bf16", "--workers", "0", "--no-progress")
    assert res.returncode == 0, res.stderr[-2000:]
    m = json.loads((tmp_path / "bf16" / "manifest.json").read_text())
    assert m["teacher"]["precision"] == "bf16"


# ---------------------------------------------------------------------------- train, resume, precision
@pytest.mark.parametrize("strategy, precision", [("kd", "fp32"), ("kd", "bf16"), ("kd", "fp16"),
                                                 ("adv_cached", "bf16")])
def test_train_on_cuda(work, gpu_cache, tmp_path, strategy, precision):
    from distill.config import load_train_config
    from distill.train import Trainer, build

    cfg = _train_cfg(work, gpu_cache, tmp_path / "run", optim__precision=precision,
                     strategy__name=strategy)
    if strategy == "adv_cached":
        cfg["strategy"] = {"name": "adv_cached"}
    setup = build(load_train_config(None, base=cfg))
    trainer = Trainer(setup)
    assert setup.device.type == "cuda" and setup.device.index is not None
    conv = next(p for p in trainer.strategy.parameters() if p.dim() == 4)
    assert conv.is_cuda and conv.is_contiguous(memory_format=torch.channels_last)
    assert trainer.scaler.is_enabled() == (precision == "fp16")
    (tmp_path / "run").mkdir()
    summary = trainer.fit()
    assert set(summary.test_acc) == {"red", "green", "blue"}
    assert all(torch.isfinite(t.float()).all() for t in _weights(tmp_path / "run").values())


def test_train_kill9_resume_on_cuda(work, gpu_cache, tmp_path):
    """Identical on a GPU as defined: bitwise unless torch warned of a nondeterministic op; then within tolerance."""
    over = dict(optim__epochs=3, run__save_every=1, run__deterministic=True)
    p_full = _write(tmp_path / "full.yaml", _train_cfg(work, gpu_cache, tmp_path / "full", **over))
    p_kill = _write(tmp_path / "kill.yaml", _train_cfg(work, gpu_cache, tmp_path / "killed", **over))
    full = _distill("train", "-c", str(p_full))
    assert full.returncode == 0, full.stderr[-3000:]
    proc = subprocess.Popen([sys.executable, "-m", "distill", "train", "-c", str(p_kill)], cwd=REPO,
                            env=_env(DISTILL_TRAIN_STEP_DELAY="0.5"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    last = tmp_path / "killed" / "checkpoints" / "last.json"
    deadline = time.time() + 240
    while time.time() < deadline and not (last.is_file() and '"step": 3' in last.read_text()):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    first_out = proc.communicate()[0]
    assert '"step": 3' in last.read_text()
    resumed = _distill("train", "--resume", str(tmp_path / "killed"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "killed")
    warned = any(NONDETERMINISTIC in s for s in (full.stderr, first_out, resumed.stderr))
    if not warned:
        for k in a:
            assert torch.equal(a[k], b[k]), f"{k} differs after resume and no op warned of nondeterminism"
    else:
        worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
        assert worst < 1e-3, f"resume drifted by {worst} (nondeterministic CUDA ops ran)"


def test_adapt_on_cuda(work, gpu_cache, tmp_path):
    from distill.config import load_train_config
    from distill.train import train

    src = train(load_train_config(None, base=_train_cfg(work, gpu_cache, tmp_path / "src",
                                                               optim__epochs=1)))
    res = _distill("adapt", "--source-checkpoint", src.checkpoint, "--target", "blue", "--data", str(work / "data"),
                   "--cache", str(gpu_cache), "--strategy", "sfda", "--out", str(tmp_path / "adapt"),
                   "--set", "optim.epochs=1", "--set", "optim.batch_size=4", "--set", "run.progress=false",
                   "--set", "run.device=auto")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "adapt" / "summary.json").is_file()


# ---------------------------------------------------------------------------- eval, export, bench, bootstrap
@pytest.fixture(scope="module")
def gpu_checkpoint(work, gpu_cache, tmp_path_factory) -> Path:
    from distill.config import load_train_config
    from distill.train import train

    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(load_train_config(None, base=_train_cfg(work, gpu_cache, out, optim__precision="bf16")))
    return out / "checkpoints" / "best"


def test_eval_on_cuda_matches_cpu(work, gpu_checkpoint):
    common = ["eval", str(gpu_checkpoint), "--data", str(work / "data"), "--test-fraction", "0.25",
              "--pgd-eps", "2/255", "--pgd-steps", "2", "--corruptions", "all", "--json"]
    g, c = _distill(*common, "--device", "auto"), _distill(*common, "--device", "cpu")
    assert g.returncode == 0 and c.returncode == 0, (g.stderr[-2000:], c.stderr[-2000:])
    rg, rc = json.loads(g.stdout), json.loads(c.stdout)
    for dom, r in rg["domains"].items():
        # fractions; a near-tie may flip one image's argmax between cuDNN and CPU kernels
        assert abs(r["clean"] - rc["domains"][dom]["clean"]) <= 1.0 / r["n"] + 1e-9, (dom, r, rc["domains"][dom])


def test_export_parity_of_a_gpu_trained_checkpoint(work, gpu_checkpoint, tmp_path):
    res = _distill("export", str(gpu_checkpoint), "--out", str(tmp_path / "exp"), "--precision", "fp32,fp16")
    assert res.returncode == 0, res.stderr[-3000:]
    exp = json.loads((tmp_path / "exp" / "export.json").read_text())
    fp32 = next(m for m in exp["models"] if m["precision"] == "fp32")
    assert fp32["parity"]["passed"], fp32["parity"]


@pytest.mark.parametrize("flavour", ["ort-cpu", "tensorrt"])
def test_qad_trains_the_fake_quant_student_on_cuda(work, gpu_checkpoint, tmp_path, flavour):
    """distill qad --device cuda (issue 21: "must run on CPU for tests and on CUDA"): the fake-quant student (torch.ao
    observers, FakeQuantize, Int32Bias) trains on the GPU; the QDQ file it exports on the CPU computes what it did."""
    from distill.export.qad_config import QADRecord

    out = tmp_path / f"qad-{flavour}"
    res = _distill("qad", str(gpu_checkpoint), "--out", str(out), "--device", "cuda", "--flavour", flavour,
                   "--epochs", "2", "--calib-count", "16", "--eval-count", "4", "--holdout-count", "8",
                   "--data", str(work / "data"))
    assert res.returncode == 0, res.stderr[-3000:]
    record = QADRecord.read(out)
    assert record.config["device"].startswith("cuda") and len(record.losses) == 2
    assert all(math.isfinite(v) for v in record.losses)
    assert record.torch_vs_onnx["top1_agreement"] >= 0.9, record.torch_vs_onnx  # the CPU suite's bound
    assert (out / record.ship_file).is_file() and (out / "checkpoint" / "model.safetensors").is_file()


@pytest.mark.parametrize("precision, compile", [("fp32", "none"), ("bf16", "none"), ("fp16", "reduce-overhead"),
                                                ("bf16", "default")])
def test_bench_torch_on_cuda(gpu_checkpoint, precision, compile):
    from distill.bench.run import TorchOptions, bench_model

    recs = bench_model(gpu_checkpoint, "torch", (1, 8), warmup=3, iters=10,
                       torch_options=TorchOptions(device="auto", precision=precision, compile=compile))
    for r in recs:
        assert r["providers"][0].endswith("cuda:0") or "cuda:" in r["providers"][0]
        assert (r["precision"], r["compile"], r["memory_format"]) == (precision, compile, "channels_last")
        assert r["compile_s"] > 0 and r["latency_ms"]["p50"] > 0 and r["memory"]["gpu_peak_mb"] > 0


def test_teacher_bootstrap_on_cuda(work, tmp_path):
    res = _distill("teacher", "bootstrap", "--data", str(work / "data"), "--out", str(tmp_path / "t"), "--quick",
                   "--pretrain-fraction", "0.3", "--device", "auto", "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "t" / "open_clip_model.safetensors").is_file()
